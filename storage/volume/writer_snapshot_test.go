package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/storage/nbd"
)

// snapRig is a volume's replicas by ID, real ones in temporary
// directories, some layered, behind links that can be cut; the writers it
// opens reach them by ID, so a snapshot can swap in new ones.
type snapRig struct {
	t     *testing.T
	size  int64
	state *testState

	mu   sync.Mutex
	reps map[string]*DiskReplica
	down map[string]*atomic.Bool
	dirs map[string]string
}

func newSnapRig(t *testing.T, size int64) *snapRig {
	r := &snapRig{t: t, size: size, state: &testState{epoch: 1, states: map[string]string{}},
		reps: map[string]*DiskReplica{}, down: map[string]*atomic.Bool{}, dirs: map[string]string{}}
	// Registered first, so it runs after the writers have closed.
	t.Cleanup(func() {
		for _, rep := range r.reps {
			rep.Close()
		}
	})
	return r
}

// add creates replica id, recorded in sync.
func (r *snapRig) add(id string, layered bool) *DiskReplica {
	r.t.Helper()
	dir := filepath.Join(r.t.TempDir(), id)
	if err := CreateReplica(dir, r.size, layered); err != nil {
		r.t.Fatal(err)
	}
	rep, err := OpenReplica(dir)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.reps[id], r.down[id], r.dirs[id] = rep, new(atomic.Bool), dir
	r.mu.Unlock()
	r.state.mu.Lock()
	r.state.states[id] = ReplicaInSync
	r.state.mu.Unlock()
	return rep
}

func (r *snapRig) rep(id string) *DiskReplica {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reps[id]
}

func (r *snapRig) link(id string) *atomic.Bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down[id]
}

func (r *snapRig) dial(_ context.Context, m Member) (Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep, ok := r.reps[m.ID]
	if !ok {
		return nil, fmt.Errorf("no replica %s: %w", m.ID, ErrNoReplica)
	}
	if r.down[m.ID].Load() {
		return nil, errCut
	}
	return cuttable{rep, r.down[m.ID]}, nil
}

// members lists ids as members, the first local.
func (r *snapRig) members(ids ...string) []Member {
	var ms []Member
	for i, id := range ids {
		ms = append(ms, Member{ID: id, Node: "n-" + id, State: r.state.state(id), Local: i == 0})
	}
	return ms
}

func (r *snapRig) open(base Base, ids ...string) *Writer {
	r.t.Helper()
	w, err := OpenWriter(context.Background(), WriterConfig{VolumeID: "vol", Epoch: r.state.epoch, Size: r.size,
		Members: r.members(ids...), MinInSync: 2, Control: r.state, Dial: r.dial, RetryInterval: 20e6, Base: base})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { w.Close(context.Background()) })
	return w
}

// layer reads [off, off+n) of replica id with the blocks it holds.
func (r *snapRig) layer(id string, off, n int64) ([]byte, Presence) {
	r.t.Helper()
	p, have := make([]byte, n), NewPresence(n/BlockSize)
	if err := r.rep(id).ReadLayer(context.Background(), p, off, have); err != nil {
		r.t.Fatalf("read replica %s: %v", id, err)
	}
	return p, have
}

func (r *snapRig) sameExtents(a, b string) {
	r.t.Helper()
	ctx := context.Background()
	x, err := r.rep(a).Extents(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	y, err := r.rep(b).Extents(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	for i := range x {
		if x[i] != y[i] {
			r.t.Fatalf("extent %d: %s has %+v, %s %+v", i, a, x[i], b, y[i])
		}
	}
}

// A layered volume reads what it never wrote from its base; its writes
// and trims land in its own replicas only, and a trimmed block reads as
// zeroes, not as the parent's.
func TestWriterReadsThroughBase(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	parent := r.add("p", false)
	pdata := random(int(r.size))
	if err := parent.WriteAt(ctx, 0, 1, pdata, 0, false); err != nil {
		t.Fatal(err)
	}
	r.add("a", true)
	r.add("b", true)
	w := r.open(parent, "a", "b")

	const off, n = ExtentSize - 16<<10, 64 << 10
	got := make([]byte, n)
	if err := w.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, pdata[off:off+n]) {
		t.Fatalf("read through: %v", err)
	}
	mine := random(2 * BlockSize)
	if err := w.WriteAt(ctx, mine, ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Trim(ctx, ExtentSize+2*BlockSize, 3*BlockSize); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteZeroes(ctx, ExtentSize+5*BlockSize, BlockSize, true); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(pdata[off : off+n])
	rel := ExtentSize - off
	copy(want[rel:], mine)
	clear(want[rel+2*BlockSize : rel+6*BlockSize])
	if err := w.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after writes: %v", err)
	}
	p := make([]byte, r.size)
	if err := parent.ReadAt(ctx, p, 0); err != nil || !bytes.Equal(p, pdata) {
		t.Fatalf("the parent changed: %v", err)
	}
	for _, id := range []string{"a", "b"} {
		_, have := r.layer(id, 0, r.size)
		var present []int64
		for i := range r.size / BlockSize {
			if have.Has(i) {
				present = append(present, i-blocksPerExtent)
			}
		}
		if fmt.Sprint(present) != "[0 1 2 3 4 5]" {
			t.Fatalf("replica %s holds blocks %v of extent 1, want [0 1 2 3 4 5]", id, present)
		}
	}
	r.sameExtents("a", "b")
}

// A layered replica that missed writes is caught up with presence: it
// ends identical to the in-sync one, absent blocks included.
func TestWriterCatchUpLayered(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	parent := r.add("p", false)
	if err := parent.WriteAt(ctx, 0, 1, random(int(r.size)), 0, false); err != nil {
		t.Fatal(err)
	}
	r.add("a", true)
	r.add("b", true)
	r.add("c", true)
	r.state.states["p"] = ReplicaStale // the snapshot's, not counted
	w := r.open(parent, "a", "b", "c")
	r.link("c").Store(true)
	if err := w.WriteAt(ctx, random(3*BlockSize), ExtentSize+BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteZeroes(ctx, 2*ExtentSize, 2*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if r.state.state("c") != ReplicaStale {
		t.Fatalf("c is %s, want stale", r.state.state("c"))
	}
	r.link("c").Store(false)
	pollUntil(t, 10e9, func() bool { return w.Replicas()["c"] == ReplicaInSync })
	r.sameExtents("a", "c")
	pa, ha := r.layer("a", 0, r.size)
	pc, hc := r.layer("c", 0, r.size)
	if !bytes.Equal(pa, pc) || !equalPresence(ha, hc) {
		t.Fatal("the caught-up replica differs")
	}
	if w.Stats().ResyncExtents == 0 {
		t.Fatal("nothing was copied")
	}
}

// snapBlock is the block write s of writer g puts down.
func snapBlock(g, s int) []byte {
	b := bytes.Repeat([]byte{0xab}, BlockSize)
	binary.BigEndian.PutUint64(b[0:], uint64(g)+1)
	binary.BigEndian.PutUint64(b[8:], uint64(s)+1)
	return b
}

// Writes run on while a snapshot is taken: each lands whole in either the
// old replicas (now the snapshot's) or the new ones, those acknowledged
// before Snapshot began in the old, those begun after it returned in the
// new; and the volume reads every one through the new replicas and the
// base.
func TestWriterSnapshotConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 8<<20)
	r.add("r0", false)
	r.add("r1", false)
	w := r.open(nil, "r0", "r1")

	const writers, perWriter = 4, 150
	var acked [writers]atomic.Int64
	var firstAfter [writers]int // first write begun after Snapshot returned
	var snapped atomic.Bool
	var wg sync.WaitGroup
	for g := range writers {
		firstAfter[g] = -1
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range perWriter {
				if firstAfter[g] < 0 && snapped.Load() {
					firstAfter[g] = s
				}
				if err := w.WriteAt(ctx, snapBlock(g, s), int64(g*perWriter+s)*BlockSize, s%7 == 0); err != nil {
					t.Error(err)
					return
				}
				acked[g].Store(int64(s) + 1)
			}
		}()
	}
	pollUntil(t, 10e9, func() bool {
		for g := range writers {
			if acked[g].Load() < 20 {
				return false
			}
		}
		return true
	})
	var before [writers]int64
	for g := range writers {
		before[g] = acked[g].Load()
	}
	r.add("n0", true) // made by take, in truth
	r.add("n1", true)
	err := w.Snapshot(ctx, func(context.Context) (*Swap, error) {
		return &Swap{Members: r.members("n0", "n1"), Base: r.rep("r0")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	snapped.Store(true)
	if got := fmt.Sprint(w.Replicas()); got != "map[n0:in_sync n1:in_sync]" {
		t.Fatalf("replicas after the snapshot: %s", got)
	}
	wg.Wait()

	n := int64(writers * perWriter * BlockSize)
	old0, _ := r.layer("r0", 0, n)
	o1, _ := r.layer("r1", 0, n)
	if !bytes.Equal(old0, o1) {
		t.Fatal("the old replicas differ")
	}
	new0, have := r.layer("n0", 0, n)
	n1, have1 := r.layer("n1", 0, n)
	if !bytes.Equal(new0, n1) || !equalPresence(have, have1) {
		t.Fatal("the new replicas differ")
	}
	zero := make([]byte, BlockSize)
	for g := range writers {
		k := -1 // the first write in the new replicas
		for s := range perWriter {
			i := g*perWriter + s
			want := snapBlock(g, s)
			inOld := bytes.Equal(old0[i*BlockSize:(i+1)*BlockSize], want)
			inNew := have.Has(int64(i)) && bytes.Equal(new0[i*BlockSize:(i+1)*BlockSize], want)
			switch {
			case inOld == inNew:
				t.Fatalf("write %d of %d: in the old replicas %v, in the new %v", s, g, inOld, inNew)
			case inNew && k < 0:
				k = s
			case inOld && k >= 0:
				t.Fatalf("write %d of %d is in the old replicas after write %d in the new", s, g, k)
			case !inOld && !bytes.Equal(old0[i*BlockSize:(i+1)*BlockSize], zero):
				t.Fatalf("write %d of %d: the old replicas hold something else", s, g)
			}
		}
		if k < 0 {
			k = perWriter
		}
		t.Logf("writer %d: %d acknowledged before the snapshot, %d in it, first begun after it %d", g, before[g], k, firstAfter[g])
		if int64(k) < before[g] {
			t.Fatalf("writer %d: write %d, acknowledged before the snapshot, is not in it", g, k)
		}
		if firstAfter[g] >= 0 && firstAfter[g] < k {
			t.Fatalf("writer %d: write %d, begun after the snapshot, is in it", g, firstAfter[g])
		}
	}
	got := make([]byte, n)
	if err := w.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	for g := range writers {
		for s := range perWriter {
			i := g*perWriter + s
			if !bytes.Equal(got[i*BlockSize:(i+1)*BlockSize], snapBlock(g, s)) {
				t.Fatalf("the volume reads write %d of %d wrong", s, g)
			}
		}
	}
}

// A take that fails leaves the writer on its replicas; one whose outcome
// is unknown stops it.
func TestWriterSnapshotTakeFails(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	r.add("r0", false)
	r.add("r1", false)
	w := r.open(nil, "r0", "r1")
	boom := errors.New("refused")
	if err := w.Snapshot(ctx, func(context.Context) (*Swap, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("Snapshot = %v", err)
	}
	if got := fmt.Sprint(w.Replicas()); got != "map[r0:in_sync r1:in_sync]" {
		t.Fatalf("replicas after a failed snapshot: %s", got)
	}
	data := random(BlockSize)
	if err := w.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r0", "r1"} {
		if p, _ := r.layer(id, 0, BlockSize); !bytes.Equal(p, data) {
			t.Fatalf("the write after a failed snapshot missed %s", id)
		}
	}

	err := w.Snapshot(ctx, func(context.Context) (*Swap, error) {
		return nil, fmt.Errorf("commit timed out: %w", ErrOutcomeUnknown)
	})
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Snapshot = %v", err)
	}
	if err := w.WriteAt(ctx, random(BlockSize), 0, false); !errors.Is(err, nbd.ESHUTDOWN) {
		t.Fatalf("write after an unknown outcome: %v", err)
	}
	if err := w.ReadAt(ctx, make([]byte, BlockSize), 0); !errors.Is(err, nbd.ESHUTDOWN) {
		t.Fatalf("read after an unknown outcome: %v", err)
	}
	if p, _ := r.layer("r0", 0, BlockSize); !bytes.Equal(p, data) {
		t.Fatal("a replica changed after the unknown outcome")
	}
}

// A new replica that cannot be reached is marked stale, and caught up
// from the other new one once it can.
func TestWriterSnapshotNewReplicaUnreachable(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	r.add("r0", false)
	r.add("r1", false)
	w := r.open(nil, "r0", "r1")
	if err := w.WriteAt(ctx, random(ExtentSize), 0, false); err != nil {
		t.Fatal(err)
	}
	r.add("n0", true)
	r.add("n1", true)
	err := w.Snapshot(ctx, func(context.Context) (*Swap, error) {
		r.link("n1").Store(true)
		return &Swap{Members: r.members("n0", "n1"), Base: r.rep("r0")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.state.state("n1"); s != ReplicaStale {
		t.Fatalf("n1 is %s, want stale", s)
	}
	if err := w.WriteAt(ctx, random(2*BlockSize), ExtentSize-BlockSize, false); err != nil {
		t.Fatal(err)
	}
	r.link("n1").Store(false)
	pollUntil(t, 10e9, func() bool { return w.Replicas()["n1"] == ReplicaInSync })
	r.sameExtents("n0", "n1")
	_, have := r.layer("n1", 0, 2*ExtentSize)
	var present []int64
	for i := range int64(2 * blocksPerExtent) {
		if have.Has(i) {
			present = append(present, i)
		}
	}
	if fmt.Sprint(present) != fmt.Sprint([]int64{blocksPerExtent - 1, blocksPerExtent}) {
		t.Fatalf("n1 holds blocks %v", present)
	}
}

// Once take has succeeded the old replicas are the snapshot's: if the new
// ones cannot be used, the writer stops rather than write to either.
func TestWriterSnapshotSwapUnusable(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	r.add("r0", false)
	r.add("r1", false)
	w := r.open(nil, "r0", "r1")
	r.add("n0", true)
	r.link("n0").Store(true)
	err := w.Snapshot(ctx, func(context.Context) (*Swap, error) {
		return &Swap{Members: r.members("n0"), Base: r.rep("r0")}, nil
	})
	if err == nil {
		t.Fatal("a snapshot with no reachable new replica succeeded")
	}
	if err := w.WriteAt(ctx, random(BlockSize), 0, false); !errors.Is(err, nbd.ESHUTDOWN) {
		t.Fatalf("write after the swap failed: %v", err)
	}
	if p, _ := r.layer("r0", 0, BlockSize); !bytes.Equal(p, make([]byte, BlockSize)) {
		t.Fatal("the snapshot's replica changed")
	}
}

// slowFlush holds a replica's flushes, once armed, until released.
type slowFlush struct {
	Target
	armed   *atomic.Bool
	release chan struct{}
}

func (s slowFlush) Flush(ctx context.Context, epoch uint64) error {
	if s.armed.Load() {
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Target.Flush(ctx, epoch)
}

// countFlush counts a replica's flushes.
type countFlush struct {
	Target
	n *atomic.Int32
}

func (c countFlush) Flush(ctx context.Context, epoch uint64) error {
	c.n.Add(1)
	return c.Target.Flush(ctx, epoch)
}

// A flush, which changes no copy, reaches the local replica without
// waiting for a remote one (a write waits, so a fenced writer changes no
// copy); it returns only once every replica has flushed.
func TestFlushDoesNotWaitForRemotes(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	r.add("a", false)
	r.add("b", false)
	release := make(chan struct{})
	var armed atomic.Bool
	var localFlushes atomic.Int32
	w, err := OpenWriter(ctx, WriterConfig{VolumeID: "vol", Epoch: r.state.epoch, Size: r.size,
		Members: r.members("a", "b"), MinInSync: 2, Control: r.state, RetryInterval: 20e6,
		Dial: func(ctx context.Context, m Member) (Target, error) {
			t, err := r.dial(ctx, m)
			if err != nil || m.Local {
				return countFlush{t, &localFlushes}, err
			}
			return slowFlush{t, &armed, release}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	if err := w.WriteAt(ctx, random(BlockSize), 0, false); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	localFlushes.Store(0)
	done := make(chan error, 1)
	go func() { done <- w.Flush(ctx) }()
	pollUntil(t, 5e9, func() bool { return localFlushes.Load() == 1 })
	select {
	case err := <-done:
		t.Fatalf("the flush returned before the remote replica flushed: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
