package volume

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// Requests the server has read but not started when its stream is stopped
// (an older stream of a replica a new one replaces) are dropped, not run.
func TestServerDropsUnstartedRequestsWhenStopped(t *testing.T) {
	mem := newMemTarget(wireTestSize)
	gate := make(chan struct{})
	mem.setGate(gate)
	client, server := net.Pipe()
	defer client.Close()
	var stopped atomic.Bool
	served := make(chan error, 1)
	go func() {
		served <- serveReplicaStoppable(context.Background(), mem, server, server, func() { server.Close() }, &stopped, wireTestLog(t))
	}()
	for i := range wireMaxInFlight + 1 {
		if _, err := client.Write(rawRequest(wireRequest{op: opZero, handle: uint64(i), epoch: 0, gen: 7, offset: 0, length: BlockSize})); err != nil {
			t.Fatal(err)
		}
	}
	// wireMaxInFlight run (held at the gate); the last one's header is
	// read and waits for a slot.
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() == wireMaxInFlight })
	stopped.Store(true)
	server.Close()
	close(gate)
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
	if n := mem.calls.Load(); n != wireMaxInFlight {
		t.Fatalf("%d requests reached the replica, want the %d already running", n, wireMaxInFlight)
	}
}

// sizedTarget is a memTarget that says it is a large replica, as a
// DiskReplica tells the server its size.
type sizedTarget struct {
	*memTarget
	size int64
}

func (s sizedTarget) Size() int64 { return s.size }

// An Extents reply is 16 bytes per extent of the replica: it counts against
// the connection's payload budget like a read's.
func TestServerCountsExtentsReplies(t *testing.T) {
	mem := newMemTarget(wireTestSize)
	gate := make(chan struct{})
	mem.setGate(gate)
	// 48 MiB of reply each: two do not fit in the 64 MiB budget.
	target := sizedTarget{mem, 3 << 40}
	client, server := net.Pipe()
	defer client.Close()
	served := make(chan error, 1)
	go func() {
		defer server.Close()
		served <- serveReplica(context.Background(), target, server, server, func() { server.Close() }, wireTestLog(t))
	}()
	go func() {
		for i := range 3 {
			if _, err := client.Write(rawRequest(wireRequest{op: opExtents, handle: uint64(i)})); err != nil {
				return
			}
		}
	}()
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() >= 1 })
	time.Sleep(200 * time.Millisecond)
	if n := mem.inflight.Load(); n != 1 {
		t.Fatalf("%d Extents of 48 MiB replies ran at once within a 64 MiB budget", n)
	}
	close(gate)
	client.Close()
	<-served
	if mem.maxIn.Load() != 1 {
		t.Fatalf("up to %d Extents ran at once", mem.maxIn.Load())
	}
}

// No request may name a size or offset beyond the largest replica: a Resize
// to 2^52 would have the server grow files and allocate generations for it.
func TestDecodeRequestBoundsSizes(t *testing.T) {
	ok := []wireRequest{
		{op: opResize, offset: maxReplicaSize},
		{op: opZero, offset: 0, length: maxReplicaSize},
	}
	for _, r := range ok {
		if _, err := decodeRequest(rawRequest(r)); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	bad := []wireRequest{
		{op: opResize, offset: 1 << 52},
		{op: opResize, offset: maxReplicaSize + BlockSize},
		{op: opZero, offset: 0, length: maxReplicaSize + BlockSize},
		{op: opWrite, offset: 1 << 62, length: BlockSize},
		{op: opReadExtent, offset: 1 << 62},
	}
	for _, r := range bad {
		if _, err := decodeRequest(rawRequest(r)); !errors.Is(err, errWireProtocol) {
			t.Errorf("%+v: %v, want a protocol error", r, err)
		}
	}
	// The client refuses them itself, keeping its connection.
	a, b := net.Pipe()
	defer b.Close()
	c := newRemote(a, "test")
	defer c.Close()
	if err := c.Resize(context.Background(), 1, maxReplicaSize+BlockSize); err == nil || errors.Is(err, ErrConnLost) {
		t.Errorf("client resize beyond the maximum: %v", err)
	}
}

// The largest replica is the largest volume the service makes.
func TestMaxReplicaSizeIsMaxVolume(t *testing.T) {
	if maxReplicaSize != MaxSizeGiB*GiB {
		t.Fatalf("maxReplicaSize %d, the service's largest volume %d", int64(maxReplicaSize), MaxSizeGiB*GiB)
	}
}
