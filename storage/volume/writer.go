package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/storage/nbd"
)

// Control is what a writer needs from the replicated state.
type Control interface {
	// SetReplicaState records a replica's state under the writer's epoch.
	// It fails if the epoch has moved on (the writer is fenced) or if it
	// would leave too few replicas in sync.
	SetReplicaState(ctx context.Context, volumeID string, epoch uint64, replicaID, state string) error
}

// Member is one replica of the volume as the writer starts with it.
type Member struct {
	ID    string
	Node  string
	State string // as recorded: in_sync or stale
	// Local is true for the replica on the writer's own node: reads go
	// there first.
	Local bool
}

// WriterConfig opens a volume for writing.
type WriterConfig struct {
	VolumeID string
	Epoch    uint64 // granted to this node in the replicated state
	Size     int64
	Members  []Member
	// MinInSync is the fewest in-sync replicas a write may be acknowledged
	// with: 2, or 1 on a single-node cluster.
	MinInSync int
	Control   Control
	// Dial reaches a replica (the local one without a network hop).
	Dial func(ctx context.Context, m Member) (Target, error)
	// CallTimeout bounds one call to a replica; a replica that does not
	// answer in time is treated as failed (default 10 s).
	CallTimeout time.Duration
	// RetryInterval is how often stale replicas are tried again for a
	// resync (default 5 s).
	RetryInterval time.Duration
	Log           *slog.Logger
	// Base is the snapshot the volume is layered on, nil when it is not:
	// blocks its replicas never wrote are read from it.
	Base Base
}

// member is a replica as the writer uses it.
type member struct {
	Member
	t       Target // nil while unreachable
	state   string // in_sync, stale, rebuilding
	staling chan struct{}
	err     error // outcome of staling, once closed
	lost    int   // times a rebuild was abandoned because a write missed it
	// conn counts the connections the writer has given t: Targets need
	// not be comparable, so a failure is matched to its connection by it.
	conn uint64
}

// Stats counts what the writer did, for tests and metrics.
type Stats struct {
	ResyncBytes   int64 // bytes copied into replicas to bring them in sync
	ResyncExtents int64
	Repairs       int64 // reads served from another replica after a checksum mismatch
	// RebuildLeft is what is still to be copied into replicas being
	// caught up, in bytes: the rebuild's progress.
	RebuildLeft int64
	// Scrubbed counts the bytes the scrubber read from the replicas.
	Scrubbed int64
	// Writes counts the writes, zeroings and trims asked of this writer
	// (whether or not they succeeded).
	Writes int64
}

// Writer is a volume open for writing on this node: an nbd.Backend that
// sends every write to all in-sync replicas. See the package comment.
type Writer struct {
	cfg   WriterConfig
	log   *slog.Logger
	ctx   context.Context
	stop  context.CancelFunc
	done  chan struct{}
	locks rangeLocks

	gen    atomic.Uint64
	fenced atomic.Bool

	// snap is the whole-volume barrier of Snapshot (which holds it): every
	// operation that reads or changes the replicas holds it shared, taken
	// before any range lock.
	snap sync.RWMutex

	mu      sync.Mutex // guards members' state and t, members and base
	members []*member
	base    Base
	// swaps counts the snapshots taken (guarded by snap): a merge under
	// way stops at one, as the replicas it fills become the snapshot's.
	swaps uint64
	// extGen is the generation this writer last gave each extent, so a
	// resync copies an extent with the generation it has now.
	extGen *extGens
	// size is the volume's size now: it only grows (Grow).
	size   atomic.Int64
	growMu sync.Mutex

	resyncBytes, resyncExtents, repairs atomic.Int64
	rebuildLeft, scrubbed, writes       atomic.Int64
}

var _ nbd.Backend = (*Writer)(nil)

// OpenWriter fences the volume's replicas with cfg.Epoch, marks those it
// cannot reach stale, brings the reachable ones to the same bytes, and
// returns a writer. Stale replicas are caught up in the background.
func OpenWriter(ctx context.Context, cfg WriterConfig) (*Writer, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	if cfg.MinInSync <= 0 {
		cfg.MinInSync = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Size <= 0 || cfg.Size%BlockSize != 0 {
		return nil, fmt.Errorf("open volume %s: size %d is not a positive multiple of %d", cfg.VolumeID, cfg.Size, BlockSize)
	}
	w := &Writer{cfg: cfg, log: cfg.Log.With("volume", cfg.VolumeID, "epoch", cfg.Epoch), done: make(chan struct{}),
		extGen: newExtGens()}
	w.size.Store(cfg.Size)
	w.base = cfg.Base
	for _, m := range cfg.Members {
		w.members = append(w.members, &member{Member: m, state: m.State})
	}
	if err := w.open(ctx); err != nil {
		w.closeTargets()
		return nil, fmt.Errorf("open volume %s: %w", cfg.VolumeID, err)
	}
	w.ctx, w.stop = context.WithCancel(context.Background())
	go w.catchUpLoop()
	return w, nil
}

func extents(size int64) int64 { return (size + ExtentSize - 1) / ExtentSize }

// open fences every replica it reaches; in-sync ones it cannot reach are
// marked stale; the fenced in-sync ones are made equal extent by extent.
func (w *Writer) open(ctx context.Context) error {
	type fenced struct {
		st  ReplicaState
		err error
	}
	res := make([]fenced, len(w.members))
	var wg sync.WaitGroup
	for i, m := range w.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
			defer cancel()
			t, err := w.cfg.Dial(cctx, m.Member)
			if err == nil {
				res[i].st, err = t.Fence(cctx, w.cfg.Epoch)
				if err != nil {
					t.Close()
				} else {
					m.t = t
				}
			}
			res[i].err = err
		}()
	}
	wg.Wait()
	var maxGen uint64
	var synced []*member
	for i, m := range w.members {
		if errors.Is(res[i].err, ErrFenced) {
			return fmt.Errorf("replica %s: %w", m.ID, ErrFenced)
		}
		if m.state != ReplicaInSync {
			continue
		}
		if res[i].err != nil {
			w.log.Warn("replica unreachable at open; marking it stale", "replica", m.ID, "node", m.Node, "err", res[i].err)
			if err := w.cfg.Control.SetReplicaState(ctx, w.cfg.VolumeID, w.cfg.Epoch, m.ID, ReplicaStale); err != nil {
				return fmt.Errorf("mark replica %s stale: %w", m.ID, err)
			}
			m.state = ReplicaStale
			if m.t != nil {
				m.t.Close()
				m.t = nil
			}
			continue
		}
		if res[i].st.Size < w.Size() {
			if err := w.bounded(ctx, func(ctx context.Context) error { return m.t.Resize(ctx, w.cfg.Epoch, w.Size()) }); err != nil {
				return fmt.Errorf("grow replica %s: %w", m.ID, err)
			}
		}
		maxGen = max(maxGen, res[i].st.MaxGen)
		synced = append(synced, m)
	}
	if len(synced) == 0 {
		return errors.New("no in-sync replica is reachable")
	}
	// Replicas that were stale may hold generations of writes that failed
	// elsewhere; new generations must be above those too.
	for i, m := range w.members {
		if m.state != ReplicaInSync && m.t != nil {
			maxGen = max(maxGen, res[i].st.MaxGen)
			m.t.Close()
			m.t = nil
		}
	}
	w.gen.Store(maxGen)
	return w.reconcile(ctx, synced)
}

// reconcile makes the given replicas hold the same bytes: for each extent
// on which they differ, the copy with the highest generation that reads
// back whole is written to the others. Replicas disagree only on writes
// that were never acknowledged (a writer stopped mid-write), so either
// choice is correct; what matters is that all agree from now on.
func (w *Writer) reconcile(ctx context.Context, ms []*member) error {
	if len(ms) < 2 {
		return nil
	}
	tables := make([][]ExtentInfo, len(ms))
	for i, m := range ms {
		var t []ExtentInfo
		err := w.bounded(ctx, func(ctx context.Context) (err error) { t, err = m.t.Extents(ctx); return err })
		if err != nil {
			return fmt.Errorf("extents of replica %s: %w", m.ID, err)
		}
		tables[i] = t
	}
	buf := make([]byte, ExtentSize)
	have := NewPresence(blocksPerExtent)
	for idx := range extents(w.Size()) {
		same := true
		for i := 1; i < len(ms); i++ {
			if at(tables[i], idx) != at(tables[0], idx) {
				same = false
				break
			}
		}
		if same {
			continue
		}
		// Candidates by generation, highest first.
		order := make([]int, len(ms))
		for i := range order {
			order[i] = i
		}
		for i := 1; i < len(order); i++ {
			for j := i; j > 0 && at(tables[order[j]], idx).Gen > at(tables[order[j-1]], idx).Gen; j-- {
				order[j], order[j-1] = order[j-1], order[j]
			}
		}
		src := -1
		var n int
		for _, i := range order {
			var err error
			if err = w.bounded(ctx, func(ctx context.Context) (err error) { n, err = ms[i].t.ReadExtent(ctx, idx, buf, have); return err }); err == nil {
				src = i
				break
			}
			w.log.Warn("extent unreadable during reconcile", "replica", ms[i].ID, "extent", idx, "err", err)
		}
		if src < 0 {
			return fmt.Errorf("extent %d reads back whole from no replica", idx)
		}
		want := at(tables[src], idx)
		for i, m := range ms {
			if i == src || at(tables[i], idx) == want {
				continue
			}
			if err := w.bounded(ctx, func(ctx context.Context) error {
				return m.t.WriteExtent(ctx, w.cfg.Epoch, idx, want.Gen, buf[:n], have)
			}); err != nil {
				return fmt.Errorf("reconcile extent %d into replica %s: %w", idx, m.ID, err)
			}
			w.resyncBytes.Add(int64(n))
			w.resyncExtents.Add(1)
		}
	}
	for _, m := range ms {
		if err := w.bounded(ctx, func(ctx context.Context) error { return m.t.Flush(ctx, w.cfg.Epoch) }); err != nil {
			return fmt.Errorf("flush replica %s: %w", m.ID, err)
		}
	}
	return nil
}

// bounded runs one replica call under the call timeout.
func (w *Writer) bounded(ctx context.Context, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	return call(ctx)
}

func at(t []ExtentInfo, idx int64) ExtentInfo {
	if idx < int64(len(t)) {
		return t[idx]
	}
	return ExtentInfo{}
}

// Size implements nbd.Backend.
func (w *Writer) Size() int64 { return w.size.Load() }

// Grow makes the volume size bytes (online extend): every replica that
// takes writes grows first, as a write reaches it (one that cannot is
// dropped from the writes and caught up later, grown then), and only then
// do new NBD connections see the new size. A smaller size is no change.
func (w *Writer) Grow(ctx context.Context, size int64) error {
	if size <= 0 || size%BlockSize != 0 || size > maxReplicaSize {
		return fmt.Errorf("grow volume %s to %d: not a positive multiple of %d up to %d", w.cfg.VolumeID, size, BlockSize, int64(maxReplicaSize))
	}
	w.growMu.Lock()
	defer w.growMu.Unlock()
	w.snap.RLock()
	defer w.snap.RUnlock()
	if size <= w.Size() {
		return nil
	}
	if err := w.fanout(ctx, "grow", func(ctx context.Context, t Target) error { return t.Resize(ctx, w.cfg.Epoch, size) }); err != nil {
		return fmt.Errorf("grow volume %s: %w", w.cfg.VolumeID, err)
	}
	w.size.Store(size)
	return nil
}

// extGens holds the generation this writer last gave each extent, in
// pages made as the volume grows into them (a volume may grow online).
type extGens struct {
	pages []atomic.Pointer[[genPage]atomic.Uint64]
}

const genPage = 4096 // extents: 4 GiB of volume

func newExtGens() *extGens {
	return &extGens{pages: make([]atomic.Pointer[[genPage]atomic.Uint64], extents(maxReplicaSize)/genPage+1)}
}

func (g *extGens) at(idx int64) *atomic.Uint64 {
	slot := &g.pages[idx/genPage]
	p := slot.Load()
	if p == nil {
		p = new([genPage]atomic.Uint64)
		if !slot.CompareAndSwap(nil, p) {
			p = slot.Load()
		}
	}
	return &p[idx%genPage]
}

// Stats reports what the writer copied and repaired so far.
func (w *Writer) Stats() Stats {
	return Stats{ResyncBytes: w.resyncBytes.Load(), ResyncExtents: w.resyncExtents.Load(), Repairs: w.repairs.Load(),
		RebuildLeft: w.rebuildLeft.Load(), Scrubbed: w.scrubbed.Load(), Writes: w.writes.Load()}
}

// Replicas reports each replica's state as this writer sees it.
func (w *Writer) Replicas() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for _, m := range w.members {
		out[m.ID] = m.state
	}
	return out
}

// WriteAt implements nbd.Backend.
func (w *Writer) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	w.writes.Add(1)
	w.snap.RLock()
	defer w.snap.RUnlock()
	unlock := w.locks.lock(off, int64(len(p)))
	defer unlock()
	gen := w.nextGen(off, int64(len(p)))
	return w.fanout(ctx, "write", func(ctx context.Context, t Target) error {
		return t.WriteAt(ctx, w.cfg.Epoch, gen, p, off, fua)
	})
}

// WriteZeroes implements nbd.Backend. A large range (a guest's mkfs, a
// whole-disk discard) goes in pieces, so no replica call runs longer than
// its timeout allows and writes elsewhere are not held up.
func (w *Writer) WriteZeroes(ctx context.Context, off, length int64, noHole bool) error {
	w.writes.Add(1)
	for length > 0 {
		n := min(length, zeroPiece)
		if err := w.zero(ctx, off, n, !noHole); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

const zeroPiece = 64 << 20

func (w *Writer) zero(ctx context.Context, off, length int64, punch bool) error {
	w.snap.RLock()
	defer w.snap.RUnlock()
	unlock := w.locks.lock(off, length)
	defer unlock()
	gen := w.nextGen(off, length)
	return w.fanout(ctx, "zero", func(ctx context.Context, t Target) error {
		return t.Zero(ctx, w.cfg.Epoch, gen, off, length, punch)
	})
}

// Trim implements nbd.Backend: the range reads as zeroes afterwards, on
// every replica alike.
func (w *Writer) Trim(ctx context.Context, off, length int64) error {
	return w.WriteZeroes(ctx, off, length, false)
}

// Flush implements nbd.Backend.
func (w *Writer) Flush(ctx context.Context) error {
	w.snap.RLock()
	defer w.snap.RUnlock()
	return w.fanout(ctx, "flush", func(ctx context.Context, t Target) error {
		return t.Flush(ctx, w.cfg.Epoch)
	})
}

func (w *Writer) nextGen(off, length int64) uint64 {
	gen := w.gen.Add(1)
	for idx := off / ExtentSize; idx <= (off+length-1)/ExtentSize; idx++ {
		for {
			cur := w.extGen.at(idx).Load()
			if cur >= gen || w.extGen.at(idx).CompareAndSwap(cur, gen) {
				break
			}
		}
	}
	return gen
}

// target is a member with the connection an operation uses: the member's
// connection may be replaced or dropped meanwhile, and a failure counts
// only against the connection it happened on.
type target struct {
	m    *member
	t    Target
	conn uint64 // the member's conn when t was taken
}

// fanout runs op on every replica that takes writes: all in-sync ones and
// those being rebuilt. The local replica goes last, once a remote one has
// accepted the epoch, so a writer that was fenced changes no copy at all,
// not even its own; a flush, which changes no copy, goes to all at once. A
// failed in-sync replica is marked stale before the operation counts as
// done without it.
func (w *Writer) fanout(ctx context.Context, what string, op func(context.Context, Target) error) error {
	if w.fenced.Load() {
		return nbd.ESHUTDOWN
	}
	w.mu.Lock()
	var remote []target
	var local *target
	for _, m := range w.members {
		if m.t == nil || (m.state != ReplicaInSync && m.state != ReplicaRebuilding) {
			continue
		}
		if m.Local {
			local = &target{m, m.t, m.conn}
		} else {
			remote = append(remote, target{m, m.t, m.conn})
		}
	}
	w.mu.Unlock()
	if local == nil && len(remote) == 0 {
		return nbd.EIO
	}
	call := func(t Target) error {
		cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
		defer cancel()
		return op(cctx, t)
	}
	// gate opens when a remote replica has accepted the epoch, or when
	// every remote one has failed.
	gate := make(chan struct{})
	var gateOnce sync.Once
	var pending atomic.Int32
	pending.Store(int32(len(remote)))
	var accepted atomic.Bool
	errs := make([]error, len(remote))
	var wg sync.WaitGroup
	for i, r := range remote {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = call(r.t)
			if errs[i] == nil {
				accepted.Store(true)
				gateOnce.Do(func() { close(gate) })
			}
			if pending.Add(-1) == 0 {
				gateOnce.Do(func() { close(gate) })
			}
		}()
	}
	var localErr error
	heldBack := false
	ungated := what == "flush"
	if local != nil {
		if len(remote) > 0 && !ungated {
			<-gate
		}
		if len(remote) == 0 || ungated || accepted.Load() {
			localErr = call(local.t)
		} else {
			heldBack = true
		}
	}
	wg.Wait()

	var first error
	for i, r := range remote {
		if err := w.settle(ctx, r, what, errs[i]); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	if heldBack {
		// Every remote replica failed and has been marked stale: the
		// replicated state accepted this writer's epoch just now, so the
		// local copy may take the operation.
		localErr = call(local.t)
	}
	if local != nil {
		return w.settle(ctx, *local, what, localErr)
	}
	return nil
}

// settle handles one replica's outcome of an operation.
func (w *Writer) settle(ctx context.Context, r target, what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrFenced):
		w.fence()
		return nbd.ESHUTDOWN
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return w.drop(ctx, r, what, err)
}

// drop takes a failed replica out of the write set. An in-sync one must
// be marked stale in the replicated state first; if that cannot be done
// (the epoch moved on, or too few would stay in sync), the operation
// fails. A failure on a connection the member no longer uses changes
// nothing.
func (w *Writer) drop(ctx context.Context, r target, what string, cause error) error {
	m := r.m
	w.mu.Lock()
	if m.conn != r.conn || m.t == nil {
		// Already dropped (marked stale) or replaced since the operation
		// started: nothing more to do for it.
		w.mu.Unlock()
		return nil
	}
	switch m.state {
	case ReplicaRebuilding:
		w.log.Warn("replica being rebuilt failed; trying again later", "replica", m.ID, "op", what, "err", cause)
		m.state = ReplicaStale
		m.lost++
		w.closeMember(m)
		w.mu.Unlock()
		return nil
	case ReplicaStale:
		w.mu.Unlock()
		return nil
	}
	ch := m.staling
	if ch == nil {
		ch = make(chan struct{})
		m.staling = ch
		w.mu.Unlock()
		w.log.Warn("replica failed; marking it stale", "replica", m.ID, "node", m.Node, "op", what, "err", cause)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markStaleTimeout)
		err := w.cfg.Control.SetReplicaState(cctx, w.cfg.VolumeID, w.cfg.Epoch, m.ID, ReplicaStale)
		cancel()
		w.mu.Lock()
		m.err = err
		m.staling = nil
		if err == nil {
			m.state = ReplicaStale
			w.closeMember(m)
		}
		close(ch)
		w.mu.Unlock()
	} else {
		w.mu.Unlock()
		<-ch
	}
	w.mu.Lock()
	err := m.err
	w.mu.Unlock()
	if err != nil {
		if isFencedErr(err) {
			w.fence()
			return nbd.ESHUTDOWN
		}
		w.log.Error("replica failed and could not be marked stale; failing the operation", "replica", m.ID, "op", what, "err", err)
		return nbd.EIO
	}
	return nil
}

// isFencedErr tells whether the replicated state refused a change because
// another writer holds a newer epoch.
func isFencedErr(err error) bool { return errors.Is(err, ErrFenced) }

func (w *Writer) fence() { w.halt("a newer writer holds the volume; refusing all I/O from here on") }

// halt makes every later operation fail with ESHUTDOWN, logging why once.
func (w *Writer) halt(why string) {
	if w.fenced.CompareAndSwap(false, true) {
		w.log.Error(why)
	}
}

// closeMember drops a member's connection; w.mu held.
func (w *Writer) closeMember(m *member) {
	if m.t != nil {
		t := m.t
		m.t = nil
		go t.Close()
	}
}

// ReadAt implements nbd.Backend: from the local in-sync replica if there
// is one, else any in-sync replica. A checksum mismatch is answered from
// another replica and the bad copy rewritten from it. A layered volume's
// blocks that the replica never wrote are read from the base.
func (w *Writer) ReadAt(ctx context.Context, p []byte, off int64) error {
	if w.fenced.Load() {
		return nbd.ESHUTDOWN
	}
	w.snap.RLock()
	defer w.snap.RUnlock()
	if w.fenced.Load() {
		// Stopped while the barrier was held: the replicas may be a
		// snapshot's now, and a read repair would change them.
		return nbd.ESHUTDOWN
	}
	rs, base := w.readSet()
	var have Presence
	if base != nil {
		have = NewPresence(int64(len(p)) / BlockSize)
	}
	var lastErr error = nbd.EIO
	for _, r := range rs {
		cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
		var err error
		if have != nil {
			err = r.t.ReadLayer(cctx, p, off, have)
		} else {
			err = r.t.ReadAt(cctx, p, off)
		}
		cancel()
		if err == nil {
			return readBase(ctx, base, have, p, off)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
		var ce *CorruptError
		if errors.As(err, &ce) {
			w.log.Error("checksum mismatch; reading another replica and repairing this one", "replica", r.m.ID, "node", r.m.Node, "off", ce.Off, "len", ce.Len)
			err := w.readRepair(ctx, r, p, off, have)
			var unrepaired errUnrepaired
			if err == nil || errors.As(err, &unrepaired) {
				// p holds the good copy's bytes
				return readBase(ctx, base, have, p, off)
			}
			lastErr = err
			continue
		}
		w.log.Warn("read from replica failed; trying another", "replica", r.m.ID, "err", err)
	}
	return lastErr
}

// readBase fills every run of blocks of p that have says are absent from
// base, one call per run; nothing without a base.
func readBase(ctx context.Context, base Base, have Presence, p []byte, off int64) error {
	if base == nil {
		return nil
	}
	nb := int64(len(p)) / BlockSize
	for i := int64(0); i < nb; {
		if have.Has(i) {
			i++
			continue
		}
		j := i + 1
		for j < nb && !have.Has(j) {
			j++
		}
		if err := base.ReadAt(ctx, p[i*BlockSize:j*BlockSize], off+i*BlockSize); err != nil {
			return fmt.Errorf("read the parent at %d+%d: %w", off+i*BlockSize, (j-i)*BlockSize, err)
		}
		i = j
	}
	return nil
}

// Scrub reads the whole volume from every in-sync replica, extent by
// extent, pausing pace after each; a block whose checksum does not match
// is rewritten from a good copy (as a read would repair it), and a replica
// that cannot be read is dropped from the in-sync ones (marked stale, so
// it is caught up). It returns the bytes read and the repairs made, and
// an error unless every copy was read whole or repaired: only then is the
// scrub done.
func (w *Writer) Scrub(ctx context.Context, pace time.Duration) (read, repaired int64, err error) {
	buf := make([]byte, ExtentSize)
	var failed error
	for idx := int64(0); idx < extents(w.Size()); idx++ {
		if w.fenced.Load() {
			return read, repaired, ErrFenced
		}
		select {
		case <-w.done:
			return read, repaired, errors.New("the volume was closed")
		default:
		}
		off := idx * ExtentSize
		p := buf[:min(ExtentSize, w.Size()-off)]
		r, rep, f, err := w.scrubExtent(ctx, p, off)
		read, repaired = read+r, repaired+rep
		if f != nil {
			failed = f
		}
		if err != nil {
			return read, repaired, err
		}
		if pace > 0 {
			select {
			case <-ctx.Done():
				return read, repaired, ctx.Err()
			case <-time.After(pace):
			}
		}
	}
	return read, repaired, failed
}

// scrubExtent reads p at off from every in-sync replica, under the
// snapshot barrier, repairing or dropping the copies that fail; err ends
// the scrub, failed only marks it incomplete.
func (w *Writer) scrubExtent(ctx context.Context, p []byte, off int64) (read, repaired int64, failed, err error) {
	w.snap.RLock()
	defer w.snap.RUnlock()
	if w.fenced.Load() {
		return 0, 0, nil, ErrFenced
	}
	rs := w.readOrder()
	if len(rs) == 0 {
		return 0, 0, nil, fmt.Errorf("no in-sync replica to read: %w", nbd.EIO)
	}
	for _, r := range rs {
		cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
		rerr := r.t.ReadAt(cctx, p, off)
		cancel()
		if ctx.Err() != nil {
			return read, repaired, failed, ctx.Err()
		}
		var ce *CorruptError
		switch {
		case rerr == nil:
			read += int64(len(p))
			w.scrubbed.Add(int64(len(p)))
		case errors.As(rerr, &ce):
			w.log.Error("scrub: checksum mismatch; repairing the replica from another", "replica", r.m.ID, "node", r.m.Node, "off", ce.Off, "len", ce.Len)
			if err := w.readRepair(ctx, r, p, off, nil); err != nil {
				failed = fmt.Errorf("replica %s at %d: not repaired: %w", r.m.ID, off, err)
				w.log.Error("scrub: repair failed", "replica", r.m.ID, "err", err)
			} else {
				repaired++
			}
		default:
			// Unreadable (a bad sector, a lost link): no longer counted
			// in sync; the catch-up rewrites what differs.
			failed = fmt.Errorf("replica %s at %d: %w", r.m.ID, off, rerr)
			if err := w.drop(ctx, r, "scrub", rerr); err != nil {
				return read, repaired, failed, err
			}
		}
	}
	return read, repaired, failed, nil
}

// readSet is readOrder and the base they are layered on.
func (w *Writer) readSet() ([]target, Base) {
	rs := w.readOrder()
	w.mu.Lock()
	defer w.mu.Unlock()
	return rs, w.base
}

// readOrder lists the in-sync replicas, the local one first.
func (w *Writer) readOrder() []target {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []target
	for _, m := range w.members {
		if m.t != nil && m.state == ReplicaInSync {
			if m.Local {
				out = append([]target{{m, m.t, m.conn}}, out...)
			} else {
				out = append(out, target{m, m.t, m.conn})
			}
		}
	}
	return out
}

// readRepair serves p from another in-sync replica (and, with have, the
// blocks it holds) and rewrites every extent of the range on the bad one
// from it, under the range's lock so no write interleaves. The caller
// holds the snapshot barrier.
func (w *Writer) readRepair(ctx context.Context, bad target, p []byte, off int64, have Presence) error {
	first, last := off/ExtentSize, (off+int64(len(p))-1)/ExtentSize
	unlock := w.locks.lock(first*ExtentSize, (last-first+1)*ExtentSize)
	defer unlock()
	cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	var good *target
	var tab []ExtentInfo
	for _, r := range w.readOrder() {
		if r.m == bad.m {
			continue
		}
		var err error
		if have != nil {
			err = r.t.ReadLayer(cctx, p, off, have)
		} else {
			err = r.t.ReadAt(cctx, p, off)
		}
		if err != nil {
			continue
		}
		t, err := r.t.Extents(cctx)
		if err != nil {
			continue
		}
		good, tab = &r, t
		break
	}
	if good == nil {
		return fmt.Errorf("no other replica reads [%d, %d) whole: %w", off, off+int64(len(p)), nbd.EIO)
	}
	w.repairs.Add(1)
	buf := make([]byte, ExtentSize)
	ext := NewPresence(blocksPerExtent)
	for idx := first; idx <= last; idx++ {
		n, err := good.t.ReadExtent(cctx, idx, buf, ext)
		if err == nil {
			err = bad.t.WriteExtent(cctx, w.cfg.Epoch, idx, max(at(tab, idx).Gen, w.extGen.at(idx).Load()), buf[:n], ext)
		}
		if err != nil {
			// The good copy was served; the bad one stays bad.
			w.log.Error("repairing a replica failed", "replica", bad.m.ID, "extent", idx, "err", err)
			return errUnrepaired{err}
		}
	}
	return nil
}

// errUnrepaired: the read was served from a good copy, but the bad copy
// could not be rewritten.
type errUnrepaired struct{ error }

func (e errUnrepaired) Unwrap() error { return e.error }

// catchUpLoop brings stale replicas back: dial, fence, mirror new writes,
// copy the extents that differ, then record them in sync.
func (w *Writer) catchUpLoop() {
	defer close(w.done)
	t := time.NewTicker(w.cfg.RetryInterval)
	defer t.Stop()
	for {
		for _, m := range w.staleMembers() {
			if w.ctx.Err() != nil || w.fenced.Load() {
				return
			}
			if err := w.catchUp(w.ctx, m); err != nil && w.ctx.Err() == nil {
				w.log.Info("replica not caught up yet", "replica", m.ID, "node", m.Node, "err", err)
			}
		}
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// isMember tells whether m is one of the writer's members still (a
// snapshot replaces them); w.mu held.
func (w *Writer) isMember(m *member) bool {
	for _, x := range w.members {
		if x == m {
			return true
		}
	}
	return false
}

func (w *Writer) staleMembers() []*member {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*member
	for _, m := range w.members {
		if m.state == ReplicaStale {
			out = append(out, m)
		}
	}
	return out
}

func (w *Writer) catchUp(ctx context.Context, m *member) error {
	dctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	t, err := w.cfg.Dial(dctx, m.Member)
	if err == nil {
		var st ReplicaState
		if st, err = t.Fence(dctx, w.cfg.Epoch); err == nil && st.Size < w.Size() {
			err = t.Resize(dctx, w.cfg.Epoch, w.Size())
		}
		if err != nil {
			t.Close()
		}
	}
	cancel()
	if err != nil {
		if errors.Is(err, ErrFenced) {
			w.fence()
		}
		return err
	}
	// From here on new writes reach it too; the barrier waits for every
	// write that started before, so the tables below include them.
	w.mu.Lock()
	if !w.isMember(m) {
		w.mu.Unlock()
		t.Close()
		return errors.New("the replica is no longer the volume's (a snapshot took it)")
	}
	m.conn++
	m.t, m.state = t, ReplicaRebuilding
	lost := m.lost
	mine := target{m, t, m.conn}
	w.mu.Unlock()
	w.locks.lock(0, maxReplicaSize)()

	src := w.readOrder()
	if len(src) == 0 {
		return w.abandon(mine, errors.New("no in-sync replica to copy from"))
	}
	from := src[0]
	cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	good, err := from.t.Extents(cctx)
	var have []ExtentInfo
	if err == nil {
		have, err = t.Extents(cctx)
	}
	cancel()
	if err != nil {
		return w.abandon(mine, err)
	}
	var todo []int64
	for idx := range extents(w.Size()) {
		if at(good, idx) != at(have, idx) {
			todo = append(todo, idx)
		}
	}
	left := int64(len(todo)) * ExtentSize
	w.rebuildLeft.Add(left)
	defer func() { w.rebuildLeft.Add(-left) }()
	buf := make([]byte, ExtentSize)
	pres := NewPresence(blocksPerExtent)
	for _, idx := range todo {
		if err := w.copyExtent(ctx, from.t, t, idx, at(good, idx).Gen, buf, pres); err != nil {
			return w.abandon(mine, err)
		}
		left -= ExtentSize
		w.rebuildLeft.Add(-ExtentSize)
	}
	// The last step runs with every write held: the replica is flushed and
	// recorded in sync only if no write missed it on the way, so the
	// replicated state never calls in sync a copy that lacks a write; and
	// under the snapshot barrier, so only while it is still the volume's.
	w.snap.RLock()
	defer w.snap.RUnlock()
	if w.fenced.Load() {
		return w.abandon(mine, nbd.ESHUTDOWN)
	}
	unlock := w.locks.lock(0, maxReplicaSize)
	defer unlock()
	cctx, cancel = context.WithTimeout(ctx, w.cfg.CallTimeout)
	err = t.Flush(cctx, w.cfg.Epoch)
	cancel()
	if err != nil {
		return w.abandon(mine, err)
	}
	w.mu.Lock()
	member := w.isMember(m)
	ok := m.conn == mine.conn && m.t != nil && m.state == ReplicaRebuilding && m.lost == lost
	w.mu.Unlock()
	if !member {
		return errors.New("the replica is no longer the volume's (a snapshot took it)")
	}
	if !ok {
		return errors.New("a write missed the replica while it was being rebuilt")
	}
	if err := w.cfg.Control.SetReplicaState(ctx, w.cfg.VolumeID, w.cfg.Epoch, m.ID, ReplicaInSync); err != nil {
		return w.abandon(mine, err)
	}
	w.mu.Lock()
	ok = w.isMember(m) && m.conn == mine.conn && m.t != nil && m.state == ReplicaRebuilding && m.lost == lost
	if ok {
		m.state = ReplicaInSync
	}
	w.mu.Unlock()
	if !ok {
		// A flush failed on it meanwhile (writes were held): take the
		// record back before anything counts on it.
		if err := w.cfg.Control.SetReplicaState(context.WithoutCancel(ctx), w.cfg.VolumeID, w.cfg.Epoch, m.ID, ReplicaStale); err != nil {
			w.log.Error("a replica recorded in sync missed a flush and could not be marked stale again", "replica", m.ID, "err", err)
			w.fence() // stop rather than count on a copy that may lack data
		}
		return errors.New("a flush missed the replica as it came back in sync")
	}
	w.log.Info("replica back in sync", "replica", m.ID, "node", m.Node, "bytes_copied", w.resyncBytes.Load())
	return nil
}

// copyExtent copies one extent and which of its blocks are present, under
// its lock, with the generation it has now: the table's, or a newer one
// this writer gave it since.
func (w *Writer) copyExtent(ctx context.Context, from, to Target, idx int64, gen uint64, buf []byte, have Presence) error {
	w.snap.RLock()
	defer w.snap.RUnlock()
	if w.fenced.Load() {
		return nbd.ESHUTDOWN
	}
	unlock := w.locks.lock(idx*ExtentSize, min(ExtentSize, w.Size()-idx*ExtentSize))
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	gen = max(gen, w.extGen.at(idx).Load())
	n, err := from.ReadExtent(ctx, idx, buf, have)
	if err != nil {
		return fmt.Errorf("read extent %d: %w", idx, err)
	}
	if err := to.WriteExtent(ctx, w.cfg.Epoch, idx, gen, buf[:n], have); err != nil {
		return fmt.Errorf("write extent %d: %w", idx, err)
	}
	w.resyncBytes.Add(int64(n))
	w.resyncExtents.Add(1)
	return nil
}

func (w *Writer) abandon(r target, err error) error {
	w.mu.Lock()
	if r.m.conn == r.conn && r.m.t != nil && r.m.state == ReplicaRebuilding {
		r.m.state = ReplicaStale
		w.closeMember(r.m)
	}
	w.mu.Unlock()
	if errors.Is(err, ErrFenced) {
		w.fence()
	}
	return err
}

// Close flushes and releases the replicas. The volume's writer epoch stays
// with this node until another takes it.
func (w *Writer) Close(ctx context.Context) error {
	w.stop()
	<-w.done
	var err error
	if !w.fenced.Load() {
		err = w.Flush(ctx)
	}
	w.closeTargets()
	return err
}

func (w *Writer) closeTargets() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.members {
		if m.t != nil {
			m.t.Close()
			m.t = nil
		}
	}
}

// rangeLocks orders operations on overlapping byte ranges: NBD lets a
// client send overlapping writes at once, and every replica must apply
// them in the same order.
type rangeLocks struct {
	mu   sync.Mutex
	held []lockedRange
}

type lockedRange struct {
	off, end int64
	done     chan struct{}
}

func (l *rangeLocks) lock(off, length int64) (unlock func()) {
	end := off + length
	me := lockedRange{off: off, end: end, done: make(chan struct{})}
	l.mu.Lock()
	// Wait for every earlier request that overlaps, granted or not: first
	// come, first served, so a whole-volume barrier is not starved.
	var waits []chan struct{}
	for _, r := range l.held {
		if r.off < end && off < r.end {
			waits = append(waits, r.done)
		}
	}
	l.held = append(l.held, me)
	l.mu.Unlock()
	for _, c := range waits {
		<-c
	}
	return func() {
		l.mu.Lock()
		for i := range l.held {
			if l.held[i].done == me.done {
				l.held = append(l.held[:i], l.held[i+1:]...)
				break
			}
		}
		l.mu.Unlock()
		close(me.done)
	}
}

// markStaleTimeout bounds the wait for the replicated state to record a
// failed replica: longer than a leader election, short enough that a
// writer cut off from the cluster fails its guest's I/O within seconds.
const markStaleTimeout = 10 * time.Second
