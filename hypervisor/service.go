package hypervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor/cloudinit"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/hashicorp/go-memdb"
)

// Cluster is what the hypervisor needs from the consensus node.
type Cluster interface {
	Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error)
	ConsistentRead(ctx context.Context) error
	Store() *consensus.Store
	Name() string
}

// Service is compute's business logic for the API, the UI and the CLI: it
// authorizes, validates and sends audited commands.
type Service struct {
	// Quorum, if set, says why the cluster would lose its quorum without
	// the named node, or nil (a drain's pre-flight).
	Quorum func(without string) error
	// Lost, if set, says whether a node's VM lease is lost (ha.go): no VM
	// is moved there.
	Lost func(node string) bool

	c      Cluster
	id     *identity.Service
	images *Images
	vols   *volume.Service
	block  BlockVolumes // this node's volume server
	log    *slog.Logger
}

// SetVolumes lets VMs boot from block volumes made for them (the default
// once the cluster has a disk for them).
func (s *Service) SetVolumes(v *volume.Service) { s.vols = v }

// NewService returns the compute service.
func NewService(c Cluster, id *identity.Service, images *Images, log *slog.Logger) *Service {
	return &Service{c: c, id: id, images: images, log: log}
}

// DefaultNetwork is the network every VM's first NIC joins.
const DefaultNetwork = "default"

// VMCreate is the input for creating a VM.
type VMCreate struct {
	Name      string   `json:"name"`
	Project   string   `json:"project,omitempty"` // name or ID; default: the caller's only project
	Image     string   `json:"image"`             // name or ID
	Flavor    string   `json:"flavor"`            // name or ID
	DataDisks []int64  `json:"data_disks_gib,omitempty"`
	SSHKeys   []string `json:"ssh_keys,omitempty"`
	UserData  string   `json:"user_data,omitempty"`
	Hostname  string   `json:"hostname,omitempty"` // default: the name
	Group     string   `json:"group,omitempty"`    // anti-affinity group
	Stopped   bool     `json:"stopped,omitempty"`  // create without starting
	// LocalDisk keeps the boot disk on the VM's node (scratch: lost with
	// the node); by default the VM boots from a replicated block volume
	// made from the image, when the cluster has disks for one.
	LocalDisk bool `json:"local_disk,omitempty"`
	// BootVolumeGiB sizes the boot volume (default: the flavor's disk).
	BootVolumeGiB int64 `json:"boot_volume_gib,omitempty"`
	// BootSnapshot (a volume snapshot) or BootSource (a volume, cloned as
	// it is now) is what the boot volume starts as, copy-on-write,
	// instead of the image; the image still gives the firmware.
	BootSnapshot string `json:"boot_snapshot,omitempty"`
	BootSource   string `json:"boot_source,omitempty"`
	// Networks are the networks the VM's NICs join, in order, by name or
	// ID: its project's networks and the cluster's (default: the default
	// network). The first gets the guest's default route by DHCP.
	Networks []string `json:"networks,omitempty"`
	// SecurityGroups (names or IDs) filter the NICs on project networks
	// (default: the project's default group).
	SecurityGroups []string `json:"security_groups,omitempty"`
	// HAOff: not restarted on another node if its node dies (by default a
	// VM booted from a volume is); HAPriority orders such restarts,
	// highest first (cluster admins only).
	HAOff      bool `json:"ha_off,omitempty"`
	HAPriority int  `json:"ha_priority,omitempty"`
}

// maxNICs is how many networks a VM joins at most.
const maxNICs = 4

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func invalid(format string, args ...any) error {
	return consensus.Errorf(consensus.CodeInvalid, format, args...)
}

// project resolves a project reference the caller may act in as a member.
func (s *Service) project(p *identity.Principal, ref string) (*identity.Project, error) {
	if ref == "" {
		ids := p.ProjectIDs()
		if len(ids) == 0 && p.IsClusterAdmin() {
			// A cluster admin in no project, on a cluster with one.
			for _, pr := range s.id.ListProjects(p) {
				ids = append(ids, pr.ID)
			}
		}
		if len(ids) != 1 {
			return nil, invalid("you are in %d projects: say which one", len(ids))
		}
		ref = ids[0]
	}
	return s.id.GetProject(p, ref)
}

// nics makes a new VM's NICs, one per network asked for (the default
// network if none). The create command allocates their ports, checking
// again that each network is the project's or the cluster's.
func (s *Service) nics(ctx context.Context, vmID, projectID string, refs, groupRefs []string) ([]NIC, error) {
	if len(refs) == 0 {
		refs = []string{DefaultNetwork}
	}
	if len(refs) > maxNICs {
		return nil, invalid("a VM joins at most %d networks, not %d", maxNICs, len(refs))
	}
	var out []NIC
	seen := map[string]bool{}
	for i, ref := range refs {
		nw, err := netfabric.Usable(s.c.Store().ReadTxn(), projectID, ref)
		if consensus.ErrorCode(err) == consensus.CodeNotFound {
			// Made a moment ago through another node?
			if rerr := s.c.ConsistentRead(ctx); rerr != nil {
				return nil, rerr
			}
			nw, err = netfabric.Usable(s.c.Store().ReadTxn(), projectID, ref)
		}
		if err != nil {
			return nil, err
		}
		if seen[nw.ID] {
			return nil, invalid("network %s is named twice: a VM has one NIC on a network", nw.Name)
		}
		seen[nw.ID] = true
		id := fmt.Sprintf("%s-%d", vmID, i)
		nic := NIC{ID: id, Network: nw.ID, MAC: netfabric.MACFor(id).String(), MTU: nw.MTU}
		if nw.IsOverlay() {
			nic.SecurityGroups, err = netfabric.GroupIDs(s.c.Store().ReadTxn(), projectID, groupRefs)
			if consensus.ErrorCode(err) == consensus.CodeNotFound {
				if rerr := s.c.ConsistentRead(ctx); rerr != nil {
					return nil, rerr
				}
				nic.SecurityGroups, err = netfabric.GroupIDs(s.c.Store().ReadTxn(), projectID, groupRefs)
			}
			if err != nil {
				return nil, err
			}
		}
		out = append(out, nic)
	}
	if len(groupRefs) > 0 {
		hasOverlay := false
		for _, n := range out {
			hasOverlay = hasOverlay || len(n.SecurityGroups) > 0
		}
		if !hasOverlay {
			return nil, invalid("security groups filter NICs on project networks; this VM has none")
		}
	}
	return out, nil
}

// CreateVM validates a request, then records the VM; the scheduler places
// it and its node starts it.
func (s *Service) CreateVM(ctx context.Context, p *identity.Principal, req VMCreate) (*VM, error) {
	const action = "vm.create"
	deny := func(project string, err error) (*VM, error) {
		return nil, s.id.Deny(ctx, p, action, req.Name, project, err)
	}
	pr, err := s.project(p, req.Project)
	if err != nil {
		return deny("", err)
	}
	if !p.Can(pr.ID, identity.RoleMember) {
		return deny(pr.ID, consensus.Errorf(consensus.CodeForbidden, "not allowed to create VMs in project %s", pr.Name))
	}
	if !nameRE.MatchString(req.Name) {
		return deny(pr.ID, consensus.Errorm(consensus.CodeInvalid, "name_rule", "VM name %q must be 1-63 letters, digits, dots, dashes or underscores", req.Name))
	}
	if err := checkHAPriority(p, req.HAPriority); err != nil {
		return deny(pr.ID, err)
	}
	fl, err := s.id.GetFlavor(req.Flavor)
	img, ierr := s.images.ForVM(p, pr.ID, req.Image)
	if err != nil || ierr != nil {
		// Made a moment ago through another node? Catch up and look again.
		if rerr := s.c.ConsistentRead(ctx); rerr != nil {
			return nil, rerr
		}
		if fl, err = s.id.GetFlavor(req.Flavor); err != nil {
			return deny(pr.ID, err)
		}
		if img, err = s.images.ForVM(p, pr.ID, req.Image); err != nil {
			return deny(pr.ID, err)
		}
	}
	if err := imageFits(img, fl); err != nil {
		return deny(pr.ID, err)
	}
	host := req.Hostname
	if host == "" {
		host = hostnameFrom(req.Name)
	}
	seed := cloudinit.Seed{InstanceID: "pending", Hostname: host, SSHKeys: req.SSHKeys, UserData: []byte(req.UserData)}
	if err := seed.Validate(); err != nil {
		return deny(pr.ID, invalid("cloud-init: %v", err))
	}
	var disks []DataDisk
	for _, g := range req.DataDisks {
		if g < 1 || g > 16384 {
			return deny(pr.ID, invalid("data disks are 1-16384 GiB, not %d", g))
		}
		disks = append(disks, DataDisk{SizeGiB: g})
	}
	if req.Group != "" && !nameRE.MatchString(req.Group) {
		return deny(pr.ID, consensus.Errorm(consensus.CodeInvalid, "name_rule", "group name %q must be 1-63 letters, digits, dots, dashes or underscores", req.Group))
	}
	firmware := img.Firmware
	if firmware == "" {
		firmware = "bios"
	}
	id := newID("vm")
	nics, err := s.nics(ctx, id, pr.ID, req.Networks, req.SecurityGroups)
	if err != nil {
		return deny(pr.ID, err)
	}
	vm := VM{ID: id, Name: req.Name, ProjectID: pr.ID, UserID: p.User.ID, Desired: DesiredRunning,
		Spec: VMSpec{Flavor: fl.ID, VCPUs: fl.VCPUs, RAMMiB: fl.RAMMiB, DiskGiB: fl.DiskGiB, Image: img.ID,
			DataDisks: disks, Hostname: host, SSHKeys: req.SSHKeys, UserData: req.UserData, Group: req.Group, Firmware: firmware,
			HAOff: req.HAOff, HAPriority: req.HAPriority},
		NICs:      nics,
		CreatedAt: time.Now().UTC()}
	if req.Stopped {
		vm.Desired = DesiredStopped
	}
	local := req.LocalDisk || fl.LocalDisk || s.vols == nil || !s.vols.CanPlace()
	switch {
	case req.BootVolumeGiB != 0 && local:
		return deny(pr.ID, invalid("boot_volume_gib sizes a boot volume, and this VM's boot disk is local"))
	case req.BootVolumeGiB != 0 && req.BootVolumeGiB < fl.DiskGiB:
		return deny(pr.ID, invalid("the boot volume is at least the flavor's %d GiB disk, not %d GiB", fl.DiskGiB, req.BootVolumeGiB))
	case (req.BootSnapshot != "" || req.BootSource != "") && local:
		return deny(pr.ID, invalid("boot_snapshot and boot_source make a boot volume, and this VM's boot disk is local"))
	case req.BootSnapshot != "" && req.BootSource != "":
		return deny(pr.ID, invalid("the boot volume starts as a snapshot or as a clone of a volume, not both"))
	}
	if local {
		var out VM
		if err := s.id.Mutate(ctx, p, action, req.Name, pr.ID, MsgCreateVM, createVMCmd{VM: vm, User: p.User.Name, ImageScoped: true, PortsCharged: true}, &out); err != nil {
			return nil, err
		}
		return &out, nil
	}
	from := volume.Create{Snapshot: req.BootSnapshot, Source: req.BootSource}
	size := max(req.BootVolumeGiB, fl.DiskGiB)
	var base *volume.Volume
	switch {
	case req.BootSnapshot != "":
		base, err = s.vols.GetSnapshot(p, req.BootSnapshot)
	case req.BootSource != "":
		base, err = s.vols.Get(p, req.BootSource)
	}
	if err != nil {
		return deny(pr.ID, err)
	}
	if base != nil {
		size = max(size, base.SizeGiB())
	}
	return s.createWithBootVolume(ctx, p, pr, vm, img, size, from)
}

// createWithBootVolume makes the VM's boot volume from its image, then the
// VM, which takes the volume in the same transaction. A VM that is not
// made takes its volume back with it; when the outcome is unknown it is
// looked up first.
func (s *Service) createWithBootVolume(ctx context.Context, p *identity.Principal, pr *identity.Project, vm VM, img *Image, sizeGiB int64, from volume.Create) (*VM, error) {
	const action = "vm.create"
	txn := s.c.Store().ReadTxn()
	name := bootVolumeName(vm.Name, vm.ID, func(n string) bool { return volume.Named(txn, pr.ID, n) })
	create := volume.Create{Name: name, SizeGiB: sizeGiB, Project: pr.ID, Snapshot: from.Snapshot, Source: from.Source}
	if img.DiskFormat != FormatISO && from.Snapshot == "" && from.Source == "" {
		create.Image = img.ID
	}
	vol, err := s.vols.Create(ctx, p, create)
	if err != nil {
		return nil, err
	}
	vm.Spec.BootVolume = vol.ID
	msg := MsgCreateVM
	var vars *volume.Volume
	if vm.Spec.Firmware == "uefi" {
		// Its UEFI settings on a volume of their own, which moves with
		// it as its boot volume does (Proxmox's EFI disk).
		name := varsVolumeName(vm.Name, vm.ID, func(n string) bool { return volume.Named(txn, pr.ID, n) })
		vars, err = s.vols.Create(ctx, p, volume.Create{Name: name, SizeGiB: 1, Project: pr.ID})
		if err != nil {
			// No VM was asked for: the boot volume goes.
			if _, derr := s.vols.Delete(context.WithoutCancel(ctx), p, vol.ID, 0); derr != nil {
				s.log.Error("a volume made for a VM could not be taken back", "vm", vm.ID, "volume", vol.ID, "err", derr)
			}
			return nil, err
		}
		vm.Spec.VarsVolume, msg = vars.ID, MsgCreateVMWithVars
	}
	var out VM
	cmd := createVMCmd{VM: vm, User: p.User.Name, ImageScoped: true, BootVolumeOwned: true, PortsCharged: true}
	err = s.id.Mutate(ctx, p, action, vm.Name, pr.ID, msg, cmd, &out)
	if vars != nil && consensus.ErrorReason(err) == consensus.ReasonProtocol {
		// A node of an older version: the settings stay on the VM's
		// node, as before (the VM cannot move until converted).
		s.log.Warn("a UEFI VM keeps its settings on its node: not every node knows volumes for them yet", "vm", vm.Name)
		s.settleVolumeUse(ctx, p, err, vars, func(*VM) bool { return false }, vm.ID)
		vars, cmd.VM.Spec.VarsVolume = nil, ""
		err = s.id.Mutate(ctx, p, action, vm.Name, pr.ID, MsgCreateVM, cmd, &out)
	}
	if err == nil {
		return &out, nil
	}
	if made := s.settleVolumeUse(ctx, p, err, vol, func(*VM) bool { return true }, vm.ID); made != nil {
		return made, nil
	}
	if vars != nil {
		if made := s.settleVolumeUse(ctx, p, err, vars, func(*VM) bool { return true }, vm.ID); made != nil {
			return made, nil
		}
	}
	return nil, err
}

// imageFits refuses an image that cannot boot on a flavor.
func imageFits(img *Image, fl *identity.Flavor) error {
	disk := fl.DiskGiB << 30
	if img.DiskFormat != FormatISO && img.VirtualSize > disk {
		return invalid("image %s is %d GiB, larger than flavor %s's %d GiB disk", img.Name, (img.VirtualSize+1<<30-1)>>30, fl.Name, fl.DiskGiB)
	}
	if img.MinDiskGiB > fl.DiskGiB {
		return invalid("image %s needs a disk of at least %d GiB; flavor %s has %d GiB", img.Name, img.MinDiskGiB, fl.Name, fl.DiskGiB)
	}
	if img.MinRAMMiB > fl.RAMMiB {
		return invalid("image %s needs at least %d MiB of RAM; flavor %s has %d MiB", img.Name, img.MinRAMMiB, fl.Name, fl.RAMMiB)
	}
	return nil
}

// hostnameFrom makes a valid host name of a VM name.
func hostnameFrom(name string) string {
	h := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, name)
	return strings.Trim(h, "-")
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// fresh is VM for a request that acts on it: a VM created a moment ago
// through another node is found after catching up with the leader.
func (s *Service) fresh(ctx context.Context, p *identity.Principal, ref string) (*VM, error) {
	vm, err := s.VM(p, ref)
	if consensus.ErrorCode(err) != consensus.CodeNotFound {
		return vm, err
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	return s.VM(p, ref)
}

// VM returns a VM by ID or by name among the projects the caller can read,
// as the caller may see it (readers get it without its cloud-init).
func (s *Service) VM(p *identity.Principal, ref string) (*VM, error) {
	txn := s.c.Store().ReadTxn()
	if vm := getVM(txn, ref); vm != nil && canReadVM(p, vm) {
		return viewVM(txn, p, vm), nil
	}
	var found []*VM
	for _, pid := range s.readable(p, txn) {
		if vm := consensus.First[VM](txn, tVMs, "name", pid, ref); vm != nil {
			found = append(found, vm)
		}
	}
	switch len(found) {
	case 0:
		return nil, notFound("VM", ref)
	case 1:
		return viewVM(txn, p, found[0]), nil
	}
	return nil, invalid("%d VMs are named %q in your projects: use the VM's ID", len(found), ref)
}

// readable lists the project IDs the caller can read (every project for a
// cluster admin).
func (s *Service) readable(p *identity.Principal, txn *memdb.Txn) []string {
	if !p.IsClusterAdmin() {
		return p.ProjectIDs()
	}
	var ids []string
	for _, pr := range s.id.ListProjects(p) {
		ids = append(ids, pr.ID)
	}
	return ids
}

// ListVMs returns the VMs the caller can see, optionally of one project,
// as the caller may see them (readers get them without their cloud-init).
func (s *Service) ListVMs(p *identity.Principal, project string) ([]VM, error) {
	txn := s.c.Store().ReadTxn()
	var pids []string
	if project != "" {
		pr, err := s.id.GetProject(p, project)
		if err != nil {
			return nil, err
		}
		pids = []string{pr.ID}
	} else {
		pids = s.readable(p, txn)
	}
	out := []VM{}
	for _, pid := range pids {
		it, err := txn.Get(tVMs, "project", pid)
		if err != nil {
			return nil, err
		}
		for o := it.Next(); o != nil; o = it.Next() {
			out = append(out, *viewVM(txn, p, o.(*VM)))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Events returns a VM's history, oldest first.
func (s *Service) Events(p *identity.Principal, ref string) ([]Event, error) {
	vm, err := s.VM(p, ref)
	if err != nil {
		return nil, err
	}
	it, err := s.c.Store().ReadTxn().Get(tEvents, "vm", vm.ID)
	if err != nil {
		return nil, err
	}
	out := []Event{}
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, *o.(*Event))
	}
	return out, nil
}

// Operations a VM's owner can ask for.
const (
	OpStart     = "start"
	OpStop      = "stop"
	OpForceStop = "force-stop"
	OpReboot    = "reboot"
	OpPause     = "pause"
	OpResume    = "resume"
	OpDelete    = "delete"
)

// Do carries out a power operation on a VM (project members).
func (s *Service) Do(ctx context.Context, p *identity.Principal, ref, op string, ifMatch uint64) (*VM, error) {
	action := "vm." + op
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !CanChangeVM(p, vm) {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change VM %s", vm.Name))
	}
	cmd := setDesiredCmd{ID: vm.ID, Op: op, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}
	switch op {
	case OpStart:
		cmd.Desired = DesiredRunning
	case OpStop:
		cmd.Desired, cmd.StopMode = DesiredStopped, StopACPI
	case OpForceStop:
		cmd.Desired, cmd.StopMode = DesiredStopped, StopForce
	case OpReboot:
		cmd.Desired, cmd.Reboot = DesiredRunning, true
	case OpPause:
		cmd.Desired = DesiredPaused
	case OpResume:
		if vm.Desired != DesiredPaused {
			return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeConflict, "VM %s is not paused", vm.Name))
		}
		cmd.Desired = DesiredRunning
	case OpDelete:
		cmd.Desired = DesiredDeleted
	default:
		return nil, invalid("unknown operation %q", op)
	}
	var out *VM
	if err := s.id.Mutate(ctx, p, action, vm.Name, vm.ProjectID, MsgSetDesired, cmd, &out); err != nil {
		return nil, err
	}
	if out == nil { // purged at once: it never had a node
		return vm, nil
	}
	return out, nil
}

// Rename gives a VM a new name.
func (s *Service) Rename(ctx context.Context, p *identity.Principal, ref, name string, ifMatch uint64) (*VM, error) {
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, "vm.rename", ref, "", err)
	}
	if !CanChangeVM(p, vm) {
		return nil, s.id.Deny(ctx, p, "vm.rename", vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change VM %s", vm.Name))
	}
	if !nameRE.MatchString(name) {
		return nil, s.id.Deny(ctx, p, "vm.rename", vm.Name, vm.ProjectID, consensus.Errorm(consensus.CodeInvalid, "name_rule", "VM name %q must be 1-63 letters, digits, dots, dashes or underscores", name))
	}
	var out VM
	err = s.id.Mutate(ctx, p, "vm.rename", vm.Name, vm.ProjectID, MsgRenameVM, renameVMCmd{ID: vm.ID, Name: name, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	return &out, err
}

// SetHA switches a VM's high availability on or off (off: true) and sets
// its restart priority (cluster admins: it ranks VMs of every project).
func (s *Service) SetHA(ctx context.Context, p *identity.Principal, ref string, off *bool, priority *int, ifMatch uint64) (*VM, error) {
	const action = "vm.ha"
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !CanChangeVM(p, vm) {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change VM %s", vm.Name))
	}
	if off == nil && priority == nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, invalid("say whether high availability is on, or the restart priority"))
	}
	if priority != nil {
		if err := checkHAPriority(p, *priority); err != nil {
			return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, err)
		}
		if !p.IsClusterAdmin() {
			return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only cluster admins set restart priorities: they rank the VMs of every project"))
		}
	}
	var out VM
	err = s.id.Mutate(ctx, p, action, vm.Name, vm.ProjectID, MsgSetHA, setHACmd{ID: vm.ID, Off: off, Priority: priority, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	if err != nil {
		return nil, err
	}
	return viewVM(s.c.Store().ReadTxn(), p, &out), nil
}

// checkHAPriority says why p may not give a VM this restart priority.
func checkHAPriority(p *identity.Principal, prio int) error {
	if prio < MinHAPriority || prio > MaxHAPriority {
		return invalid("a restart priority is from %d to %d, not %d", MinHAPriority, MaxHAPriority, prio)
	}
	if prio != 0 && !p.IsClusterAdmin() {
		return consensus.Errorf(consensus.CodeForbidden, "only cluster admins set restart priorities: they rank the VMs of every project")
	}
	return nil
}

// Resize moves a VM to another flavor.
func (s *Service) Resize(ctx context.Context, p *identity.Principal, ref, flavor string, ifMatch uint64) (*VM, error) {
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, "vm.resize", ref, "", err)
	}
	if !CanChangeVM(p, vm) {
		return nil, s.id.Deny(ctx, p, "vm.resize", vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change VM %s", vm.Name))
	}
	fl, err := s.id.GetFlavor(flavor)
	if err != nil {
		return nil, s.id.Deny(ctx, p, "vm.resize", vm.Name, vm.ProjectID, err)
	}
	// The image's minimums still hold (a deleted image has none left to check).
	if img := consensus.First[Image](s.c.Store().ReadTxn(), tImages, "id", vm.Spec.Image); img != nil && img.MinRAMMiB > fl.RAMMiB {
		return nil, s.id.Deny(ctx, p, "vm.resize", vm.Name, vm.ProjectID,
			invalid("image %s needs at least %d MiB of RAM; flavor %s has %d MiB", img.Name, img.MinRAMMiB, fl.Name, fl.RAMMiB))
	}
	var out VM
	err = s.id.Mutate(ctx, p, "vm.resize", vm.Name, vm.ProjectID, MsgResizeVM, resizeVMCmd{ID: vm.ID, Flavor: fl.ID, FlavorName: fl.Name,
		VCPUs: fl.VCPUs, RAMMiB: fl.RAMMiB, DiskGiB: fl.DiskGiB, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	return &out, err
}

// Hosts lists the nodes' VM capacity and what is allocated on each
// (cluster admins).
func (s *Service) Hosts(p *identity.Principal) ([]HostView, error) {
	if !p.IsClusterAdmin() {
		return nil, consensus.Errorf(consensus.CodeForbidden, "not allowed to see hosts")
	}
	txn := s.c.Store().ReadTxn()
	it, err := txn.Get(tHosts, "id")
	if err != nil {
		return nil, err
	}
	out := []HostView{}
	for o := it.Next(); o != nil; o = it.Next() {
		h := HostView{Host: *o.(*Host), Cordon: cordonOf(txn, o.(*Host).Name)}
		vms, err := txn.Get(tVMs, "node", h.Name)
		if err != nil {
			return nil, err
		}
		for v := vms.Next(); v != nil; v = vms.Next() {
			vm := v.(*VM)
			h.VMs++
			h.UsedVCPUs += vm.Spec.VCPUs
			h.UsedRAMMiB += vm.Spec.RAMMiB
			h.UsedDiskGiB += vm.Spec.DiskGiBTotal()
		}
		out = append(out, h)
	}
	return out, nil
}

// HostView is a host with what its VMs take.
type HostView struct {
	Host
	// Cordon is set while the node takes no new VMs.
	Cordon     *Cordon `json:"cordon,omitempty"`
	VMs        int     `json:"vms"`
	UsedVCPUs  int64   `json:"used_vcpus"`
	UsedRAMMiB int64   `json:"used_ram_mib"`
	// UsedDiskGiB is the virtual size of the node's VM disks.
	UsedDiskGiB int64 `json:"used_disk_gib"`
}

// Settings returns the compute settings.
func (s *Service) Settings() Settings { return settings(s.c.Store().ReadTxn()) }

// SetSettings changes the overcommit ratios and host reserve (cluster admins).
func (s *Service) SetSettings(ctx context.Context, p *identity.Principal, in Settings, ifMatch uint64) (*Settings, error) {
	const action = "compute.settings"
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, "compute", "", consensus.Errorf(consensus.CodeForbidden, "only cluster admins change compute settings"))
	}
	if in.CPUAllocationRatio < 0.1 || in.CPUAllocationRatio > 64 || in.RAMAllocationRatio < 0.1 || in.RAMAllocationRatio > 4 || in.ReservedRAMMiB < 0 ||
		in.DiskAllocationRatio < 0 || in.DiskAllocationRatio > 0 && (in.DiskAllocationRatio < 0.1 || in.DiskAllocationRatio > 16) {
		return nil, s.id.Deny(ctx, p, action, "compute", "", invalid("ratios are 0.1-64 (CPU), 0.1-4 (RAM) and 0.1-16 (disk; 0: the default %.1f); the reserve is at least 0", DefaultSettings.DiskAllocationRatio))
	}
	if in.MigrationMiBps < 0 || in.MigrationMiBps > 1<<20 {
		return nil, s.id.Deny(ctx, p, action, "compute", "", invalid("a live migration's cap is 1-%d MiB/s, or 0 for none", 1<<20))
	}
	var out Settings
	err := s.id.Mutate(ctx, p, action, "compute", "", MsgSetSettings, setSettingsCmd{Settings: in, IfMatch: ifMatch}, &out)
	return &out, err
}
