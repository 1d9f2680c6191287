package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/storage/nbd"
)

// Merging. A snapshot deleted while a volume still reads through to it is
// hidden; once that volume is the only one left reading through to it,
// the volume's writer folds it in: every block the snapshot holds and the
// volume has not written since is copied into the volume's replicas, then
// one command layers the volume on the snapshot's parent and deletes the
// snapshot, whose replicas go to the sweeper. Deleted snapshots so stop
// holding space, and a chain of them stops lengthening every read of
// blocks never written since.

// Layer reads one snapshot's own blocks, not read through to its parent:
// have gets the blocks of p it holds.
type Layer interface {
	ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error
}

// errSwapped stops a merge when a snapshot of the volume was taken: the
// replicas it was filling are that snapshot's now.
var errSwapped = errors.New("a snapshot of the volume was taken meanwhile")

// Merge folds the snapshot the volume reads through to (from, its first
// size bytes) into the volume's replicas, then calls commit with every
// write the merge made flushed and the volume's I/O held; commit records
// the merge and returns the new base (nil: none). Each extent is copied
// under the range lock guest writes take, so a block the guest writes is
// never overwritten with the snapshot's older bytes; only blocks the
// volume does not hold are written; with root (the snapshot reads through
// to nothing), not its blocks of zeroes either, which the volume reads as
// zeroes without it. pace is a pause between extents. A
// commit of unknown outcome (ErrOutcomeUnknown) stops the writer, as in
// Snapshot.
func (w *Writer) Merge(ctx context.Context, from Layer, size int64, root bool, pace time.Duration, commit func(ctx context.Context) (Base, error)) error {
	if w.fenced.Load() {
		return nbd.ESHUTDOWN
	}
	w.snap.RLock()
	start := w.swaps
	w.snap.RUnlock()
	src := make([]byte, ExtentSize)
	cur := make([]byte, ExtentSize)
	for off := int64(0); off < size; off += ExtentSize {
		n := min(ExtentSize, size-off)
		if err := w.mergeExtent(ctx, from, src[:n], cur[:n], off, root, start); err != nil {
			return fmt.Errorf("merge into volume %s at %d: %w", w.cfg.VolumeID, off, err)
		}
		if pace > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pace):
			}
		}
	}
	w.snap.Lock()
	defer w.snap.Unlock()
	switch {
	case w.fenced.Load():
		return nbd.ESHUTDOWN
	case w.swaps != start:
		return errSwapped
	}
	if err := w.flushInSync(ctx); err != nil {
		return fmt.Errorf("merge into volume %s: %w", w.cfg.VolumeID, err)
	}
	base, err := commit(ctx)
	if err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			w.halt("not known whether the merge was recorded; refusing all I/O until the volume is reopened")
		}
		return fmt.Errorf("merge into volume %s: %w", w.cfg.VolumeID, err)
	}
	w.mu.Lock()
	w.base = base
	w.mu.Unlock()
	return nil
}

// mergeExtent copies the blocks of [off, off+len(src)) that from holds
// and the volume does not.
func (w *Writer) mergeExtent(ctx context.Context, from Layer, src, cur []byte, off int64, root bool, start uint64) error {
	w.snap.RLock()
	defer w.snap.RUnlock()
	switch {
	case w.fenced.Load():
		return nbd.ESHUTDOWN
	case w.swaps != start:
		return errSwapped
	}
	n := int64(len(src))
	unlock := w.locks.lock(off, n)
	defer unlock()
	blocks := n / BlockSize
	theirs := NewPresence(blocks)
	if err := from.ReadLayer(ctx, src, off, theirs); err != nil {
		return fmt.Errorf("read the snapshot: %w", err)
	}
	if root {
		for i := range blocks {
			if theirs.Has(i) && bytes.Equal(src[i*BlockSize:(i+1)*BlockSize], zeroBlock[:]) {
				theirs[i/64] &^= 1 << (i % 64)
			}
		}
	}
	if allAbsent(theirs) {
		return nil
	}
	ours, err := w.presence(ctx, cur, off)
	if err != nil {
		return err
	}
	// Runs of blocks to copy, each of zeroes (made present without
	// allocating: a layered replica's hole keeps the checksum of zeroes)
	// or of data.
	copyable := func(i int64) bool { return theirs.Has(i) && !ours.Has(i) }
	zero := func(i int64) bool { return bytes.Equal(src[i*BlockSize:(i+1)*BlockSize], zeroBlock[:]) }
	for i := int64(0); i < blocks; {
		if !copyable(i) {
			i++
			continue
		}
		z := zero(i)
		j := i + 1
		for j < blocks && copyable(j) && zero(j) == z {
			j++
		}
		roff, p := off+i*BlockSize, src[i*BlockSize:j*BlockSize]
		gen := w.nextGen(roff, int64(len(p)))
		if err := w.fanout(ctx, "merge", func(ctx context.Context, t Target) error {
			if z {
				return t.Zero(ctx, w.cfg.Epoch, gen, roff, int64(len(p)), true)
			}
			return t.WriteAt(ctx, w.cfg.Epoch, gen, p, roff, false)
		}); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// errDisagree stops a merge at an extent whose in-sync replicas hold
// different blocks (a write that failed on some of them without their
// being marked stale): copying by one of them would leave another reading
// the older snapshot's bytes. The node then reopens the volume, which
// reconciles them (their extents differ in generation or digest).
var errDisagree = errors.New("the volume's in-sync replicas hold different blocks here")

// presence reads which blocks of [off, off+len(p)) the volume holds, from
// every in-sync replica: they must agree. The caller holds the range lock,
// so no write to it is under way. p gets a replica's bytes, whose blocks
// the volume does not hold read as zeroes.
func (w *Writer) presence(ctx context.Context, p []byte, off int64) (Presence, error) {
	blocks := int64(len(p)) / BlockSize
	var have Presence
	for _, r := range w.readOrder() {
		h := NewPresence(blocks)
		cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
		err := r.t.ReadLayer(cctx, p, off, h)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("replica %s: %w", r.m.ID, err)
		}
		if have != nil && !equalPresence(have, h) {
			return nil, fmt.Errorf("replica %s: %w", r.m.ID, errDisagree)
		}
		have = h
	}
	if have == nil {
		return nil, fmt.Errorf("no in-sync replica: %w", nbd.EIO)
	}
	return have, nil
}

func allAbsent(p Presence) bool {
	for _, w := range p {
		if w != 0 {
			return false
		}
	}
	return true
}
