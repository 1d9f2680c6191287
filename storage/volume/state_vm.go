package volume

import (
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Compute's commands keep a VM's volumes in step with the VM in the same
// transaction: created with a boot volume, placed on a node, purged. These
// helpers are theirs; volumes' own commands never touch a VM.

// AttachToVM attaches an available volume of the VM's project to the VM,
// served on node ("" while the VM is not placed).
func AttachToVM(tx *consensus.Tx, volumeID, vmID, projectID, node string, boot, deleteWithVM bool, at time.Time) (*Volume, error) {
	return attachToVM(tx, volumeID, vmID, projectID, Attachment{Node: node, VM: vmID, At: at, Boot: boot, DeleteWithVM: deleteWithVM})
}

// AttachFirmwareToVM attaches a volume made for the VM's UEFI variables to
// it, for as long as the VM exists (it goes with the VM).
func AttachFirmwareToVM(tx *consensus.Tx, volumeID, vmID, projectID, node string, at time.Time) (*Volume, error) {
	return attachToVM(tx, volumeID, vmID, projectID, Attachment{Node: node, VM: vmID, At: at, Firmware: true, DeleteWithVM: true})
}

// dataVolume tells whether v is attached to a VM as a disk it may let go.
func (v *Volume) dataVolume() bool {
	a := v.Attachment
	return a != nil && a.VM != "" && !a.Boot && !a.Firmware
}

func attachToVM(tx *consensus.Tx, volumeID, vmID, projectID string, a Attachment) (*Volume, error) {
	boot := a.Boot
	cur, err := current(tx, volumeID, 0)
	if err != nil {
		return nil, err
	}
	switch {
	case cur.ProjectID != projectID:
		return nil, notFound("volume", volumeID) // another project's volume is not there for this VM
	case cur.Attachment != nil && !cur.Attachment.Repair:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is already attached to %s", cur.Name, attachedTo(cur.Attachment))
	case cur.State != StateAvailable && cur.Attachment == nil:
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is %s, not available", cur.Name, cur.State)
	case cur.Source != nil && cur.Source.VMDisk != "" && !cur.Source.Filled && (cur.Source.VMDisk != vmID || !boot):
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is still to take over VM %s's local disk", cur.Name, cur.Source.VMDisk)
	}
	v := *cur
	v.Attachment = &a
	v.State = StateInUse
	v.Writer = ""
	if _, err := save(tx, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// FollowVM moves the VM's volumes to the node it is placed on. A volume
// that moves loses its writer: the new node takes a new epoch, which
// fences the old one on the replicas.
func FollowVM(tx *consensus.Tx, vmID, node string) error {
	for _, cur := range AttachedToVM(tx.Txn, vmID) {
		if cur.Attachment.Node == node {
			continue
		}
		v := *cur
		a := *cur.Attachment
		a.Node = node
		v.Attachment, v.Writer = &a, ""
		if _, err := save(tx, &v); err != nil {
			return err
		}
	}
	return nil
}

// ReleaseVM detaches the VM's volumes as the VM goes, and deletes those
// made to go with it (refunding their project). It returns the deleted
// ones: their replicas are the caller's to remove (or the sweepers').
func ReleaseVM(tx *consensus.Tx, vmID string) ([]Volume, error) {
	var deleted []Volume
	for _, cur := range AttachedToVM(tx.Txn, vmID) {
		if cur.Attachment.DeleteWithVM {
			if err := removeVolume(tx, cur); err != nil {
				return nil, err
			}
			deleted = append(deleted, *cur)
			continue
		}
		v := *cur
		v.Attachment, v.State, v.Writer = nil, StateAvailable, ""
		if err := callOffSnapshot(tx, &v); err != nil {
			return nil, err
		}
		if _, err := save(tx, &v); err != nil {
			return nil, err
		}
	}
	return deleted, nil
}

// AttachedToVM lists the volumes attached to a VM, the boot volume first.
func AttachedToVM(txn *memdb.Txn, vmID string) []*Volume {
	it, err := txn.Get(tVolumes, "id")
	if err != nil {
		return nil
	}
	var out []*Volume
	for o := it.Next(); o != nil; o = it.Next() {
		if v := o.(*Volume); v.Attachment != nil && v.Attachment.VM == vmID {
			if v.Attachment.Boot {
				out = append([]*Volume{v}, out...)
			} else {
				out = append(out, v)
			}
		}
	}
	return out
}

// Lookup returns a volume by ID from a read transaction, or nil.
func Lookup(txn *memdb.Txn, id string) *Volume { return getVolume(txn, id) }

// DetachFromVM detaches a VM's data volume; compute has checked that the
// VM can let it go.
func DetachFromVM(tx *consensus.Tx, volumeID string) (*Volume, error) {
	cur, err := current(tx, volumeID, 0)
	if err != nil {
		return nil, err
	}
	if !cur.dataVolume() {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is not a VM's data volume", cur.Name)
	}
	v := *cur
	v.Attachment, v.State, v.Writer = nil, StateAvailable, ""
	if err := callOffSnapshot(tx, &v); err != nil {
		return nil, err
	}
	if _, err := save(tx, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Filling returns a volume the image has still to be written into, if
// any: the image must stay until it is.
func Filling(txn *memdb.Txn, imageID string) *Volume {
	it, err := txn.Get(tVolumes, "id")
	if err != nil {
		return nil
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if v := o.(*Volume); v.Unfilled() && v.Source.Image == imageID {
			return v
		}
	}
	return nil
}

// Named tells whether a project has a volume of that name.
func Named(txn *memdb.Txn, projectID, name string) bool {
	return consensus.First[Volume](txn, tVolumes, "name", projectID, name) != nil
}

// SetDetaching marks a VM's data volume to be unplugged from the running
// VM (or, with false, keeps it after an unplug the guest refused).
func SetDetaching(tx *consensus.Tx, volumeID string, detaching bool) (*Volume, error) {
	cur, err := current(tx, volumeID, 0)
	if err != nil {
		return nil, err
	}
	if !cur.dataVolume() {
		return nil, consensus.Errorf(consensus.CodeConflict, "volume %s is not a VM's data volume", cur.Name)
	}
	v := *cur
	a := *cur.Attachment
	a.Detaching = detaching
	v.Attachment = &a
	if _, err := save(tx, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// All lists every volume, for metrics and controllers.
func All(txn *memdb.Txn) []*Volume {
	it, err := txn.Get(tVolumes, "id")
	if err != nil {
		return nil
	}
	var out []*Volume
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, o.(*Volume))
	}
	return out
}

// Live migration moves a running VM's volumes in two steps. MigrateIn
// names the node the VM is moving to: that node serves each volume on a
// standby socket, with no writer and no epoch, so the VM's QEMU there can
// be set up while the old node still writes. HandOver, at the switchover
// (the guest paused on the old node, its writes flushed), moves the
// attachments and the writer epoch to the new node in one step: from that
// command on the new node is the writer, and its first act is to fence
// every replica at the new epoch, so the old node can never write again.

// MigrateIn marks the VM's volumes as coming to node ("": no longer,
// the migration ended without a switchover).
func MigrateIn(tx *consensus.Tx, vmID, node string) error {
	for _, cur := range AttachedToVM(tx.Txn, vmID) {
		if cur.Attachment.Incoming == node {
			continue
		}
		v := *cur
		a := *cur.Attachment
		a.Incoming = node
		v.Attachment = &a
		if _, err := save(tx, &v); err != nil {
			return err
		}
	}
	return nil
}

// HandOver makes node the attachment and the writer of the VM's volumes,
// each at a new epoch.
func HandOver(tx *consensus.Tx, vmID, node string) error {
	for _, cur := range AttachedToVM(tx.Txn, vmID) {
		v := *cur
		a := *cur.Attachment
		a.Node, a.Incoming = node, ""
		v.Attachment = &a
		v.Writer, v.Epoch = node, cur.Epoch+1
		if _, err := save(tx, &v); err != nil {
			return err
		}
	}
	return nil
}

// movingErr refuses a change to a volume whose VM is being live-migrated.
func movingErr(v *Volume) error {
	return consensus.Errorf(consensus.CodeConflict, "volume %s's VM is moving to node %s: try again once it has moved", v.Name, v.Attachment.Incoming)
}
