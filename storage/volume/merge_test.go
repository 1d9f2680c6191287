package volume

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// throughBase reads top's blocks, and below's where top has none.
type throughBase struct {
	top   *DiskReplica
	below Base
}

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

// crcZeroBlock returns a random block whose CRC-32C is 0: its last four
// bytes are solved for (the CRC is affine in the data bits).
func crcZeroBlock(t *testing.T) []byte {
	b := random(BlockSize)
	copy(b[BlockSize-4:], []byte{0, 0, 0, 0})
	f0 := crc32.Checksum(b, castagnoli)
	type vec struct{ val, mask uint32 }
	var basis [32]*vec // by highest bit of val
	for i := range 32 {
		c := bytes.Clone(b)
		c[BlockSize-4+i/8] ^= 1 << (i % 8)
		v := &vec{crc32.Checksum(c, castagnoli) ^ f0, 1 << i}
		for v.val != 0 {
			hb := 31
			for v.val&(1<<hb) == 0 {
				hb--
			}
			if basis[hb] == nil {
				basis[hb] = v
				break
			}
			v.val ^= basis[hb].val
			v.mask ^= basis[hb].mask
		}
	}
	target, mask := f0, uint32(0)
	for hb := 31; hb >= 0; hb-- {
		if target&(1<<hb) != 0 && basis[hb] != nil {
			target ^= basis[hb].val
			mask ^= basis[hb].mask
		}
	}
	if target != 0 {
		t.Fatal("no solution")
	}
	for i := range 32 {
		if mask&(1<<i) != 0 {
			b[BlockSize-4+i/8] ^= 1 << (i % 8)
		}
	}
	if crc32.Checksum(b, castagnoli) != 0 {
		t.Fatal("crc not 0")
	}
	return b
}

// A guest block whose CRC-32C happens to be 0 is stored with checksum 0,
// the checksum of a block never written: it is present all the same (it
// is not zeroes), so it is read, and kept by a merge, as the guest wrote
// it.
func TestMergeKeepsABlockWhoseChecksumIsZero(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 2<<20)
	parent := r.add("p", false)
	pdata := random(int(r.size))
	if err := parent.WriteAt(ctx, 0, 1, pdata, 0, false); err != nil {
		t.Fatal(err)
	}
	r.state.states["p"] = ReplicaStale
	r.add("a", true)
	r.add("b", true)
	w := r.open(parent, "a", "b")
	const k = 7
	mine := crcZeroBlock(t)
	if err := w.WriteAt(ctx, mine, k*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, BlockSize)
	if err := r.rep("a").ReadAt(ctx, raw, k*BlockSize); err != nil || !bytes.Equal(raw, mine) {
		t.Fatalf("replica a does not hold the guest's block: %v", err)
	}
	got := make([]byte, BlockSize)
	if err := w.ReadAt(ctx, got, k*BlockSize); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, mine) {
		t.Errorf("before the merge: the guest's block reads as the parent's")
	}
	if err := w.Merge(ctx, parent, r.size, true, 0, func(context.Context) (Base, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if err := r.rep(id).ReadAt(ctx, raw, k*BlockSize); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, mine) {
			t.Errorf("after the merge: replica %s no longer holds the guest's block (parent's bytes: %v)", id, bytes.Equal(raw, pdata[k*BlockSize:(k+1)*BlockSize]))
		}
	}
}

// In-sync replicas that disagree on a block's presence (a write that
// reached one and failed on another that could not be marked stale): a
// merge by either would leave the other reading the grandparent's bytes
// there, so it stops, and commits nothing.
func TestMergeStopsWhereReplicasDisagree(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 2<<20)
	grand := r.add("g", false)
	gdata := random(int(r.size))
	if err := grand.WriteAt(ctx, 0, 1, gdata, 0, false); err != nil {
		t.Fatal(err)
	}
	parent := r.add("p", true)
	const k = 3
	pblock := random(BlockSize)
	if err := parent.WriteAt(ctx, 0, 1, pblock, k*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	r.state.states["g"], r.state.states["p"] = ReplicaStale, ReplicaStale
	r.add("a", true)
	r.add("b", true)
	hb := throughBase{parent, grand}
	w := r.open(hb, "a", "b")
	// The failed write: it reached a (local) only; b stays in sync.
	x := random(BlockSize)
	if err := r.rep("a").WriteAt(ctx, 1, 1<<40, x, k*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	readB := func(base Base) []byte {
		p := make([]byte, BlockSize)
		if err := (throughBase{r.rep("b"), base}).ReadAt(ctx, p, k*BlockSize); err != nil {
			t.Fatal(err)
		}
		return p
	}
	before := readB(hb)
	if !bytes.Equal(before, pblock) {
		t.Fatal("b reads the snapshot's block before")
	}
	err := w.Merge(ctx, parent, r.size, false, 0, func(context.Context) (Base, error) {
		t.Error("a merge across disagreeing replicas committed")
		return grand, nil
	})
	if !errors.Is(err, errDisagree) {
		t.Fatalf("merge across disagreeing replicas: %v", err)
	}
	if after := readB(hb); !bytes.Equal(after, before) {
		t.Errorf("replica b reads block %d differently after the refused merge", k)
	}
}

// A block whose CRC-32C is 0 is stored with a checksum other than 0 (which
// means never written): two replicas of the same generation, one holding
// such a block and one not, digest differently, so a catch-up or
// reconcile copies it; and it reads back whole, as present, in either kind
// of replica.
func TestZeroCRCBlockIsSeenByDigests(t *testing.T) {
	ctx := context.Background()
	for _, layered := range []bool{false, true} {
		dir := t.TempDir()
		a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
		for _, d := range []string{a, b} {
			if err := CreateReplica(d, 2<<20, layered); err != nil {
				t.Fatal(err)
			}
		}
		ra, rb := openReplica(t, a), openReplica(t, b)
		blk := crcZeroBlock(t)
		other := random(BlockSize)
		mustWrite(t, ra, 1, 5, blk, 5*BlockSize)
		mustWrite(t, ra, 1, 5, other, 9*BlockSize)
		mustWrite(t, rb, 1, 5, other, 9*BlockSize)
		ea, eb := mustExtents(t, ra), mustExtents(t, rb)
		if ea[0].Gen != eb[0].Gen || ea[0].Digest == eb[0].Digest {
			t.Fatalf("layered %v: extent 0 is %+v on one replica and %+v on the other", layered, ea[0], eb[0])
		}
		p, have := make([]byte, BlockSize), NewPresence(1)
		if err := ra.ReadLayer(ctx, p, 5*BlockSize, have); err != nil || !bytes.Equal(p, blk) || !have.Has(0) {
			t.Fatalf("layered %v: the block reads back %v, present %v", layered, err, have.Has(0))
		}
	}
}
