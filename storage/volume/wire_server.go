package volume

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// wireMaxInFlight bounds the requests one connection runs at once, and
// wireMaxInFlightBytes the payloads they hold (written or to be read); beyond
// either the server stops reading, so a client cannot make it hold more.
const (
	wireMaxInFlight      = 64
	wireMaxInFlightBytes = 64 << 20
)

// wireSession serves the replica protocol on one connection for one Target.
type wireSession struct {
	t   Target
	r   *bufio.Reader
	log *slog.Logger
	sem chan struct{}
	wg  sync.WaitGroup

	bmu   sync.Mutex
	bcond *sync.Cond
	bytes int64        // payload bytes held by requests in flight
	size  atomic.Int64 // the replica's size from the last Fence or Resize; 0 unknown

	// stopped is set by the session's owner when it closes the connection:
	// requests read (or buffered) but not yet started are dropped, not
	// run, so once the owner has closed it and waited for serveReplica to
	// return nothing of this connection changes the replica any more.
	stopped *atomic.Bool

	waiting atomic.Int32 // repliers queued for wmu, so the last one flushes
	wmu     sync.Mutex
	w       *bufio.Writer
	werr    error
	closeFn func() // breaks the connection after a write error
}

// serveReplica runs the protocol until the client goes away or breaks it.
// Every request read is finished (and answered when the connection still
// takes it) before it returns. It does not close rw.
func serveReplica(ctx context.Context, t Target, r io.Reader, w io.Writer, closeFn func(), log *slog.Logger) error {
	return serveReplicaStoppable(ctx, t, r, w, closeFn, new(atomic.Bool), log)
}

// serveReplicaStoppable is serveReplica with a stop flag: once stopped is
// set (and the connection closed, so the read loop ends), requests not yet
// started are dropped without a reply; those already running finish
// before it returns. The Host sets it before closing an older stream of a
// replica, and waits for the return, so a request of the old connection
// (a write the writer gave up on) cannot land after the new stream's first
// request.
func serveReplicaStoppable(ctx context.Context, t Target, r io.Reader, w io.Writer, closeFn func(), stopped *atomic.Bool, log *slog.Logger) error {
	s := &wireSession{
		stopped: stopped,
		// The HTTP server's reader (4 KiB) is wrapped: a header read then
		// takes many requests from the socket at once.
		t: t, r: bufio.NewReaderSize(r, 64<<10), log: log,
		sem:     make(chan struct{}, wireMaxInFlight),
		w:       bufio.NewWriterSize(w, 256<<10),
		closeFn: closeFn,
	}
	s.bcond = sync.NewCond(&s.bmu)
	return s.run(ctx)
}

// weight is the payload memory a request holds while it runs. An Extents
// reply is wireExtentInfo bytes per extent, so it counts too: by the
// replica's size when the session knows it, else as the largest replica's
// (1 GiB, more than the budget: it then runs alone). The Target's slice
// of as many bytes is garbage once the reply is encoded.
func (s *wireSession) weight(r *wireRequest) int64 {
	switch r.op {
	case opWrite, opWriteExtent, opRead:
		return int64(r.length)
	case opReadLayer:
		return int64(r.length) + int64(presenceLen(int64(r.length)))
	case opReadExtent:
		return ExtentSize + wireExtentPresence
	case opExtents:
		return wireExtentInfo * ((s.replicaSize() + ExtentSize - 1) / ExtentSize)
	}
	return 0
}

// replicaSize is the replica's size as the session last saw it: the
// Target's own when it tells it (a local replica), else the last Fence or
// Resize reply, else the largest a replica may be.
func (s *wireSession) replicaSize() int64 {
	if sz, ok := s.t.(interface{ Size() int64 }); ok {
		if n := sz.Size(); n > 0 {
			return min(n, maxReplicaSize)
		}
	}
	if n := s.size.Load(); n > 0 {
		return min(n, maxReplicaSize)
	}
	return maxReplicaSize
}

// hold waits until n more payload bytes fit; only the read loop calls it.
func (s *wireSession) hold(n int64) {
	s.bmu.Lock()
	for s.bytes > 0 && s.bytes+n > wireMaxInFlightBytes {
		s.bcond.Wait()
	}
	s.bytes += n
	s.bmu.Unlock()
}

func (s *wireSession) release(n int64) {
	s.bmu.Lock()
	s.bytes -= n
	s.bmu.Unlock()
	s.bcond.Signal()
}

func (s *wireSession) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.wg.Wait()
	var hdr [reqHeaderSize]byte
	for {
		if s.stopped.Load() {
			return nil
		}
		if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%w: truncated request header", errWireProtocol)
			}
			return fmt.Errorf("read request: %w", err)
		}
		req, err := decodeRequest(hdr[:])
		if err != nil {
			return err
		}
		// The slot is taken before a payload is read: a connection holds
		// at most wireMaxInFlight payloads.
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		weight := s.weight(&req)
		s.hold(weight)
		var payload *[]byte
		if n := req.payloadLen(); n > 0 {
			payload = getPayload(n)
			if _, err := io.ReadFull(s.r, *payload); err != nil {
				putPayload(payload)
				s.release(weight)
				<-s.sem
				return fmt.Errorf("%w: truncated payload: %v", errWireProtocol, err)
			}
		}
		if s.stopped.Load() {
			// Read (perhaps from the buffer after the close) but not
			// started: dropped.
			putPayload(payload)
			s.release(weight)
			<-s.sem
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer func() { s.release(weight); <-s.sem; s.wg.Done() }()
			if s.stopped.Load() {
				putPayload(payload)
				return
			}
			s.exec(ctx, req, payload)
		}()
	}
}

func (s *wireSession) exec(ctx context.Context, req wireRequest, payload *[]byte) {
	var p []byte
	if payload != nil {
		p = *payload
		defer putPayload(payload)
	}
	off := int64(req.offset)
	var err error
	var out *[]byte // a pooled reply payload
	var small []byte
	switch req.op {
	case opFence:
		var st ReplicaState
		if st, err = s.t.Fence(ctx, req.epoch); err == nil {
			s.size.Store(max(st.Size, 0))
			small = make([]byte, 24)
			binary.BigEndian.PutUint64(small[0:], uint64(st.Size))
			binary.BigEndian.PutUint64(small[8:], st.Epoch)
			binary.BigEndian.PutUint64(small[16:], st.MaxGen)
		}
	case opWrite:
		err = s.t.WriteAt(ctx, req.epoch, req.gen, p, off, req.flags&reqFUA != 0)
	case opZero:
		err = s.t.Zero(ctx, req.epoch, req.gen, off, int64(req.length), req.flags&reqPunch != 0)
	case opRead:
		out = getPayload(int(req.length))
		if err = s.t.ReadAt(ctx, *out, off); err != nil {
			putPayload(out)
			out = nil
		}
	case opReadLayer:
		n := int64(req.length)
		out = getPayload(int(n) + presenceLen(n))
		have := NewPresence(n / BlockSize)
		if err = s.t.ReadLayer(ctx, (*out)[:n], off, have); err != nil {
			putPayload(out)
			out = nil
		} else {
			putPresence((*out)[n:], have)
		}
	case opFlush:
		err = s.t.Flush(ctx, req.epoch)
	case opExtents:
		var xs []ExtentInfo
		if xs, err = s.t.Extents(ctx); err == nil {
			small = make([]byte, wireExtentInfo*len(xs))
			for i, x := range xs {
				binary.BigEndian.PutUint64(small[i*16:], x.Gen)
				binary.BigEndian.PutUint64(small[i*16+8:], x.Digest)
			}
		}
	case opReadExtent:
		// With presence the reply is presence | bytes, else the bytes.
		var have Presence
		head := 0
		if req.flags&reqPresence != 0 {
			have, head = NewPresence(blocksPerExtent), wireExtentPresence
		}
		out = getPayload(head + ExtentSize)
		var n int
		if n, err = s.t.ReadExtent(ctx, off, (*out)[head:], have); err == nil && (n < 0 || n > ExtentSize) {
			err = fmt.Errorf("read extent %d: length %d", off, n)
		}
		if err != nil {
			putPayload(out)
			out = nil
		} else {
			putPresence((*out)[:head], have)
			*out = (*out)[:head+n]
		}
	case opWriteExtent:
		var have Presence
		if req.flags&reqPresence != 0 {
			if len(p) < wireExtentPresence {
				err = fmt.Errorf("write extent %d: %d bytes, no presence: %w", off, len(p), syscall.EINVAL)
				break
			}
			have = NewPresence(blocksPerExtent)
			getPresence(have, p[:wireExtentPresence])
			p = p[wireExtentPresence:]
		}
		err = s.t.WriteExtent(ctx, req.epoch, off, req.gen, p, have)
	case opResize:
		if err = s.t.Resize(ctx, req.epoch, off); err == nil {
			s.size.Store(off)
		}
	}
	if err != nil {
		e := wireErrorOf(err)
		s.send(wireReply{code: e.Code, handle: req.handle}, e.encode())
		return
	}
	if out != nil {
		s.send(wireReply{handle: req.handle}, *out)
		putPayload(out)
		return
	}
	s.send(wireReply{handle: req.handle}, small)
}

// send writes one reply. Replies gather in the buffered writer while
// others wait for the lock; the last one in line flushes.
func (s *wireSession) send(rep wireReply, payload []byte) {
	rep.length = uint32(len(payload))
	var hdr [repHeaderSize]byte
	rep.encode(&hdr)
	s.waiting.Add(1)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.waiting.Add(-1)
	if s.werr != nil {
		return
	}
	_, err := s.w.Write(hdr[:])
	if err == nil {
		_, err = s.w.Write(payload)
	}
	if err == nil && s.waiting.Load() == 0 {
		// Give replies that are about to be written a moment to join.
		runtime.Gosched()
		if s.waiting.Load() == 0 {
			err = s.w.Flush()
		}
	}
	if err != nil {
		s.werr = err
		s.log.Debug("replica reply", "err", err)
		if s.closeFn != nil {
			s.closeFn()
		}
	}
}
