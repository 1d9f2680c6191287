package volume

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// throughBase reads top's blocks, and below's where top has none.
type throughBase struct{ top, below *DiskReplica }

func (b throughBase) ReadAt(ctx context.Context, p []byte, off int64) error {
	have := NewPresence(int64(len(p)) / BlockSize)
	if err := b.top.ReadLayer(ctx, p, off, have); err != nil {
		return err
	}
	return readBase(ctx, b.below, have, p, off)
}

// A root snapshot folded into its volume while the guest writes: every
// block reads as before (the guest's writes win, none is overwritten with
// the snapshot's older bytes), blocks of zeroes are not copied, and both
// replicas end alike.
func TestMergeFoldsTheSnapshotIn(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	parent := r.add("p", false)
	pdata := random(2 << 20) // the second half was never written: zeroes
	if err := parent.WriteAt(ctx, 0, 1, pdata, 0, false); err != nil {
		t.Fatal(err)
	}
	r.state.states["p"] = ReplicaStale // the snapshot's, not counted
	r.add("a", true)
	r.add("b", true)
	w := r.open(parent, "a", "b")
	blocks := r.size / BlockSize
	want := make([][]byte, blocks)
	for i := range blocks {
		want[i] = make([]byte, BlockSize)
		if i*BlockSize < int64(len(pdata)) {
			copy(want[i], pdata[i*BlockSize:])
		}
	}
	mine := random(3 * BlockSize)
	if err := w.WriteAt(ctx, mine, ExtentSize-BlockSize, false); err != nil {
		t.Fatal(err)
	}
	for i := range int64(3) {
		want[blocksPerExtent-1+i] = mine[i*BlockSize : (i+1)*BlockSize]
	}

	// The guest writes on, block after block, while the merge runs.
	var stop atomic.Bool
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := 0; !stop.Load(); s++ {
			i := int64(s*7919) % blocks
			b := snapBlock(1, s)
			if err := w.WriteAt(ctx, b, i*BlockSize, false); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			want[i] = b
			mu.Unlock()
		}
	}()
	commits := 0
	err := w.Merge(ctx, parent, r.size, true, 0, func(context.Context) (Base, error) {
		commits++
		return nil, nil
	})
	stop.Store(true)
	<-done
	if err != nil || commits != 1 {
		t.Fatalf("merge: %v, %d commits", err, commits)
	}
	got := make([]byte, BlockSize)
	for i := range blocks {
		if err := w.ReadAt(ctx, got, i*BlockSize); err != nil || !bytes.Equal(got, want[i]) {
			t.Fatalf("block %d after the merge: %v", i, err)
		}
	}
	// The replicas alone now hold it all: read without the parent.
	r.state.states["a"], r.state.states["b"] = ReplicaInSync, ReplicaInSync
	w.Close(ctx)
	w = r.open(nil, "a", "b")
	for i := range blocks {
		if err := w.ReadAt(ctx, got, i*BlockSize); err != nil || !bytes.Equal(got, want[i]) {
			t.Fatalf("block %d read without the snapshot: %v", i, err)
		}
	}
	_, have := r.layer("a", 2<<20, 2<<20)
	for i := range int64(2<<20) / BlockSize {
		if have.Has(i) && bytes.Equal(want[i+(2<<20)/BlockSize], make([]byte, BlockSize)) {
			t.Fatalf("block %d, zeroes in the snapshot, was copied", i+(2<<20)/BlockSize)
		}
	}
	r.sameExtents("a", "b")
}

// A snapshot layered on another: its blocks of zeroes are copied too, as
// they hide the older snapshot's bytes the volume reads through to after.
func TestMergeKeepsZeroesThatHideTheParent(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 2<<20)
	grand := r.add("g", false)
	gdata := random(int(r.size))
	if err := grand.WriteAt(ctx, 0, 1, gdata, 0, false); err != nil {
		t.Fatal(err)
	}
	parent := r.add("p", true)
	if err := parent.Zero(ctx, 0, 1, 5*BlockSize, 2*BlockSize, true); err != nil {
		t.Fatal(err)
	}
	pblock := random(BlockSize)
	if err := parent.WriteAt(ctx, 0, 1, pblock, 9*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	r.state.states["g"], r.state.states["p"] = ReplicaStale, ReplicaStale
	r.add("a", true)
	r.add("b", true)
	w := r.open(throughBase{parent, grand}, "a", "b")
	want := bytes.Clone(gdata)
	clear(want[5*BlockSize : 7*BlockSize])
	copy(want[9*BlockSize:], pblock)
	if err := w.Merge(ctx, parent, r.size, false, 0, func(context.Context) (Base, error) { return grand, nil }); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, r.size)
	if err := w.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the merge: %v", err)
	}
	_, have := r.layer("a", 0, r.size)
	for i := range r.size / BlockSize {
		if have.Has(i) != (i == 5 || i == 6 || i == 9) {
			t.Fatalf("block %d present %v after the merge", i, have.Has(i))
		}
	}
}

// swapOnRead takes a snapshot of the volume while the merge reads its
// first extent.
type swapOnRead struct {
	*DiskReplica
	once sync.Once
	snap func()
}

func (s *swapOnRead) ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error {
	s.once.Do(func() {
		go s.snap()
		time.Sleep(50 * time.Millisecond)
	})
	return s.DiskReplica.ReadLayer(ctx, p, off, have)
}

// A snapshot of the volume taken while a merge runs stops the merge before
// it writes into the new replicas, and nothing is committed.
func TestMergeStopsAtASnapshot(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	parent := r.add("p", false)
	if err := parent.WriteAt(ctx, 0, 1, random(int(r.size)), 0, false); err != nil {
		t.Fatal(err)
	}
	r.state.states["p"] = ReplicaStale
	r.add("a", true)
	r.add("b", true)
	w := r.open(parent, "a", "b")
	r.add("c", true)
	r.add("d", true)
	snapped := make(chan error, 1)
	from := &swapOnRead{DiskReplica: parent, snap: func() {
		snapped <- w.Snapshot(ctx, func(context.Context) (*Swap, error) {
			return &Swap{Members: r.members("c", "d"), Base: parent}, nil
		})
	}}
	err := w.Merge(ctx, from, r.size, true, 0, func(context.Context) (Base, error) {
		t.Error("a merge stopped by a snapshot committed")
		return nil, nil
	})
	if !errors.Is(err, errSwapped) {
		t.Fatalf("merge across a snapshot: %v", err)
	}
	if err := <-snapped; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c", "d"} {
		if _, have := r.layer(id, 0, r.size); !allAbsent(have) {
			t.Fatalf("the merge wrote into the new replica %s", id)
		}
	}
}
