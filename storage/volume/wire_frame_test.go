package volume

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

func rawRequest(r wireRequest) []byte {
	var b [reqHeaderSize]byte
	r.encode(&b)
	return b[:]
}

// A frame that breaks the protocol ends the session before anything of it
// reaches the replica.
func TestMalformedRequests(t *testing.T) {
	badMagic := rawRequest(wireRequest{op: opWrite, length: BlockSize})
	binary.BigEndian.PutUint32(badMagic, 0xdeadbeef)
	cases := map[string][]byte{
		"bad magic":          append(badMagic, make([]byte, BlockSize)...),
		"unknown op":         rawRequest(wireRequest{op: 99}),
		"op zero":            rawRequest(wireRequest{op: 0}),
		"unknown flag":       append(rawRequest(wireRequest{op: opWrite, flags: 2, length: BlockSize}), make([]byte, BlockSize)...),
		"flag on fence":      rawRequest(wireRequest{op: opFence, flags: reqFUA, epoch: 1}),
		"huge write":         rawRequest(wireRequest{op: opWrite, length: wireMaxPayload + BlockSize}),
		"huge read":          rawRequest(wireRequest{op: opRead, length: wireMaxPayload + BlockSize}),
		"huge extent":        rawRequest(wireRequest{op: opWriteExtent, length: ExtentSize + BlockSize}),
		"huge extent+have":   rawRequest(wireRequest{op: opWriteExtent, flags: reqPresence, length: ExtentSize + wireExtentPresence + 1}),
		"extent, no have":    rawRequest(wireRequest{op: opWriteExtent, length: ExtentSize + wireExtentPresence}),
		"have on read":       rawRequest(wireRequest{op: opRead, flags: reqPresence, length: BlockSize}),
		"huge layer read":    rawRequest(wireRequest{op: opReadLayer, length: wireMaxPayload + BlockSize}),
		"negative offset":    append(rawRequest(wireRequest{op: opWrite, offset: math.MaxUint64 - BlockSize + 1, length: BlockSize}), make([]byte, BlockSize)...),
		"truncated payload":  append(rawRequest(wireRequest{op: opWrite, length: 2 * BlockSize}), make([]byte, BlockSize)...),
		"truncated header":   rawRequest(wireRequest{op: opFence})[:20],
		"zero length > max":  rawRequest(wireRequest{op: opZero, length: math.MaxUint64}),
		"fence epoch bumped": append(rawRequest(wireRequest{op: opFence, epoch: 9}), 0xff),
	}
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			mem := newMemTarget(4 * BlockSize)
			before := mem.snapshot()
			err := serveReplica(context.Background(), mem, bytes.NewReader(frame), io.Discard, nil, wireTestLog(t))
			if name == "fence epoch bumped" {
				// A valid request then one stray byte: the request runs,
				// the stray byte is a truncated header.
				if !errors.Is(err, errWireProtocol) {
					t.Fatalf("serve: %v", err)
				}
				if mem.epoch != 9 {
					t.Fatalf("the valid request before the stray byte did not run")
				}
				return
			}
			if !errors.Is(err, errWireProtocol) {
				t.Fatalf("serve: %v, want a protocol error", err)
			}
			if c := mem.calls.Load(); c != 0 {
				t.Fatalf("%d calls reached the replica", c)
			}
			if !bytes.Equal(mem.snapshot(), before) || mem.epoch != 0 {
				t.Fatal("the replica changed")
			}
		})
	}
}

// Over the real port, a malformed frame closes the connection.
func TestMalformedFrameClosesConnection(t *testing.T) {
	n := newNode(t)
	mem := n.replica(t, "r1", wireTestSize)
	req, _ := http.NewRequest(http.MethodGet, "https://"+n.addr+RPCPrefix+"stream/r1", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", wireUpgrade)
	res, err := n.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rwc := res.Body.(io.ReadWriteCloser)
	defer rwc.Close()
	frame := rawRequest(wireRequest{op: opWrite, flags: 0x80, length: BlockSize})
	if _, err := rwc.Write(append(frame, bytes.Repeat([]byte{1}, BlockSize)...)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := rwc.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the server answered a malformed frame")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server kept the connection open")
	}
	if mem.calls.Load() != 0 {
		t.Fatal("the malformed write reached the replica")
	}
}

// The server runs at most maxInFlight requests per connection and then
// stops reading.
func TestServerBackpressure(t *testing.T) {
	mem := newMemTarget(wireTestSize)
	gate := make(chan struct{})
	mem.setGate(gate)
	client, server := net.Pipe()
	defer client.Close()
	served := make(chan error, 1)
	go func() {
		defer server.Close()
		served <- serveReplica(context.Background(), mem, server, server, func() { server.Close() }, wireTestLog(t))
	}()
	for i := range wireMaxInFlight + 1 {
		if _, err := client.Write(rawRequest(wireRequest{op: opFlush, handle: uint64(i)})); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() == wireMaxInFlight })
	// The header of one more was read; the next is not taken.
	client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := client.Write(rawRequest(wireRequest{op: opFlush, handle: 999})); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a request beyond the bound was read (err %v, in flight %d)", err, mem.inflight.Load())
	}
	client.SetWriteDeadline(time.Time{})
	close(gate)
	r := bufio.NewReader(client)
	seen := map[uint64]bool{}
	var hdr [repHeaderSize]byte
	for range wireMaxInFlight + 1 {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			t.Fatal(err)
		}
		rep, err := decodeReply(hdr[:])
		if err != nil || rep.code != repOK || rep.length != 0 {
			t.Fatalf("reply %+v, %v", rep, err)
		}
		seen[rep.handle] = true
	}
	if len(seen) != wireMaxInFlight+1 || mem.maxIn.Load() > wireMaxInFlight {
		t.Fatalf("%d distinct replies, at most %d in flight", len(seen), mem.maxIn.Load())
	}
	client.Close()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// A reply the request cannot get back breaks the connection.
func TestClientRejectsBadReplies(t *testing.T) {
	type op func(Target) error
	fence := func(r Target) error { _, err := r.Fence(context.Background(), 1); return err }
	read := func(r Target) error { return r.ReadAt(context.Background(), make([]byte, BlockSize), 0) }
	flush := func(r Target) error { return r.Flush(context.Background(), 1) }
	extents := func(r Target) error { _, err := r.Extents(context.Background()); return err }
	layer := func(r Target) error {
		return r.ReadLayer(context.Background(), make([]byte, BlockSize), 0, NewPresence(1))
	}
	extentHave := func(r Target) error {
		_, err := r.ReadExtent(context.Background(), 0, make([]byte, ExtentSize), NewPresence(blocksPerExtent))
		return err
	}
	cases := []struct {
		name    string
		call    op
		code    uint32
		length  uint32
		handle  uint64 // 0: the request's
		magic   uint32 // 0: the right one
		payload []byte
	}{
		{"bad magic", flush, repOK, 0, 0, 0xbad, nil},
		{"unknown handle", flush, repOK, 0, 77, 0, nil},
		{"unknown code", flush, 42, 0, 0, 0, nil},
		{"short read", read, repOK, BlockSize / 2, 0, 0, make([]byte, BlockSize/2)},
		{"long read", read, repOK, 2 * BlockSize, 0, 0, make([]byte, 2*BlockSize)},
		{"short fence", fence, repOK, 8, 0, 0, make([]byte, 8)},
		{"payload on flush", flush, repOK, 4, 0, 0, make([]byte, 4)},
		{"huge message", flush, repOther, wireMaxMessage + 1, 0, 0, nil},
		{"ragged extents", extents, repOK, 17, 0, 0, make([]byte, 17)},
		{"too many extents", extents, repOK, 16 * (wireMaxVolume/ExtentSize + 1), 0, 0, nil},
		{"short corrupt", read, repCorrupt, 8, 0, 0, make([]byte, 8)},
		{"layer read without presence", layer, repOK, BlockSize, 0, 0, make([]byte, BlockSize)},
		{"extent without its presence", extentHave, repOK, 16, 0, 0, make([]byte, 16)},
		{"extent with presence too long", extentHave, repOK, ExtentSize + wireExtentPresence + BlockSize, 0, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			r := newRemote(client, "test")
			defer r.Close()
			go func() {
				var hdr [reqHeaderSize]byte
				if _, err := io.ReadFull(server, hdr[:]); err != nil {
					return
				}
				req, _ := decodeRequest(hdr[:])
				rep := wireReply{code: tc.code, handle: req.handle, length: tc.length}
				if tc.handle != 0 {
					rep.handle = tc.handle
				}
				var b [repHeaderSize]byte
				rep.encode(&b)
				if tc.magic != 0 {
					binary.BigEndian.PutUint32(b[:], tc.magic)
				}
				_, _ = server.Write(append(b[:], tc.payload...))
				_, _ = io.Copy(io.Discard, server)
			}()
			if err := tc.call(r); !errors.Is(err, ErrConnLost) {
				t.Fatalf("call: %v", err)
			}
			if err := flush(r); !errors.Is(err, ErrConnLost) {
				t.Fatalf("later call: %v", err)
			}
		})
	}
}

// An Extents reply is bounded by the size the replica reported.
func TestClientBoundsExtentsBySize(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	r := newRemote(client, "test")
	defer r.Close()
	go func() {
		br := bufio.NewReader(server)
		var hdr [reqHeaderSize]byte
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return
			}
			req, _ := decodeRequest(hdr[:])
			var p []byte
			if req.op == opFence {
				p = make([]byte, 24)
				binary.BigEndian.PutUint64(p, 2*ExtentSize) // two extents
			} else {
				p = make([]byte, 3*wireExtentInfo)
			}
			var b [repHeaderSize]byte
			(&wireReply{handle: req.handle, length: uint32(len(p))}).encode(&b)
			if _, err := server.Write(append(b[:], p...)); err != nil {
				return
			}
		}
	}()
	if _, err := r.Fence(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Extents(context.Background()); !errors.Is(err, ErrConnLost) {
		t.Fatalf("three extents of a two-extent replica: %v", err)
	}
}

// The payloads a connection's requests hold are bounded too: two reads of
// the largest size fill the budget, and the server stops reading.
func TestServerBoundsPayloadBytes(t *testing.T) {
	mem := newMemTarget(wireTestSize)
	gate := make(chan struct{})
	mem.setGate(gate)
	client, server := net.Pipe()
	defer client.Close()
	served := make(chan error, 1)
	go func() {
		defer server.Close()
		served <- serveReplica(context.Background(), mem, server, server, func() { server.Close() }, wireTestLog(t))
	}()
	big := wireRequest{op: opRead, length: wireMaxPayload}
	for i := range 3 {
		big.handle = uint64(i)
		if _, err := client.Write(rawRequest(big)); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() == 2 })
	client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := client.Write(rawRequest(wireRequest{op: opFlush, handle: 9})); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a request beyond the byte bound was read (err %v, in flight %d)", err, mem.inflight.Load())
	}
	client.SetWriteDeadline(time.Time{})
	close(gate)
	go io.Copy(io.Discard, client)
	pollUntil(t, 5*time.Second, func() bool { return mem.calls.Load() == 3 })
	if mem.maxIn.Load() > 2 {
		t.Fatalf("%d large reads ran at once", mem.maxIn.Load())
	}
	client.Close()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
