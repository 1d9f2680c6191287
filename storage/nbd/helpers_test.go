package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// testServer is a server with its listeners and the exports it serves.
type testServer struct {
	srv    *Server
	sock   string // unix socket path
	tcp    string // host:port
	dir    string
	served chan error
}

// startServer serves exports on a unix socket and on loopback TCP.
func startServer(t testing.TB, cfg Config, exports ...*Export) *testServer {
	t.Helper()
	byName := map[string]*Export{}
	for _, e := range exports {
		byName[e.Name] = e
	}
	cfg.Lookup = func(_ context.Context, name string) (*Export, error) {
		if e, ok := byName[name]; ok {
			return e, nil
		}
		return nil, ErrNoExport
	}
	cfg.List = func(context.Context) []string {
		var names []string
		for n := range byName {
			names = append(names, n)
		}
		sort.Strings(names)
		return names
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short (108 bytes): not under t.TempDir's long names.
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, sock: filepath.Join(dir, "nbd.sock"), dir: dir, served: make(chan error, 2)}
	ul, err := net.Listen("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.tcp = tl.Addr().String()
	go func() { ts.served <- srv.Serve(ul) }()
	go func() { ts.served <- srv.Serve(tl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range 2 {
			if err := <-ts.served; !errors.Is(err, ErrServerClosed) {
				t.Errorf("serve returned %v", err)
			}
		}
		os.RemoveAll(dir)
	})
	return ts
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// testClient is a small NBD client for the tests: it negotiates with
// NBD_OPT_GO and sends requests whose simple replies a reader decodes.
type testClient struct {
	t     testing.TB
	nc    net.Conn
	r     *bufio.Reader
	wmu   sync.Mutex
	size  uint64
	flags uint16
}

func dialTest(t testing.TB, network, addr, name string, tlsCfg *tls.Config) *testClient {
	t.Helper()
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &testClient{t: t, nc: nc, r: bufio.NewReader(nc)}
	if err := c.handshake(name, tlsCfg); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *testClient) handshake(name string, tlsCfg *tls.Config) error {
	var hello [18]byte
	if _, err := io.ReadFull(c.r, hello[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(hello[:8]) != magicNBD || binary.BigEndian.Uint64(hello[8:16]) != magicIHaveOpt {
		return fmt.Errorf("bad greeting %x", hello)
	}
	if _, err := c.nc.Write(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes)); err != nil {
		return err
	}
	if tlsCfg != nil {
		if typ, _, err := c.option(optStartTLS, nil); err != nil || typ != repAck {
			return fmt.Errorf("starttls: reply %#x, %v", typ, err)
		}
		tc := tls.Client(c.nc, tlsCfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		c.nc, c.r = tc, bufio.NewReader(tc)
	}
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0)
	c.sendOption(optGo, data)
	for {
		typ, body, err := c.readOptionReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repAck:
			return nil
		case typ == repInfo && binary.BigEndian.Uint16(body) == infoExport:
			c.size = binary.BigEndian.Uint64(body[2:10])
			c.flags = binary.BigEndian.Uint16(body[10:12])
		case typ&repErrBit != 0:
			return fmt.Errorf("GO refused: %#x %s", typ, body)
		}
	}
}

func (c *testClient) sendOption(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	if _, err := c.nc.Write(append(b, data...)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testClient) option(opt uint32, data []byte) (uint32, []byte, error) {
	c.sendOption(opt, data)
	return c.readOptionReply(opt)
}

func (c *testClient) readOptionReply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint64(h[:8]) != magicOptReply || binary.BigEndian.Uint32(h[8:12]) != opt {
		return 0, nil, fmt.Errorf("bad option reply %x", h)
	}
	body := make([]byte, binary.BigEndian.Uint32(h[16:20]))
	_, err := io.ReadFull(c.r, body)
	return binary.BigEndian.Uint32(h[12:16]), body, err
}

func (c *testClient) send(req request, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	bufs := net.Buffers{req.encode(), payload}
	_, err := bufs.WriteTo(c.nc)
	return err
}

// reply reads one simple reply; readLen says how many data bytes follow a
// successful reply to a given cookie.
func (c *testClient) reply(readLen func(cookie uint64) int) (cookie uint64, errno uint32, data []byte, err error) {
	var h [16]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, 0, nil, err
	}
	if m := binary.BigEndian.Uint32(h[:4]); m != magicSimple {
		return 0, 0, nil, fmt.Errorf("bad reply magic %#x", m)
	}
	errno = binary.BigEndian.Uint32(h[4:8])
	cookie = binary.BigEndian.Uint64(h[8:16])
	if errno == 0 && readLen != nil {
		if n := readLen(cookie); n > 0 {
			data = make([]byte, n)
			_, err = io.ReadFull(c.r, data)
		}
	}
	return cookie, errno, data, err
}

// do sends one request and waits for its reply.
func (c *testClient) do(req request, payload []byte) (uint32, []byte) {
	c.t.Helper()
	if err := c.send(req, payload); err != nil {
		c.t.Fatal(err)
	}
	n := 0
	if req.typ == cmdRead {
		n = int(req.length)
	}
	cookie, errno, data, err := c.reply(func(uint64) int { return n })
	if err != nil {
		c.t.Fatal(err)
	}
	if cookie != req.cookie {
		c.t.Fatalf("reply to cookie %d, want %d", cookie, req.cookie)
	}
	return errno, data
}

// newFileExport makes a backing file of size bytes, filled by fill.
func newFileExport(t testing.TB, name string, size int64, readOnly bool, fill func([]byte)) (*Export, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".img")
	data := make([]byte, size)
	if fill != nil {
		fill(data)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	be, err := OpenFile(path, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return &Export{Name: name, Description: "test export " + name, Backend: be, ReadOnly: readOnly, MultiConn: true}, path
}

// pattern fills b with bytes that differ at every offset and with seed.
func pattern(seed uint64) func([]byte) {
	return func(b []byte) {
		x := seed*0x9e3779b97f4a7c15 + 1
		for i := range b {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			b[i] = byte(x)
		}
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
