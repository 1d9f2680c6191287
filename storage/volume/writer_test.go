package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/storage/nbd"
)

// The writer's tests use real replicas (files in a temporary directory),
// reached through a wrapper that can cut one off like a dead box. The
// replicated state's part (epochs, the in-sync floor) is played by
// testState, whose rules the FSM's own tests pin.

type testState struct {
	mu     sync.Mutex
	epoch  uint64
	states map[string]string
	calls  []string
}

func (s *testState) SetReplicaState(_ context.Context, vol string, epoch uint64, replica, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, replica+"="+state)
	if epoch != s.epoch {
		return fmt.Errorf("epoch %d is not %d: %w", epoch, s.epoch, ErrFenced)
	}
	if state == ReplicaStale {
		in := 0
		for id, st := range s.states {
			if st == ReplicaInSync && id != replica {
				in++
			}
		}
		if in < min(2, len(s.states)) {
			return errors.New("too few replicas would stay in sync")
		}
	}
	s.states[replica] = state
	return nil
}

func (s *testState) state(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states[id]
}

// cuttable is a replica behind a link that can be cut.
type cuttable struct {
	Target
	down *atomic.Bool
}

var errCut = errors.New("link cut")

func (c cuttable) check() error {
	if c.down.Load() {
		return errCut
	}
	return nil
}
func (c cuttable) Fence(ctx context.Context, e uint64) (ReplicaState, error) {
	if err := c.check(); err != nil {
		return ReplicaState{}, err
	}
	return c.Target.Fence(ctx, e)
}
func (c cuttable) WriteAt(ctx context.Context, e, g uint64, p []byte, off int64, fua bool) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Target.WriteAt(ctx, e, g, p, off, fua)
}
func (c cuttable) Zero(ctx context.Context, e, g uint64, off, n int64, punch bool) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Target.Zero(ctx, e, g, off, n, punch)
}
func (c cuttable) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Target.ReadAt(ctx, p, off)
}
func (c cuttable) ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Target.ReadLayer(ctx, p, off, have)
}
func (c cuttable) Flush(ctx context.Context, e uint64) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Target.Flush(ctx, e)
}
func (c cuttable) Resize(ctx context.Context, e uint64, size int64) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Target.Resize(ctx, e, size)
}
func (c cuttable) Close() error { return nil } // the test owns the replicas

type rig struct {
	t     *testing.T
	dirs  []string
	reps  []*DiskReplica
	down  []*atomic.Bool
	state *testState
	size  int64
}

func newRig(t *testing.T, n int, size int64) *rig {
	r := &rig{t: t, size: size, state: &testState{states: map[string]string{}}}
	for i := range n {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("r%d", i))
		if err := CreateReplica(dir, size, false); err != nil {
			t.Fatal(err)
		}
		rep, err := OpenReplica(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rep.Close() })
		r.dirs, r.reps = append(r.dirs, dir), append(r.reps, rep)
		r.down = append(r.down, new(atomic.Bool))
		r.state.states[fmt.Sprintf("r%d", i)] = ReplicaInSync
	}
	return r
}

// open opens a writer with a new epoch; replica 0 is the local one.
func (r *rig) open() *Writer { return r.openWith(r.down) }

// openWith opens a writer that sees the replicas through its own links.
func (r *rig) openWith(down []*atomic.Bool) *Writer {
	r.t.Helper()
	r.state.mu.Lock()
	r.state.epoch++
	cfg := WriterConfig{VolumeID: "vol", Epoch: r.state.epoch, Size: r.size, MinInSync: min(2, len(r.reps)), Control: r.state,
		RetryInterval: 20e6}
	for i := range r.reps {
		id := fmt.Sprintf("r%d", i)
		cfg.Members = append(cfg.Members, Member{ID: id, Node: id, State: r.state.states[id], Local: i == 0})
	}
	r.state.mu.Unlock()
	cfg.Dial = func(_ context.Context, m Member) (Target, error) {
		var i int
		fmt.Sscanf(m.ID, "r%d", &i)
		if down[i].Load() {
			return nil, errCut
		}
		return cuttable{r.reps[i], down[i]}, nil
	}
	w, err := OpenWriter(context.Background(), cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { w.Close(context.Background()) })
	return w
}

func (r *rig) read(i int, off, n int64) []byte {
	r.t.Helper()
	p := make([]byte, n)
	if err := r.reps[i].ReadAt(context.Background(), p, off); err != nil {
		r.t.Fatalf("read replica %d: %v", i, err)
	}
	return p
}

func random(n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	return p
}

func TestWriterWritesEveryReplica(t *testing.T) {
	r := newRig(t, 3, 8<<20)
	w := r.open()
	ctx := context.Background()
	data := random(64 << 10)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.WriteAt(ctx, data, int64(i)*(192<<10), i%5 == 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for j := range 32 {
			if !bytes.Equal(r.read(i, int64(j)*(192<<10), 64<<10), data) {
				t.Fatalf("replica %d lacks write %d", i, j)
			}
		}
	}
	a, _ := r.reps[0].Extents(ctx)
	for i := 1; i < 3; i++ {
		b, _ := r.reps[i].Extents(ctx)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("replica %d's extents differ from replica 0's", i)
		}
	}
	got := make([]byte, 64<<10)
	if err := w.ReadAt(ctx, got, 192<<10); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the writer: %v", err)
	}
}

// A replica that stops answering is marked stale and the writes carry on;
// when it answers again only the extents written meanwhile are copied.
func TestWriterCarriesOnAndCatchesUp(t *testing.T) {
	r := newRig(t, 3, 16<<20)
	w := r.open()
	ctx := context.Background()
	base := random(16 << 20)
	if err := w.WriteAt(ctx, base, 0, false); err != nil {
		t.Fatal(err)
	}
	r.down[2].Store(true)
	later := random(4096)
	for _, off := range []int64{3<<20 + 4096, 7 << 20, 7<<20 + 8192} { // two extents
		if err := w.WriteAt(ctx, later, off, false); err != nil {
			t.Fatalf("write with a replica down: %v", err)
		}
		copy(base[off:], later)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.state.state("r2"); got != ReplicaStale {
		t.Fatalf("the cut replica is %q, want stale", got)
	}
	before := w.Stats().ResyncBytes
	r.down[2].Store(false)
	waitFor(t, func() bool { return r.state.state("r2") == ReplicaInSync })
	if moved := w.Stats().ResyncBytes - before; moved != 2*ExtentSize {
		t.Fatalf("catch-up copied %d bytes, want the two extents written meanwhile (%d)", moved, 2*ExtentSize)
	}
	if !bytes.Equal(r.read(2, 0, 16<<20), base) {
		t.Fatal("the caught-up replica's bytes differ")
	}
}

// Losing a second replica of three would leave one copy: the state refuses
// to mark it stale and the write fails instead of being acknowledged on
// one box.
func TestWriterKeepsTwoCopies(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	w := r.open()
	ctx := context.Background()
	r.down[1].Store(true)
	if err := w.WriteAt(ctx, random(4096), 0, false); err != nil {
		t.Fatal(err)
	}
	r.down[2].Store(true)
	err := w.WriteAt(ctx, random(4096), 4096, false)
	if !errors.Is(err, nbd.EIO) {
		t.Fatalf("a write with one copy left: %v, want EIO", err)
	}
}

// A writer whose epoch was superseded changes no replica, its own
// included: the local copy is written only after a remote one accepted
// the epoch.
func TestWriterFenced(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	old := r.open()
	ctx := context.Background()
	first := random(8192)
	if err := old.WriteAt(ctx, first, 0, false); err != nil {
		t.Fatal(err)
	}
	nw := r.open() // epoch 2 fences every replica
	second := random(8192)
	if err := nw.WriteAt(ctx, second, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := old.WriteAt(ctx, random(8192), 0, true); !errors.Is(err, nbd.ESHUTDOWN) {
		t.Fatalf("the old writer's write: %v, want ESHUTDOWN", err)
	}
	if err := old.Flush(ctx); !errors.Is(err, nbd.ESHUTDOWN) {
		t.Fatalf("the old writer's flush: %v", err)
	}
	for i := range 3 {
		if !bytes.Equal(r.read(i, 0, 8192), second) {
			t.Fatalf("replica %d does not hold exactly the new writer's bytes", i)
		}
	}
}

// A writer cut off from its peers, whose own replica the new writer could
// not reach (so it was marked stale, not fenced), still writes nothing to
// it: the local copy waits for a remote one to accept the epoch.
func TestWriterFencedKeepsOwnCopyClean(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	old := r.open()
	ctx := context.Background()
	first := random(8192)
	if err := old.WriteAt(ctx, first, 0, false); err != nil {
		t.Fatal(err)
	}
	// The new writer cannot reach replica 0, the old writer's own.
	view := []*atomic.Bool{new(atomic.Bool), new(atomic.Bool), new(atomic.Bool)}
	view[0].Store(true)
	nw := r.openWith(view)
	if got := r.state.state("r0"); got != ReplicaStale {
		t.Fatalf("the unreachable replica is %q, want stale", got)
	}
	if err := nw.WriteAt(ctx, random(4096), 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := old.WriteAt(ctx, random(8192), 0, false); !errors.Is(err, nbd.ESHUTDOWN) {
		t.Fatalf("the old writer's write: %v, want ESHUTDOWN", err)
	}
	if !bytes.Equal(r.read(0, 0, 8192), first) {
		t.Fatal("the fenced writer changed its own replica")
	}
}

// A flipped byte on the local replica is answered from another and
// repaired.
func TestWriterReadRepair(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	w := r.open()
	ctx := context.Background()
	data := random(1 << 20)
	if err := w.WriteAt(ctx, data, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(r.dirs[0], "data"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{data[5000] ^ 0xff}
	f.WriteAt(b, 1<<20+5000)
	f.Close()
	got := make([]byte, 8192)
	if err := w.ReadAt(ctx, got, 1<<20); err != nil || !bytes.Equal(got, data[:8192]) {
		t.Fatalf("read over a flipped byte: %v", err)
	}
	if w.Stats().Repairs != 1 {
		t.Fatalf("repairs = %d", w.Stats().Repairs)
	}
	if !bytes.Equal(r.read(0, 1<<20, 1<<20), data) {
		t.Fatal("the damaged replica was not repaired")
	}
}

// Replicas that disagree (a writer stopped between them) agree once a new
// writer opened the volume.
func TestOpenReconciles(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	ctx := context.Background()
	for i := range 3 {
		if _, err := r.reps[i].Fence(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	r.state.epoch = 1
	// A write that reached replica 1 only.
	if err := r.reps[1].WriteAt(ctx, 1, 9, random(4096), 2<<20, false); err != nil {
		t.Fatal(err)
	}
	w := r.open()
	if w.Stats().ResyncExtents != 2 {
		t.Fatalf("reconcile copied %d extents, want 2 (one into each other replica)", w.Stats().ResyncExtents)
	}
	for i := 1; i < 3; i++ {
		if !bytes.Equal(r.read(0, 0, 4<<20), r.read(i, 0, 4<<20)) {
			t.Fatalf("replica %d differs after open", i)
		}
	}
	// New writes get generations above the one found.
	if err := w.WriteAt(ctx, random(4096), 2<<20, false); err != nil {
		t.Fatal(err)
	}
	e, _ := r.reps[2].Extents(ctx)
	if e[2].Gen <= 9 {
		t.Fatalf("new generation %d is not above 9", e[2].Gen)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met in 5 s")
}

// Online extend: the replicas that take writes grow before the new size
// is served; one cut off meanwhile is grown when it is caught up, and gets
// what was written beyond the old end.
func TestWriterGrowsOnline(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	w := r.open()
	ctx := context.Background()
	head := random(64 << 10)
	if err := w.WriteAt(ctx, head, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Grow(ctx, 3<<20); err != nil || w.Size() != 4<<20 {
		t.Fatalf("a smaller size is no change: %v, size %d", err, w.Size())
	}
	if err := w.Grow(ctx, 5<<20+1); err == nil {
		t.Fatal("grow to a size that is not a multiple of the block size")
	}
	r.down[2].Store(true)
	if err := w.Grow(ctx, 12<<20); err != nil {
		t.Fatal(err)
	}
	if w.Size() != 12<<20 {
		t.Fatalf("size after grow: %d", w.Size())
	}
	if got := r.state.state("r2"); got != ReplicaStale {
		t.Fatalf("the replica cut off during the grow is %q, want stale", got)
	}
	tail := random(64 << 10)
	if err := w.WriteAt(ctx, tail, 10<<20, true); err != nil {
		t.Fatalf("write beyond the old end: %v", err)
	}
	got := make([]byte, len(tail))
	if err := w.ReadAt(ctx, got, 10<<20); err != nil || !bytes.Equal(got, tail) {
		t.Fatalf("read beyond the old end: %v", err)
	}
	for i := range 2 {
		if st, err := r.reps[i].Fence(ctx, r.state.epoch); err != nil || st.Size != 12<<20 {
			t.Fatalf("replica %d after the grow: %+v %v", i, st, err)
		}
	}
	r.down[2].Store(false)
	waitFor(t, func() bool { return r.state.state("r2") == ReplicaInSync })
	if !bytes.Equal(r.read(2, 10<<20, 64<<10), tail) || !bytes.Equal(r.read(2, 0, 64<<10), head) {
		t.Fatal("the caught-up replica lacks a write")
	}
}

// The scrubber reads every in-sync copy, not only the one reads are served
// from: a bad block on a remote replica is found and rewritten from a good
// copy.
func TestWriterScrubRepairsEveryCopy(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	w := r.open()
	ctx := context.Background()
	data := random(4 << 20)
	if err := w.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	flip := func(i int, off int64) {
		f, err := os.OpenFile(filepath.Join(r.dirs[i], "data"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{data[off] ^ 0x5a}, off); err != nil {
			t.Fatal(err)
		}
	}
	flip(1, 1<<20+77)
	flip(2, 3<<20+4096)
	read, repaired, err := w.Scrub(ctx, 0)
	if err != nil || repaired != 2 || read != 3*(4<<20)-2*ExtentSize { // the two bad extents were repaired, not read
		t.Fatalf("scrub: read %d, repaired %d, %v", read, repaired, err)
	}
	for i := range 3 {
		if !bytes.Equal(r.read(i, 0, 4<<20), data) {
			t.Fatalf("replica %d still differs after the scrub", i)
		}
	}
	if _, repaired, err := w.Scrub(ctx, 0); err != nil || repaired != 0 {
		t.Fatalf("a second scrub repaired %d: %v", repaired, err)
	}
}

// A copy the scrubber cannot read is no longer counted in sync (its
// catch-up rewrites it), and the scrub is not done: it returns an error,
// so it is not recorded.
func TestWriterScrubDropsAnUnreadableCopy(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	w := r.open()
	ctx := context.Background()
	if err := w.WriteAt(ctx, random(1<<20), 0, true); err != nil {
		t.Fatal(err)
	}
	r.down[2].Store(true)
	if _, _, err := w.Scrub(ctx, 0); err == nil {
		t.Fatal("a scrub that could not read a copy says it is done")
	}
	if got := r.state.state("r2"); got != ReplicaStale {
		t.Fatalf("the unreadable copy is %q, want stale", got)
	}
	r.down[2].Store(false)
	waitFor(t, func() bool { return r.state.state("r2") == ReplicaInSync })
	if _, _, err := w.Scrub(ctx, 0); err != nil {
		t.Fatalf("a scrub of three good copies: %v", err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.Scrub(ctx, 0); err == nil {
		t.Fatal("a scrub of a closed volume says it is done")
	}
}
