package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// session is the transmission phase of one connection. Requests are read
// and checked in order by run, executed concurrently (at most MaxInFlight),
// and answered under wmu as each finishes.
type session struct {
	exp        *Export
	be         Backend
	size       uint64
	structured bool
	maxPayload uint32
	minBlock   uint32
	bs         BlockStatuser // nil unless base:allocation was negotiated
	log        *slog.Logger

	r   io.Reader
	sem chan struct{}
	wg  sync.WaitGroup

	wmu          sync.Mutex
	w            io.Writer
	werr         error
	onWriteError func()
}

func newSession(neg negotiated, cfg *Config, r io.Reader, w io.Writer, log *slog.Logger) *session {
	var bs BlockStatuser
	if neg.blockStatus {
		bs, _ = neg.export.Backend.(BlockStatuser)
	}
	return &session{
		bs:         bs,
		exp:        neg.export,
		be:         neg.export.Backend,
		size:       uint64(neg.export.Backend.Size()),
		structured: neg.structured,
		maxPayload: cfg.MaxPayload,
		minBlock:   neg.export.minBlock(),
		log:        log,
		r:          r,
		w:          w,
		sem:        make(chan struct{}, cfg.MaxInFlight),
	}
}

// errProtocol marks a request the stream cannot recover from.
var errProtocol = errors.New("nbd protocol error")

// run serves requests until the client disconnects, breaks the protocol
// or stopped reports a shutdown. Every request received is finished and
// answered before run returns; after a disconnect or a shutdown the
// export is flushed, so a client that did not flush loses nothing it was
// told was written.
func (s *session) run(ctx context.Context, stopped func() bool) error {
	defer s.wg.Wait()
	var hdr [requestSize]byte
	for {
		if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || stopped() {
				s.wg.Wait()
				return s.finalFlush(ctx)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%w: truncated request: %v", errProtocol, err)
			}
			return fmt.Errorf("read request: %w", err)
		}
		req, err := decodeRequest(hdr[:])
		if err != nil {
			return fmt.Errorf("%w: %v", errProtocol, err)
		}
		if req.typ == cmdDisc {
			s.wg.Wait()
			return s.finalFlush(ctx)
		}
		// The slot is taken before a write's payload is read, so a
		// connection holds at most MaxInFlight payloads.
		s.sem <- struct{}{}
		var payload []byte
		if req.typ == cmdWrite {
			if req.length > s.maxPayload {
				// Reading it would let a client make us allocate anything;
				// skipping it would not resynchronize a confused client.
				return fmt.Errorf("%w: write of %d bytes", errProtocol, req.length)
			}
			payload = make([]byte, req.length)
			if _, err := io.ReadFull(s.r, payload); err != nil {
				if stopped() {
					// Cut off by a shutdown: never answered, so not lost.
					s.wg.Wait()
					return s.finalFlush(ctx)
				}
				return fmt.Errorf("%w: truncated write payload: %v", errProtocol, err)
			}
		}
		if errno := s.check(req); errno != 0 {
			<-s.sem
			s.replyErr(req, errno, "")
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { <-s.sem; s.wg.Done() }()
			s.exec(ctx, req, payload)
		}()
	}
}

func (s *session) finalFlush(ctx context.Context) error {
	if s.exp.ReadOnly {
		return nil
	}
	if err := s.be.Flush(ctx); err != nil {
		return fmt.Errorf("flush on close: %w", err)
	}
	return nil
}

// check returns the NBD error for a request that must not run, or 0.
func (s *session) check(req request) uint32 {
	var allowed uint16
	write := false
	switch req.typ {
	case cmdRead:
	case cmdFlush:
	case cmdWrite, cmdTrim:
		allowed, write = cmdFlagFUA, true
	case cmdWriteZeroes:
		allowed, write = cmdFlagFUA|cmdFlagNoHole, true
	case cmdBlockStatus:
		if s.bs == nil || req.length == 0 {
			return errInval
		}
		allowed = cmdFlagReqOne
	default:
		return errInval
	}
	if req.flags&^allowed != 0 {
		return errInval
	}
	if write && s.exp.ReadOnly {
		return errPerm
	}
	if req.typ == cmdFlush {
		return 0
	}
	end := req.offset + uint64(req.length)
	if end < req.offset || end > s.size {
		if req.typ == cmdWrite || req.typ == cmdWriteZeroes {
			return errNoSpc
		}
		return errInval
	}
	if req.typ == cmdRead && req.length > s.maxPayload {
		return errInval
	}
	if m := uint64(s.minBlock); req.offset%m != 0 || uint64(req.length)%m != 0 {
		return errInval
	}
	return 0
}

func (s *session) exec(ctx context.Context, req request, payload []byte) {
	off, n := int64(req.offset), int64(req.length)
	fua := req.flags&cmdFlagFUA != 0
	var err error
	switch req.typ {
	case cmdRead:
		buf := make([]byte, n)
		if n > 0 {
			err = s.be.ReadAt(ctx, buf, off)
		}
		if err == nil {
			s.replyRead(req, buf)
			return
		}
	case cmdWrite:
		if n > 0 || fua {
			err = s.be.WriteAt(ctx, payload, off, fua)
		}
	case cmdFlush:
		err = s.be.Flush(ctx)
	case cmdBlockStatus:
		if err = s.blockStatus(ctx, req); err == nil {
			return
		}
	case cmdTrim:
		if n > 0 {
			err = s.be.Trim(ctx, off, n)
		}
		if err == nil && fua {
			err = s.be.Flush(ctx)
		}
	case cmdWriteZeroes:
		if n > 0 {
			err = s.be.WriteZeroes(ctx, off, n, req.flags&cmdFlagNoHole != 0)
		}
		if err == nil && fua {
			err = s.be.Flush(ctx)
		}
	}
	if err != nil {
		s.log.Warn("nbd request failed", "cmd", cmdName(req.typ), "offset", off, "length", n, "err", err)
		s.replyErr(req, errnoOf(err), err.Error())
		return
	}
	s.replyOK(req)
}

func simpleHeader(errno uint32, cookie uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:4], magicSimple)
	binary.BigEndian.PutUint32(b[4:8], errno)
	binary.BigEndian.PutUint64(b[8:16], cookie)
	return b
}

func chunkHeader(flags, typ uint16, cookie uint64, length uint32) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint32(b[0:4], magicStructure)
	binary.BigEndian.PutUint16(b[4:6], flags)
	binary.BigEndian.PutUint16(b[6:8], typ)
	binary.BigEndian.PutUint64(b[8:16], cookie)
	binary.BigEndian.PutUint32(b[16:20], length)
	return b
}

func (s *session) replyOK(req request) { s.send(simpleHeader(0, req.cookie)) }

func (s *session) replyRead(req request, data []byte) {
	if !s.structured {
		s.send(simpleHeader(0, req.cookie), data)
		return
	}
	if len(data) == 0 {
		s.send(chunkHeader(replyFlagDone, replyTypeNone, req.cookie, 0))
		return
	}
	h := chunkHeader(replyFlagDone, replyTypeOffsetData, req.cookie, uint32(8+len(data)))
	s.send(binary.BigEndian.AppendUint64(h, req.offset), data)
}

// replyErr answers with an error; with structured replies it carries a
// message for the client's user (and must, for a READ).
func (s *session) replyErr(req request, errno uint32, msg string) {
	if !s.structured {
		s.send(simpleHeader(errno, req.cookie))
		return
	}
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	h := chunkHeader(replyFlagDone, replyTypeError, req.cookie, uint32(6+len(msg)))
	h = binary.BigEndian.AppendUint32(h, errno)
	h = binary.BigEndian.AppendUint16(h, uint16(len(msg)))
	s.send(append(h, msg...))
}

// send writes one reply whole. After a failed write the connection is
// useless: it is closed, which also ends run's read.
func (s *session) send(parts ...[]byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr != nil {
		return
	}
	bufs := net.Buffers(parts)
	if _, err := bufs.WriteTo(s.w); err != nil {
		s.werr = err
		s.log.Info("nbd reply failed", "err", err)
		if s.onWriteError != nil {
			s.onWriteError()
		}
	}
}
