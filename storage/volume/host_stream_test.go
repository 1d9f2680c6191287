package volume

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// diskReplicaOf returns the DiskReplica the Host opened for id.
func diskReplicaOf(t *testing.T, h *Host, id string) *DiskReplica {
	t.Helper()
	if _, err := h.Local(id); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.open[id].(*DiskReplica)
	if !ok {
		t.Fatalf("replica %s is a %T", id, h.open[id])
	}
	return r
}

// A write the writer gave up on, still running on its old connection, must
// not land after a new stream of the replica has fenced it: the new stream
// serves nothing until the old one's requests are finished.
func TestHostNewStreamWaitsForOldWrites(t *testing.T) {
	n := newNodeWith(t, defaultReplicaFiles())
	const size = 4 * ExtentSize
	if err := n.host.Create("d1", "r1", size, false); err != nil {
		t.Fatal(err)
	}
	rep := diskReplicaOf(t, n.host, "r1")
	entered := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseX := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseX()
	var first atomic.Bool
	rep.testHookWriteAt = func() {
		if first.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
	}
	ctx := context.Background()
	old := n.dial(t, "r1")
	if _, err := old.Fence(ctx, 1); err != nil {
		t.Fatal(err)
	}
	x := bytes.Repeat([]byte{'X'}, BlockSize)
	y := bytes.Repeat([]byte{'Y'}, BlockSize)
	// Write X times out in the writer, but the replica runs it (held).
	xctx, cancel := context.WithCancel(ctx)
	xdone := make(chan error, 1)
	go func() { xdone <- old.WriteAt(xctx, 1, 1, x, 0, false) }()
	<-entered
	cancel()
	if err := <-xdone; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned write: %v", err)
	}
	old.Close()
	// The held write is let go a while later, whatever happens meanwhile.
	go func() {
		time.Sleep(300 * time.Millisecond)
		releaseX()
	}()
	// Catch-up: a new stream, fence at the same epoch, Y over the range.
	r := n.dial(t, "r1")
	if _, err := r.Fence(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteAt(ctx, 1, 2, y, 0, false); err != nil {
		t.Fatal(err)
	}
	releaseX()
	// Whatever the old connection still had ran before the new stream.
	time.Sleep(100 * time.Millisecond)
	got := make([]byte, BlockSize)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, y) {
		t.Fatalf("block 0 holds %q..., want the newer write's Y", got[:8])
	}
	if e := mustExtents(t, rep); e[0].Gen != 2 {
		t.Fatalf("extent 0 generation %d, want 2", e[0].Gen)
	}
}

// Remove ends the replica's streams and waits for the requests they run
// before it closes the replica: no call runs on a closed replica.
func TestHostRemoveWaitsForStreamRequests(t *testing.T) {
	n := newNode(t)
	mem := n.replica(t, "r1", wireTestSize)
	r := n.dial(t, "r1")
	gate := make(chan struct{})
	mem.setGate(gate)
	errs := make(chan error, 1)
	go func() { errs <- r.Flush(context.Background(), 0) }()
	pollUntil(t, 5*time.Second, func() bool { return mem.inflight.Load() == 1 })
	removed := make(chan error, 1)
	go func() { removed <- n.host.Remove("r1") }()
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) while a request of the replica ran", err)
	case <-time.After(200 * time.Millisecond):
	}
	mem.mu.Lock()
	closed := mem.closed
	mem.mu.Unlock()
	if closed {
		t.Fatal("the replica was closed under a running request")
	}
	close(gate)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if mem.inflight.Load() != 0 {
		t.Fatal("Remove returned with a request running")
	}
	<-errs
}

// DiskReplica.Close waits for the operations under way and refuses later
// ones, so no syscall reaches a closed (and perhaps reused) descriptor.
func TestReplicaCloseWaitsForOperations(t *testing.T) {
	r, _ := newReplica(t, 4*ExtentSize)
	entered := make(chan struct{})
	release := make(chan struct{})
	r.testHookWrite = func() { close(entered); <-release }
	wrote := make(chan error, 1)
	go func() {
		wrote <- r.WriteAt(context.Background(), 0, 1, make([]byte, BlockSize), 0, true)
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) under a running write", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-wrote; err != nil {
		t.Fatalf("the write under way: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Flush(ctx, 0); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("flush after Close: %v, want EBADF", err)
	}
	if err := r.Zero(ctx, 0, 2, 0, ExtentSize, true); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("zero after Close: %v, want EBADF", err)
	}
	if _, err := r.Extents(ctx); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("extents after Close: %v, want EBADF", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Sizes beyond the largest volume are refused by the replica, the Host and
// its control call, before anything grows.
func TestResizeBounded(t *testing.T) {
	ctx := context.Background()
	r, dir := newReplica(t, 4*ExtentSize)
	for _, size := range []int64{maxReplicaSize + BlockSize, 1 << 62} {
		if err := r.Resize(ctx, 0, size); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("resize to %d: %v, want EINVAL", size, err)
		}
		if err := CreateReplica(t.TempDir()+"/r", size, false); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("create of %d: %v, want EINVAL", size, err)
		}
	}
	if r.Size() != 4*ExtentSize {
		t.Fatalf("size %d after refused resizes", r.Size())
	}
	_ = dir
	n := newNodeWith(t, defaultReplicaFiles())
	if err := n.host.Create("d1", "r1", 4*ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	if err := n.host.Create("d1", "r2", maxReplicaSize+BlockSize, false); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("host create beyond the maximum: %v", err)
	}
	p := NewProvisioner(func() *http.Client { return n.client }, func(string) (string, bool) { return n.addr, true }, "self", nil)
	if err := p.Resize(ctx, "other", "r1", 0, maxReplicaSize+BlockSize); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("control resize beyond the maximum: %v, want EINVAL", err)
	}
	if got := diskReplicaOf(t, n.host, "r1").Size(); got != 4*ExtentSize {
		t.Fatalf("size %d after a refused control resize", got)
	}
}

// A resize at a newer epoch makes it the replica's, durably, as Fence
// does; an older one is fenced.
func TestResizeRaisesEpoch(t *testing.T) {
	ctx := context.Background()
	r, dir := newReplica(t, 4*ExtentSize)
	if _, err := r.Fence(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := r.Resize(ctx, 2, 8*ExtentSize); !errors.Is(err, ErrFenced) {
		t.Fatalf("resize at an older epoch: %v", err)
	}
	if err := r.Resize(ctx, 5, 8*ExtentSize); err != nil {
		t.Fatal(err)
	}
	if r.Epoch() != 5 {
		t.Fatalf("epoch %d after a resize at 5", r.Epoch())
	}
	if err := r.WriteAt(ctx, 4, 1, make([]byte, BlockSize), 0, false); !errors.Is(err, ErrFenced) {
		t.Fatalf("write at epoch 4 after a resize at 5: %v", err)
	}
	// Same epoch, same size: nothing to do, no error.
	if err := r.Resize(ctx, 5, 8*ExtentSize); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2 := openReplica(t, dir)
	if r2.Epoch() != 5 || r2.Size() != 8*ExtentSize {
		t.Fatalf("reopened at epoch %d, size %d", r2.Epoch(), r2.Size())
	}
}

// Readers of a snapshot's replica (the volumes layered on it, on several
// nodes) share it: a reader's stream ends no other stream, a writer's and
// other readers' go on, and a reader can change nothing.
func TestHostReadersShareAReplica(t *testing.T) {
	n := newNodeWith(t, defaultReplicaFiles())
	const size = 4 * ExtentSize
	if err := n.host.Create("d1", "r1", size, false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := n.dial(t, "r1")
	if _, err := w.Fence(ctx, 1); err != nil {
		t.Fatal(err)
	}
	x := bytes.Repeat([]byte{'X'}, BlockSize)
	if err := w.WriteAt(ctx, 1, 1, x, 0, true); err != nil {
		t.Fatal(err)
	}
	var readers []Target
	for range 3 {
		r, err := DialReader(ctx, n.client, n.addr, "r1")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		readers = append(readers, r)
	}
	for i, r := range readers {
		p := make([]byte, 2*BlockSize)
		have := NewPresence(2)
		if err := r.ReadLayer(ctx, p, 0, have); err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
		if !bytes.Equal(p[:BlockSize], x) || !have.Has(0) {
			t.Fatalf("reader %d read %q, presence %v", i, p[:8], have)
		}
		if _, err := r.Fence(ctx, 2); err == nil {
			t.Fatalf("reader %d fenced the replica", i)
		}
		if err := r.WriteAt(ctx, 1, 2, x, BlockSize, false); err == nil {
			t.Fatalf("reader %d wrote", i)
		}
		if err := r.WriteExtent(ctx, 1, 1, 2, make([]byte, ExtentSize), nil); err == nil {
			t.Fatalf("reader %d wrote an extent", i)
		}
	}
	// The writer's stream is still served, and its epoch stands.
	if err := w.WriteAt(ctx, 1, 2, x, BlockSize, true); err != nil {
		t.Fatalf("the writer's stream after readers came: %v", err)
	}
	p := make([]byte, BlockSize)
	if err := readers[0].ReadAt(ctx, p, BlockSize); err != nil || !bytes.Equal(p, x) {
		t.Fatalf("a reader after the writer's write: %v", err)
	}
	if st, err := n.dial(t, "r1").Fence(ctx, 1); err != nil || st.Epoch != 1 {
		t.Fatalf("epoch after readers: %+v %v", st, err)
	}
}
