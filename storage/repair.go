package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/storage/disk"
	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/cairnhq/cairn/storage/placement"
	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/go-memdb"
)

// Integrity and repair:
//
//   - The scrubber runs on every node. It walks the shards the replicated
//     state says this node's disks hold, reads each one whole and checks its
//     header and every block checksum. A missing or corrupt shard is deleted
//     and marked missing in the state (MarkShards).
//   - The healer runs on the leader. It finds segments with missing shards,
//     or shards on disks that are draining, failed, gone or silent for too
//     long, rebuilds those shards from the others (decode, re-encode, write
//     only what is missing) onto other disks, and records them (SetShards).
//   - Reads do not wait for either: a bad shard is reconstructed on the fly,
//     and queued for read repair on the reading node (RunReadRepair). That
//     asks the shard's node to verify it; one still missing or corrupt is
//     deleted and marked missing, so the healer's next pass rebuilds it. A
//     node that does not answer proves nothing against its shards: that is
//     the healer's business, by the disks' health and reports.

// RepairStats is the last pass of a scrubber or healer, for the API and metrics.
type RepairStats struct {
	LastPass time.Time `json:"last_pass,omitzero"`
	Checked  int64     `json:"checked"`  // shards verified, or segments examined
	Repaired int64     `json:"repaired"` // shards found bad, or rebuilt
	Degraded int64     `json:"degraded"` // segments still below full redundancy
}

// Scrubber verifies this node's shards.
type Scrubber struct {
	c     Cluster
	disks *DiskAgent
	log   *slog.Logger
	pause time.Duration // between passes
	pace  time.Duration // between shards: the scrub's speed limit
	stats atomic.Pointer[RepairStats]
}

// NewScrubber returns the node's scrubber.
func NewScrubber(c Cluster, disks *DiskAgent, log *slog.Logger, pause, pace time.Duration) *Scrubber {
	s := &Scrubber{c: c, disks: disks, log: log, pause: pause, pace: pace}
	s.stats.Store(&RepairStats{})
	return s
}

// Stats returns the last pass's figures.
func (s *Scrubber) Stats() RepairStats { return *s.stats.Load() }

// Run scrubs until ctx ends, starting once the node's disks have opened.
func (s *Scrubber) Run(ctx context.Context) {
	select {
	case <-s.disks.Opened():
	case <-ctx.Done():
		return
	}
	for {
		if _, err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scrub pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.pause):
		}
	}
}

// Pass verifies every shard this node should hold once. Only an open disk
// that still carries its identity marker gives verdicts: a shard is bad
// when it is missing from it or fails its checksums. A disk not open (still
// opening, failed, unmounted) says nothing about its shards. A shard is
// marked missing only if the state still places it on the disk it was
// checked on.
func (s *Scrubber) Pass(ctx context.Context) (RepairStats, error) {
	st := RepairStats{}
	for _, obj := range allObjects(s.c.Store().ReadTxn()) {
		for _, seg := range obj.segments() {
			var bad []int
			var disks []string
			for i, loc := range seg.Shards {
				if loc.Node != s.c.Name() || loc.Disk == "" {
					continue
				}
				store := s.disks.Disk(loc.Disk)
				if store == nil {
					continue
				}
				st.Checked++
				err := verifyStored(store, shardKey(seg.DataID, i), seg.Layout, seg.Size, i)
				switch {
				case errors.Is(err, disk.ErrNotFound), errors.Is(err, erasure.ErrCorrupt):
					s.log.Warn("bad shard found", "object", obj.ID, "data", seg.DataID, "shard", i, "disk", loc.Disk, "err", err)
					bad, disks = append(bad, i), append(disks, loc.Disk)
				case err != nil:
					s.log.Warn("shard not verified", "object", obj.ID, "data", seg.DataID, "shard", i, "disk", loc.Disk, "err", err)
				}
				if s.pace > 0 {
					select {
					case <-ctx.Done():
						return st, ctx.Err()
					case <-time.After(s.pace):
					}
				}
			}
			if len(bad) > 0 {
				st.Repaired += int64(len(bad))
				if _, err := s.c.Apply(ctx, MsgMarkShards, markShardsCmd{ObjectID: obj.ID, DataID: seg.DataID, Indexes: bad, Disks: disks}, nil); err != nil {
					return st, err
				}
			}
		}
	}
	st.LastPass = time.Now().UTC()
	s.stats.Store(&st)
	return st, nil
}

// badShard is a shard a read found missing or corrupt.
type badShard struct {
	objectID string
	seg      Segment
	index    int
}

// suspect queues shard index of seg for RunReadRepair, unless it is queued
// already or the queue is full (the scrubber finds it in time).
func (o *Objects) suspect(objectID string, seg Segment, index int) {
	if seg.Shards[index].Disk == "" {
		return // known missing: the healer has it
	}
	key := shardKey(seg.DataID, index)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.queued[key] {
		return
	}
	select {
	case o.suspects <- badShard{objectID: objectID, seg: seg, index: index}:
		o.queued[key] = true
	default:
	}
}

// RunReadRepair confirms the shards reads found bad until ctx ends: each is
// verified where it lies, and marked missing in the state if it is missing
// or corrupt there.
func (o *Objects) RunReadRepair(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-o.suspects:
			if err := o.confirmBad(ctx, s); err != nil && ctx.Err() == nil {
				o.log.Warn("read repair", "object", s.objectID, "data", s.seg.DataID, "shard", s.index, "err", err)
			}
			o.mu.Lock()
			delete(o.queued, shardKey(s.seg.DataID, s.index))
			o.mu.Unlock()
		}
	}
}

func (o *Objects) confirmBad(ctx context.Context, s badShard) error {
	loc := s.seg.Shards[s.index]
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err := o.shards.Verify(ctx, loc.toDisk(), shardKey(s.seg.DataID, s.index), s.seg.Layout, s.seg.Size, s.index)
	if err == nil {
		return nil // intact: the read met a passing fault
	}
	if !errors.Is(err, erasure.ErrCorrupt) && !errors.Is(err, ErrShardNotFound) {
		return fmt.Errorf("not confirmed: %w", err)
	}
	cmd := markShardsCmd{ObjectID: s.objectID, DataID: s.seg.DataID, Indexes: []int{s.index}, Disks: []string{loc.Disk}}
	if _, err := o.c.Apply(ctx, MsgMarkShards, cmd, nil); err != nil {
		return err
	}
	o.log.Warn("shard marked for repair", "object", s.objectID, "data", s.seg.DataID, "shard", s.index, "disk", loc.Disk, "reason", err)
	return nil
}

// allObjects returns every object version that holds data, current or older.
func allObjects(txn *memdb.Txn) []Object {
	var out []Object
	eachVersion(txn, func(o *Object) { out = append(out, *o) })
	return out
}

// Healer restores full redundancy; it runs on the leader.
type Healer struct {
	o          *Objects
	interval   time.Duration
	staleAfter time.Duration // a disk not reported for this long counts as gone
	stats      atomic.Pointer[RepairStats]
}

// NewHealer returns the healer.
func NewHealer(o *Objects, interval, staleAfter time.Duration) *Healer {
	h := &Healer{o: o, interval: interval, staleAfter: staleAfter}
	h.stats.Store(&RepairStats{})
	return h
}

// Stats returns the last pass's figures.
func (h *Healer) Stats() RepairStats { return *h.stats.Load() }

// Run heals until ctx ends (leadership lost).
func (h *Healer) Run(ctx context.Context) {
	for {
		if _, err := h.Pass(ctx); err != nil && ctx.Err() == nil {
			h.o.log.Warn("heal pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(h.interval):
		}
	}
}

// available reports, per disk ID, whether shards on it can be relied on.
func (h *Healer) available() map[string]Disk {
	out := map[string]Disk{}
	for _, d := range listDisks(h.o.c.Store().ReadTxn(), "") {
		if d.State == DiskActive && d.Health == HealthOK && time.Since(d.ReportedAt) < h.staleAfter {
			out[d.ID] = d
		}
	}
	return out
}

// Pass rebuilds every segment that is below full redundancy, once.
func (h *Healer) Pass(ctx context.Context) (RepairStats, error) {
	st := RepairStats{}
	for _, obj := range allObjects(h.o.c.Store().ReadTxn()) {
		for _, seg := range obj.segments() {
			st.Checked++
			avail := h.available()
			var missing []int
			for i, loc := range seg.Shards {
				if _, ok := avail[loc.Disk]; loc.Disk == "" || !ok {
					missing = append(missing, i)
				}
			}
			if len(missing) == 0 {
				continue
			}
			n, err := h.rebuild(ctx, obj.ID, seg, missing, avail)
			st.Repaired += int64(n)
			if err != nil {
				h.o.log.Warn("could not heal", "object", obj.ID, "data", seg.DataID, "missing", missing, "err", err)
			}
			if n < len(missing) {
				st.Degraded++
			}
		}
	}
	st.LastPass = time.Now().UTC()
	h.stats.Store(&st)
	return st, nil
}

// rebuild writes the missing shards of a segment to new disks and records them.
func (h *Healer) rebuild(ctx context.Context, objectID string, seg Segment, missing []int, avail map[string]Disk) (int, error) {
	l := seg.Layout
	used := map[string]bool{}
	isMissing := map[int]bool{}
	for _, i := range missing {
		isMissing[i] = true
	}
	// Failure domains as placement counts them (nodes, or one node's
	// filesystems); a segment older than that rule, or wider than the
	// filesystems, is rebuilt by the node rule rather than left short.
	var pool []placement.Disk
	for _, d := range avail {
		pool = append(pool, placement.Disk{ID: d.ID, Node: d.Node, Device: d.Device})
	}
	type rule struct {
		domain func(placement.Disk) string
		most   int
		per    map[string]int
	}
	var rules []rule
	type capOf = func(erasure.Layout, []placement.Disk) (func(placement.Disk) string, int)
	caps := []capOf{placement.DomainCap, placement.NodeCap}
	if l.Data == 1 && l.Parity > 0 {
		caps = []capOf{placement.OneEach, placement.DomainCap, placement.NodeCap} // whole copies: a domain without one first
	}
	for _, capOf := range caps {
		dom, most := capOf(l, pool)
		rules = append(rules, rule{domain: dom, most: most, per: map[string]int{}})
	}
	asDisk := func(id, node string) placement.Disk {
		if d, ok := avail[id]; ok {
			return placement.Disk{ID: d.ID, Node: d.Node, Device: d.Device}
		}
		return placement.Disk{ID: id, Node: node}
	}
	for i, loc := range seg.Shards {
		if !isMissing[i] {
			for _, r := range rules {
				r.per[r.domain(asDisk(loc.Disk, loc.Node))]++
			}
			used[loc.Disk] = true
		}
	}
	cands := make([]Disk, 0, len(avail))
	for _, d := range avail {
		if !used[d.ID] && d.FreeBytes > uint64(l.ShardSize(seg.Size))+(64<<20) {
			cands = append(cands, d)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		return xxhash.Sum64String(seg.DataID+cands[i].ID) > xxhash.Sum64String(seg.DataID+cands[j].ID)
	})
	target := map[int]Disk{}
	for _, i := range missing {
	pick:
		for _, r := range rules {
			for k, d := range cands {
				if r.per[r.domain(asDisk(d.ID, d.Node))] < r.most {
					target[i] = d
					for _, r2 := range rules {
						r2.per[r2.domain(asDisk(d.ID, d.Node))]++
					}
					cands = append(cands[:k], cands[k+1:]...)
					break pick
				}
			}
		}
	}
	if len(target) == 0 {
		return 0, errors.New("no disk can take the missing shards")
	}
	// Sources: every present shard; the decoder verifies each block read.
	src := make([]io.ReaderAt, l.Shards())
	for i, loc := range seg.Shards {
		if isMissing[i] {
			continue
		}
		r, err := h.o.shards.Open(ctx, loc.toDisk(), shardKey(seg.DataID, i))
		if err == nil {
			defer r.Close()
			src[i] = r
		}
	}
	dst := make([]io.Writer, l.Shards())
	writers := map[int]ShardWriter{}
	for i, d := range target {
		w, err := h.o.shards.Create(ctx, d, shardKey(seg.DataID, i), l.ShardSize(seg.Size))
		if err != nil {
			continue
		}
		dst[i], writers[i] = w, w
	}
	err := erasure.Rebuild(l, seg.Size, src, dst)
	locs := map[int]ShardLoc{}
	for i, w := range writers {
		if err != nil {
			w.Abort()
			continue
		}
		if cerr := w.Commit(); cerr == nil {
			locs[i] = ShardLoc{Disk: target[i].ID, Node: target[i].Node}
		}
	}
	if err != nil {
		return 0, fmt.Errorf("rebuild: %w", err)
	}
	// Clear the unreliable locations first, so SetShards (which fills only
	// empty slots) can take their place.
	var stale []int
	var staleDisks []string
	for _, i := range missing {
		if seg.Shards[i].Disk != "" {
			stale, staleDisks = append(stale, i), append(staleDisks, seg.Shards[i].Disk)
		}
	}
	if len(stale) > 0 {
		// Only where they still are: a location changed since is not ours.
		cmd := markShardsCmd{ObjectID: objectID, DataID: seg.DataID, Indexes: stale, Disks: staleDisks}
		if _, err := h.o.c.Apply(ctx, MsgMarkShards, cmd, nil); err != nil {
			return 0, err
		}
	}
	if _, err := h.o.c.Apply(ctx, MsgSetShards, setShardsCmd{ObjectID: objectID, DataID: seg.DataID, Locs: locs}, nil); err != nil {
		return 0, err
	}
	h.o.log.Info("healed", "object", objectID, "data", seg.DataID, "shards", len(locs))
	return len(locs), nil
}

func (l ShardLoc) toDisk() Disk { return Disk{ID: l.Disk, Node: l.Node} }

// Degraded counts segments below full redundancy right now, from the
// replicated state: shards missing, or on disks that are not active and healthy.
func (o *Objects) Degraded(ctx context.Context) (segments int64, err error) {
	if err := o.c.ConsistentRead(ctx); err != nil {
		return 0, err
	}
	txn := o.c.Store().ReadTxn()
	ok := map[string]bool{}
	for _, d := range listDisks(txn, "") {
		ok[d.ID] = d.State == DiskActive && d.Health == HealthOK
	}
	for _, obj := range allObjects(txn) {
		for _, seg := range obj.segments() {
			for _, loc := range seg.Shards {
				if loc.Disk == "" || !ok[loc.Disk] {
					segments++
					break
				}
			}
		}
	}
	return segments, nil
}

// Redundancy is how the pool's object data would fare if a node were lost.
type Redundancy struct {
	// Degraded: segments with a shard missing, or on a disk that is not
	// active, healthy and reporting (within stale).
	Degraded int64 `json:"degraded_segments"`
	// OneNode: whole segments that would not survive losing one of the
	// nodes (written, or healed, while the pool had a single node: nothing
	// moves them since). Counted only with disks on several nodes.
	OneNode int64 `json:"segments_lost_with_a_node"`
}

// Redundancy reads the pool's redundancy from the replicated state, after
// a linearizable read. A disk that has not reported for stale counts as
// missing, as its node may be gone.
func (o *Objects) Redundancy(ctx context.Context, stale time.Duration) (Redundancy, error) {
	var r Redundancy
	if err := o.c.ConsistentRead(ctx); err != nil {
		return r, err
	}
	txn := o.c.Store().ReadTxn()
	ok := map[string]bool{}
	nodes := map[string]bool{}
	for _, d := range listDisks(txn, "") {
		ok[d.ID] = d.State == DiskActive && d.Health == HealthOK && time.Since(d.ReportedAt) < stale
		if d.State == DiskActive {
			nodes[d.Node] = true
		}
	}
	for _, obj := range allObjects(txn) {
		for _, seg := range obj.segments() {
			written := make([]string, len(seg.Shards))
			whole := true
			for i, loc := range seg.Shards {
				if loc.Disk == "" || !ok[loc.Disk] {
					whole = false
					break
				}
				written[i] = loc.Node
			}
			switch {
			case !whole:
				r.Degraded++
			case len(nodes) > 1 && !survivesAnyNode(seg.Layout, written):
				r.OneNode++
			}
		}
	}
	return r, nil
}

// survivesAnyNode: after losing the node that holds the most of these
// shards (by node), k remain. Unlike placement.SurvivesNodeLoss it makes
// no allowance for a segment all on one node: in a pool of several nodes,
// such a segment is lost with that node.
func survivesAnyNode(l erasure.Layout, written []string) bool {
	per := map[string]int{}
	total, most := 0, 0
	for _, node := range written {
		if node == "" {
			continue
		}
		total++
		per[node]++
		most = max(most, per[node])
	}
	return total-most >= l.Data
}
