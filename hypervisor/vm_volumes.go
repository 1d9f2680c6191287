package hypervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/volume"
)

// A VM's volumes: attached and detached by compute's own commands, so the
// VM's placement and state are checked in the transaction that changes
// the volume.

type attachVolumeCmd struct {
	VM      string    `json:"vm"`
	Volume  string    `json:"volume"`
	IfMatch uint64    `json:"if_match,omitempty"` // the volume's version
	User    string    `json:"user,omitempty"`
	At      time.Time `json:"at"`
}

type detachVolumeCmd struct {
	Volume  string    `json:"volume"`
	IfMatch uint64    `json:"if_match,omitempty"`
	User    string    `json:"user,omitempty"`
	At      time.Time `json:"at"`
	// Node is set by the VM's node once it has unplugged the volume (or,
	// with Refused, once the guest would not let it go).
	Node    string `json:"node,omitempty"`
	Refused string `json:"refused,omitempty"`
}

// applyAttachVolume attaches a volume of the VM's project to the VM, served
// on the VM's node (once it has one). A running VM gets it hot-plugged by
// its node.
func applyAttachVolume(tx *consensus.Tx, c *attachVolumeCmd) (any, error) {
	vm, err := changeable(tx, c.VM, 0)
	if err != nil {
		return nil, err
	}
	if cur := volume.Lookup(tx.Txn, c.Volume); cur != nil && c.IfMatch != 0 && cur.Version != c.IfMatch {
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "volume %s is at version %d, not %d", cur.Name, cur.Version, c.IfMatch)
	}
	v, err := volume.AttachToVM(tx, c.Volume, vm.ID, vm.ProjectID, vm.Node, false, false, c.At)
	if err != nil {
		return nil, err
	}
	return v, addEvent(tx, vm.ID, "attach", evm("volume_attached", v.Name), c.User, "", c.At)
}

// applyDetachVolume detaches a data volume from its VM. A VM that is not
// running lets it go at once; from a running one the VM's node unplugs it
// first (the guest has to let go), so the request only marks it, and the
// node's word ends it.
func applyDetachVolume(tx *consensus.Tx, c *detachVolumeCmd) (any, error) {
	cur := volume.Lookup(tx.Txn, c.Volume)
	switch {
	case cur == nil:
		return nil, notFound("volume", c.Volume)
	case c.IfMatch != 0 && cur.Version != c.IfMatch:
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "volume %s is at version %d, not %d", cur.Name, cur.Version, c.IfMatch)
	case cur.Attachment == nil || cur.Attachment.VM == "":
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is not attached to a VM", cur.Name)
	case cur.Attachment.Boot:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is VM %s's boot disk: it stays attached while the VM exists", cur.Name, cur.Attachment.VM)
	}
	vm := getVM(tx.Txn, cur.Attachment.VM)
	event := func(v *volume.Volume, msg eventMsg) (any, error) {
		if vm == nil {
			return v, nil
		}
		return v, addEvent(tx, vm.ID, "detach", msg, c.User, c.Node, c.At)
	}
	if c.Node != "" {
		switch {
		case vm != nil && vm.Node != c.Node:
			return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is not on node %s", vm.Name, c.Node)
		case !cur.Attachment.Detaching:
			return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is not being detached", cur.Name)
		case c.Refused != "":
			v, err := volume.SetDetaching(tx, cur.ID, false)
			if err != nil {
				return nil, err
			}
			return event(v, evm("volume_kept", v.Name, c.Refused))
		}
		v, err := volume.DetachFromVM(tx, cur.ID)
		if err != nil {
			return nil, err
		}
		return event(v, evm("volume_detached", v.Name))
	}
	// At once only from a VM that is off and meant to stay off: one being
	// started may be opening the volume this moment.
	if vm != nil && vm.Node != "" && !(vm.Desired == DesiredStopped && vm.Status.State == StateStopped) {
		if cur.Attachment.Detaching {
			return cur, nil
		}
		v, err := volume.SetDetaching(tx, cur.ID, true)
		if err != nil {
			return nil, err
		}
		return event(v, evm("volume_detaching", v.Name))
	}
	v, err := volume.DetachFromVM(tx, cur.ID)
	if err != nil {
		return nil, err
	}
	return event(v, evm("volume_detached_off", v.Name))
}

// AttachVolume attaches the volume (which the volume service has found
// changeable by p) to a VM p may change.
func (s *Service) AttachVolume(ctx context.Context, p *identity.Principal, vol *volume.Volume, vmRef string, ifMatch uint64) (*volume.Volume, error) {
	const action = "volume.attach"
	vm, err := s.fresh(ctx, p, vmRef)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, vol.Name, vol.ProjectID, err)
	}
	if !CanChangeVM(p, vm) {
		return nil, s.id.Deny(ctx, p, action, vol.Name, vol.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change VM %s", vm.Name))
	}
	if vm.ProjectID != vol.ProjectID {
		return nil, s.id.Deny(ctx, p, action, vol.Name, vol.ProjectID, invalid("VM %s is not in volume %s's project", vmRef, vol.Name))
	}
	var out volume.Volume
	err = s.id.Mutate(ctx, p, action, vol.Name, vol.ProjectID, MsgAttachVolume, attachVolumeCmd{VM: vm.ID, Volume: vol.ID, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DetachVolume detaches a data volume from its VM: at once from a VM that
// is not running, else once its node has unplugged it (the volume shows
// detaching until then).
func (s *Service) DetachVolume(ctx context.Context, p *identity.Principal, vol *volume.Volume, ifMatch uint64) (*volume.Volume, error) {
	const action = "volume.detach"
	if vol.Attachment == nil || vol.Attachment.VM == "" {
		return nil, s.id.Deny(ctx, p, action, vol.Name, vol.ProjectID, consensus.Errorf(consensus.CodeConflict, "volume %s is not attached to a VM", vol.Name))
	}
	var out volume.Volume
	err := s.id.Mutate(ctx, p, action, vol.Name, vol.ProjectID, MsgDetachVolume, detachVolumeCmd{Volume: vol.ID, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// FindImage resolves an image p may use in a project for a volume made
// from it: a disk image, not an installer ISO.
func (s *Service) FindImage(p *identity.Principal, projectID, ref string) (string, int64, error) {
	img, err := s.images.ForVM(p, projectID, ref)
	if err != nil {
		return "", 0, err
	}
	if img.DiskFormat == FormatISO {
		return "", 0, invalid("image %s is an installer ISO, not a disk: make a blank volume and boot the VM from the ISO", img.Name)
	}
	return img.ID, img.VirtualSize, nil
}

// volumeName is the boot volume's name for a new VM: VM-boot, or with the
// VM's ID in it when that name is taken.
func bootVolumeName(vmName, vmID string, taken func(string) bool) string {
	return vmVolumeName(vmName, vmID, "boot", taken)
}

// varsVolumeName names the volume of a VM's UEFI variables after it.
func varsVolumeName(vmName, vmID string, taken func(string) bool) string {
	return vmVolumeName(vmName, vmID, "uefi", taken)
}

func vmVolumeName(vmName, vmID, what string, taken func(string) bool) string {
	name := vmName + "-" + what
	if len(name) > 63 || taken(name) {
		name = fmt.Sprintf("%.40s-%s-%s", vmName, what, vmID[max(0, len(vmID)-8):])
	}
	return name
}

type convertDiskCmd struct {
	VM      string    `json:"vm"`
	Volume  string    `json:"volume"`
	IfMatch uint64    `json:"if_match,omitempty"`
	User    string    `json:"user,omitempty"`
	At      time.Time `json:"at"`
}

// applyConvertDisk makes a stopped VM with a local boot disk boot from a
// volume that takes the disk over (filled from it on the VM's node before
// the VM starts again). The disk's charge moves to the volume's.
func applyConvertDisk(tx *consensus.Tx, c *convertDiskCmd) (any, error) {
	cur, err := changeable(tx, c.VM, c.IfMatch)
	if err != nil {
		return nil, err
	}
	if err := canConvert(cur); err != nil {
		return nil, err
	}
	if _, err := volume.AttachToVM(tx, c.Volume, cur.ID, cur.ProjectID, cur.Node, true, true, c.At); err != nil {
		return nil, err
	}
	if err := identity.Charge(tx, cur.ProjectID, identity.Resources{DiskGiB: -cur.Spec.DiskGiB}); err != nil && consensus.ErrorCode(err) != consensus.CodeNotFound {
		return nil, err
	}
	vm := *cur
	vm.Spec.BootVolume = c.Volume
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, "convert-disk", evm("convert_boot"), c.User, "", c.At)
}

// canConvert: only a stopped VM with a local boot disk on a node.
func canConvert(vm *VM) error {
	switch {
	case vm.Spec.BootVolume != "":
		return consensus.Errorf(consensus.CodeConflict, "VM %s already boots from volume %s", vm.Name, vm.Spec.BootVolume)
	case vm.Node == "":
		return consensus.Errorf(consensus.CodeConflict, "VM %s has never run: it has no local disk to convert", vm.Name)
	}
	return stoppedToConvert(vm)
}

func stoppedToConvert(vm *VM) error {
	if vm.Desired != DesiredStopped || vm.Status.State != StateStopped {
		return consensus.Errorf(consensus.CodeConflict, "VM %s is %s: stop it before converting its disk", vm.Name, vm.Status.State)
	}
	return nil
}

// varsOnNode tells whether a VM keeps its UEFI settings in a file on its
// node, with no volume for them.
func varsOnNode(vm *VM) bool { return vm.Spec.Firmware == "uefi" && vm.Spec.VarsVolume == "" }

// UEFIOnNode tells whether the VM's UEFI settings are bound to its node:
// kept in a file there, or still to move from it onto their volume. Such
// a VM cannot leave its node, live, stopped or by an HA restart.
func (vm *VM) UEFIOnNode() bool { return varsOnNode(vm) || vm.Spec.VarsFrom != "" }

type attachVarsCmd struct {
	VM      string    `json:"vm"`
	Volume  string    `json:"volume"`
	IfMatch uint64    `json:"if_match,omitempty"`
	User    string    `json:"user,omitempty"`
	At      time.Time `json:"at"`
}

// applyAttachVars gives a stopped UEFI VM that keeps its settings in a
// file on its node a volume for them, filled from the file on that node
// when the VM next starts (VarsFrom).
func applyAttachVars(tx *consensus.Tx, c *attachVarsCmd) (any, error) {
	cur, err := changeable(tx, c.VM, c.IfMatch)
	if err != nil {
		return nil, err
	}
	switch {
	case !varsOnNode(cur):
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s keeps no UEFI settings on its node", cur.Name)
	case cur.Node != "":
		if err := stoppedToConvert(cur); err != nil {
			return nil, err
		}
	}
	if _, err := volume.AttachFirmwareToVM(tx, c.Volume, cur.ID, cur.ProjectID, cur.Node, c.At); err != nil {
		return nil, err
	}
	vm := *cur
	vm.Spec.VarsVolume, vm.Spec.VarsFrom = c.Volume, cur.Node
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, "convert-disk", evm("convert_vars"), c.User, "", c.At)
}

var errNoVolumeDisk = consensus.Errorf(consensus.CodeUnavailable, "no node has a disk for a volume")

// ConvertDisk moves a stopped VM's local boot disk onto a replicated
// volume: the volume is made and attached as the VM's boot disk now, and
// filled from the local disk on the VM's node before the VM next starts;
// the local disk is removed once the volume holds it.
func (s *Service) ConvertDisk(ctx context.Context, p *identity.Principal, ref string, ifMatch uint64) (*VM, error) {
	const action = "vm.convert-disk"
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	deny := func(err error) (*VM, error) { return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, err) }
	switch {
	case !CanChangeVM(p, vm):
		return deny(consensus.Errorf(consensus.CodeForbidden, "not allowed to change VM %s", vm.Name))
	case ifMatch != 0 && ifMatch != vm.Version:
		return deny(consensus.Errorf(consensus.CodePreconditionFailed, "VM %s is at version %d, not %d", vm.Name, vm.Version, ifMatch))
	}
	noDisk := func() bool { return s.vols == nil || !s.vols.CanPlace() }
	if vm.Spec.BootVolume != "" && varsOnNode(vm) {
		// The disk is on a volume already; the UEFI settings are not.
		if noDisk() {
			return deny(errNoVolumeDisk)
		}
		if err := stoppedToConvert(vm); err != nil {
			return deny(err)
		}
		return s.convertVars(ctx, p, vm, ifMatch)
	}
	if err := canConvert(vm); err != nil {
		return deny(err)
	}
	// A volume an earlier convert-disk made for the disk and did not
	// attach (it stopped between the two) is taken, not left beside a
	// new one; it is kept if this try fails too.
	vol := orphanDiskVolume(s.c.Store().ReadTxn(), vm)
	if vol == nil && noDisk() {
		return deny(errNoVolumeDisk)
	}
	if ifMatch == 0 {
		ifMatch = vm.Version // nothing may start it between here and the command
	}
	adopted := vol != nil
	if !adopted {
		txn := s.c.Store().ReadTxn()
		name := bootVolumeName(vm.Name, vm.ID, func(n string) bool { return volume.Named(txn, vm.ProjectID, n) })
		if vol, err = s.vols.CreateFromVMDisk(ctx, p, volume.Create{Name: name, SizeGiB: vm.Spec.DiskGiB, Project: vm.ProjectID}, vm.ID); err != nil {
			return nil, err
		}
	}
	var out VM
	err = s.id.Mutate(ctx, p, action, vm.Name, vm.ProjectID, MsgConvertDisk, convertDiskCmd{VM: vm.ID, Volume: vol.ID, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	if err != nil {
		if adopted {
			return nil, err
		}
		if done := s.settleVolumeUse(ctx, p, err, vol, func(v *VM) bool { return v.Spec.BootVolume == vol.ID }, vm.ID); done != nil {
			return done, nil
		}
		return nil, err
	}
	if !varsOnNode(&out) {
		return &out, nil
	}
	vm2, err := s.convertVars(ctx, p, &out, out.Version)
	if consensus.ErrorReason(err) == consensus.ReasonProtocol {
		// The disk moved; the settings wait for every node to know
		// volumes for them (convert-disk again then).
		s.log.Warn("a UEFI VM's settings stay on its node: not every node knows volumes for them yet", "vm", vm.Name)
		return &out, nil
	}
	return vm2, err
}

// convertVars moves a stopped UEFI VM's settings from the file on its node
// onto a volume of their own, filled from the file on that node at the
// next start.
func (s *Service) convertVars(ctx context.Context, p *identity.Principal, vm *VM, ifMatch uint64) (*VM, error) {
	const action = "vm.convert-disk"
	if ifMatch == 0 {
		ifMatch = vm.Version
	}
	txn := s.c.Store().ReadTxn()
	name := varsVolumeName(vm.Name, vm.ID, func(n string) bool { return volume.Named(txn, vm.ProjectID, n) })
	vol, err := s.vols.Create(ctx, p, volume.Create{Name: name, SizeGiB: 1, Project: vm.ProjectID})
	if err != nil {
		return nil, err
	}
	var out VM
	err = s.id.Mutate(ctx, p, action, vm.Name, vm.ProjectID, MsgAttachVars, attachVarsCmd{VM: vm.ID, Volume: vol.ID, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	if err == nil {
		return &out, nil
	}
	if done := s.settleVolumeUse(ctx, p, err, vol, func(v *VM) bool { return v.Spec.VarsVolume == vol.ID }, vm.ID); done != nil {
		return done, nil
	}
	return nil, err
}

// settleVolumeUse follows a command that was to make VM vmID use the new
// volume vol and failed: if its outcome is unknown, it looks (linearizably)
// whether the VM took the volume after all (used) and returns the VM if
// so; otherwise the volume is deleted again. When the VM cannot be looked
// up the volume is kept (its owner sees it, and can delete it).
func (s *Service) settleVolumeUse(ctx context.Context, p *identity.Principal, err error, vol *volume.Volume, used func(*VM) bool, vmID string) *VM {
	if c := consensus.ErrorCode(err); c == "" || c == consensus.CodeUnavailable {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if rerr := s.c.ConsistentRead(rctx); rerr != nil {
			s.log.Error("the outcome is unknown; the new volume is kept", "vm", vmID, "volume", vol.ID, "err", rerr)
			return nil
		}
		if vm := getVM(s.c.Store().ReadTxn(), vmID); vm != nil && used(vm) {
			return vm
		}
	}
	if _, derr := s.vols.Delete(context.WithoutCancel(ctx), p, vol.ID, 0); derr != nil {
		s.log.Error("a volume made for a VM could not be taken back", "vm", vmID, "volume", vol.ID, "err", derr)
	}
	return nil
}
