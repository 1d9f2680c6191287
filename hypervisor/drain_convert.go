package hypervisor

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/volume"
)

// A drain the admin let convert disks (Drain.Convert) takes a VM with a
// local boot disk off its node the way an admin would by hand, as
// Proxmox's offline migration of a VM on local storage does, but onto
// shared storage: stop it, convert-disk, move it, start it again. Each
// step is recorded before it is taken, so a new leader goes on where the
// last one stopped:
//
//  1. Pre-flight, changing nothing: the project's quota has room for the
//     volume, the pool can place one, and another node would take the VM
//     once it boots from it. Otherwise the VM stays, running.
//  2. A running VM is recorded in Restarting, then stopped (drain.go).
//  3. Stopped, its disk is converted (MsgConvertDisk, only if the VM is
//     still at the version looked at: nobody started it meanwhile). A
//     refusal with a reason leaves it where it is, started again if the
//     drain stopped it, and this drain does not try it again. An unknown
//     outcome is looked at again on the next step; a volume made for the
//     disk and never attached (its leader stopped between the two) is
//     taken then rather than another made (Service.ConvertDisk).
//  4. Its node fills the volume from the local disk (storage/volume).
//  5. Filled, it is moved as any stopped VM (its old node then removes the
//     local disk) and started again if the drain stopped it.

// DiskConverter converts a stopped VM's local boot disk onto a volume for
// a drain (the compute Service; the drainer cannot make volumes itself).
type DiskConverter interface {
	// CanConvertDisk says why a volume could not take the VM's disk now,
	// or nil; it changes nothing.
	CanConvertDisk(txn *memdb.Txn, vm *VM) error
	// ConvertDiskForDrain converts it, in the name of by, if the VM is
	// still at version ifMatch.
	ConvertDiskForDrain(ctx context.Context, vmID string, ifMatch uint64, by string) error
}

// convertible says why a drain could not convert a VM's disk to move it,
// or nil: a local boot disk alone, with no UEFI settings bound to the node.
func convertible(vm *VM) error {
	switch {
	case vm.Spec.BootVolume != "":
		return errors.New("it boots from a volume")
	case len(vm.Spec.DataDisks) > 0:
		return errors.New("it has local data disks")
	case vm.UEFIOnNode():
		return errors.New("its UEFI settings are on its node")
	}
	return nil
}

// asConverted is vm as it would be booting from a volume, for placement.
func asConverted(vm *VM) *VM {
	as := *vm
	as.Spec.BootVolume = "(converted)"
	return &as
}

// filling says whether a volume of the VM is still being filled (from its
// local disk, once converted).
func filling(txn *memdb.Txn, vm *VM) bool {
	for _, v := range volume.AttachedToVM(txn, vm.ID) {
		if v.Unfilled() {
			return true
		}
	}
	return false
}

// convertStep moves on the conversion of vm's local boot disk. It says
// whether the drain waits for it (a step taken, or one on its way); false
// when vm stays, said through stay.
func (d *Drainer) convertStep(ctx context.Context, txn *memdb.Txn, node string, dr *Drain, vm *VM, alive bool, user string, now time.Time, save func(), stay func(*VM, string, ...any)) bool {
	restarting := contains(dr.Restarting, vm.ID)
	running := vm.Desired == DesiredRunning && vm.Status.State == StateRunning
	stopped := vm.Desired == DesiredStopped && vm.Status.State == StateStopped
	if why, ok := dr.Unconverted[vm.ID]; ok {
		if restarting {
			// Recorded before it is started again, so that no leader
			// stops it for this once more.
			if vm.Desired != DesiredRunning && !d.startAgain(ctx, vm, user, now) {
				return true // tried again on the next step
			}
			dr.Restarting = remove(dr.Restarting, vm.ID)
			save()
			return true
		}
		stay(vm, "no_convert", why)
		return false
	}
	switch {
	case !alive && restarting:
		// Stopped by this drain: it waits for its node, which alone can
		// copy the disk (an uncordon starts it again where it is).
		if dr.wait(vm.Name + " waits for " + node + " to report again") {
			save()
		}
		return true
	case !alive:
		stay(vm, "not_reporting", node)
		return false
	case !restarting && vm.Desired != vm.Status.State && vm.Status.State != StateError:
		return true // its owner just stopped or started it
	case restarting && vm.Desired == DesiredRunning:
		cmd := setDesiredCmd{ID: vm.ID, Op: OpStop, Desired: DesiredStopped, StopMode: StopACPI, User: user, At: now, IfMatch: vm.Version}
		if _, err := d.c.Apply(ctx, MsgSetDesired, cmd, nil); err != nil {
			d.log.Warn("drain: stop a VM to convert its disk", "vm", vm.Name, "err", err)
		}
		return true
	case running:
		if err := d.canConvert(txn, node, vm, now); err != nil {
			stay(vm, "no_convert", err)
			return false
		}
		dr.Restarting = append(dr.Restarting, vm.ID)
		save()
		return true
	case stopped:
		if err := d.canConvert(txn, node, vm, now); err != nil {
			d.unconverted(dr, vm, err, save) // nothing was changed
			return true
		}
		key := dr.ID + "/" + vm.ID
		err := d.Disks.ConvertDiskForDrain(ctx, vm.ID, vm.Version, user)
		switch code := consensus.ErrorCode(err); {
		case err == nil:
			delete(d.tries, key)
			dr.Converted++
			save()
		case code == "" || code == consensus.CodeUnavailable || code == consensus.CodePreconditionFailed:
			// Unknown, passing, or the VM changed meanwhile: looked up,
			// and tried again on the next step if it did not happen, a
			// few times.
			d.log.Warn("drain: convert a VM's disk", "vm", vm.Name, "err", err)
			if d.c.ConsistentRead(ctx) != nil {
				return true
			}
			if cur := getVM(d.c.Store().ReadTxn(), vm.ID); cur != nil && cur.Spec.BootVolume != "" {
				delete(d.tries, key)
				dr.Converted++
				save()
				return true
			}
			if d.tries == nil {
				d.tries = map[string]int{}
			}
			if d.tries[key]++; d.tries[key] >= convertTries {
				delete(d.tries, key)
				d.unconverted(dr, vm, err, save)
			}
		default:
			delete(d.tries, key)
			d.unconverted(dr, vm, err, save)
		}
		return true
	case restarting:
		return true // on its way down
	}
	stay(vm, "state", vm.Status.State)
	return false
}

// canConvert is the pre-flight of a VM's conversion: it changes nothing.
func (d *Drainer) canConvert(txn *memdb.Txn, node string, vm *VM, now time.Time) error {
	if d.Disks == nil {
		return consensus.Errorf(consensus.CodeUnavailable, "this cluster makes no volumes")
	}
	if err := d.Disks.CanConvertDisk(txn, vm); err != nil {
		return err
	}
	as := asConverted(vm)
	as.Desired, as.Status.State = DesiredStopped, StateStopped
	if _, err := placeAvoiding(txn, as, now.Add(-hostTimeout), node, d.Lost); err != nil {
		return consensus.Errorf(consensus.CodeConflict, "no other node can take it (%v)", err)
	}
	return nil
}

// convertTries bounds how often one leader tries a conversion whose
// failure says nothing certain (no leader, a replica not made), each
// looked up, before it gives up on the VM for this drain.
const convertTries = 5

// unconverted records that vm's disk cannot be converted: it stays, and
// is started again (convertStep) if the drain stopped it.
func (d *Drainer) unconverted(dr *Drain, vm *VM, why error, save func()) {
	if dr.Unconverted == nil {
		dr.Unconverted = map[string]string{}
	}
	dr.Unconverted[vm.ID] = why.Error()
	save()
}

// CanConvertDisk says why a volume could not take vm's local boot disk
// now, or nil: the pool places no volume, or the project's quota has no
// room for it.
func (s *Service) CanConvertDisk(txn *memdb.Txn, vm *VM) error {
	if orphanDiskVolume(txn, vm) != nil {
		return nil // made already, and charged
	}
	if s.vols == nil || !s.vols.CanPlace() {
		return errNoVolumeDisk
	}
	return identity.WouldFit(txn, vm.ProjectID, identity.Resources{Volumes: 1, VolumeGiB: vm.Spec.DiskGiB})
}

// ConvertDiskForDrain is ConvertDisk for the drainer, acting for the
// cluster admin who drained the node with consent to convert disks.
func (s *Service) ConvertDiskForDrain(ctx context.Context, vmID string, ifMatch uint64, by string) error {
	p := &identity.Principal{User: identity.User{Name: by, ClusterAdmin: true}}
	_, err := s.ConvertDisk(ctx, p, vmID, ifMatch)
	return err
}

// orphanDiskVolume is a volume made to take over vm's local disk that no
// VM uses (its convert-disk stopped between making it and attaching it),
// and large enough for the disk as it is now (not one made before the VM
// was resized).
func orphanDiskVolume(txn *memdb.Txn, vm *VM) *volume.Volume {
	for _, v := range volume.All(txn) {
		if v.ProjectID == vm.ProjectID && v.Source != nil && v.Source.VMDisk == vm.ID && !v.Source.Filled && v.Attachment == nil &&
			v.State == volume.StateAvailable && v.SizeBytes >= vm.Spec.DiskGiB*volume.GiB {
			return v
		}
	}
	return nil
}
