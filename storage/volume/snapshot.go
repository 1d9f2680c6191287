package volume

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cairnhq/cairn/storage/nbd"
)

// Base is the read-only snapshot a layered volume reads through to: its
// bytes at off (zeroes past its end).
type Base interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
}

// Swap is what a snapshot leaves the writer writing to: the volume's new,
// empty, layered replicas and the snapshot they read through to.
type Swap struct {
	Members []Member
	Base    Base
}

// ErrOutcomeUnknown is what a snapshot's take wraps when it cannot tell
// whether the snapshot was recorded (a commit that timed out): the old
// replicas may be the snapshot's already, so the writer writes to neither
// set and the caller reopens the volume from the replicated state.
var ErrOutcomeUnknown = errors.New("volume: outcome unknown")

// Snapshot freezes the volume's replicas as they are and goes on writing
// to new ones. It holds every write, zero, flush, grow, read, read repair
// and catch-up copy (waiting for those under way), flushes every in-sync
// replica and calls take, which records the snapshot (the current
// replicas become the snapshot's) and returns the volume's new replicas
// and the snapshot they are layered on. A take error leaves the writer on
// the old replicas, unless it wraps ErrOutcomeUnknown: then, as after any
// failure once take succeeded, the writer refuses all I/O (ESHUTDOWN)
// from then on, since the old replicas may belong to the snapshot.
//
// The new replicas are fenced at the writer's epoch; they are empty, so
// there is nothing to reconcile. An in-sync one that cannot be reached is
// marked stale (and caught up later), as at open; one must be reached.
//
// take runs with the volume's I/O held, so it must not use the writer's
// I/O itself (a guest's file systems are frozen before Snapshot, not in
// take).
func (w *Writer) Snapshot(ctx context.Context, take func(ctx context.Context) (*Swap, error)) error {
	if w.fenced.Load() {
		return nbd.ESHUTDOWN
	}
	w.snap.Lock()
	defer w.snap.Unlock()
	if w.fenced.Load() {
		return nbd.ESHUTDOWN
	}
	if err := w.flushInSync(ctx); err != nil {
		return fmt.Errorf("snapshot volume %s: %w", w.cfg.VolumeID, err)
	}
	swap, err := take(ctx)
	if err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			w.halt("not known whether the snapshot was taken; refusing all I/O until the volume is reopened")
		}
		return fmt.Errorf("snapshot volume %s: %w", w.cfg.VolumeID, err)
	}
	ms, err := w.dialSwap(ctx, swap)
	if err != nil {
		w.log.Error("snapshot taken but its new replicas cannot be written", "err", err)
		w.halt("the replicas written so far are the snapshot's now; refusing all I/O until the volume is reopened")
		return fmt.Errorf("snapshot volume %s: %w", w.cfg.VolumeID, err)
	}
	w.mu.Lock()
	var old []Target
	for _, m := range w.members {
		// A catch-up of an old member finds it gone: it neither uses the
		// connection nor records anything.
		m.conn++
		if m.t != nil {
			old = append(old, m.t)
			m.t = nil
		}
	}
	w.members, w.base = ms, swap.Base
	w.swaps++
	w.mu.Unlock()
	for _, t := range old {
		if err := t.Close(); err != nil {
			w.log.Warn("closing a replica the snapshot took", "err", err)
		}
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	w.log.Info("snapshot taken; writing to new replicas", "replicas", ids)
	return nil
}

// flushInSync flushes every in-sync replica; any failure is the error.
// The caller holds the snapshot barrier.
func (w *Writer) flushInSync(ctx context.Context) error {
	rs := w.readOrder()
	if len(rs) == 0 {
		return fmt.Errorf("no in-sync replica: %w", nbd.EIO)
	}
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.bounded(ctx, func(ctx context.Context) error { return r.t.Flush(ctx, w.cfg.Epoch) }); err != nil {
				errs[i] = fmt.Errorf("flush replica %s: %w", r.m.ID, err)
			}
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	if errors.Is(err, ErrFenced) {
		w.fence()
	}
	return err
}

// dialSwap reaches and fences the new replicas, as open does but with
// nothing to reconcile: at least one in-sync replica must answer, the
// in-sync ones that do not are marked stale.
func (w *Writer) dialSwap(ctx context.Context, swap *Swap) ([]*member, error) {
	if swap == nil || len(swap.Members) == 0 {
		return nil, errors.New("no new replicas")
	}
	if swap.Base == nil {
		return nil, errors.New("the new replicas have no base to read through to")
	}
	ms := make([]*member, len(swap.Members))
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range swap.Members {
		ms[i] = &member{Member: m, state: m.State}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
			defer cancel()
			t, err := w.cfg.Dial(cctx, m)
			if err != nil {
				errs[i] = err
				return
			}
			st, err := t.Fence(cctx, w.cfg.Epoch)
			if err == nil && st.Size < w.Size() {
				err = t.Resize(cctx, w.cfg.Epoch, w.Size())
			}
			if err != nil {
				t.Close()
				errs[i] = err
				return
			}
			ms[i].t = t
		}()
	}
	wg.Wait()
	closeAll := func() {
		for _, m := range ms {
			if m.t != nil {
				m.t.Close()
				m.t = nil
			}
		}
	}
	reached := 0
	for i, m := range ms {
		if errors.Is(errs[i], ErrFenced) {
			closeAll()
			return nil, fmt.Errorf("replica %s: %w", m.ID, ErrFenced)
		}
		if m.state != ReplicaInSync {
			// Caught up by the catch-up loop, which dials it again.
			if m.t != nil {
				m.t.Close()
				m.t = nil
			}
			continue
		}
		if errs[i] == nil {
			reached++
			continue
		}
		w.log.Warn("new replica unreachable after a snapshot; marking it stale", "replica", m.ID, "node", m.Node, "err", errs[i])
		if err := w.cfg.Control.SetReplicaState(ctx, w.cfg.VolumeID, w.cfg.Epoch, m.ID, ReplicaStale); err != nil {
			closeAll()
			return nil, fmt.Errorf("mark replica %s stale: %w", m.ID, err)
		}
		m.state = ReplicaStale
	}
	if reached == 0 {
		closeAll()
		return nil, errors.New("no new in-sync replica is reachable")
	}
	return ms, nil
}
