package nbd

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errAbort ends a handshake the client gave up on (NBD_OPT_ABORT).
var errAbort = errors.New("client aborted the handshake")

// handshake runs the fixed newstyle negotiation on one connection.
type handshake struct {
	cfg *Config
	r   *bufio.Reader
	w   io.Writer
	// upgrade starts TLS on the connection and returns its new reader and
	// writer; nil where TLS cannot be offered.
	upgrade func() (io.Reader, io.Writer, error)
	// peer returns the client's verified certificates once TLS is up.
	peer func() []*x509.Certificate

	tlsActive  bool
	structured bool
	noZeroes   bool
	// base:allocation was selected by the last SET_META_CONTEXT, for
	// metaExport.
	metaSelected bool
	metaExport   string
}

// negotiated is what the transmission phase needs from the handshake.
type negotiated struct {
	export      *Export
	structured  bool
	blockStatus bool
}

func (h *handshake) tlsRequired() bool { return h.cfg.TLS != nil && !h.tlsActive }

// run negotiates until the client picks an export (GO or EXPORT_NAME),
// aborts, or breaks the protocol; any error means close the connection.
func (h *handshake) run(ctx context.Context) (negotiated, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:8], magicNBD)
	binary.BigEndian.PutUint64(hello[8:16], magicIHaveOpt)
	binary.BigEndian.PutUint16(hello[16:18], flagFixedNewstyle|flagNoZeroes)
	if _, err := h.w.Write(hello[:]); err != nil {
		return negotiated{}, fmt.Errorf("send greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(h.r, cf[:]); err != nil {
		return negotiated{}, fmt.Errorf("read client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^clientFlagsKnown != 0 {
		return negotiated{}, fmt.Errorf("unknown client flags %#x", flags)
	}
	fixed := flags&flagFixedNewstyle != 0
	h.noZeroes = flags&flagNoZeroes != 0
	for {
		var oh [16]byte
		if _, err := io.ReadFull(h.r, oh[:]); err != nil {
			return negotiated{}, fmt.Errorf("read option: %w", err)
		}
		if m := binary.BigEndian.Uint64(oh[0:8]); m != magicIHaveOpt {
			return negotiated{}, fmt.Errorf("bad option magic %#x", m)
		}
		opt := binary.BigEndian.Uint32(oh[8:12])
		n := binary.BigEndian.Uint32(oh[12:16])
		if n > maxOptionLen {
			return negotiated{}, fmt.Errorf("option %d with %d bytes of data", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(h.r, data); err != nil {
			return negotiated{}, fmt.Errorf("read option %d data: %w", opt, err)
		}
		if !fixed && opt != optExportName {
			// Old-style clients cannot read option replies.
			return negotiated{}, fmt.Errorf("option %d from a client without fixed newstyle", opt)
		}
		if h.tlsRequired() && opt != optStartTLS && opt != optAbort {
			if opt == optExportName {
				return negotiated{}, errors.New("export chosen before TLS")
			}
			if err := h.reply(opt, repErrTLSReqd, []byte("TLS is required")); err != nil {
				return negotiated{}, err
			}
			continue
		}
		done, err := h.option(ctx, opt, data)
		if err != nil || done.export != nil {
			return done, err
		}
	}
}

// option answers one option; a non-nil export ends the handshake.
func (h *handshake) option(ctx context.Context, opt uint32, data []byte) (negotiated, error) {
	var none negotiated
	switch opt {
	case optExportName:
		exp, err := h.lookup(ctx, string(data))
		if err != nil {
			return none, fmt.Errorf("export %q: %w", data, err)
		}
		b := make([]byte, 10, 10+124)
		binary.BigEndian.PutUint64(b[0:8], uint64(exp.Backend.Size()))
		binary.BigEndian.PutUint16(b[8:10], h.transmissionFlags(exp))
		if !h.noZeroes {
			b = append(b, make([]byte, 124)...)
		}
		if _, err := h.w.Write(b); err != nil {
			return none, err
		}
		return h.chosen(exp, string(data)), nil
	case optAbort:
		h.reply(opt, repAck, nil) // the client may already be gone
		return none, errAbort
	case optList:
		if len(data) != 0 {
			return none, h.reply(opt, repErrInvalid, []byte("LIST takes no data"))
		}
		var names []string
		if h.cfg.List != nil {
			names = h.cfg.List(ctx)
		}
		for _, name := range names {
			b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
			if err := h.reply(opt, repServer, append(b, name...)); err != nil {
				return none, err
			}
		}
		return none, h.reply(opt, repAck, nil)
	case optStartTLS:
		switch {
		case len(data) != 0:
			return none, h.reply(opt, repErrInvalid, []byte("STARTTLS takes no data"))
		case h.cfg.TLS == nil || h.upgrade == nil:
			return none, h.reply(opt, repErrUnsup, []byte("TLS is not configured"))
		case h.tlsActive:
			return none, h.reply(opt, repErrInvalid, []byte("TLS is already active"))
		}
		if err := h.reply(opt, repAck, nil); err != nil {
			return none, err
		}
		if h.r.Buffered() != 0 {
			return none, errors.New("data sent before the TLS handshake")
		}
		r, w, err := h.upgrade()
		if err != nil {
			return none, fmt.Errorf("tls handshake: %w", err)
		}
		h.r.Reset(r)
		h.w = w
		h.tlsActive = true
		// proto.md: nothing negotiated before STARTTLS survives it.
		h.structured, h.metaSelected, h.metaExport = false, false, ""
		return none, nil
	case optInfo, optGo:
		return h.infoGo(ctx, opt, data)
	case optListMetaContext, optSetMetaContext:
		return none, h.metaContext(ctx, opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return none, h.reply(opt, repErrInvalid, []byte("STRUCTURED_REPLY takes no data"))
		}
		h.structured = true
		return none, h.reply(opt, repAck, nil)
	}
	return none, h.reply(opt, repErrUnsup, []byte("option not supported"))
}

func (h *handshake) infoGo(ctx context.Context, opt uint32, data []byte) (negotiated, error) {
	var none negotiated
	if len(data) < 6 {
		return none, h.reply(opt, repErrInvalid, []byte("short INFO/GO request"))
	}
	nameLen := binary.BigEndian.Uint32(data[0:4])
	if uint64(nameLen) > uint64(len(data)-6) {
		return none, h.reply(opt, repErrInvalid, []byte("name longer than the option"))
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(rest[0:2]))
	if len(rest) != 2+2*nreq {
		return none, h.reply(opt, repErrInvalid, []byte("information requests do not match the option length"))
	}
	if nameLen > maxNameLen {
		return none, h.reply(opt, repErrTooBig, []byte("export name too long"))
	}
	wantName, wantDesc, wantBlock := false, false, false
	for i := range nreq {
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		case infoBlockSize:
			wantBlock = true
		}
	}
	exp, err := h.lookup(ctx, name)
	if errors.Is(err, ErrNoExport) {
		return none, h.reply(opt, repErrUnknown, []byte("no such export"))
	}
	if err != nil {
		return none, h.reply(opt, repErrUnknown, []byte(err.Error()))
	}
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, uint64(exp.Backend.Size()))
	info = binary.BigEndian.AppendUint16(info, h.transmissionFlags(exp))
	if err := h.reply(opt, repInfo, info); err != nil {
		return none, err
	}
	if wantName {
		if err := h.reply(opt, repInfo, append(binary.BigEndian.AppendUint16(nil, infoName), exp.Name...)); err != nil {
			return none, err
		}
	}
	if wantDesc && exp.Description != "" {
		if err := h.reply(opt, repInfo, append(binary.BigEndian.AppendUint16(nil, infoDescription), exp.Description...)); err != nil {
			return none, err
		}
	}
	// Block sizes are sent even when not asked for: clients ignore them
	// then, and proto.md permits it.
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, exp.minBlock())
	bs = binary.BigEndian.AppendUint32(bs, exp.preferredBlock())
	bs = binary.BigEndian.AppendUint32(bs, h.cfg.MaxPayload)
	if err := h.reply(opt, repInfo, bs); err != nil {
		return none, err
	}
	if exp.minBlock() > 1 && !wantBlock {
		return none, h.reply(opt, repErrBlockSizeReq, []byte("this export needs aligned requests"))
	}
	if err := h.reply(opt, repAck, nil); err != nil {
		return none, err
	}
	if opt == optGo {
		return h.chosen(exp, name), nil
	}
	return none, nil
}

// chosen is the outcome of a handshake that picked exp by name.
func (h *handshake) chosen(exp *Export, name string) negotiated {
	_, bs := exp.Backend.(BlockStatuser)
	return negotiated{
		export:      exp,
		structured:  h.structured,
		blockStatus: bs && h.structured && h.metaSelected && h.metaExport == name,
	}
}

// lookup resolves a name and checks what the transmission phase relies on.
func (h *handshake) lookup(ctx context.Context, name string) (*Export, error) {
	if h.tlsActive && h.peer != nil {
		ctx = context.WithValue(ctx, peerKey{}, h.peer())
	}
	exp, err := h.cfg.Lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if exp == nil || exp.Backend == nil {
		return nil, ErrNoExport
	}
	if size := exp.Backend.Size(); size < 0 || size%int64(exp.minBlock()) != 0 {
		return nil, fmt.Errorf("export size %d is not a multiple of its block size %d", size, exp.minBlock())
	}
	return exp, nil
}

func (h *handshake) transmissionFlags(exp *Export) uint16 {
	f := uint16(tfHasFlags | tfSendFlush)
	if exp.ReadOnly {
		f |= tfReadOnly
	} else {
		f |= tfSendFUA | tfSendTrim | tfSendWriteZeroes
	}
	if exp.MultiConn {
		f |= tfCanMultiConn
	}
	return f
}

// reply sends one option reply in a single write.
func (h *handshake) reply(opt, typ uint32, data []byte) error {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:8], magicOptReply)
	binary.BigEndian.PutUint32(b[8:12], opt)
	binary.BigEndian.PutUint32(b[12:16], typ)
	binary.BigEndian.PutUint32(b[16:20], uint32(len(data)))
	if _, err := h.w.Write(append(b, data...)); err != nil {
		return fmt.Errorf("option reply: %w", err)
	}
	return nil
}

type peerKey struct{}

// PeerCertificates are the client's verified certificates, chain first, as
// Lookup sees them on a connection that upgraded to TLS (nil otherwise):
// an export may be for one client's certificate alone.
func PeerCertificates(ctx context.Context) []*x509.Certificate {
	c, _ := ctx.Value(peerKey{}).([]*x509.Certificate)
	return c
}
