package hypervisor

import (
	"fmt"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/hashicorp/go-memdb"
)

// The hypervisor's commands (range 256-383). Numbers are never reused.
const (
	MsgCreateVM     consensus.MessageType = 256
	MsgPlaceVM      consensus.MessageType = 257
	MsgSetDesired   consensus.MessageType = 258
	MsgReportVM     consensus.MessageType = 259
	MsgPurgeVM      consensus.MessageType = 260
	MsgRenameVM     consensus.MessageType = 261
	MsgResizeVM     consensus.MessageType = 262
	MsgReportHost   consensus.MessageType = 263
	MsgSetSettings  consensus.MessageType = 264
	MsgCreateImage  consensus.MessageType = 265
	MsgUpdateImage  consensus.MessageType = 266
	MsgDeleteImage  consensus.MessageType = 267
	MsgRecordEvents consensus.MessageType = 268
	MsgConsoleKey   consensus.MessageType = 269
	MsgAttachVolume consensus.MessageType = 270
	MsgDetachVolume consensus.MessageType = 271
	MsgConvertDisk  consensus.MessageType = 272
	MsgCordonNode   consensus.MessageType = 273
	MsgUncordonNode consensus.MessageType = 274
	MsgMoveVM       consensus.MessageType = 275
	// Live migration (live.go).
	MsgStartMigration consensus.MessageType = 276
	MsgMigrationStep  consensus.MessageType = 277
	MsgEndMigration   consensus.MessageType = 278
	MsgMigrationCA    consensus.MessageType = 279
	// The one-step switchover (protocol 2): the source switches.
	MsgSwitchMigration consensus.MessageType = 285
	// A live migration that may go post-copy (protocol 3).
	MsgStartPostCopyMigration consensus.MessageType = 286
	// A VM made with a volume for its UEFI variables, and one given
	// such a volume (protocol 4).
	MsgCreateVMWithVars consensus.MessageType = 287
	MsgAttachVars       consensus.MessageType = 288
	// Draining nodes (drain.go).
	MsgDrainNode consensus.MessageType = 280
	MsgDrainStep consensus.MessageType = 281
	// A drain the admin let convert local disks (protocol 6).
	MsgDrainNodeConvert consensus.MessageType = 289
)

const (
	tVMs      = "vms"
	tEvents   = "vm_events"
	tHosts    = "hosts"
	tSettings = "compute_settings"
	tImages   = "images"
	tKeys     = "console_keys"
)

// maxEvents bounds each VM's history in the replicated state; the audit log
// keeps every request.
const maxEvents = 200

type createVMCmd struct {
	VM   VM     `json:"vm"`
	User string `json:"user"` // the creator's name, for the history
	// ImageScoped: the image must be public or the VM's project's. Commands
	// proposed before the rule existed lack it and replay as they applied.
	ImageScoped bool `json:"image_scoped,omitempty"`
	// BootVolumeOwned: the boot volume was made for this VM and is
	// deleted with it.
	BootVolumeOwned bool `json:"boot_volume_owned,omitempty"`
	// PortsCharged: the VM's ports count in its project's ports quota
	// (commands proposed before they were counted replay as they applied).
	PortsCharged bool `json:"ports_charged,omitempty"`
}

type placeVMCmd struct {
	ID    string    `json:"id"`
	Node  string    `json:"node,omitempty"`
	Error string    `json:"error,omitempty"` // no node fits
	At    time.Time `json:"at"`
	// ErrorSaid is Error as made from its format, for pages in another
	// language; none from older schedulers.
	ErrorSaid *consensus.Error `json:"error_said,omitempty"`
}

type setDesiredCmd struct {
	ID       string    `json:"id"`
	Op       string    `json:"op"` // what the owner asked, for the history
	Desired  string    `json:"desired"`
	StopMode string    `json:"stop_mode,omitempty"`
	Reboot   bool      `json:"reboot,omitempty"`
	IfMatch  uint64    `json:"if_match,omitempty"`
	User     string    `json:"user,omitempty"`
	At       time.Time `json:"at"`
}

type reportVMCmd struct {
	ID       string   `json:"id"`
	Node     string   `json:"node"`
	Status   VMStatus `json:"status"`
	Rebooted uint64   `json:"rebooted"`
	// GuestStopped: the guest shut itself down; the VM stays stopped,
	// unless its owner asked for something since (Version is the desired
	// state's version the node saw).
	GuestStopped bool   `json:"guest_stopped,omitempty"`
	Version      uint64 `json:"version,omitempty"`
	Event        string `json:"event,omitempty"` // a line for the history besides the state change
	// EventKey and EventArgs name Event's message (events.go).
	EventKey  string   `json:"event_key,omitempty"`
	EventArgs []string `json:"event_args,omitempty"`
	// VarsMoved: the node wrote its file of the VM's UEFI variables into
	// their volume (VMSpec.VarsFrom).
	VarsMoved bool `json:"vars_moved,omitempty"`
}

type purgeVMCmd struct {
	ID   string `json:"id"`
	Node string `json:"node,omitempty"` // "" for a VM that never had one
}

type renameVMCmd struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	IfMatch uint64    `json:"if_match,omitempty"`
	User    string    `json:"user,omitempty"`
	At      time.Time `json:"at"`
}

type resizeVMCmd struct {
	ID         string    `json:"id"`
	Flavor     string    `json:"flavor"`
	FlavorName string    `json:"flavor_name"`
	VCPUs      int64     `json:"vcpus"`
	RAMMiB     int64     `json:"ram_mib"`
	DiskGiB    int64     `json:"disk_gib"`
	IfMatch    uint64    `json:"if_match,omitempty"`
	User       string    `json:"user,omitempty"`
	At         time.Time `json:"at"`
}

type deleteImageCmd struct {
	ID      string `json:"id"`
	IfMatch uint64 `json:"if_match,omitempty"`
}

type updateImageCmd struct {
	ID         string  `json:"id"`
	Name       *string `json:"name,omitempty"`
	Visibility *string `json:"visibility,omitempty"`
	IfMatch    uint64  `json:"if_match,omitempty"`
}

// Register adds the hypervisor's tables and commands.
func Register(reg *consensus.Registry) {
	consensus.RegisterTable[VM](reg, &memdb.TableSchema{Name: tVMs, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"node": {Name: "node", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Node"}},
		"name": {Name: "name", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "ProjectID"}, &memdb.StringFieldIndex{Field: "Name"}}}},
		"project": {Name: "project", Indexer: &memdb.StringFieldIndex{Field: "ProjectID"}},
		// Both nodes of a live migration under way.
		"migrating": {Name: "migrating", AllowMissing: true, Indexer: migratingIndex{}},
	}})
	consensus.RegisterTable[Event](reg, &memdb.TableSchema{Name: tEvents, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"vm": {Name: "vm", Indexer: &memdb.StringFieldIndex{Field: "VM"}},
	}})
	consensus.RegisterTable[Host](reg, &memdb.TableSchema{Name: tHosts, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
	}})
	consensus.RegisterTable[Settings](reg, &memdb.TableSchema{Name: tSettings, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: consensus.Singleton{}},
	}})
	consensus.RegisterTable[Image](reg, &memdb.TableSchema{Name: tImages, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		// A public image of no project (the sample image) has none.
		"project": {Name: "project", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "ProjectID"}},
	}})
	identity.HoldProjects(identity.ProjectHolder{Kind: "images", Held: func(txn *memdb.Txn, project string) []string {
		var names []string
		for _, im := range consensus.All[Image](txn, tImages, "project", project) {
			names = append(names, im.Name)
		}
		return names
	}})
	consensus.Handle(reg, MsgCreateVM, "CreateVM", func(tx *consensus.Tx, c *createVMCmd) (any, error) {
		// Older nodes know nothing of a UEFI variables volume and drop
		// it: so does this command (MsgCreateVMWithVars carries it).
		c.VM.Spec.VarsVolume, c.VM.Spec.VarsFrom = "", ""
		return applyCreateVM(tx, c)
	})
	consensus.HandleSince(reg, MsgCreateVMWithVars, "CreateVMWithVars", 4, applyCreateVM)
	consensus.HandleSince(reg, MsgAttachVars, "AttachVarsVolume", 4, applyAttachVars)
	consensus.Handle(reg, MsgPlaceVM, "PlaceVM", applyPlaceVM)
	consensus.Handle(reg, MsgSetDesired, "SetVMDesired", applySetDesired)
	consensus.Handle(reg, MsgReportVM, "ReportVM", applyReportVM)
	consensus.Handle(reg, MsgPurgeVM, "PurgeVM", applyPurgeVM)
	consensus.Handle(reg, MsgRenameVM, "RenameVM", applyRenameVM)
	consensus.Handle(reg, MsgResizeVM, "ResizeVM", applyResizeVM)
	consensus.Handle(reg, MsgReportHost, "ReportHost", applyReportHost)
	consensus.Handle(reg, MsgSetSettings, "SetComputeSettings", applySetSettings)
	consensus.Handle(reg, MsgCreateImage, "CreateImage", applyCreateImage)
	consensus.Handle(reg, MsgUpdateImage, "UpdateImage", applyUpdateImage)
	consensus.Handle(reg, MsgDeleteImage, "DeleteImage", applyDeleteImage)
	consensus.RegisterTable[consoleKey](reg, &memdb.TableSchema{Name: tKeys, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: consensus.Singleton{}},
	}})
	consensus.Handle(reg, MsgConsoleKey, "SetConsoleKey", applyConsoleKey)
	consensus.Handle(reg, MsgAttachVolume, "AttachVolumeToVM", applyAttachVolume)
	consensus.Handle(reg, MsgDetachVolume, "DetachVolumeFromVM", applyDetachVolume)
	consensus.Handle(reg, MsgConvertDisk, "ConvertVMDisk", applyConvertDisk)
	registerCordons(reg)
	consensus.Handle(reg, MsgMoveVM, "MoveVM", applyMoveVM)
	registerMigrations(reg)
	registerDrains(reg)
	registerHA(reg)
}

// consoleKey signs console tickets. It is random, made once per cluster by
// the first leader, and never leaves the replicated state.
type consoleKey struct {
	Key []byte `json:"key"`
}

// applyConsoleKey keeps the first key: a second leader's proposal is moot.
func applyConsoleKey(tx *consensus.Tx, k *consoleKey) (any, error) {
	if consensus.First[consoleKey](tx.Txn, tKeys, "id") != nil {
		return nil, nil
	}
	if len(k.Key) < 32 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a console key has at least 32 bytes")
	}
	return nil, tx.Insert(tKeys, k)
}

func getVM(txn *memdb.Txn, id string) *VM { return consensus.First[VM](txn, tVMs, "id", id) }

func notFound(kind, id string) error {
	return consensus.Errorm(consensus.CodeNotFound, "not_found", "%s %q not found", kind, id)
}

func checkVersion(kind, id string, cur, ifMatch uint64) error {
	if ifMatch != 0 && ifMatch != cur {
		return consensus.Errorf(consensus.CodePreconditionFailed, "%s %s is at version %d, not %d", kind, id, cur, ifMatch)
	}
	return nil
}

// addEvent appends to a VM's history, dropping the oldest beyond maxEvents.
func addEvent(tx *consensus.Tx, vm, kind string, m eventMsg, user, node string, at time.Time) error {
	return insertEvent(tx, Event{VM: vm, Time: at, Kind: kind, Key: m.Key, Args: m.Args, Inner: m.Inner, Message: m.text(), User: user, Node: node})
}

// insertEvent is addEvent for an event whose message is made already.
func insertEvent(tx *consensus.Tx, e Event) error {
	vm := e.VM
	e.ID = fmt.Sprintf("%s/%020d", vm, tx.Index)
	// Several events of one command share an index: keep them apart.
	for n := 1; consensus.First[Event](tx.Txn, tEvents, "id", e.ID) != nil; n++ {
		e.ID = fmt.Sprintf("%s/%020d.%d", vm, tx.Index, n)
	}
	if err := tx.Insert(tEvents, &e); err != nil {
		return err
	}
	it, err := tx.Get(tEvents, "vm", vm)
	if err != nil {
		return err
	}
	var all []*Event
	for o := it.Next(); o != nil; o = it.Next() {
		all = append(all, o.(*Event))
	}
	for i := 0; i < len(all)-maxEvents; i++ {
		if err := tx.Delete(tEvents, all[i]); err != nil {
			return err
		}
	}
	return nil
}

func vmUsage(s VMSpec) identity.Resources {
	return identity.Resources{Instances: 1, VCPUs: s.VCPUs, RAMMiB: s.RAMMiB, DiskGiB: s.DiskGiBTotal()}
}

// applyCreateVM records a new VM, charges its project's quota and allocates
// its ports, all in one transaction: a refusal leaves nothing behind.
func applyCreateVM(tx *consensus.Tx, c *createVMCmd) (any, error) {
	vm := c.VM
	if getVM(tx.Txn, vm.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "VM %s already exists", vm.ID)
	}
	if consensus.First[VM](tx.Txn, tVMs, "name", vm.ProjectID, vm.Name) != nil {
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "vm_exists", "a VM named %q already exists in this project", vm.Name)
	}
	// Another project's image is not there for this VM, whoever asks.
	if img := consensus.First[Image](tx.Txn, tImages, "id", vm.Spec.Image); img == nil ||
		(c.ImageScoped && img.Visibility != VisibilityPublic && img.ProjectID != vm.ProjectID) {
		return nil, notFound("image", vm.Spec.Image)
	}
	if err := identity.Charge(tx, vm.ProjectID, vmUsage(vm.Spec)); err != nil {
		return nil, err
	}
	if vm.Spec.BootVolume != "" {
		if _, err := volume.AttachToVM(tx, vm.Spec.BootVolume, vm.ID, vm.ProjectID, "", true, c.BootVolumeOwned, vm.CreatedAt); err != nil {
			return nil, err
		}
	}
	if vm.Spec.VarsVolume != "" {
		if vm.Spec.Firmware != "uefi" {
			return nil, consensus.Errorf(consensus.CodeInvalid, "VM %s boots with %s: it has no UEFI variables", vm.Name, vm.Spec.Firmware)
		}
		if _, err := volume.AttachFirmwareToVM(tx, vm.Spec.VarsVolume, vm.ID, vm.ProjectID, "", vm.CreatedAt); err != nil {
			return nil, err
		}
	}
	for i, n := range vm.NICs {
		p, err := netfabric.AllocatePort(tx, netfabric.PortRequest{ID: n.ID, NetworkID: n.Network, Owner: vm.ID, MAC: n.MAC, Hostname: vm.Spec.Hostname, Project: vm.ProjectID, Charge: c.PortsCharged, SecurityGroups: n.SecurityGroups, CreatedAt: vm.CreatedAt})
		if err != nil {
			return nil, err
		}
		vm.NICs[i].IP = p.IP
	}
	vm.Status = VMStatus{State: StateScheduling, UpdatedAt: vm.CreatedAt}
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, "create", evm("created", vm.Spec.VCPUs, vm.Spec.RAMMiB, vm.Spec.DiskGiB, vm.IPs()), c.User, "", vm.CreatedAt)
}

// applyPlaceVM binds a VM to a node, re-checking the fit against the state
// the command commits on, so two schedulers' worth of stale views can never
// overfill a node.
func applyPlaceVM(tx *consensus.Tx, c *placeVMCmd) (any, error) {
	cur := getVM(tx.Txn, c.ID)
	if cur == nil {
		return nil, notFound("VM", c.ID)
	}
	if cur.Node != "" || cur.Desired == DesiredDeleted {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is already placed or being deleted", c.ID)
	}
	vm := *cur
	if c.Error != "" {
		vm.Status = VMStatus{State: StateError, Error: c.Error, ErrorSaid: c.ErrorSaid, UpdatedAt: c.At}
		if err := tx.Insert(tVMs, &vm); err != nil {
			return nil, err
		}
		return &vm, addEvent(tx, vm.ID, "schedule", evm("not_placed", saidOr(c.ErrorSaid, c.Error)), "", "", c.At)
	}
	if cordonOf(tx.Txn, c.Node) != nil {
		return nil, consensus.Errorf(consensus.CodeConflict, "node %s is cordoned: it takes no new VMs", c.Node)
	}
	if err := fits(tx.Txn, c.Node, &vm); err != nil {
		return nil, err
	}
	vm.Node = c.Node
	vm.Status = VMStatus{State: StateBuilding, UpdatedAt: c.At}
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	if err := volume.FollowVM(tx, vm.ID, vm.Node); err != nil {
		return nil, err
	}
	// Its NICs' project networks reach the node from now on.
	if err := netfabric.BindPorts(tx, vm.ID, vm.Node); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, "schedule", evm("placed", c.Node), "", c.Node, c.At)
}

// changeable returns a VM its owner may change: it exists, is at the
// version the request saw (If-Match), and is not being deleted.
func changeable(tx *consensus.Tx, id string, ifMatch uint64) (*VM, error) {
	cur := getVM(tx.Txn, id)
	if cur == nil {
		return nil, notFound("VM", id)
	}
	if err := checkVersion("VM", id, cur.Version, ifMatch); err != nil {
		return nil, err
	}
	if cur.Desired == DesiredDeleted {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is being deleted", cur.Name)
	}
	if m := cur.Migration; m != nil {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is moving from %s to %s: cancel the migration (cairn vm migrate --cancel) or wait until it has moved", cur.Name, m.Source, m.Target)
	}
	return cur, nil
}

// applySetDesired records a power request (start, stop, pause, resume,
// reboot, delete). A VM that was never placed is purged on delete at once.
func applySetDesired(tx *consensus.Tx, c *setDesiredCmd) (any, error) {
	cur, err := changeable(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	vm := *cur
	kind := c.Op
	if kind == "" {
		kind = c.Desired
	}
	switch {
	case c.Reboot:
		if cur.Desired != DesiredRunning {
			return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is %s: only a running VM can be rebooted", cur.Name, cur.Desired)
		}
		vm.Reboots++
		kind = "reboot"
	case c.Desired == DesiredPaused && cur.Desired == DesiredStopped:
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is stopped: start it before pausing", cur.Name)
	case c.Desired == DesiredDeleted && cur.Node == "":
		return nil, purge(tx, cur)
	}
	vm.Desired, vm.StopMode = c.Desired, c.StopMode
	if c.Desired == DesiredStopped && c.StopMode == "" {
		vm.StopMode = StopACPI
	}
	if vm.Status.State == StateError && c.Desired != DesiredStopped {
		vm.Status.Error, vm.Status.ErrorSaid = "", nil // a new request is a new attempt
		if vm.Node == "" {
			vm.Status.State = StateScheduling // the scheduler tries again
		}
	}
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, kind, evm("requested", kind), c.User, "", c.At)
}

// applyReportVM records what the VM's node observed. Reports from a node
// that no longer owns the VM are ignored, and reports never bump Version, so
// an owner's If-Match is not defeated by status updates.
func applyReportVM(tx *consensus.Tx, c *reportVMCmd) (any, error) {
	cur := getVM(tx.Txn, c.ID)
	if cur == nil || cur.Node != c.Node {
		return nil, nil
	}
	vm := *cur
	vm.Status, vm.Rebooted = c.Status, c.Rebooted
	if c.GuestStopped && vm.Desired != DesiredDeleted && c.Version == cur.Version {
		vm.Desired = DesiredStopped
	}
	if c.VarsMoved && vm.Spec.VarsFrom == c.Node {
		// Free to leave its node from here on, it is an HA VM now: as
		// for HA switched on, a node that had not seen this index may
		// not have killed it when its lease went (applyFailoverVM).
		vm.Spec.VarsFrom, vm.Spec.HAOnAt = "", tx.Index
	}
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	if c.Event != "" {
		// Its text as the node made it (an older node sends no key).
		e := Event{VM: vm.ID, Time: c.Status.UpdatedAt, Kind: "node", Key: c.EventKey, Args: c.EventArgs, Message: c.Event, Node: c.Node}
		if err := insertEvent(tx, e); err != nil {
			return nil, err
		}
	}
	if cur.Status.State != c.Status.State || cur.Status.Error != c.Status.Error {
		m := evm("state", c.Status.State)
		if c.Status.Error != "" {
			m = evm("state_error", c.Status.State, saidOr(c.Status.ErrorSaid, c.Status.Error))
		}
		return nil, addEvent(tx, vm.ID, "state", m, "", c.Node, c.Status.UpdatedAt)
	}
	return nil, nil
}

// applyPurgeVM removes a deleted VM once its node has torn it down.
func applyPurgeVM(tx *consensus.Tx, c *purgeVMCmd) (any, error) {
	cur := getVM(tx.Txn, c.ID)
	if cur == nil {
		return nil, nil // already gone: purges are retried
	}
	if cur.Desired != DesiredDeleted || cur.Node != c.Node {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is not being deleted on %s", c.ID, c.Node)
	}
	return nil, purge(tx, cur)
}

// purge drops a VM with its ports, events and quota charge; its volumes
// are detached, and the one made with it deleted.
func purge(tx *consensus.Tx, vm *VM) error {
	if err := netfabric.ReleasePorts(tx, vm.ID); err != nil {
		return err
	}
	if _, err := volume.ReleaseVM(tx, vm.ID); err != nil {
		return err
	}
	u := vmUsage(vm.Spec)
	if err := identity.Charge(tx, vm.ProjectID, identity.Resources{Instances: -u.Instances, VCPUs: -u.VCPUs, RAMMiB: -u.RAMMiB, DiskGiB: -u.DiskGiB}); err != nil && consensus.ErrorCode(err) != consensus.CodeNotFound {
		return err
	}
	if _, err := tx.DeleteAll(tEvents, "vm", vm.ID); err != nil {
		return err
	}
	return tx.Delete(tVMs, vm)
}

func applyRenameVM(tx *consensus.Tx, c *renameVMCmd) (any, error) {
	cur, err := changeable(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	if other := consensus.First[VM](tx.Txn, tVMs, "name", cur.ProjectID, c.Name); other != nil && other.ID != cur.ID {
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "vm_exists", "a VM named %q already exists in this project", c.Name)
	}
	vm := *cur
	vm.Name, vm.Version = c.Name, tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, "rename", evm("renamed", cur.Name, c.Name), c.User, "", c.At)
}

// applyResizeVM moves a VM to another size, charging the difference. The
// boot disk never shrinks; the node applies what it can to a running VM
// and the rest at the next start.
func applyResizeVM(tx *consensus.Tx, c *resizeVMCmd) (any, error) {
	cur, err := changeable(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	if c.DiskGiB < cur.Spec.DiskGiB {
		return nil, consensus.Errorf(consensus.CodeInvalid, "flavor %s has a %d GiB disk, smaller than the VM's %d GiB: disks never shrink", c.Flavor, c.DiskGiB, cur.Spec.DiskGiB)
	}
	vm := *cur
	vm.Spec.Flavor, vm.Spec.VCPUs, vm.Spec.RAMMiB, vm.Spec.DiskGiB = c.Flavor, c.VCPUs, c.RAMMiB, c.DiskGiB
	if vm.Node != "" {
		if err := fits(tx.Txn, vm.Node, &vm); err != nil {
			return nil, err
		}
	}
	before, after := vmUsage(cur.Spec), vmUsage(vm.Spec)
	if err := identity.Charge(tx, vm.ProjectID, identity.Resources{VCPUs: after.VCPUs - before.VCPUs,
		RAMMiB: after.RAMMiB - before.RAMMiB, DiskGiB: after.DiskGiB - before.DiskGiB}); err != nil {
		return nil, err
	}
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, "resize", evm("resized", c.FlavorName, c.VCPUs, c.RAMMiB, c.DiskGiB), c.User, "", c.At)
}

func applyReportHost(tx *consensus.Tx, h *Host) (any, error) {
	return nil, tx.Insert(tHosts, h)
}

type setSettingsCmd struct {
	Settings Settings `json:"settings"`
	IfMatch  uint64   `json:"if_match,omitempty"`
}

func applySetSettings(tx *consensus.Tx, c *setSettingsCmd) (any, error) {
	cur := settings(tx.Txn)
	if err := checkVersion("compute settings", "", cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	row := c.Settings
	row.Version = tx.Index
	return &row, tx.Insert(tSettings, &row)
}

// settings returns the cluster's compute settings, or the defaults.
func settings(txn *memdb.Txn) Settings {
	if s := consensus.First[Settings](txn, tSettings, "id"); s != nil {
		return *s
	}
	return DefaultSettings
}

func applyCreateImage(tx *consensus.Tx, img *Image) (any, error) {
	if consensus.First[Image](tx.Txn, tImages, "id", img.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "image %s already exists", img.ID)
	}
	switch {
	case img.ProjectID == "" && img.Visibility != VisibilityPublic:
		return nil, consensus.Errorf(consensus.CodeInvalid, "an image of no project must be public")
	case img.ProjectID != "" && consensus.First[identity.Project](tx.Txn, "projects", "id", img.ProjectID) == nil:
		return nil, notFound("project", img.ProjectID)
	}
	// Charged after the insert, so the project's image total includes it.
	row := *img
	row.Version = tx.Index
	if err := tx.Insert(tImages, &row); err != nil {
		return nil, err
	}
	return &row, chargeImages(tx, img.ProjectID, -img.Size)
}

// chargeImages brings a project's object-storage usage in line with its
// images' bytes, in whole GiB of the project's image total, so images cannot
// fill the pool past the project's quota; before is the change just made
// (the total before it is the total now minus before). Cairn's own images
// (no project) are not charged.
func chargeImages(tx *consensus.Tx, project string, before int64) error {
	if project == "" {
		return nil
	}
	it, err := tx.Get(tImages, "project", project)
	if err != nil {
		return err
	}
	var total int64
	for o := it.Next(); o != nil; o = it.Next() {
		total += o.(*Image).Size
	}
	gib := func(b int64) int64 { return (b + 1<<30 - 1) >> 30 }
	if d := gib(total) - gib(total+before); d != 0 {
		return identity.Charge(tx, project, identity.Resources{ObjectGiB: d})
	}
	return nil
}

func applyUpdateImage(tx *consensus.Tx, c *updateImageCmd) (any, error) {
	cur := consensus.First[Image](tx.Txn, tImages, "id", c.ID)
	if cur == nil {
		return nil, notFound("image", c.ID)
	}
	if err := checkVersion("image", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	row := *cur
	if c.Name != nil {
		row.Name = *c.Name
	}
	if c.Visibility != nil {
		row.Visibility = *c.Visibility
	}
	row.Version = tx.Index
	return &row, tx.Insert(tImages, &row)
}

func applyDeleteImage(tx *consensus.Tx, c *deleteImageCmd) (any, error) {
	cur := consensus.First[Image](tx.Txn, tImages, "id", c.ID)
	if cur == nil {
		return nil, notFound("image", c.ID)
	}
	if err := checkVersion("image", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	if v := volume.Filling(tx.Txn, cur.ID); v != nil {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is still to be filled from image %s (that happens when it is first attached): attach or delete the volume first", v.Name, cur.Name)
	}
	if err := tx.Delete(tImages, cur); err != nil {
		return nil, err
	}
	return cur, chargeImages(tx, cur.ProjectID, cur.Size)
}
