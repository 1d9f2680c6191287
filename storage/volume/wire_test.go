package volume

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
)

const wireTestSize = 3*ExtentSize + 64<<10 // a short last extent

func TestRemoteRoundTrip(t *testing.T) {
	n := newNode(t)
	mem := n.replica(t, "r1", wireTestSize)
	r := n.dial(t, "r1")
	ctx := context.Background()

	st, err := r.Fence(ctx, 7)
	if err != nil || st != (ReplicaState{Size: wireTestSize, Epoch: 7}) {
		t.Fatalf("Fence = %+v, %v", st, err)
	}
	p := bytes.Repeat([]byte("abcdefgh"), 2*BlockSize/8)
	if err := r.WriteAt(ctx, 7, 3, p, ExtentSize-BlockSize, true); err != nil {
		t.Fatal(err)
	}
	if got := mem.snapshot()[ExtentSize-BlockSize : ExtentSize+BlockSize]; !bytes.Equal(got, p) || !mem.lastFUA {
		t.Fatalf("replica holds %q... (fua %v)", got[:16], mem.lastFUA)
	}
	if err := r.WriteAt(ctx, 7, 4, p[:BlockSize], 0, false); err != nil || mem.lastFUA {
		t.Fatalf("WriteAt without fua: %v, fua %v", err, mem.lastFUA)
	}
	got := make([]byte, 2*BlockSize)
	if err := r.ReadAt(ctx, got, ExtentSize-BlockSize); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("ReadAt = %q..., %v", got[:16], err)
	}
	if err := r.Zero(ctx, 7, 5, ExtentSize, BlockSize, true); err != nil || !mem.lastPunch {
		t.Fatalf("Zero: %v, punch %v", err, mem.lastPunch)
	}
	if err := r.ReadAt(ctx, got, ExtentSize-BlockSize); err != nil || !bytes.Equal(got[:BlockSize], p[:BlockSize]) || !bytes.Equal(got[BlockSize:], make([]byte, BlockSize)) {
		t.Fatalf("after Zero: %v", err)
	}
	if err := r.Zero(ctx, 7, 5, 0, BlockSize, false); err != nil || mem.lastPunch {
		t.Fatalf("Zero without punch: %v, punch %v", err, mem.lastPunch)
	}
	if err := r.Flush(ctx, 7); err != nil || mem.flushes != 1 {
		t.Fatalf("Flush: %v, flushes %d", err, mem.flushes)
	}
	want, _ := mem.Extents(ctx)
	xs, err := r.Extents(ctx)
	if err != nil || len(xs) != 4 || xs[0] != want[0] || xs[1] != want[1] || xs[3] != want[3] || xs[1].Gen != 5 {
		t.Fatalf("Extents = %+v, %v; want %+v", xs, err, want)
	}

	// Extents travel whole between replicas, the short last one too.
	last := make([]byte, ExtentSize)
	for i := range last {
		last[i] = byte(i * 7)
	}
	if err := r.WriteExtent(ctx, 7, 3, 42, last[:64<<10], nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ExtentSize)
	if k, err := r.ReadExtent(ctx, 3, buf, nil); err != nil || k != 64<<10 || !bytes.Equal(buf[:k], last[:k]) {
		t.Fatalf("ReadExtent(3) = %d, %v", k, err)
	}
	if k, err := r.ReadExtent(ctx, 0, buf, nil); err != nil || k != ExtentSize || !bytes.Equal(buf[ExtentSize-BlockSize:], p[:BlockSize]) {
		t.Fatalf("ReadExtent(0) = %d, %v", k, err)
	}
	if xs, _ := r.Extents(ctx); xs[3].Gen != 42 {
		t.Fatalf("extent 3 gen %d after WriteExtent", xs[3].Gen)
	}

	if err := r.Resize(ctx, 7, wireTestSize+ExtentSize); err != nil {
		t.Fatal(err)
	}
	if st, err := r.Fence(ctx, 7); err != nil || st.Size != wireTestSize+ExtentSize || st.MaxGen != 42 {
		t.Fatalf("after Resize: %+v, %v", st, err)
	}
	if xs, err := r.Extents(ctx); err != nil || len(xs) != 5 {
		t.Fatalf("Extents after Resize: %d, %v", len(xs), err)
	}
	if err := r.ReadAt(ctx, nil, 0); err != nil {
		t.Fatalf("empty ReadAt: %v", err)
	}
}

func TestRemoteErrorsTravel(t *testing.T) {
	n := newNode(t)
	mem := n.replica(t, "r1", wireTestSize)
	r := n.dial(t, "r1")
	ctx := context.Background()
	if _, err := r.Fence(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Fence(ctx, 4); !errors.Is(err, ErrFenced) {
		t.Fatalf("older Fence: %v", err)
	}
	blk := make([]byte, BlockSize)
	for name, err := range map[string]error{
		"write":        r.WriteAt(ctx, 4, 1, blk, 0, false),
		"zero":         r.Zero(ctx, 4, 1, 0, BlockSize, false),
		"flush":        r.Flush(ctx, 4),
		"write extent": r.WriteExtent(ctx, 4, 0, 1, make([]byte, ExtentSize), nil),
		"resize":       r.Resize(ctx, 4, 2*wireTestSize),
	} {
		if !errors.Is(err, ErrFenced) {
			t.Errorf("%s with an old epoch: %v", name, err)
		}
	}

	mem.mu.Lock()
	mem.corrupt = &CorruptError{Off: 2 * BlockSize, Len: 3 * BlockSize}
	mem.mu.Unlock()
	var ce *CorruptError
	if err := r.ReadAt(ctx, make([]byte, 8*BlockSize), 0); !errors.As(err, &ce) || *ce != (CorruptError{Off: 2 * BlockSize, Len: 3 * BlockSize}) {
		t.Fatalf("corrupt read: %v", err)
	}

	if err := r.WriteAt(ctx, 5, 1, blk, 1, false); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unaligned write: %v", err)
	}
	mem.mu.Lock()
	mem.fail = syscall.ENOSPC
	mem.mu.Unlock()
	if err := r.WriteAt(ctx, 5, 1, blk, 0, false); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("full disk: %v", err)
	}
	mem.mu.Lock()
	mem.fail = errors.New("the disk caught fire")
	mem.mu.Unlock()
	if err := r.Flush(ctx, 5); err == nil || !bytes.Contains([]byte(err.Error()), []byte("caught fire")) || errors.Is(err, ErrConnLost) {
		t.Fatalf("other error: %v", err)
	}

	if _, err := Dial(ctx, n.client, n.addr, "nope"); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("dial of a replica not there: %v", err)
	}
	// The connection survived every error.
	mem.mu.Lock()
	mem.fail = nil
	mem.mu.Unlock()
	if err := r.Flush(ctx, 5); err != nil {
		t.Fatal(err)
	}
}

// Many writers at queue depth share one connection; every reply reaches
// its own caller.
func TestRemoteConcurrent(t *testing.T) {
	n := newNode(t)
	const workers, ops = 32, 100
	mem := n.replica(t, "r1", workers*16*BlockSize)
	r := n.dial(t, "r1")
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			mine := make([][]byte, 16)
			base := int64(w) * 16 * BlockSize
			for range ops {
				i := rng.IntN(16)
				if rng.IntN(2) == 0 || mine[i] == nil {
					p := make([]byte, BlockSize)
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					if err := r.WriteAt(ctx, 0, 1, p, base+int64(i)*BlockSize, false); err != nil {
						errs <- err
						return
					}
					mine[i] = p
					continue
				}
				got := make([]byte, BlockSize)
				if err := r.ReadAt(ctx, got, base+int64(i)*BlockSize); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, mine[i]) {
					errs <- errors.New("a read returned another block's bytes")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c := mem.calls.Load(); c != workers*ops {
		t.Fatalf("%d calls reached the replica, want %d", c, workers*ops)
	}
	if mem.maxIn.Load() < 2 {
		t.Fatalf("the server never ran two calls at once (max %d)", mem.maxIn.Load())
	}
}

// A cut connection fails the calls waiting on it and every later one.
func TestRemoteConnectionLoss(t *testing.T) {
	n := newNode(t)
	mem := n.replica(t, "r1", wireTestSize)
	r := n.dial(t, "r1")
	gate := make(chan struct{})
	mem.setGate(gate)
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- r.Flush(context.Background(), 0) }()
	}
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() == 8 })
	n.cut()
	for range 8 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrConnLost) {
				t.Fatalf("pending call: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a pending call did not fail")
		}
	}
	if err := r.Flush(context.Background(), 0); !errors.Is(err, ErrConnLost) {
		t.Fatalf("later call: %v", err)
	}
	// Close does the same to a healthy connection. (A new stream waits
	// for the old one's calls, held at the gate, to end.)
	mem.setGate(nil)
	close(gate)
	r2 := n.dial(t, "r1")
	if err := r2.Flush(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	r2.Close()
	if err := r2.Flush(context.Background(), 0); !errors.Is(err, ErrConnLost) {
		t.Fatalf("call after Close: %v", err)
	}
}

// A caller whose context ends gets control back at once; the late reply is
// dropped and the connection goes on.
func TestRemoteCancel(t *testing.T) {
	n := newNode(t)
	mem := n.replica(t, "r1", wireTestSize)
	r := n.dial(t, "r1")
	gate := make(chan struct{})
	mem.setGate(gate)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.ReadAt(ctx, make([]byte, BlockSize), 0) }()
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() == 1 })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled call did not return")
	}
	mem.setGate(nil)
	close(gate)
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() == 0 })
	got := make([]byte, BlockSize)
	if err := r.WriteAt(context.Background(), 0, 1, bytes.Repeat([]byte{9}, BlockSize), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadAt(context.Background(), got, 0); err != nil || got[0] != 9 {
		t.Fatalf("after a dropped reply: %v, %d", err, got[0])
	}
}

// The dial's context bounds the dial, not the connection.
func TestDialContextEndsDialOnly(t *testing.T) {
	n := newNode(t)
	n.replica(t, "r1", wireTestSize)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := Dial(ctx, n.client, n.addr, "r1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cancel()
	if err := r.Flush(context.Background(), 0); err != nil {
		t.Fatalf("after the dial context ended: %v", err)
	}
}

func TestStreamNeedsUpgrade(t *testing.T) {
	n := newNode(t)
	n.replica(t, "r1", wireTestSize)
	res, err := n.client.Get("https://" + n.addr + RPCPrefix + "stream/r1")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("stream without Upgrade: %s", res.Status)
	}
	if _, err := Dial(context.Background(), n.client, n.addr, "../r1"); err == nil {
		t.Fatal("dial of a path accepted")
	}
}

// Payloads up to the bound travel whole; a larger one is refused before it
// leaves, and the connection goes on.
func TestRemoteLargePayloads(t *testing.T) {
	n := newNode(t)
	mem := n.replica(t, "r1", 2*wireMaxPayload)
	r := n.dial(t, "r1")
	ctx := context.Background()
	p := make([]byte, wireMaxPayload)
	for i := 0; i < len(p); i += BlockSize {
		p[i], p[i+BlockSize-1] = byte(i>>12), byte(i>>20)
	}
	if err := r.WriteAt(ctx, 0, 1, p, wireMaxPayload, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem.snapshot()[wireMaxPayload:], p) {
		t.Fatal("the replica holds other bytes")
	}
	got := make([]byte, wireMaxPayload)
	if err := r.ReadAt(ctx, got, wireMaxPayload); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("ReadAt of %d bytes: %v", len(got), err)
	}
	big := make([]byte, wireMaxPayload+BlockSize)
	if err := r.WriteAt(ctx, 0, 1, big, 0, false); err == nil || errors.Is(err, ErrConnLost) {
		t.Fatalf("WriteAt over the bound: %v", err)
	}
	if err := r.ReadAt(ctx, big, 0); err == nil || errors.Is(err, ErrConnLost) {
		t.Fatalf("ReadAt over the bound: %v", err)
	}
	if err := r.Flush(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// A layered replica on disk, over the wire: ReadLayer and extents carry
// which blocks are present, and an extent copied with them digests as its
// source.
func TestRemoteLayerRoundTrip(t *testing.T) {
	n := newNodeWith(t, defaultReplicaFiles())
	for _, id := range []string{"src", "dst"} {
		if err := n.host.Create("d1", id, wireTestSize, true); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := n.dial(t, "src"), n.dial(t, "dst")
	ctx := context.Background()
	for _, r := range []Target{src, dst} {
		if _, err := r.Fence(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	data := bytes.Repeat([]byte("layered!"), BlockSize/8)
	if err := src.WriteAt(ctx, 1, 2, data, 2*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := src.Zero(ctx, 1, 3, 4*BlockSize, 2*BlockSize, true); err != nil {
		t.Fatal(err)
	}
	// The short last extent too.
	if err := src.WriteAt(ctx, 1, 4, data, 3*ExtentSize+BlockSize, false); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 70*BlockSize) // more than one word of presence
	have := NewPresence(70)
	if err := src.ReadLayer(ctx, p, 0, have); err != nil {
		t.Fatal(err)
	}
	if got := presentBlocks(have, 70); len(got) != 3 || got[0] != 2 || got[1] != 4 || got[2] != 5 {
		t.Fatalf("present %v, want [2 4 5]", got)
	}
	if !bytes.Equal(p[2*BlockSize:3*BlockSize], data) || !bytes.Equal(p[3*BlockSize:], make([]byte, 67*BlockSize)) {
		t.Fatal("ReadLayer bytes differ")
	}
	buf := make([]byte, ExtentSize)
	ext := NewPresence(blocksPerExtent)
	for _, idx := range []int64{0, 3} {
		k, err := src.ReadExtent(ctx, idx, buf, ext)
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.WriteExtent(ctx, 1, idx, 9, buf[:k], ext); err != nil {
			t.Fatal(err)
		}
	}
	// Without presence an extent still travels bare.
	if k, err := src.ReadExtent(ctx, 0, buf, nil); err != nil || k != ExtentSize || !bytes.Equal(buf[2*BlockSize:3*BlockSize], data) {
		t.Fatalf("ReadExtent without presence = %d, %v", k, err)
	}
	sx, err := src.Extents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dx, err := dst.Extents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []int{0, 3} {
		if sx[idx].Digest != dx[idx].Digest || sx[idx].Digest == 0 {
			t.Fatalf("extent %d: copy digests %x, source %x", idx, dx[idx].Digest, sx[idx].Digest)
		}
	}
	got := NewPresence(70)
	if err := dst.ReadLayer(ctx, make([]byte, 70*BlockSize), 0, got); err != nil || !equalPresence(got, have) {
		t.Fatalf("copy's presence %v, %v", presentBlocks(got, 70), err)
	}
}
