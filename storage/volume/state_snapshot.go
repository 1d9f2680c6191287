package volume

import (
	"slices"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// KindSnapshot marks a snapshot's record.
const KindSnapshot = "snapshot"

// Snapshots.
//
// A snapshot takes over the volume's replicas as they are at that instant,
// frozen from then on, and the volume gets new, empty replicas on the same
// disks, layered on the snapshot: a block they never wrote reads from it.
// Nothing is copied, for the snapshot or for a clone (a volume made
// layered on a snapshot). A detached volume is snapshotted by one command;
// an attached one by its writer, which stops writes, flushes every copy,
// commits MsgSnapshotTaken under its epoch and only then writes to the new
// replicas.

type createSnapshotCmd struct {
	// Snapshot carries the new record's ID, Name, ProjectID, Hidden and
	// CreatedAt; the rest comes from the volume.
	Snapshot Volume `json:"snapshot"`
	Of       string `json:"of"`
	IfMatch  uint64 `json:"if_match,omitempty"`
	// Top: the volume's new replicas, made empty and layered on the
	// snapshot's disks beforehand (a detached volume's snapshot is taken
	// at once); none for an attached volume, whose writer makes them.
	Top []Replica `json:"top,omitempty"`
	// Unclaimed: replicas of a detached volume the service could not
	// fence before the snapshot took them; the snapshot has them stale
	// (caught up from a claimed one before they are read).
	Unclaimed []string `json:"unclaimed,omitempty"`
	// Format 1 (snapshotFormat) charges the snapshot's size to volume_gib.
	// A command without it was written before that and applies as it did
	// then: every node replays the log after its own Raft snapshot, and
	// must reach the state of the others, which applied it long ago.
	Format int `json:"format,omitempty"`
}

// snapshotFormat is the createSnapshotCmd format the service writes.
const snapshotFormat = 1

// SnapshotTaken is the writer's word that it took the volume's pending
// snapshot: every write it acknowledged before is in the replicas that
// become the snapshot's, and from now on it writes to Top alone.
type SnapshotTaken struct {
	Volume   string    `json:"volume"`
	Snapshot string    `json:"snapshot"`
	Node     string    `json:"node"`
	Epoch    uint64    `json:"epoch"`
	Top      []Replica `json:"top"`
	Quiesced bool      `json:"quiesced,omitempty"`
	// Size is the writer's size when it took the snapshot: what the
	// snapshot's replicas hold, if less than the record said (a volume
	// extended but not yet grown by its writer).
	Size int64 `json:"size,omitempty"`
}

// callOffSnapshot calls off v's pending snapshot (v is being detached or
// deleted: no writer will take it), deleting its record and refunding
// it, and clears v.Snapshotting; the caller saves v.
func callOffSnapshot(tx *consensus.Tx, v *Volume) error {
	if s := getVolume(tx.Txn, v.Snapshotting); s != nil && s.State == StateCreating {
		called := *s
		if err := refundSnapshot(tx, &called); err != nil {
			return err
		}
		if err := tx.Delete(tVolumes, s); err != nil {
			return err
		}
	}
	v.Snapshotting = ""
	return nil
}

// hiddenName is a hidden snapshot's name: one no user can give (names
// start with a letter or digit), so it never takes a name from a volume.
func hiddenName(id string) string { return "~" + id }

// SnapshotMerged is the writer's word that it copied every block of the
// hidden snapshot its volume reads through to, and that the volume has not
// written since, into the volume's replicas, with the copies flushed: the
// volume reads through to the snapshot's parent from now on, and the
// snapshot goes.
type SnapshotMerged struct {
	Volume   string `json:"volume"`
	Snapshot string `json:"snapshot"`
	Node     string `json:"node"`
	Epoch    uint64 `json:"epoch"`
}

func applySnapshotMerged(tx *consensus.Tx, c *SnapshotMerged) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	if err := notWriter(cur, c.Node, c.Epoch); err != nil {
		return nil, err
	}
	s := getVolume(tx.Txn, c.Snapshot)
	switch {
	case s == nil || cur.Parent != s.ID:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s does not read through to snapshot %s", cur.Name, c.Snapshot)
	case !s.Hidden:
		return nil, consensus.Errorf(consensus.CodeConflict, "snapshot %s is not deleted", s.Name)
	case s.Attachment != nil:
		return nil, consensus.Errorf(consensus.CodeConflict, "snapshot %s is attached to %s", s.Name, attachedTo(s.Attachment))
	case referenced(tx.Txn, s.ID, cur.ID):
		return nil, consensus.Errorf(consensus.CodeConflict, "other volumes read through to snapshot %s", s.Name)
	}
	v := *cur
	v.Parent = s.Parent
	v.Layered = true
	if err := tx.Delete(tVolumes, s); err != nil {
		return nil, err
	}
	if _, err := save(tx, &v); err != nil {
		return nil, err
	}
	return s, nil
}

type deleteSnapshotCmd struct {
	ID      string `json:"id"`
	IfMatch uint64 `json:"if_match,omitempty"`
}

func registerSnapshots(reg *consensus.Registry) {
	consensus.Handle(reg, MsgCreateSnapshot, "CreateVolumeSnapshot", applyCreateSnapshot)
	consensus.Handle(reg, MsgSnapshotTaken, "VolumeSnapshotTaken", applySnapshotTaken)
	consensus.Handle(reg, MsgDeleteSnapshot, "DeleteVolumeSnapshot", applyDeleteSnapshot)
	consensus.Handle(reg, MsgSnapshotMerged, "VolumeSnapshotMerged", applySnapshotMerged)
}

// chargeSnapshot counts a new snapshot in its project's quota, one
// snapshot and (with sized) its size in GiB, unless it is hidden; s is the
// caller's copy and records the GiB charged.
func chargeSnapshot(tx *consensus.Tx, s *Volume, sized bool) error {
	s.ChargedGiB = 0
	if s.Hidden {
		return nil
	}
	r := identity.Resources{Snapshots: 1}
	if sized {
		r.VolumeGiB = s.SizeGiB()
	}
	if err := identity.Charge(tx, s.ProjectID, r); err != nil {
		return err
	}
	s.ChargedGiB = r.VolumeGiB
	return nil
}

// refundSnapshot gives back what chargeSnapshot counted for s (the
// caller's copy, which then records nothing charged).
func refundSnapshot(tx *consensus.Tx, s *Volume) error {
	if s.Hidden {
		return nil
	}
	err := identity.Charge(tx, s.ProjectID, identity.Resources{Snapshots: -1, VolumeGiB: -s.ChargedGiB})
	if consensus.ErrorCode(err) == consensus.CodeNotFound {
		err = nil // a project deleted meanwhile has no quota to refund
	}
	s.ChargedGiB = 0
	return err
}

func applyCreateSnapshot(tx *consensus.Tx, c *createSnapshotCmd) (any, error) {
	cur, err := current(tx, c.Of, c.IfMatch)
	if err != nil {
		return nil, err
	}
	s := c.Snapshot
	switch {
	case cur.Kind != "":
		return nil, consensus.Errorf(consensus.CodeInvalid, "%s is a snapshot: make a volume from it and snapshot that", cur.Name)
	case cur.State != StateAvailable && cur.State != StateInUse:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is %s", cur.Name, cur.State)
	case cur.Unfilled():
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is still being filled from %v", cur.Name, cur.Source.Phrase())
	case cur.Snapshotting != "":
		return nil, consensus.Errorf(consensus.CodeConflict, "a snapshot of volume %s is being taken", cur.Name)
	case s.ID == "" || getVolume(tx.Txn, s.ID) != nil:
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "snapshot %q already exists", s.ID)
	case s.ProjectID != cur.ProjectID:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a snapshot is in its volume's project")
	case consensus.First[Volume](tx.Txn, tVolumes, "name", s.ProjectID, s.Name) != nil:
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "volume_exists", "a volume or snapshot named %q already exists in this project", s.Name)
	case !cur.served() && len(c.Top) == 0:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a detached volume's snapshot needs the volume's new replicas")
	case cur.served() && len(c.Top) != 0:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is attached: its writer takes the snapshot", cur.Name)
	case cur.Attachment != nil && cur.Attachment.Incoming != "":
		return nil, movingErr(cur)
	}
	if err := checkTop(cur, c.Top); err != nil {
		return nil, err
	}
	if s.Hidden {
		s.Name = hiddenName(s.ID)
	}
	s.Kind, s.Of, s.Parent, s.SizeBytes = KindSnapshot, cur.ID, cur.Parent, cur.SizeBytes
	if err := chargeSnapshot(tx, &s, c.Format >= snapshotFormat); err != nil {
		return nil, err
	}
	s.Writer, s.Epoch, s.Attachment, s.Source, s.Snapshotting, s.Copies = "", 0, nil, nil, "", cur.Copies
	s.Replicas = nil
	s.State = StateCreating
	v := *cur
	if !cur.served() {
		take(&v, &s, c.Top)
		if err := markUnclaimed(&s, c.Unclaimed); err != nil {
			return nil, err
		}
	} else {
		v.Snapshotting = s.ID
	}
	if _, err := save(tx, &v); err != nil {
		return nil, err
	}
	return save(tx, &s)
}

// served: attached on a node, whose writer serves it (a VM not placed
// yet has none).
func (v *Volume) served() bool { return v.Attachment != nil && v.Attachment.Node != "" }

// checkTop admits a volume's new replicas: at least one, each on a disk
// of one of the volume's, none reusing an ID.
func checkTop(cur *Volume, top []Replica) error {
	disks := map[string]string{}
	for _, r := range cur.Replicas {
		disks[r.Disk] = r.Node
	}
	seen := map[string]bool{}
	for _, r := range top {
		switch {
		case r.ID == "" || seen[r.ID] || r.ID == cur.ID:
			return consensus.Errorf(consensus.CodeInvalid, "snapshot of %s: replica ID %q repeated or empty", cur.Name, r.ID)
		case disks[r.Disk] != r.Node || r.Node == "":
			return consensus.Errorf(consensus.CodeInvalid, "snapshot of %s: replica %s is not on a disk of the volume's", cur.Name, r.ID)
		}
		for _, o := range cur.Replicas {
			if o.ID == r.ID {
				return consensus.Errorf(consensus.CodeInvalid, "snapshot of %s: replica %s is one the snapshot takes", cur.Name, r.ID)
			}
		}
		seen[r.ID] = true
	}
	return nil
}

// take moves v's replicas to snapshot s, which becomes available, and
// gives v the new ones (in sync: empty, as is every block of v since the
// snapshot), layered on s.
func take(v, s *Volume, top []Replica) {
	s.Replicas = append([]Replica(nil), v.Replicas...)
	s.Layered = v.layered()
	s.Epoch = v.Epoch
	s.State = StateAvailable
	v.Replicas = nil
	for _, r := range top {
		r.State = ReplicaInSync
		v.Replicas = append(v.Replicas, r)
	}
	v.Parent = s.ID
	v.Layered = true
	v.Snapshotting = ""
}

// markUnclaimed makes the snapshot's replicas named in ids stale; one
// in-sync replica must stay.
func markUnclaimed(s *Volume, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	out := slices.Clone(s.Replicas)
	inSync := 0
	for i := range out {
		if slices.Contains(ids, out[i].ID) {
			out[i].State = ReplicaStale
		}
		if out[i].State == ReplicaInSync {
			inSync++
		}
	}
	if inSync == 0 {
		return consensus.Errorf(consensus.CodeInvalid, "snapshot %s: no replica was claimed", s.Name)
	}
	s.Replicas = out
	return nil
}

func applySnapshotTaken(tx *consensus.Tx, c *SnapshotTaken) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	if err := notWriter(cur, c.Node, c.Epoch); err != nil {
		return nil, err
	}
	s := getVolume(tx.Txn, c.Snapshot)
	switch {
	case cur.Snapshotting != c.Snapshot || s == nil || s.State != StateCreating:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is not taking snapshot %s", cur.Name, c.Snapshot)
	case len(c.Top) == 0:
		return nil, consensus.Errorf(consensus.CodeInvalid, "snapshot of %s: no new replica", cur.Name)
	}
	if err := checkTop(cur, c.Top); err != nil {
		return nil, err
	}
	v, snap := *cur, *s
	take(&v, &snap, c.Top)
	snap.Quiesced = c.Quiesced
	if c.Size > 0 && c.Size < snap.SizeBytes {
		snap.SizeBytes = c.Size // past it, zeroes: nothing was written there
		if d := snap.ChargedGiB - snap.SizeGiB(); d > 0 {
			if err := identity.Charge(tx, snap.ProjectID, identity.Resources{VolumeGiB: -d}); err != nil && consensus.ErrorCode(err) != consensus.CodeNotFound {
				return nil, err
			}
			snap.ChargedGiB -= d
		}
	}
	if _, err := save(tx, &snap); err != nil {
		return nil, err
	}
	return save(tx, &v)
}

// applyDeleteSnapshot deletes a snapshot; one that volumes still read
// through to is hidden instead (and refunded), and goes with the last of
// them. A snapshot still being taken is called off.
func applyDeleteSnapshot(tx *consensus.Tx, c *deleteSnapshotCmd) (any, error) {
	cur, err := current(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	switch {
	case cur.Kind != KindSnapshot:
		return nil, consensus.Errorf(consensus.CodeInvalid, "%s is a volume, not a snapshot", cur.Name)
	case cur.Attachment != nil && !cur.Attachment.Repair:
		return nil, consensus.Errorf(consensus.CodeConflict, "snapshot %s is attached to %s: stop that first", cur.Name, attachedTo(cur.Attachment))
	}
	if cur.State == StateCreating {
		if v := getVolume(tx.Txn, cur.Of); v != nil && v.Snapshotting == cur.ID {
			nv := *v
			nv.Snapshotting = ""
			if _, err := save(tx, &nv); err != nil {
				return nil, err
			}
		}
	}
	refunded := *cur
	if err := refundSnapshot(tx, &refunded); err != nil {
		return nil, err
	}
	if cur.State != StateCreating && referenced(tx.Txn, cur.ID, "") {
		s := refunded
		s.Hidden = true
		s.Name = hiddenName(s.ID) // its name is free again
		return save(tx, &s)
	}
	if err := tx.Delete(tVolumes, cur); err != nil {
		return nil, err
	}
	return cur, dropUnreferenced(tx, cur.Parent)
}

// referenced tells whether any record but except is layered on id.
func referenced(txn *memdb.Txn, id, except string) bool {
	it, err := txn.Get(tVolumes, "id")
	if err != nil {
		return true
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if v := o.(*Volume); v.Parent == id && v.ID != except {
			return true
		}
	}
	return false
}

// dropUnreferenced deletes hidden snapshot id, and its hidden parents in
// turn, once nothing is layered on it.
func dropUnreferenced(tx *consensus.Tx, id string) error {
	for id != "" {
		s := getVolume(tx.Txn, id)
		if s == nil || !s.Hidden || s.Attachment != nil && !s.Attachment.Repair || referenced(tx.Txn, id, "") {
			return nil
		}
		if err := tx.Delete(tVolumes, s); err != nil {
			return err
		}
		id = s.Parent
	}
	return nil
}
