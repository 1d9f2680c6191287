package volume

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// Repair replaces replicas that are being lost: on a disk being drained,
// on a failed disk, or on a node that has not reported its disks for
// LostAfter (a box gone for good). A new replica is added elsewhere first,
// the volume's writer catches it up (a detached volume is opened on the
// leader's node for that, an attachment its owner's attach takes over),
// and only once it is in sync is the old one dropped: redundancy never
// goes down on the way. A replica merely behind (its box restarting) is
// caught up in place by the writer, not replaced.
type Repair struct {
	c    Cluster
	prov Provisioner
	log  *slog.Logger
	// LostAfter is how long a node may stay silent before its replicas
	// are rebuilt elsewhere; Now is the clock.
	LostAfter time.Duration
	Now       func() time.Time
	// ScrubEvery: a detached volume due for a scrub is opened for it
	// (ScrubAtOnce of them at most), as its writer scrubs it; 0: never.
	ScrubEvery time.Duration
	// since is when this leader began watching: silence is counted from
	// then at the earliest, so a whole cluster starting up again after a
	// night off rebuilds nothing.
	since time.Time
}

// ScrubAtOnce bounds the detached volumes opened for their scrub at once.
const ScrubAtOnce = 2

// DefaultLostAfter is Longhorn's replica replenishment wait (600 s): a box
// back within it is caught up, not copied anew.
const DefaultLostAfter = 10 * time.Minute

// NewRepair returns the volume repair; Run it on the leader.
func NewRepair(c Cluster, prov Provisioner, log *slog.Logger) *Repair {
	if log == nil {
		log = slog.Default()
	}
	return &Repair{c: c, prov: prov, log: log, LostAfter: DefaultLostAfter, Now: time.Now}
}

// Run repairs until ctx ends: at every change of the volumes or disks, and
// every 30 s.
func (r *Repair) Run(ctx context.Context) {
	r.since = r.Now()
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := r.c.Store().ReadTxn()
		for _, table := range []string{tVolumes, "disks"} {
			if it, err := txn.Get(table, "id"); err == nil {
				ws.Add(it.WatchCh())
			}
		}
		if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("volume repair", "err", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_ = r.c.Store().Watch(wctx, ws)
		cancel()
		select { // let a burst of changes settle
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Pass takes every volume that needs it one step further.
func (r *Repair) Pass(ctx context.Context) error {
	txn := r.c.Store().ReadTxn()
	disks := map[string]*storage.Disk{}
	if it, err := txn.Get("disks", "id"); err == nil {
		for o := it.Next(); o != nil; o = it.Next() {
			d := o.(*storage.Disk)
			disks[d.ID] = d
		}
	}
	var errs []error
	all := All(txn)
	borrowed := 0
	for _, v := range all {
		if v.Attachment != nil && v.Attachment.Repair {
			borrowed++
		}
	}
	for _, v := range all {
		behind := v.inSync() < len(v.Replicas) && !r.anyLost(v, disks)
		if v.State == StateAvailable && v.Attachment == nil && borrowed < ScrubAtOnce && (v.scrubDue(r.Now(), r.ScrubEvery) || behind) {
			// Nobody writes it, so nobody scrubs it, nor catches up a
			// replica that is behind (one a detached snapshot could not
			// claim, one that missed writes before the detach): open it
			// for that.
			if v.Unfilled() {
				continue // nothing written yet; its first writer fills it
			}
			_, err := r.c.Apply(ctx, MsgAttachVolume, attachVolumeCmd{ID: v.ID, IfMatch: v.Version,
				Attachment: Attachment{Node: r.c.Name(), At: r.Now().UTC(), Repair: true}}, nil)
			if err == nil {
				borrowed++
			} else if err = ignoreStale(err); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: open it for its scrub: %w", v.ID, err))
			}
			continue
		}
		if v.State != StateAvailable && v.State != StateInUse {
			continue
		}
		if err := r.step(ctx, txn, v, disks); err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", v.ID, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d volumes: first: %w", len(errs), errs[0])
	}
	return nil
}

// anyLost tells whether any of v's replicas is being lost (step replaces
// those).
func (r *Repair) anyLost(v *Volume, disks map[string]*storage.Disk) bool {
	for _, rep := range v.Replicas {
		if r.lost(rep, disks) != "" {
			return true
		}
	}
	return false
}

// lost tells why a replica's disk is being lost, or "".
func (r *Repair) lost(rep Replica, disks map[string]*storage.Disk) string {
	d := disks[rep.Disk]
	switch {
	case d == nil:
		return "its disk was removed"
	case d.State == storage.DiskDraining:
		return "its disk is being drained"
	case d.Health == storage.HealthFailed:
		return "its disk failed"
	case !d.ReportedAt.IsZero() && r.Now().Sub(later(d.ReportedAt, r.since)) > r.LostAfter:
		return fmt.Sprintf("node %s has not been heard from for %s", rep.Node, r.Now().Sub(d.ReportedAt).Round(time.Minute))
	}
	return ""
}

func (r *Repair) step(ctx context.Context, txn *memdb.Txn, v *Volume, disks map[string]*storage.Disk) error {
	var lost []Replica
	var kept []Replica
	why := ""
	for _, rep := range v.Replicas {
		if w := r.lost(rep, disks); w != "" {
			lost, why = append(lost, rep), w
		} else {
			kept = append(kept, rep)
		}
	}
	if len(lost) == 0 {
		if a := v.Attachment; a != nil && a.Repair && v.inSync() == len(v.Replicas) && !v.scrubDue(r.Now(), r.ScrubEvery) {
			_, err := r.c.Apply(ctx, MsgDetachVolume, detachVolumeCmd{ID: v.ID, IfMatch: v.Version}, nil)
			return ignoreStale(err)
		}
		return nil
	}
	inSync := 0
	for _, rep := range kept {
		if rep.State == ReplicaInSync {
			inSync++
		}
	}
	target := v.target()
	switch {
	case len(kept) < target:
		// One more copy on its way in (a stale newcomer counts: its writer
		// catches it up).
		return r.add(ctx, txn, v, kept, lost[0], why)
	case inSync >= target:
		// The newcomers are in sync: the lost replicas leave the record.
		// Their files stay until their nodes' sweepers remove them (after
		// the grace period): the volume's writer may still send them a
		// write until it has reopened with the new set.
		for _, rep := range lost {
			if _, err := r.c.Apply(ctx, MsgRemoveReplica, removeReplicaCmd{Volume: v.ID, Replica: rep.ID}, nil); err != nil {
				return err
			}
			r.log.Info("volume replica replaced", "volume", v.ID, "replica", rep.ID, "node", rep.Node, "why", why)
		}
		return nil
	case v.Attachment == nil:
		// Nobody writes it: open it here, so its writer catches up the
		// newcomer.
		_, err := r.c.Apply(ctx, MsgAttachVolume, attachVolumeCmd{ID: v.ID, IfMatch: v.Version,
			Attachment: Attachment{Node: r.c.Name(), At: r.Now().UTC(), Repair: true}}, nil)
		return ignoreStale(err)
	}
	return nil // its writer is catching the newcomer up
}

// add makes a new replica on a disk no kept replica's node has (or on
// another disk of the lost replica's node, when that node is fine).
func (r *Repair) add(ctx context.Context, txn *memdb.Txn, v *Volume, kept []Replica, old Replica, why string) error {
	if r.prov == nil {
		return fmt.Errorf("no replica provisioner")
	}
	taken := map[string]bool{}
	for _, rep := range kept {
		taken[rep.Node] = true
	}
	spots, err := placeable(txn, func(d *storage.Disk) bool {
		return taken[d.Node] || d.ID == old.Disk || r.lost(Replica{Node: d.Node, Disk: d.ID}, map[string]*storage.Disk{d.ID: d}) != ""
	})
	if err != nil {
		return fmt.Errorf("no disk to rebuild replica %s on (%s): %w", old.ID, why, err)
	}
	next := 0
	for _, rep := range v.Replicas {
		var n int
		if _, err := fmt.Sscanf(strings.TrimPrefix(rep.ID, v.ID), "-r%d", &n); err == nil && n >= next {
			next = n + 1
		}
	}
	// Numbered after the highest, with the volume's version in it: an ID
	// a removed replica had (whose files may wait for their sweeper) is
	// never given again.
	rep := Replica{ID: fmt.Sprintf("%s-r%d-%d", v.ID, next, v.Version), Node: spots[0].Node, Disk: spots[0].Disk, State: ReplicaStale}
	// A volume's or snapshot's replicas are layered exactly when it reads
	// through to a parent.
	if err := r.prov.Create(ctx, rep.Node, rep.Disk, rep.ID, v.SizeBytes, v.layered()); err != nil {
		return fmt.Errorf("make replica %s on %s: %w", rep.ID, rep.Node, err)
	}
	if _, err := r.c.Apply(ctx, MsgAddReplica, addReplicaCmd{Volume: v.ID, Replica: rep, Layered: v.layered()}, nil); err != nil {
		// Not recorded (or not known to be): the sweeper removes a replica
		// no volume names, after its grace period.
		return fmt.Errorf("record replica %s: %w", rep.ID, err)
	}
	r.log.Info("rebuilding a volume replica elsewhere", "volume", v.ID, "replica", rep.ID, "node", rep.Node, "disk", rep.Disk, "instead_of", old.ID, "why", why)
	return nil
}

// ignoreStale: a volume that changed since it was read is looked at again
// on the next pass.
func ignoreStale(err error) error {
	if consensus.ErrorCode(err) == consensus.CodePreconditionFailed || consensus.ErrorCode(err) == consensus.CodeConflict {
		return nil
	}
	return err
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
