package volume

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Dial opens the replica protocol to replicaID on the node at addr (its
// cluster port) with the node's RPC client (mutual TLS): an HTTP Upgrade to
// "cairn-volume" on RPCPrefix+"stream/"+replicaID, then the binary protocol
// of wire.go. The Target multiplexes concurrent calls on the connection. A
// broken connection fails every pending and later call with ErrConnLost;
// the caller dials again. ctx bounds the dial only. client must have no
// Timeout (it would cut the upgraded connection).
func Dial(ctx context.Context, client *http.Client, addr, replicaID string) (Target, error) {
	return dial(ctx, client, addr, replicaID, "")
}

// DialReader is Dial for reads alone (a snapshot a volume reads through
// to): the stream ends no other, and the replica refuses it any change.
func DialReader(ctx context.Context, client *http.Client, addr, replicaID string) (Target, error) {
	return dial(ctx, client, addr, replicaID, "?access=read")
}

func dial(ctx context.Context, client *http.Client, addr, replicaID, query string) (Target, error) {
	if !validReplicaID(replicaID) {
		return nil, fmt.Errorf("dial replica %q: invalid id", replicaID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"https://"+addr+RPCPrefix+"stream/"+url.PathEscape(replicaID)+query, nil)
	if err != nil {
		return nil, fmt.Errorf("dial replica %s: %w", replicaID, err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", wireUpgrade)
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dial replica %s at %s: %w", replicaID, addr, err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		defer res.Body.Close()
		var e wireError
		if err := decodeHostError(res, &e); err == nil {
			return nil, fmt.Errorf("dial replica %s at %s: %w", replicaID, addr, e.err())
		}
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return nil, fmt.Errorf("dial replica %s at %s: %s: %s", replicaID, addr, res.Status, strings.TrimSpace(string(msg)))
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		return nil, fmt.Errorf("dial replica %s at %s: connection cannot be upgraded", replicaID, addr)
	}
	return newRemote(rwc, replicaID+" at "+addr), nil
}

// remoteTarget is a Target across the replica protocol. Callers hand frames to
// one writer goroutine (so a caller never blocks on the socket and a
// cancelled context returns at once); one reader goroutine matches
// replies to pending calls by handle.
type remoteTarget struct {
	name  string
	rwc   io.ReadWriteCloser
	sendq chan *wireFrame
	done  chan struct{} // closed when the connection has failed

	mu      sync.Mutex
	pending map[uint64]*wireCall
	next    uint64
	err     error        // why the connection failed; set once
	size    atomic.Int64 // the replica's size as last reported (bounds Extents); 0 unknown
}

// wireFrame is one request on its way to the writer.
type wireFrame struct {
	hdr     [reqHeaderSize]byte
	payload *[]byte
}

// wireCall is one request waiting for its reply.
type wireCall struct {
	op, flags uint16
	want      int // the exact reply length of a read, else -1
	abandoned bool
	res       chan wireResult // cap 1: the reader never blocks on it
}

type wireResult struct {
	code    uint32
	payload *[]byte
	err     error // the connection's failure
}

func newRemote(rwc io.ReadWriteCloser, name string) *remoteTarget {
	c := &remoteTarget{
		name:    name,
		rwc:     rwc,
		sendq:   make(chan *wireFrame, 2*wireMaxInFlight),
		done:    make(chan struct{}),
		pending: make(map[uint64]*wireCall),
	}
	go c.writeLoop()
	go c.readLoop()
	return c
}

// fail breaks the connection and every call on it.
func (c *remoteTarget) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = fmt.Errorf("replica %s: %w: %w", c.name, ErrConnLost, err)
	for h, cl := range c.pending {
		delete(c.pending, h)
		cl.res <- wireResult{err: c.err}
	}
	close(c.done)
	c.mu.Unlock()
	c.rwc.Close()
}

func (c *remoteTarget) writeLoop() {
	w := bufio.NewWriterSize(c.rwc, 256<<10)
	for {
		var f *wireFrame
		select {
		case f = <-c.sendq:
		case <-c.done:
			return
		}
		_, err := w.Write(f.hdr[:])
		if err == nil && f.payload != nil {
			_, err = w.Write(*f.payload)
		}
		putPayload(f.payload)
		// Flush once nothing more is queued: under load one flush (one
		// batch of TLS records) carries many requests.
		if err == nil && len(c.sendq) == 0 {
			// Give callers that are about to send a moment to join.
			runtime.Gosched()
			if len(c.sendq) == 0 {
				err = w.Flush()
			}
		}
		if err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *remoteTarget) readLoop() {
	r := bufio.NewReaderSize(c.rwc, 64<<10)
	var hdr [repHeaderSize]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			c.fail(err)
			return
		}
		rep, err := decodeReply(hdr[:])
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		cl := c.pending[rep.handle]
		c.mu.Unlock()
		if cl == nil {
			c.fail(fmt.Errorf("%w: reply to unknown handle %d", errWireProtocol, rep.handle))
			return
		}
		if err := c.checkLen(cl, rep); err != nil {
			c.fail(err)
			return
		}
		var p *[]byte
		if rep.length > 0 {
			p = getPayload(int(rep.length))
			if _, err := io.ReadFull(r, *p); err != nil {
				putPayload(p)
				c.fail(err)
				return
			}
		}
		c.mu.Lock()
		if c.pending[rep.handle] != cl || cl.abandoned {
			// Failed meanwhile, or its caller has gone.
			putPayload(p)
		} else {
			cl.res <- wireResult{code: rep.code, payload: p}
		}
		delete(c.pending, rep.handle)
		c.mu.Unlock()
	}
}

// checkLen bounds a reply's payload by what its request can get back.
func (c *remoteTarget) checkLen(cl *wireCall, rep wireReply) error {
	n := int64(rep.length)
	var ok bool
	switch {
	case rep.code != repOK:
		ok = n <= wireMaxMessage
	case cl.op == opRead, cl.op == opReadLayer:
		ok = n == int64(cl.want)
	case cl.op == opFence:
		ok = n == 24
	case cl.op == opReadExtent && cl.flags&reqPresence != 0:
		ok = n >= wireExtentPresence && n <= wireExtentPresence+ExtentSize
	case cl.op == opReadExtent:
		ok = n <= ExtentSize
	case cl.op == opExtents:
		limit := int64(wireMaxVolume)
		if s := c.size.Load(); s > 0 {
			limit = s
		}
		ok = n%wireExtentInfo == 0 && n <= wireExtentInfo*((limit+ExtentSize-1)/ExtentSize)
	default:
		ok = n == 0
	}
	if !ok {
		return fmt.Errorf("%w: reply of %d bytes to op %d (code %d)", errWireProtocol, n, cl.op, rep.code)
	}
	return nil
}

// do sends one request with payload (copied) and waits for its reply. The
// caller owns the returned payload buffer.
func (c *remoteTarget) do(ctx context.Context, req wireRequest, payload []byte, want int) (*[]byte, error) {
	return c.doWith(ctx, req, nil, payload, want)
}

// doWith is do with the payload in two parts, head then body.
func (c *remoteTarget) doWith(ctx context.Context, req wireRequest, head, payload []byte, want int) (*[]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := &wireFrame{}
	if n := len(head) + len(payload); n > 0 {
		f.payload = getPayload(n)
		copy((*f.payload)[copy(*f.payload, head):], payload)
	}
	cl := &wireCall{op: req.op, flags: req.flags, want: want, res: make(chan wireResult, 1)}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		putPayload(f.payload)
		return nil, c.err
	}
	c.next++
	req.handle = c.next
	c.pending[req.handle] = cl
	c.mu.Unlock()
	req.encode(&f.hdr)

	select {
	case c.sendq <- f:
	case <-c.done:
		putPayload(f.payload)
		return nil, c.connErr()
	case <-ctx.Done():
		putPayload(f.payload)
		c.mu.Lock()
		delete(c.pending, req.handle) // never sent
		c.mu.Unlock()
		return nil, ctx.Err()
	}

	var res wireResult
	select {
	case res = <-cl.res:
	case <-ctx.Done():
		c.mu.Lock()
		if _, ok := c.pending[req.handle]; ok {
			cl.abandoned = true // the reader drops the reply
			c.mu.Unlock()
			return nil, ctx.Err()
		}
		c.mu.Unlock()
		res = <-cl.res // delivered already
	}
	if res.err != nil {
		return nil, res.err
	}
	if res.code != repOK {
		var p []byte
		if res.payload != nil {
			p = *res.payload
		}
		e, err := decodeErrorInfo(res.code, p)
		putPayload(res.payload)
		if err != nil {
			c.fail(err)
			return nil, c.connErr()
		}
		return nil, fmt.Errorf("replica %s: %w", c.name, e.err())
	}
	return res.payload, nil
}

func (c *remoteTarget) connErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *remoteTarget) Fence(ctx context.Context, epoch uint64) (ReplicaState, error) {
	p, err := c.do(ctx, wireRequest{op: opFence, epoch: epoch}, nil, -1)
	if err != nil {
		return ReplicaState{}, err
	}
	defer putPayload(p)
	b := *p
	st := ReplicaState{
		Size:   int64(binary.BigEndian.Uint64(b[0:])),
		Epoch:  binary.BigEndian.Uint64(b[8:]),
		MaxGen: binary.BigEndian.Uint64(b[16:]),
	}
	c.size.Store(max(st.Size, 0))
	return st, nil
}

func (c *remoteTarget) WriteAt(ctx context.Context, epoch, gen uint64, p []byte, off int64, fua bool) error {
	if len(p) > wireMaxPayload || off < 0 || off > maxReplicaSize {
		return fmt.Errorf("replica %s: write of %d bytes at %d: too large", c.name, len(p), off)
	}
	var flags uint16
	if fua {
		flags = reqFUA
	}
	_, err := c.do(ctx, wireRequest{op: opWrite, flags: flags, epoch: epoch, gen: gen,
		offset: uint64(off), length: uint64(len(p))}, p, -1)
	return err
}

func (c *remoteTarget) Zero(ctx context.Context, epoch, gen uint64, off, length int64, punch bool) error {
	if off < 0 || length < 0 || off > maxReplicaSize || length > maxReplicaSize {
		return fmt.Errorf("replica %s: zero [%d, +%d): negative", c.name, off, length)
	}
	var flags uint16
	if punch {
		flags = reqPunch
	}
	_, err := c.do(ctx, wireRequest{op: opZero, flags: flags, epoch: epoch, gen: gen,
		offset: uint64(off), length: uint64(length)}, nil, -1)
	return err
}

func (c *remoteTarget) ReadAt(ctx context.Context, p []byte, off int64) error {
	if len(p) > wireMaxPayload || off < 0 || off > maxReplicaSize {
		return fmt.Errorf("replica %s: read of %d bytes at %d: too large", c.name, len(p), off)
	}
	b, err := c.do(ctx, wireRequest{op: opRead, offset: uint64(off), length: uint64(len(p))}, nil, len(p))
	if err != nil {
		return err
	}
	if b != nil {
		copy(p, *b)
		putPayload(b)
	}
	return nil
}

func (c *remoteTarget) Flush(ctx context.Context, epoch uint64) error {
	_, err := c.do(ctx, wireRequest{op: opFlush, epoch: epoch}, nil, -1)
	return err
}

func (c *remoteTarget) Extents(ctx context.Context) ([]ExtentInfo, error) {
	b, err := c.do(ctx, wireRequest{op: opExtents}, nil, -1)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return []ExtentInfo{}, nil
	}
	defer putPayload(b)
	xs := make([]ExtentInfo, len(*b)/wireExtentInfo)
	for i := range xs {
		xs[i].Gen = binary.BigEndian.Uint64((*b)[i*16:])
		xs[i].Digest = binary.BigEndian.Uint64((*b)[i*16+8:])
	}
	return xs, nil
}

func (c *remoteTarget) ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error {
	if len(p) > wireMaxPayload || off < 0 || off > maxReplicaSize {
		return fmt.Errorf("replica %s: read of %d bytes at %d: too large", c.name, len(p), off)
	}
	if int64(len(have))*64 < int64(len(p))/BlockSize {
		return fmt.Errorf("replica %s: read of %d bytes at %d: presence of %d bits: %w", c.name, len(p), off, len(have)*64, syscall.EINVAL)
	}
	b, err := c.do(ctx, wireRequest{op: opReadLayer, offset: uint64(off), length: uint64(len(p))}, nil, len(p)+presenceLen(int64(len(p))))
	if err != nil {
		return err
	}
	clear(have)
	if b != nil {
		copy(p, *b)
		getPresence(have, (*b)[len(p):])
		putPayload(b)
	}
	return nil
}

func (c *remoteTarget) ReadExtent(ctx context.Context, idx int64, p []byte, have Presence) (int, error) {
	if idx < 0 || idx > maxReplicaSize/ExtentSize {
		return 0, fmt.Errorf("replica %s: read extent %d: out of bounds", c.name, idx)
	}
	req := wireRequest{op: opReadExtent, offset: uint64(idx)}
	head := 0
	if have != nil {
		if len(have)*64 < blocksPerExtent {
			return 0, fmt.Errorf("replica %s: read extent %d: presence of %d bits: %w", c.name, idx, len(have)*64, syscall.EINVAL)
		}
		req.flags, head = reqPresence, wireExtentPresence
	}
	b, err := c.do(ctx, req, nil, -1)
	if err != nil {
		return 0, err
	}
	if b == nil {
		return 0, nil
	}
	defer putPayload(b)
	if have != nil {
		getPresence(have, (*b)[:head])
	}
	data := (*b)[head:]
	if len(data) > len(p) {
		return 0, fmt.Errorf("replica %s: read extent %d: %d bytes into a buffer of %d", c.name, idx, len(data), len(p))
	}
	return copy(p, data), nil
}

func (c *remoteTarget) WriteExtent(ctx context.Context, epoch uint64, idx int64, gen uint64, p []byte, have Presence) error {
	if idx < 0 || idx > maxReplicaSize/ExtentSize || len(p) > ExtentSize {
		return fmt.Errorf("replica %s: write extent %d of %d bytes: out of bounds", c.name, idx, len(p))
	}
	req := wireRequest{op: opWriteExtent, epoch: epoch, gen: gen, offset: uint64(idx), length: uint64(len(p))}
	var head []byte
	if have != nil {
		if len(have)*64 < blocksPerExtent {
			return fmt.Errorf("replica %s: write extent %d: presence of %d bits: %w", c.name, idx, len(have)*64, syscall.EINVAL)
		}
		var b [wireExtentPresence]byte
		putPresence(b[:], have)
		head = b[:]
		req.flags, req.length = reqPresence, req.length+wireExtentPresence
	}
	_, err := c.doWith(ctx, req, head, p, -1)
	return err
}

func (c *remoteTarget) Resize(ctx context.Context, epoch uint64, size int64) error {
	if size < 0 || size > maxReplicaSize {
		return fmt.Errorf("replica %s: resize to %d: not in [0, %d]: %w", c.name, size, int64(maxReplicaSize), syscall.EINVAL)
	}
	_, err := c.do(ctx, wireRequest{op: opResize, epoch: epoch, offset: uint64(size)}, nil, -1)
	if err == nil {
		c.size.Store(size)
	}
	return err
}

// Close breaks the connection: pending and later calls fail with
// ErrConnLost.
func (c *remoteTarget) Close() error {
	c.fail(errors.New("closed"))
	return nil
}
