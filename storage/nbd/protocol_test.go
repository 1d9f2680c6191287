package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// rawConn is a connection on which a test writes whatever bytes it likes.
func rawConn(t *testing.T, ts *testServer) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(nc)
	var hello [18]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil {
		t.Fatal(err)
	}
	return nc, r
}

// expectClosed reads until the server closes the connection, failing if
// it sends more than max bytes first.
func expectClosed(t *testing.T, r io.Reader, max int) {
	t.Helper()
	n, err := io.Copy(io.Discard, r)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("server kept the connection open")
		}
	}
	if n > int64(max) {
		t.Errorf("server sent %d bytes before closing, want at most %d", n, max)
	}
}

func optionBytes(magic uint64, opt, length uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, data...)
}

var fixedFlags = binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes)

func TestMalformedHandshakes(t *testing.T) {
	exp, _ := newFileExport(t, "disk", 1<<20, false, nil)
	ts := startServer(t, DefaultConfig(), exp)
	cases := map[string][]byte{
		"unknown client flags": binary.BigEndian.AppendUint32(nil, 0x80),
		"truncated flags":      {0, 0},
		"wrong option magic":   append(fixedFlags, optionBytes(0x1234, optGo, 0, nil)...),
		"huge option length":   append(fixedFlags, optionBytes(magicIHaveOpt, optGo, 1<<30, nil)...),
		"option length lie":    append(fixedFlags, optionBytes(magicIHaveOpt, optGo, 100, []byte("short"))...),
		"unknown export name":  append(fixedFlags, optionBytes(magicIHaveOpt, optExportName, 4, []byte("nope"))...),
		"not fixed, then LIST": append(binary.BigEndian.AppendUint32(nil, 0), optionBytes(magicIHaveOpt, optList, 0, nil)...),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			nc, r := rawConn(t, ts)
			nc.Write(b)
			nc.(*net.UnixConn).CloseWrite()
			expectClosed(t, r, 0)
		})
	}
	// Refusals that keep the connection usable: each is answered, then a
	// GO still works.
	t.Run("refusals", func(t *testing.T) {
		nc, r := rawConn(t, ts)
		c := &testClient{t: t, nc: nc, r: r}
		nc.Write(fixedFlags)
		goData := func(name string, nameLen uint32, nreq uint16) []byte {
			b := binary.BigEndian.AppendUint32(nil, nameLen)
			b = append(b, name...)
			return binary.BigEndian.AppendUint16(b, nreq)
		}
		for _, tc := range []struct {
			opt  uint32
			data []byte
			want uint32
		}{
			{99, []byte("whatever"), repErrUnsup},
			{optStartTLS, nil, repErrUnsup}, // no TLS configured
			{optList, []byte("x"), repErrInvalid},
			{optStructuredReply, []byte("x"), repErrInvalid},
			{optGo, []byte{0, 0}, repErrInvalid},
			{optGo, goData("disk", 400, 0), repErrInvalid}, // name length lie
			{optInfo, goData("disk", 4, 3), repErrInvalid}, // info count lie
			{optGo, goData("nope", 4, 0), repErrUnknown},   // unknown export
			{optInfo, goData("disk", 4, 0), repInfo},       // INFO answers, GO follows
		} {
			typ, _, err := c.option(tc.opt, tc.data)
			if err != nil || typ != tc.want {
				t.Fatalf("option %d %q: reply %#x, %v; want %#x", tc.opt, tc.data, typ, err, tc.want)
			}
			for typ == repInfo {
				if typ, _, err = c.readOptionReply(tc.opt); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := c.handshakeGo("disk"); err != nil {
			t.Fatal(err)
		}
		if errno, _ := c.do(request{typ: cmdFlush, cookie: 1}, nil); errno != 0 {
			t.Fatalf("flush after refusals: errno %d", errno)
		}
	})
	t.Run("abort", func(t *testing.T) {
		nc, r := rawConn(t, ts)
		c := &testClient{t: t, nc: nc, r: r}
		nc.Write(fixedFlags)
		if typ, _, err := c.option(optAbort, nil); err != nil || typ != repAck {
			t.Fatalf("abort: %#x %v", typ, err)
		}
		expectClosed(t, r, 0)
	})
	t.Run("export name", func(t *testing.T) {
		nc, r := rawConn(t, ts)
		nc.Write(append(fixedFlags, optionBytes(magicIHaveOpt, optExportName, 4, []byte("disk"))...))
		var b [10]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint64(b[:8]) != 1<<20 || binary.BigEndian.Uint16(b[8:])&tfHasFlags == 0 {
			t.Fatalf("EXPORT_NAME reply %x", b)
		}
		c := &testClient{t: t, nc: nc, r: r}
		if errno, _ := c.do(request{typ: cmdWrite, cookie: 2, length: 3}, []byte("abc")); errno != 0 {
			t.Fatalf("write after EXPORT_NAME: errno %d", errno)
		}
	})
}

// handshakeGo sends GO on a connection whose greeting and flags are done.
func (c *testClient) handshakeGo(name string) error {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = binary.BigEndian.AppendUint16(append(data, name...), 0)
	c.sendOption(optGo, data)
	for {
		typ, _, err := c.readOptionReply(optGo)
		if err != nil || typ == repAck {
			return err
		}
		if typ&repErrBit != 0 {
			return errors.New("GO refused")
		}
	}
}

func TestRequestErrors(t *testing.T) {
	exp, backing := newFileExport(t, "disk", 1<<20, false, pattern(9))
	ts := startServer(t, DefaultConfig(), exp)
	want := readFile(t, backing)
	c := dialTest(t, "unix", ts.sock, "disk", nil)
	for i, tc := range []struct {
		req  request
		want uint32
	}{
		{request{typ: cmdRead, offset: 1<<20 - 512, length: 1024}, errInval},
		{request{typ: cmdRead, offset: 1 << 40, length: 1}, errInval},
		{request{typ: cmdRead, offset: ^uint64(0), length: 2}, errInval}, // offset+length wraps
		{request{typ: cmdRead, length: 64 << 20}, errInval},              // over the maximum payload
		{request{typ: cmdWriteZeroes, offset: 1<<20 - 512, length: 1024}, errNoSpc},
		{request{typ: cmdTrim, offset: 1 << 20, length: 1}, errInval},
		{request{typ: cmdRead, flags: cmdFlagFUA, length: 1}, errInval}, // flag not valid for READ
		{request{typ: cmdWriteZeroes, flags: 1 << 4, length: 1}, errInval},
		{request{typ: 5, length: 1}, errInval}, // CACHE, not offered
		{request{typ: 77}, errInval},
		{request{typ: cmdRead, offset: 512, length: 0}, 0},
	} {
		tc.req.cookie = uint64(i)
		if errno, _ := c.do(tc.req, nil); errno != tc.want {
			t.Errorf("%s %+v: errno %d, want %d", cmdName(tc.req.typ), tc.req, errno, tc.want)
		}
	}
	// A write past the end is consumed and refused with ENOSPC, and the
	// stream stays in step.
	if errno, _ := c.do(request{typ: cmdWrite, cookie: 100, offset: 1<<20 - 2, length: 4}, []byte("abcd")); errno != errNoSpc {
		t.Errorf("write past the end: errno %d, want ENOSPC", errno)
	}
	if errno, data := c.do(request{typ: cmdRead, cookie: 101, offset: 4096, length: 16}, nil); errno != 0 || !bytes.Equal(data, want[4096:4112]) {
		t.Errorf("read after refusals: errno %d", errno)
	}
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("refused requests changed the export")
	}

	// Protocol errors close the connection.
	for name, b := range map[string][]byte{
		"bad magic":         append([]byte{0xde, 0xad, 0xbe, 0xef}, make([]byte, 24)...),
		"huge write":        request{typ: cmdWrite, length: 1 << 31}.encode(),
		"truncated header":  request{typ: cmdRead, length: 1}.encode()[:20],
		"truncated payload": append(request{typ: cmdWrite, length: 100}.encode(), "short"...),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialTest(t, "unix", ts.sock, "disk", nil)
			c.nc.SetDeadline(time.Now().Add(20 * time.Second))
			c.nc.Write(b)
			c.nc.(*net.UnixConn).CloseWrite()
			expectClosed(t, c.r, 0)
		})
	}
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("malformed requests changed the export")
	}
}

// TestStructuredReplies reads with structured replies negotiated: data in
// one OFFSET_DATA chunk, errors as ERROR chunks with a message.
func TestStructuredReplies(t *testing.T) {
	exp, backing := newFileExport(t, "disk", 1<<20, false, pattern(4))
	ts := startServer(t, DefaultConfig(), exp)
	want := readFile(t, backing)
	nc, r := rawConn(t, ts)
	c := &testClient{t: t, nc: nc, r: r}
	nc.Write(fixedFlags)
	if typ, _, err := c.option(optStructuredReply, nil); err != nil || typ != repAck {
		t.Fatalf("structured reply: %#x %v", typ, err)
	}
	if err := c.handshakeGo("disk"); err != nil {
		t.Fatal(err)
	}
	chunk := func() (flags, typ uint16, cookie uint64, body []byte) {
		var h [20]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint32(h[:4]) != magicStructure {
			t.Fatalf("chunk magic %x", h[:4])
		}
		body = make([]byte, binary.BigEndian.Uint32(h[16:20]))
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint16(h[4:6]), binary.BigEndian.Uint16(h[6:8]), binary.BigEndian.Uint64(h[8:16]), body
	}
	c.send(request{typ: cmdRead, cookie: 7, offset: 8192, length: 4096}, nil)
	flags, typ, cookie, body := chunk()
	if flags != replyFlagDone || typ != replyTypeOffsetData || cookie != 7 ||
		binary.BigEndian.Uint64(body) != 8192 || !bytes.Equal(body[8:], want[8192:12288]) {
		t.Fatalf("read chunk: flags %d type %d cookie %d", flags, typ, cookie)
	}
	c.send(request{typ: cmdRead, cookie: 8, offset: 1 << 20, length: 1}, nil)
	flags, typ, cookie, body = chunk()
	if flags != replyFlagDone || typ != replyTypeError || cookie != 8 || binary.BigEndian.Uint32(body) != errInval {
		t.Fatalf("error chunk: flags %d type %d cookie %d body %x", flags, typ, cookie, body)
	}
}

// TestShutdownFinishesInFlight: Shutdown lets received requests finish
// and be answered, flushes, and closes.
func TestShutdownFinishesInFlight(t *testing.T) {
	be := newDurableBackend(1 << 20)
	be.gate = make(chan struct{})
	ts := startServer(t, DefaultConfig(), &Export{Name: "mem", Backend: be})
	c := dialTest(t, "unix", ts.sock, "mem", nil)
	const n = 16 // MaxInFlight: all of them run at once
	for i := range n {
		p := make([]byte, 512)
		binary.BigEndian.PutUint64(p, uint64(i))
		if err := c.send(request{typ: cmdWrite, cookie: uint64(i), offset: uint64(i) * 512, length: 512}, p); err != nil {
			t.Fatal(err)
		}
	}
	// All of them are held in the backend when the shutdown starts.
	waitFor(t, 10*time.Second, func() bool { return be.inFlight.Load() == n })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(ctx) }()
	waitFor(t, 10*time.Second, ts.srv.isClosing)
	close(be.gate)
	answered := 0
	for {
		_, errno, _, err := c.reply(nil)
		if err != nil {
			break
		}
		if errno != 0 {
			t.Errorf("errno %d during shutdown", errno)
		}
		answered++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if answered != n {
		t.Errorf("%d of %d writes answered before the connection closed", answered, n)
	}
	for i := range n {
		if !be.isDurable(uint64(i)) {
			t.Errorf("write %d not durable after shutdown", i)
		}
	}
	if be.flushes.Load() == 0 {
		t.Error("shutdown did not flush")
	}
	if _, err := net.Dial("unix", ts.sock); err == nil {
		t.Error("server still accepts after shutdown")
	}
}
