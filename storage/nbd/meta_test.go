package nbd

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sparseExport is an 8 MiB file with data at [1 MiB, 2 MiB) and
// [5 MiB, 6 MiB), holes elsewhere.
func sparseExport(t *testing.T) (*Export, string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8<<20)
	pattern(31)(want[1<<20 : 2<<20])
	pattern(32)(want[5<<20 : 6<<20])
	if _, err := f.WriteAt(want[1<<20:2<<20], 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(want[5<<20:6<<20], 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	be, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return &Export{Name: "sparse", Backend: be}, path, want
}

// TestBlockStatusClients: qemu-img map and nbdinfo --map see the holes
// through base:allocation, and copies of the sparse export are exact.
func TestBlockStatusClients(t *testing.T) {
	exp, _, want := sparseExport(t)
	ts := startServer(t, DefaultConfig(), exp)

	var extents []struct {
		Start  int64 `json:"start"`
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
		Zero   bool  `json:"zero"`
	}
	out := run(t, "qemu-img", "map", "--output=json", "-f", "raw", unixURI(ts, "sparse"))
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	type span struct {
		start, end int64
		data       bool
	}
	var got []span
	for _, e := range extents {
		if e.Data == e.Zero {
			t.Errorf("extent %+v: want data or zero", e)
		}
		if n := len(got); n > 0 && got[n-1].data == e.Data && got[n-1].end == e.Start {
			got[n-1].end += e.Length
			continue
		}
		got = append(got, span{e.Start, e.Start + e.Length, e.Data})
	}
	wantSpans := []span{{0, 1 << 20, false}, {1 << 20, 2 << 20, true}, {2 << 20, 5 << 20, false}, {5 << 20, 6 << 20, true}, {6 << 20, 8 << 20, false}}
	if len(got) != len(wantSpans) {
		t.Fatalf("qemu-img map: %v, want %v\n%s", got, wantSpans, out)
	}
	for i := range got {
		if got[i] != wantSpans[i] {
			t.Fatalf("qemu-img map: %v, want %v", got, wantSpans)
		}
	}

	out = run(t, "nbdinfo", "--map", unixURI(ts, "sparse"))
	if !strings.Contains(out, "hole,zero") || !strings.Contains(out, "data") {
		t.Errorf("nbdinfo --map:\n%s", out)
	}
	out = run(t, "nbdinfo", "--json", unixURI(ts, "sparse"))
	if !strings.Contains(out, contextAllocation) {
		t.Errorf("nbdinfo does not list base:allocation:\n%s", out)
	}

	dst := filepath.Join(t.TempDir(), "copy.img")
	run(t, "nbdcopy", unixURI(ts, "sparse"), dst)
	if !bytes.Equal(readFile(t, dst), want) {
		t.Fatal("nbdcopy of the sparse export differs")
	}
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", unixURI(ts, "sparse"), dst+"2")
	if !bytes.Equal(readFile(t, dst+"2"), want) {
		t.Fatal("qemu-img convert of the sparse export differs")
	}
}

func metaQuery(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = binary.BigEndian.AppendUint32(append(b, name...), uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// TestBlockStatusProtocol checks negotiation and the reply chunk.
func TestBlockStatusProtocol(t *testing.T) {
	exp, _, _ := sparseExport(t)
	ts := startServer(t, DefaultConfig(), exp)

	// Without negotiating, BLOCK_STATUS is refused.
	c := dialTest(t, "unix", ts.sock, "sparse", nil)
	if errno, _ := c.do(request{typ: cmdBlockStatus, length: 4096}, nil); errno != errInval {
		t.Errorf("block status without a context: errno %d", errno)
	}

	nc, r := rawConn(t, ts)
	c = &testClient{t: t, nc: nc, r: r}
	nc.Write(fixedFlags)
	if typ, _, _ := c.option(optSetMetaContext, metaQuery("sparse", contextAllocation)); typ != repErrInvalid {
		t.Errorf("SET_META_CONTEXT before structured replies: %#x", typ)
	}
	c.option(optStructuredReply, nil)
	for _, bad := range [][]byte{{0, 0, 0, 9}, append(metaQuery("sparse", "base:allocation"), 0), metaQuery("sparse")[:8]} {
		if typ, _, _ := c.option(optSetMetaContext, bad); typ != repErrInvalid {
			t.Errorf("malformed SET_META_CONTEXT %x: %#x", bad, typ)
		}
	}
	typ, body, err := c.option(optListMetaContext, metaQuery("sparse"))
	if err != nil || typ != repMetaContext || string(body[4:]) != contextAllocation {
		t.Fatalf("LIST_META_CONTEXT: %#x %q %v", typ, body, err)
	}
	c.readOptionReply(optListMetaContext) // ACK
	typ, body, _ = c.option(optSetMetaContext, metaQuery("sparse", "base:nothing", contextAllocation))
	if typ != repMetaContext {
		t.Fatalf("SET_META_CONTEXT: %#x", typ)
	}
	id := binary.BigEndian.Uint32(body)
	if typ, _, _ := c.readOptionReply(optSetMetaContext); typ != repAck {
		t.Fatalf("SET_META_CONTEXT end: %#x", typ)
	}
	if err := c.handshakeGo("sparse"); err != nil {
		t.Fatal(err)
	}
	status := func(req request) (flags uint16, descs [][2]uint32) {
		c.send(req, nil)
		var h [20]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint32(h[16:]))
		io.ReadFull(r, b)
		if binary.BigEndian.Uint16(h[6:]) != replyTypeBlockStat || binary.BigEndian.Uint32(b) != id {
			t.Fatalf("block status chunk %x %x", h, b)
		}
		for b = b[4:]; len(b) >= 8; b = b[8:] {
			descs = append(descs, [2]uint32{binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])})
		}
		return binary.BigEndian.Uint16(h[4:]), descs
	}
	flags, descs := status(request{typ: cmdBlockStatus, cookie: 1, offset: 512 << 10, length: 2 << 20})
	want := [][2]uint32{{512 << 10, stateHole | stateZero}, {1 << 20, 0}, {512 << 10, stateHole | stateZero}}
	if flags != replyFlagDone || len(descs) != len(want) {
		t.Fatalf("extents %v, want %v", descs, want)
	}
	for i := range want {
		if descs[i] != want[i] {
			t.Fatalf("extents %v, want %v", descs, want)
		}
	}
	_, descs = status(request{typ: cmdBlockStatus, flags: cmdFlagReqOne, cookie: 2, offset: 1 << 20, length: 4096})
	if len(descs) != 1 || descs[0] != [2]uint32{4096, 0} {
		t.Fatalf("REQ_ONE extents %v", descs)
	}
}
