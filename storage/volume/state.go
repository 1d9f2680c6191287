package volume

import (
	"fmt"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
	"github.com/hashicorp/go-memdb"
)

// Volumes' commands: storage's range (128-255), 160-191 are volumes'.
// Numbers are never reused.
const (
	MsgCreateVolume    consensus.MessageType = 160
	MsgSetVolumeState  consensus.MessageType = 161
	MsgDeleteVolume    consensus.MessageType = 162
	MsgExtendVolume    consensus.MessageType = 163
	MsgAttachVolume    consensus.MessageType = 164
	MsgDetachVolume    consensus.MessageType = 165
	MsgAcquireWriter   consensus.MessageType = 166
	MsgSetReplicaState consensus.MessageType = 167
	MsgSourceFilled    consensus.MessageType = 168
	MsgAddReplica      consensus.MessageType = 169
	MsgRemoveReplica   consensus.MessageType = 170
	MsgVolumeScrubbed  consensus.MessageType = 171
	MsgExportCA        consensus.MessageType = 172
	MsgCreateSnapshot  consensus.MessageType = 173
	MsgSnapshotTaken   consensus.MessageType = 174
	MsgDeleteSnapshot  consensus.MessageType = 175
	MsgSnapshotMerged  consensus.MessageType = 176
)

// Volume states. A volume is in-use exactly while it is attached.
const (
	StateCreating  = "creating"  // recorded, its replicas being made
	StateAvailable = "available" // detached, ready
	StateInUse     = "in-use"    // attached to a VM or a node's host
	StateError     = "error"     // its replicas could not all be made
)

// Replica states.
const (
	ReplicaInSync     = "in_sync"    // has every acknowledged write
	ReplicaStale      = "stale"      // missed writes; not read, not written
	ReplicaRebuilding = "rebuilding" // catching up: written, not read
)

// Sizes a volume may have.
const (
	GiB        = 1 << 30
	MaxSizeGiB = 64 << 10 // 64 TiB
)

// ReasonFenced is the consensus error reason of a replica-state change
// from a writer whose epoch is not the volume's current one.
const ReasonFenced = "fenced"

// Volume is a block volume's record in the replicated state.
type Volume struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	ProjectID string    `json:"project_id"`
	SizeBytes int64     `json:"size_bytes"`
	State     string    `json:"state"`
	Replicas  []Replica `json:"replicas"`
	// Copies is how many replicas the volume is to have (set at create;
	// the repair rebuilds towards it). 0 in records older than it: as
	// many as it has, up to MaxReplicas.
	Copies int `json:"copies,omitempty"`
	// Writer is the node holding the writer epoch ("" never opened).
	Writer     string      `json:"writer,omitempty"`
	Epoch      uint64      `json:"epoch"`
	Attachment *Attachment `json:"attachment,omitempty"` // nil when detached
	// Source is what the volume was made from, nil for a blank one.
	Source *Source `json:"source,omitempty"`
	// InSync and Degraded follow from Replicas (kept with every change, and
	// worked out again on read): how many replicas have every write, and
	// whether any lacks some.
	InSync   int  `json:"in_sync"`
	Degraded bool `json:"degraded"`
	// Kind is "" for a volume, KindSnapshot for a snapshot: a read-only
	// copy of a volume at one instant, with replicas of its own.
	Kind string `json:"kind,omitempty"`
	// Parent is the snapshot this volume (or snapshot) is layered on:
	// blocks its replicas never wrote read from there.
	Parent string `json:"parent,omitempty"`
	// Of is the volume a snapshot was taken of (perhaps deleted since).
	Of string `json:"of,omitempty"`
	// Snapshotting is the snapshot of this volume its writer is to take,
	// while that snapshot is being created.
	Snapshotting string `json:"snapshotting,omitempty"`
	// Quiesced: the guest's file systems were frozen (fsfreeze) while the
	// snapshot was taken; otherwise it is crash-consistent.
	Quiesced bool `json:"quiesced,omitempty"`
	// Hidden: a snapshot its owner deleted (or one made for a clone) that
	// volumes still read through to; it goes with the last of them.
	Hidden bool `json:"hidden,omitempty"`
	// ChargedGiB is what a snapshot holds of its project's volume_gib
	// quota, as Cinder counts snapshots' gigabytes: its size, from its
	// creation until it is deleted or hidden. 0 for hidden snapshots and
	// for those recorded before snapshots were charged by size, which are
	// refunded nothing.
	ChargedGiB int64 `json:"charged_gib,omitempty"`
	// MadeFrom is the snapshot a volume made from one (or as a clone) was
	// made from, kept as it was: Parent changes as the volume is
	// snapshotted and merged.
	MadeFrom *MadeFrom `json:"made_from,omitempty"`
	// Layered: its replicas are layered (it has, or had, a parent): a
	// replica added to it must be too.
	Layered bool `json:"layered,omitempty"`
	// ScrubbedAt is when its writer last read every copy whole.
	ScrubbedAt time.Time `json:"scrubbed_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
	Version    uint64    `json:"version"` // the Raft index of the last change
}

// Replica is one copy of a volume: a directory on one disk of one node.
type Replica struct {
	ID    string `json:"id"`
	Node  string `json:"node"`
	Disk  string `json:"disk"`
	State string `json:"state"`
}

// Attachment says who uses a volume. A VM's volume is served on the node
// the VM is placed on ("" until it is placed) and follows it there.
type Attachment struct {
	Node string    `json:"node"`
	VM   string    `json:"vm,omitempty"` // "": the node's host (an admin's export)
	At   time.Time `json:"at"`
	// Boot: the VM boots from it; it stays attached while the VM exists.
	Boot bool `json:"boot,omitempty"`
	// Firmware: it holds the VM's UEFI variables (QEMU's second flash
	// chip, not a disk); it stays attached while the VM exists.
	Firmware bool `json:"firmware,omitempty"`
	// DeleteWithVM: made with the VM, it goes with it.
	DeleteWithVM bool `json:"delete_with_vm,omitempty"`
	// Repair: the volume is opened on this node only so that its writer
	// catches up a replica added in place of a lost one; an attach by its
	// owner takes over, and the repair detaches it when done.
	Repair bool `json:"repair,omitempty"`
	// Transfer: its owner uploads into it or downloads it through this
	// node; it is detached when that ends.
	Transfer bool `json:"transfer,omitempty"`
	// Export: served read-only to backup tools on the node's export port
	// (Service.Export), until unexported.
	Export bool `json:"export,omitempty"`
	// Detaching: its owner asked to detach it from the running VM; the
	// VM's node unplugs it (the guest has to let go) and then detaches it.
	Detaching bool `json:"detaching,omitempty"`
	// Incoming is the node a live migration is moving the VM to: that
	// node serves the volume on a standby socket, without a writer, until
	// the switchover hands the writer epoch over (HandOver).
	Incoming string `json:"incoming,omitempty"`
}

// Source is what a volume was made from. Its bytes are written by the
// volume's first writer before it serves anything, so every reader of the
// volume sees them; Filled records that they are.
type Source struct {
	Image string `json:"image,omitempty"` // an image ID
	// VMDisk is a VM whose local boot disk the volume takes over (the VM
	// is stopped, and the volume is filled on its node).
	VMDisk string `json:"vm_disk,omitempty"`
	Filled bool   `json:"filled"`
}

// String says what the source is.
func (s Source) String() string { return s.Phrase().Error() }

// Phrase names the source as a coded phrase a refusal quotes, so a page
// says it in its language.
func (s Source) Phrase() error {
	if s.VMDisk != "" {
		return consensus.Errorf("", "the local disk of VM %s", s.VMDisk)
	}
	return consensus.Errorf("", "image %s", s.Image)
}

// Unfilled tells whether the volume's source still has to be written.
func (v *Volume) Unfilled() bool { return v.Source != nil && !v.Source.Filled }

// SizeGiB is the volume's size in whole GiB, rounded up.
func (v *Volume) SizeGiB() int64 { return gib(v.SizeBytes) }

func gib(b int64) int64 { return (b + GiB - 1) / GiB }

// Viewed is the volume as reads show it, with its redundancy filled in.
func (v Volume) Viewed() *Volume {
	v.InSync = v.inSync()
	v.Degraded = v.InSync < len(v.Replicas) || v.InSync < v.target()
	return &v
}

// target is how many replicas the volume is to have.
func (v *Volume) target() int {
	if v.Copies > 0 {
		return v.Copies
	}
	return min(MaxReplicas, len(v.Replicas))
}

// inSync counts the replicas in sync.
func (v *Volume) inSync() int {
	n := 0
	for _, r := range v.Replicas {
		if r.State == ReplicaInSync {
			n++
		}
	}
	return n
}

const tVolumes = "volumes"

type createVolumeCmd struct {
	Volume Volume `json:"volume"`
	// Clone: the volume may be layered on a hidden snapshot (the one a
	// clone of a volume is made through).
	Clone bool `json:"clone,omitempty"`
}

type setVolumeStateCmd struct {
	ID    string `json:"id"`
	State string `json:"state"` // available or error
}

type deleteVolumeCmd struct {
	ID      string `json:"id"`
	IfMatch uint64 `json:"if_match,omitempty"`
	// Undo: the service takes back a volume it could not make; only a
	// volume still being created goes, and only this way.
	Undo bool `json:"undo,omitempty"`
}

type extendVolumeCmd struct {
	ID        string `json:"id"`
	SizeBytes int64  `json:"size_bytes"`
	IfMatch   uint64 `json:"if_match,omitempty"`
}

type attachVolumeCmd struct {
	ID         string     `json:"id"`
	Attachment Attachment `json:"attachment"`
	IfMatch    uint64     `json:"if_match,omitempty"`
}

type detachVolumeCmd struct {
	ID      string `json:"id"`
	IfMatch uint64 `json:"if_match,omitempty"`
	// Transfer ends a transfer's attachment on that node, and nothing else;
	// Export likewise an export's.
	Transfer string `json:"transfer,omitempty"`
	Export   string `json:"export,omitempty"`
	// At names the transfer's attachment (its At): another transfer on the
	// same node since is not ended.
	At time.Time `json:"at,omitzero"`
}

// AcquireWriter makes Node the volume's writer with a new epoch; only the
// node the volume is attached to may. Its result is the *Volume.
type AcquireWriter struct {
	Volume string `json:"volume"`
	Node   string `json:"node"`
}

// SetReplicaState changes a replica's state on the writer's word: Node
// must be the writer and Epoch the current epoch (else a conflict with
// reason ReasonFenced). Fewer than min(2, replicas) in-sync replicas are
// never left. Its result is the *Volume.
type SetReplicaState struct {
	Volume  string `json:"volume"`
	Node    string `json:"node"`
	Epoch   uint64 `json:"epoch"`
	Replica string `json:"replica"`
	State   string `json:"state"`
}

// SourceFilled records that the writer has written the volume's source;
// Node and Epoch must be the current writer's.
type SourceFilled struct {
	Volume string `json:"volume"`
	Node   string `json:"node"`
	Epoch  uint64 `json:"epoch"`
}

// Register adds volumes' table and commands.
func Register(reg *consensus.Registry) {
	consensus.RegisterTable[Volume](reg, &memdb.TableSchema{Name: tVolumes, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"name": {Name: "name", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "ProjectID"}, &memdb.StringFieldIndex{Field: "Name"}}}},
		"project": {Name: "project", Indexer: &memdb.StringFieldIndex{Field: "ProjectID"}},
		// A disk holding a replica is not removed (storage asks).
		"disk": {Name: "disk", AllowMissing: true, Indexer: replicaDisks{}},
	}})
	consensus.Handle(reg, MsgCreateVolume, "CreateVolume", applyCreateVolume)
	consensus.Handle(reg, MsgSetVolumeState, "SetVolumeState", applySetVolumeState)
	consensus.Handle(reg, MsgDeleteVolume, "DeleteVolume", applyDeleteVolume)
	consensus.Handle(reg, MsgExtendVolume, "ExtendVolume", applyExtendVolume)
	consensus.Handle(reg, MsgAttachVolume, "AttachVolume", applyAttachVolume)
	consensus.Handle(reg, MsgDetachVolume, "DetachVolume", applyDetachVolume)
	consensus.Handle(reg, MsgAcquireWriter, "AcquireWriter", applyAcquireWriter)
	consensus.Handle(reg, MsgSetReplicaState, "SetReplicaState", applySetReplicaState)
	consensus.Handle(reg, MsgSourceFilled, "VolumeSourceFilled", applySourceFilled)
	consensus.Handle(reg, MsgAddReplica, "AddVolumeReplica", applyAddReplica)
	consensus.Handle(reg, MsgRemoveReplica, "RemoveVolumeReplica", applyRemoveReplica)
	consensus.Handle(reg, MsgVolumeScrubbed, "VolumeScrubbed", applyScrubbed)
	registerExport(reg)
	registerSnapshots(reg)
	storage.HoldsDisks(tVolumes)
}

func getVolume(txn *memdb.Txn, id string) *Volume {
	return consensus.First[Volume](txn, tVolumes, "id", id)
}

func notFound(kind, id string) error {
	return consensus.Errorm(consensus.CodeNotFound, "not_found", "%s %q not found", kind, id)
}

// current returns a volume at the version the request saw (If-Match).
func current(tx *consensus.Tx, id string, ifMatch uint64) (*Volume, error) {
	cur := getVolume(tx.Txn, id)
	if cur == nil {
		return nil, notFound("volume", id)
	}
	if ifMatch != 0 && ifMatch != cur.Version {
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "volume %s is at version %d, not %d", cur.Name, cur.Version, ifMatch)
	}
	return cur, nil
}

func save(tx *consensus.Tx, v *Volume) (any, error) {
	v.Version = tx.Index
	if v.Copies == 0 {
		// A record from before Copies: fixed at what it has (adds by the
		// repair set it first, so a replica on its way in never counts).
		v.Copies = min(MaxReplicas, len(v.Replicas))
	}
	v.InSync = v.inSync()
	v.Degraded = v.InSync < len(v.Replicas) || v.InSync < v.target()
	if err := tx.Insert(tVolumes, v); err != nil {
		return nil, err
	}
	return v, nil
}

// MadeFrom is the snapshot a volume was made from.
type MadeFrom struct {
	Snapshot string    `json:"snapshot"` // its ID
	Of       string    `json:"of"`       // the volume it was taken of
	At       time.Time `json:"at"`       // when it was taken
}

// layered tells whether v's replicas are layered.
func (v *Volume) layered() bool { return v.Parent != "" || v.Layered }

// applyCreateVolume records a volume being created and charges its
// project, in one transaction: a refusal leaves nothing behind.
func applyCreateVolume(tx *consensus.Tx, c *createVolumeCmd) (any, error) {
	v := c.Volume
	switch {
	case getVolume(tx.Txn, v.ID) != nil:
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "volume %s already exists", v.ID)
	case consensus.First[Volume](tx.Txn, tVolumes, "name", v.ProjectID, v.Name) != nil:
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "volume_exists", "a volume or snapshot named %q already exists in this project", v.Name)
	case v.SizeBytes < GiB || v.SizeBytes > MaxSizeGiB*GiB || v.SizeBytes%BlockSize != 0:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a volume is 1-%d GiB, not %d bytes", MaxSizeGiB, v.SizeBytes)
	case len(v.Replicas) == 0:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a volume needs at least one replica")
	case v.Source != nil && (v.Source.Image == "") == (v.Source.VMDisk == ""):
		return nil, consensus.Errorf(consensus.CodeInvalid, "a volume's source names an image or a VM's disk")
	case v.Kind != "":
		return nil, consensus.Errorf(consensus.CodeInvalid, "a snapshot is taken of a volume, not created")
	case v.Parent != "" && v.Source != nil:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a volume is made from a snapshot or from a source, not both")
	}
	v.MadeFrom, v.Layered = nil, false // the command's say nothing
	if v.Parent != "" {
		// A clone: layered on a snapshot of the project's, no smaller.
		p := getVolume(tx.Txn, v.Parent)
		switch {
		case p == nil || p.Kind != KindSnapshot || p.ProjectID != v.ProjectID || p.Hidden && !c.Clone:
			return nil, notFound("snapshot", v.Parent)
		case p.State != StateAvailable:
			return nil, consensus.Errorf(consensus.CodeConflict, "snapshot %s is %s", p.Name, p.State)
		case v.SizeBytes < p.SizeBytes:
			return nil, consensus.Errorf(consensus.CodeInvalid, "snapshot %s is %d GiB: a volume made from it is at least that", p.Name, p.SizeGiB())
		}
		v.MadeFrom = &MadeFrom{Snapshot: p.ID, Of: p.Of, At: p.CreatedAt}
		v.Layered = true
	}
	if err := identity.Charge(tx, v.ProjectID, identity.Resources{Volumes: 1, VolumeGiB: v.SizeGiB()}); err != nil {
		return nil, err
	}
	v.State, v.Writer, v.Epoch, v.Attachment = StateCreating, "", 0, nil
	if v.Copies <= 0 {
		v.Copies = len(v.Replicas)
	}
	if v.Source != nil {
		src := *v.Source
		src.Filled = false
		v.Source = &src
	}
	v.Replicas = append([]Replica(nil), v.Replicas...)
	for i := range v.Replicas {
		v.Replicas[i].State = ReplicaInSync
	}
	return save(tx, &v)
}

// applySetVolumeState ends a volume's creation: available, or error.
func applySetVolumeState(tx *consensus.Tx, c *setVolumeStateCmd) (any, error) {
	cur, err := current(tx, c.ID, 0)
	if err != nil {
		return nil, err
	}
	if c.State != StateAvailable && c.State != StateError {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a volume cannot be set %q", c.State)
	}
	if cur.State != StateCreating {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is %s, not being created", cur.Name, cur.State)
	}
	v := *cur
	v.State = c.State
	return save(tx, &v)
}

// applyDeleteVolume removes a detached volume and refunds its project.
func applyDeleteVolume(tx *consensus.Tx, c *deleteVolumeCmd) (any, error) {
	cur, err := current(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	switch {
	case cur.Kind != "":
		return nil, consensus.Errorf(consensus.CodeInvalid, "%s is a snapshot: delete it as one", cur.Name)
	case cur.Attachment != nil && !cur.Attachment.Repair: // the repair gives way
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is attached to %s: detach it first", cur.Name, attachedTo(cur.Attachment))
	case c.Undo && cur.State != StateCreating:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is no longer being created", cur.Name)
	case !c.Undo && cur.State == StateCreating:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is still being created", cur.Name)
	}
	return cur, removeVolume(tx, cur)
}

// removeVolume deletes a volume's record and refunds its project. A
// snapshot of it still pending is called off; its snapshots stay, and a
// hidden one only it read through to goes.
func removeVolume(tx *consensus.Tx, cur *Volume) error {
	// A project deleted meanwhile has no quota to refund.
	if err := identity.Charge(tx, cur.ProjectID, identity.Resources{Volumes: -1, VolumeGiB: -cur.SizeGiB()}); err != nil && consensus.ErrorCode(err) != consensus.CodeNotFound {
		return err
	}
	if err := callOffSnapshot(tx, cur); err != nil {
		return err
	}
	if err := tx.Delete(tVolumes, cur); err != nil {
		return err
	}
	return dropUnreferenced(tx, cur.Parent)
}

// attachedTo names what holds an attachment ("VM web1"), as a coded phrase
// a refusal quotes, so a page says it in its language.
func attachedTo(a *Attachment) error {
	if a.VM != "" {
		return consensus.Errorf(consensus.CodeConflict, "VM %s", a.VM)
	}
	return consensus.Errorf(consensus.CodeConflict, "node %s", a.Node)
}

// applyExtendVolume grows a volume and charges the difference.
func applyExtendVolume(tx *consensus.Tx, c *extendVolumeCmd) (any, error) {
	cur, err := current(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	switch {
	case cur.Kind != "":
		return nil, consensus.Errorf(consensus.CodeInvalid, "%s is a snapshot: snapshots do not change", cur.Name)
	case cur.State == StateCreating || cur.State == StateError:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is %s", cur.Name, cur.State)
	case c.SizeBytes <= cur.SizeBytes:
		return nil, consensus.Errorf(consensus.CodeInvalid, "volume %s is %d GiB: it can only grow, not become %d GiB", cur.Name, cur.SizeGiB(), gib(c.SizeBytes))
	case c.SizeBytes > MaxSizeGiB*GiB || c.SizeBytes%BlockSize != 0:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a volume is 1-%d GiB, not %d bytes", MaxSizeGiB, c.SizeBytes)
	case cur.Snapshotting != "":
		// The snapshot's size is the volume's when it was asked for.
		return nil, consensus.Errorf(consensus.CodeConflict, "a snapshot of volume %s is being taken: extend it once the snapshot is taken", cur.Name)
	case cur.Attachment != nil && cur.Attachment.Incoming != "":
		return nil, movingErr(cur)
	}
	if d := gib(c.SizeBytes) - cur.SizeGiB(); d != 0 {
		if err := identity.Charge(tx, cur.ProjectID, identity.Resources{VolumeGiB: d}); err != nil {
			return nil, err
		}
	}
	v := *cur
	v.SizeBytes = c.SizeBytes
	return save(tx, &v)
}

// applyAttachVolume gives an available volume to a VM or a node's host.
func applyAttachVolume(tx *consensus.Tx, c *attachVolumeCmd) (any, error) {
	cur, err := current(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	switch {
	case cur.Attachment != nil && !cur.Attachment.Repair:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is already attached to %s", cur.Name, attachedTo(cur.Attachment))
	case cur.State != StateAvailable && (cur.Attachment == nil || !cur.Attachment.Repair):
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is %s, not available", cur.Name, cur.State)
	case c.Attachment.VM == "" && c.Attachment.Node == "":
		return nil, consensus.Errorf(consensus.CodeInvalid, "attach volume %s to a VM or a node", cur.Name)
	case cur.Kind != "" && !c.Attachment.Repair && !c.Attachment.Export:
		// Read-only: only exported, or opened by the repair.
		return nil, consensus.Errorf(consensus.CodeConflict, "%s is a snapshot: make a volume from it to attach", cur.Name)
	case cur.Hidden && !c.Attachment.Repair:
		return nil, notFound("snapshot", cur.ID)
	case cur.Source != nil && cur.Source.VMDisk != "" && !cur.Source.Filled:
		// Filled from that VM's disk on its node, for that VM alone.
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is still to take over VM %s's local disk", cur.Name, cur.Source.VMDisk)
	}
	v := *cur
	a := c.Attachment
	v.Attachment, v.State = &a, StateInUse
	if cur.Attachment != nil {
		v.Writer = "" // the repair's writer gives way
	}
	return save(tx, &v)
}

// applyDetachVolume frees an attached volume. The writer epoch stays: the
// next writer takes a higher one.
func applyDetachVolume(tx *consensus.Tx, c *detachVolumeCmd) (any, error) {
	cur, err := current(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	if cur.Attachment == nil {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is not attached", cur.Name)
	}
	if cur.Attachment.Boot {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is VM %s's boot disk: it stays attached while the VM exists", cur.Name, cur.Attachment.VM)
	}
	if cur.Attachment.Firmware {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s holds VM %s's UEFI settings: it stays attached while the VM exists", cur.Name, cur.Attachment.VM)
	}
	if a := cur.Attachment; c.Transfer != "" && (!a.Transfer || a.VM != "" || a.Node != c.Transfer || !c.At.IsZero() && !a.At.Equal(c.At)) {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is no longer being transferred through %s", cur.Name, c.Transfer)
	}
	if a := cur.Attachment; c.Export != "" && (!a.Export || a.VM != "" || a.Node != c.Export) {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is no longer exported through %s", cur.Name, c.Export)
	}
	v := *cur
	// The writer goes with the attachment: from here on the replicated
	// state refuses its replica changes, and the next writer takes a new
	// epoch that fences it on the replicas.
	v.Attachment, v.State, v.Writer = nil, StateAvailable, ""
	if err := callOffSnapshot(tx, &v); err != nil {
		return nil, err
	}
	return save(tx, &v)
}

// applyAcquireWriter raises the epoch for the node the volume is attached
// to; every replica it fences refuses the previous writer from then on.
func applyAcquireWriter(tx *consensus.Tx, c *AcquireWriter) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	if cur.Attachment == nil || cur.Attachment.Node != c.Node || c.Node == "" {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is not attached on node %s", cur.Name, c.Node)
	}
	v := *cur
	v.Epoch++
	v.Writer = c.Node
	return save(tx, &v)
}

// applySetReplicaState records the writer's view of a replica, fenced by
// the epoch, never leaving fewer in-sync replicas than the floor.
func applySetReplicaState(tx *consensus.Tx, c *SetReplicaState) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	if err := notWriter(cur, c.Node, c.Epoch); err != nil {
		return nil, err
	}
	switch c.State {
	case ReplicaInSync, ReplicaStale, ReplicaRebuilding:
	default:
		return nil, consensus.Errorf(consensus.CodeInvalid, "replica state %q is not in_sync, stale or rebuilding", c.State)
	}
	v := *cur
	v.Replicas = append([]Replica(nil), cur.Replicas...)
	i := -1
	for j := range v.Replicas {
		if v.Replicas[j].ID == c.Replica {
			i = j
		}
	}
	if i < 0 {
		if c.State == ReplicaStale {
			// Removed by the repair while its writer still had it: nothing
			// is owed to it any more.
			return cur, nil
		}
		return nil, notFound("replica", c.Replica)
	}
	v.Replicas[i].State = c.State
	if floor := min(2, len(v.Replicas)); v.inSync() < floor && cur.Replicas[i].State == ReplicaInSync {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s: replica %s cannot be %s: fewer than %d replicas would stay in sync", cur.Name, c.Replica, c.State, floor)
	}
	return save(tx, &v)
}

// notWriter refuses a change from a node that is not the volume's writer at
// its current epoch.
func notWriter(cur *Volume, node string, epoch uint64) error {
	if node == "" || node != cur.Writer || epoch != cur.Epoch {
		return consensus.Reasonf(consensus.CodeConflict, ReasonFenced,
			"volume %s: node %s at epoch %d is not the writer (%s at epoch %d)", cur.Name, node, epoch, cur.Writer, cur.Epoch)
	}
	return nil
}

// applySourceFilled marks a volume's source written, on its writer's word.
func applySourceFilled(tx *consensus.Tx, c *SourceFilled) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	if err := notWriter(cur, c.Node, c.Epoch); err != nil {
		return nil, err
	}
	if cur.Source == nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "volume %s has no source", cur.Name)
	}
	v := *cur
	src := *cur.Source
	src.Filled = true
	v.Source = &src
	return save(tx, &v)
}

type addReplicaCmd struct {
	Volume  string  `json:"volume"`
	Replica Replica `json:"replica"`
	// Layered: the replica was made layered, as a volume or snapshot with
	// a parent needs (one made plain reads the parent's blocks as zeroes).
	Layered bool `json:"layered,omitempty"`
}

type removeReplicaCmd struct {
	Volume  string `json:"volume"`
	Replica string `json:"replica"`
}

// applyAddReplica adds a replica made in place of one being lost: stale
// until the volume's writer has caught it up. A node holds one replica of
// a volume, except where a replica moves between its disks.
func applyAddReplica(tx *consensus.Tx, c *addReplicaCmd) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	if len(cur.Replicas) >= 2*MaxReplicas {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s already has %d replicas", cur.Name, len(cur.Replicas))
	}
	for _, r := range cur.Replicas {
		if r.ID == c.Replica.ID || r.Disk == c.Replica.Disk {
			return nil, consensus.Errorf(consensus.CodeConflict, "volume %s already has replica %s on disk %s", cur.Name, r.ID, r.Disk)
		}
	}
	if c.Replica.ID == "" || c.Replica.Node == "" || c.Replica.Disk == "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a replica names its ID, node and disk")
	}
	if c.Layered != cur.layered() {
		// A snapshot was taken since the replica was made.
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s: replica %s is not layered as the volume's replicas are", cur.Name, c.Replica.ID)
	}
	v := *cur
	if v.Copies == 0 {
		v.Copies = min(MaxReplicas, len(cur.Replicas)) // before the newcomer
	}
	r := c.Replica
	r.State = ReplicaStale
	v.Replicas = append(append([]Replica(nil), cur.Replicas...), r)
	return save(tx, &v)
}

// applyRemoveReplica drops a replica that was replaced; never one that
// would leave fewer in-sync replicas than the floor, nor the last.
func applyRemoveReplica(tx *consensus.Tx, c *removeReplicaCmd) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	v := *cur
	v.Replicas = nil
	found := false
	for _, r := range cur.Replicas {
		if r.ID == c.Replica {
			found = true
			continue
		}
		v.Replicas = append(v.Replicas, r)
	}
	switch {
	case !found:
		return nil, notFound("replica", c.Replica)
	case len(v.Replicas) == 0 || v.inSync() < min(2, len(v.Replicas)):
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s: without replica %s fewer than %d replicas would be in sync", cur.Name, c.Replica, max(1, min(2, len(v.Replicas))))
	}
	return save(tx, &v)
}

// replicaDisks indexes a volume by the disks its replicas are on.
type replicaDisks struct{}

func (replicaDisks) FromObject(obj any) (bool, [][]byte, error) {
	v := obj.(*Volume)
	var out [][]byte
	for _, r := range v.Replicas {
		out = append(out, []byte(r.Disk+"\x00"))
	}
	return len(out) > 0, out, nil
}

func (replicaDisks) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("one disk ID")
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("disk ID: want a string, got %T", args[0])
	}
	return []byte(s + "\x00"), nil
}

// Scrubbed records a whole scrub of a volume by its writer.
type Scrubbed struct {
	Volume string    `json:"volume"`
	Node   string    `json:"node"`
	Epoch  uint64    `json:"epoch"`
	At     time.Time `json:"at"`
}

func applyScrubbed(tx *consensus.Tx, c *Scrubbed) (any, error) {
	cur, err := current(tx, c.Volume, 0)
	if err != nil {
		return nil, err
	}
	if err := notWriter(cur, c.Node, c.Epoch); err != nil {
		return nil, err
	}
	v := *cur
	v.ScrubbedAt = c.At
	return save(tx, &v)
}

// scrubDue tells whether a volume is due for a scrub (every interval, from
// its creation on; 0: never).
func (v *Volume) scrubDue(now time.Time, every time.Duration) bool {
	if every <= 0 {
		return false
	}
	last := v.ScrubbedAt
	if last.Before(v.CreatedAt) {
		last = v.CreatedAt
	}
	return now.Sub(last) >= every
}
