package tlsbatch

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// maxPlaintext is the most one TLS record carries.
const maxPlaintext = 16 << 10

// batch is the plaintext one batch of writes carries: a decode block, a
// shard copy buffer.
const batch = 256 << 10

// bufferSize holds one batch's records: sixteen of 16 KiB, each with its
// header, content type and AEAD tag, with room to spare.
const bufferSize = batch + (batch/maxPlaintext+1)*256

// readSize is what one read takes from the socket at most: four records.
// Reads gain less from batching than writes (a loopback read is the cheaper
// half), and every connection with bytes in hand holds one of these.
const readSize = 4 * (maxPlaintext + 256)

var (
	buffers     = sync.Pool{New: func() any { b := make([]byte, 0, bufferSize); return &b }}
	readBuffers = sync.Pool{New: func() any { b := make([]byte, readSize); return &b }}
)

// Conn is a TLS connection whose large Writes go out in batches of records.
// Everything else is *tls.Conn's.
type Conn struct {
	*tls.Conn
	raw *rawConn
}

// Server returns the server side of TLS over c, as tls.Server does.
func Server(c net.Conn, cfg *tls.Config) *Conn {
	raw := &rawConn{Conn: c}
	return &Conn{Conn: tls.Server(raw, cfg), raw: raw}
}

// Client returns the client side of TLS over c, as tls.Client does.
func Client(c net.Conn, cfg *tls.Config) *Conn {
	raw := &rawConn{Conn: c}
	return &Conn{Conn: tls.Client(raw, cfg), raw: raw}
}

// Write encrypts p and sends it in as few system calls as the buffer allows.
// A p that fits in one record goes straight through: there is nothing to
// batch, and no buffer is taken for it.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) <= maxPlaintext {
		return c.Conn.Write(p)
	}
	// The handshake must not be held back: it waits for the peer's answer.
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	c.raw.hold()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.release(); ferr != nil && err == nil {
		// The records are lost with the connection; crypto/tls sees the
		// same error on its next write.
		return 0, ferr
	}
	return n, err
}

// ReadFrom copies r to the connection in writes as large as a batch. It is
// how net/http sends a request body (through io.Copy on the connection),
// which would otherwise go out in io.Copy's 32 KiB pieces.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if wt, ok := r.(io.WriterTo); ok { // a bytes.Reader: one Write, no buffer
		return wt.WriteTo(c)
	}
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{c}, r, (*bp)[:batch])
}

// NetConn returns the connection under TLS, as (*tls.Conn).NetConn does.
func (c *Conn) NetConn() net.Conn { return c.raw.Conn }

// rawConn is the socket under TLS. While at least one Write of Conn is in
// progress, what crypto/tls writes is gathered and sent when the buffer is
// full or the last such Write ends; otherwise it goes straight through (the
// handshake, alerts, Raft's traffic on a connection handed on as *tls.Conn).
//
// Reads are batched too: crypto/tls asks for about one record at a time, so
// a read takes whatever has arrived, up to a buffer, and hands it out from
// there. The buffer goes back to the pool as soon as it is drained, so an
// idle connection holds none.
type rawConn struct {
	net.Conn
	mu      sync.Mutex
	holders int
	buf     *[]byte
	err     error // a failed send poisons the connection

	// Only crypto/tls reads, one read at a time: no lock.
	rbuf *[]byte
	rest []byte // received, not yet read
}

func (r *rawConn) Read(p []byte) (int, error) {
	if len(r.rest) == 0 {
		if len(p) >= readSize {
			return r.Conn.Read(p)
		}
		r.rbuf = readBuffers.Get().(*[]byte)
		n, err := r.Conn.Read((*r.rbuf)[:cap(*r.rbuf)])
		if n == 0 {
			r.drop()
			return 0, err
		}
		// A read that returns bytes and an error gets the error again next
		// time; the bytes come first.
		r.rest = (*r.rbuf)[:n]
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	if len(r.rest) == 0 {
		r.drop()
	}
	return n, nil
}

func (r *rawConn) drop() {
	r.rest = nil
	if r.rbuf != nil {
		readBuffers.Put(r.rbuf)
		r.rbuf = nil
	}
}

func (r *rawConn) hold() {
	r.mu.Lock()
	r.holders++
	r.mu.Unlock()
}

func (r *rawConn) release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holders--
	if r.holders > 0 {
		return r.err
	}
	err := r.flushLocked()
	if r.buf != nil {
		*r.buf = (*r.buf)[:0]
		buffers.Put(r.buf)
		r.buf = nil
	}
	return err
}

func (r *rawConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	if r.holders == 0 {
		return r.sendLocked(p)
	}
	if r.buf == nil {
		r.buf = buffers.Get().(*[]byte)
	}
	if len(*r.buf)+len(p) > cap(*r.buf) {
		if err := r.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*r.buf) {
			return r.sendLocked(p)
		}
	}
	*r.buf = append(*r.buf, p...)
	return len(p), nil
}

func (r *rawConn) flushLocked() error {
	if r.err != nil || r.buf == nil || len(*r.buf) == 0 {
		return r.err
	}
	_, err := r.sendLocked(*r.buf)
	*r.buf = (*r.buf)[:0]
	return err
}

func (r *rawConn) sendLocked(p []byte) (int, error) {
	n, err := r.Conn.Write(p)
	if err != nil {
		r.err = err
	}
	return n, err
}

// listener hands out tlsbatch server connections that have completed their
// handshake, so that net/http sees their TLS state (it reads r.TLS from any
// connection with a ConnectionState method, but before the first read, and
// so only a finished handshake shows the client's certificate).
type listener struct {
	inner   net.Listener
	cfg     *tls.Config
	timeout time.Duration
	log     *slog.Logger
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	err     error // what Accept returns once done is closed
}

// NewListener accepts connections from inner and returns them as server
// Conns once their handshake is complete. A client that does not finish its
// handshake within timeout is dropped; it holds up nobody else. Failed
// handshakes are logged to log at debug level (log may be nil).
func NewListener(inner net.Listener, cfg *tls.Config, timeout time.Duration, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &listener{inner: inner, cfg: cfg, timeout: timeout, log: log, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.accept()
	return l
}

func (l *listener) accept() {
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			// Out of file descriptors and the like: wait and go on, as
			// http.Server does.
			if ne, ok := err.(interface{ Temporary() bool }); ok && ne.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			l.closeWith(err)
			return
		}
		backoff = 0
		go l.handshake(c)
	}
}

func (l *listener) handshake(c net.Conn) {
	tc := Server(c, l.cfg)
	_ = c.SetDeadline(time.Now().Add(l.timeout))
	if err := tc.Handshake(); err != nil {
		l.log.Debug("TLS handshake failed", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.conns <- tc:
	case <-l.done:
		c.Close()
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *listener) Close() error { return l.closeWith(net.ErrClosed) }

func (l *listener) closeWith(reason error) error {
	var err error
	l.once.Do(func() {
		l.err = reason // before done is closed: Accept reads it after
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

func (l *listener) Addr() net.Addr { return l.inner.Addr() }

// Dial returns a DialTLSContext for http.Transport: TCP with dial (a
// net.Dialer's DialContext, say), then a TLS handshake with cfg. A cfg
// without ServerName verifies the dialled host, as the transport itself
// would.
func Dial(dial func(ctx context.Context, network, addr string) (net.Conn, error), cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := cfg
		if cc.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				c.Close()
				return nil, err
			}
			cc = cfg.Clone()
			cc.ServerName = host
		}
		tc := Client(c, cc)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}
}
