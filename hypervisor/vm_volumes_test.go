package hypervisor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/volume"
)

// volumeRecord makes an available volume record (no replicas exist: the
// state machine is what is tested).
func (e *computeEnv) volumeRecord(t *testing.T, id, project string, src *volume.Source) {
	t.Helper()
	ctx := context.Background()
	v := volume.Volume{ID: id, Name: id, ProjectID: project, SizeBytes: volume.GiB, Source: src, CreatedAt: time.Now().UTC(),
		Replicas: []volume.Replica{{ID: id + "-r0", Node: "node1", Disk: "d1"}}}
	if _, err := e.node.Apply(ctx, volume.MsgCreateVolume, map[string]any{"volume": v}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, volume.MsgSetVolumeState, map[string]any{"id": id, "state": volume.StateAvailable}, nil); err != nil {
		t.Fatal(err)
	}
}

func (e *computeEnv) vol(id string) *volume.Volume {
	return volume.Lookup(e.node.Store().ReadTxn(), id)
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if consensus.ErrorCode(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

// A VM's volumes are kept in step with it in the transactions that change
// the VM: taken at create, moved with its placement, let go (or deleted,
// for the one made with it) when it is purged.
func TestVMVolumesFollowTheVM(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	ward := e.image.ProjectID
	e.volumeRecord(t, "vol-boot", ward, &volume.Source{Image: e.image.ID})
	e.volumeRecord(t, "vol-data", ward, nil)
	lab, err := e.id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	e.volumeRecord(t, "vol-other", lab.ID, nil)
	before := e.usage(t)

	// The image is still to be copied into vol-boot: it stays.
	_, err = e.node.Apply(ctx, MsgDeleteImage, deleteImageCmd{ID: e.image.ID}, nil)
	wantCode(t, "delete an image a volume is still to be filled from", err, consensus.CodeConflict)

	// Another project's volume is not there for this VM; a volume in use is
	// not taken twice; a refused create leaves the volume as it was.
	vm := VM{ID: "vm-1", Name: "ris", ProjectID: ward, Desired: DesiredRunning, CreatedAt: time.Now().UTC(),
		Spec: VMSpec{VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-other"}}
	_, err = e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm, BootVolumeOwned: true}, nil)
	wantCode(t, "boot from another project's volume", err, consensus.CodeNotFound)
	if u := e.usage(t); u != before {
		t.Fatalf("a refused create charged the project: %+v → %+v", before, u)
	}
	vm.Spec.BootVolume = "vol-boot"
	if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm, BootVolumeOwned: true}, nil); err != nil {
		t.Fatal(err)
	}
	if u := e.usage(t); u.DiskGiB != before.DiskGiB || u.Instances != before.Instances+1 {
		t.Fatalf("a boot volume is charged as a volume, not as a local disk: %+v → %+v", before, u)
	}
	if v := e.vol("vol-boot"); v.State != volume.StateInUse || v.Attachment == nil || v.Attachment.VM != "vm-1" || !v.Attachment.Boot || v.Attachment.Node != "" {
		t.Fatalf("boot volume after create: %+v", v)
	}
	vm2 := vm
	vm2.ID, vm2.Name = "vm-2", "other"
	_, err = e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm2}, nil)
	wantCode(t, "boot from a volume in use", err, consensus.CodeConflict)

	// Data volume: attached through compute, refused from another project.
	_, err = e.node.Apply(ctx, MsgAttachVolume, attachVolumeCmd{VM: "vm-1", Volume: "vol-other"}, nil)
	wantCode(t, "attach another project's volume", err, consensus.CodeNotFound)
	if _, err := e.node.Apply(ctx, MsgAttachVolume, attachVolumeCmd{VM: "vm-1", Volume: "vol-data"}, nil); err != nil {
		t.Fatal(err)
	}

	// Placement moves both volumes to the node, which alone may write them.
	e.host(t, "node1", 2, 4096)
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		for _, id := range []string{"vol-boot", "vol-data"} {
			if v := e.vol(id); v.Attachment.Node != "node1" {
				return fmt.Errorf("%s on %q", id, v.Attachment.Node)
			}
		}
		return nil
	})
	_, err = e.node.Apply(ctx, volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: "vol-boot", Node: "node2"}, nil)
	wantCode(t, "writer on another node", err, consensus.CodeConflict)
	if _, err := e.node.Apply(ctx, volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: "vol-boot", Node: "node1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, volume.MsgSourceFilled, &volume.SourceFilled{Volume: "vol-boot", Node: "node1", Epoch: 0}, nil); consensus.ErrorReason(err) != volume.ReasonFenced {
		t.Fatalf("source filled at a stale epoch: %v", err)
	}
	if _, err := e.node.Apply(ctx, volume.MsgSourceFilled, &volume.SourceFilled{Volume: "vol-boot", Node: "node1", Epoch: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if v := e.vol("vol-boot"); v.Source == nil || !v.Source.Filled || v.Unfilled() {
		t.Fatalf("after the fill: %+v", v.Source)
	}

	// The boot volume stays while the VM exists; the data volume leaves a
	// stopped VM only.
	_, err = e.node.Apply(ctx, MsgDetachVolume, detachVolumeCmd{Volume: "vol-boot"}, nil)
	wantCode(t, "detach the boot volume", err, consensus.CodeConflict)
	_, err = e.node.Apply(ctx, volume.MsgDeleteVolume, map[string]any{"id": "vol-boot"}, nil)
	wantCode(t, "delete the boot volume", err, consensus.CodeConflict)
	// From a VM that runs, a detach is asked of its node: the guest has to
	// let go first. Only the VM's node ends it, either way.
	if _, err := e.node.Apply(ctx, MsgDetachVolume, detachVolumeCmd{Volume: "vol-data"}, nil); err != nil {
		t.Fatal(err)
	}
	if v := e.vol("vol-data"); v.Attachment == nil || !v.Attachment.Detaching || v.State != volume.StateInUse {
		t.Fatalf("detach asked of a running VM: %+v", v)
	}
	_, err = e.node.Apply(ctx, MsgDetachVolume, detachVolumeCmd{Volume: "vol-data", Node: "node2"}, nil)
	wantCode(t, "a detach ended by another node", err, consensus.CodeConflict)
	if _, err := e.node.Apply(ctx, MsgDetachVolume, detachVolumeCmd{Volume: "vol-data", Node: "node1", Refused: "the guest did not release it"}, nil); err != nil {
		t.Fatal(err)
	}
	if v := e.vol("vol-data"); v.Attachment == nil || v.Attachment.Detaching {
		t.Fatalf("after the guest refused: %+v", v)
	}
	_, err = e.node.Apply(ctx, MsgDetachVolume, detachVolumeCmd{Volume: "vol-data", Node: "node1"}, nil)
	wantCode(t, "a detach nobody asked for", err, consensus.CodeConflict)
	for _, c := range []detachVolumeCmd{{Volume: "vol-data"}, {Volume: "vol-data", Node: "node1"}} {
		if _, err := e.node.Apply(ctx, MsgDetachVolume, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	if v := e.vol("vol-data"); v.Attachment != nil || v.State != volume.StateAvailable {
		t.Fatalf("after the node unplugged it: %+v", v)
	}
	if _, err := e.node.Apply(ctx, MsgAttachVolume, attachVolumeCmd{VM: "vm-1", Volume: "vol-data"}, nil); err != nil {
		t.Fatal(err)
	}

	// Purged: the volume made with the VM goes (and is refunded), the data
	// volume is let go.
	if _, err := e.node.Apply(ctx, MsgSetDesired, setDesiredCmd{ID: "vm-1", Desired: DesiredDeleted}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, MsgPurgeVM, purgeVMCmd{ID: "vm-1", Node: "node1"}, nil); err != nil {
		t.Fatal(err)
	}
	if v := e.vol("vol-boot"); v != nil {
		t.Fatalf("the boot volume made with the VM outlived it: %+v", v)
	}
	if v := e.vol("vol-data"); v.State != volume.StateAvailable || v.Attachment != nil || v.Writer != "" {
		t.Fatalf("data volume after the VM's purge: %+v", v)
	}
	if u := e.usage(t); u.Volumes != before.Volumes-1 || u.VolumeGiB != before.VolumeGiB-1 || u.Instances != before.Instances {
		t.Fatalf("usage after the purge: %+v → %+v", before, u)
	}
}

// A volume a convert-disk made for a VM's disk and never attached (its
// node stopped between the two) is taken by the next convert-disk of that
// VM, rather than left beside a new one; a volume of another VM's disk,
// or one smaller than the disk, is not.
func TestConvertDiskTakesItsOrphanVolume(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	ward := e.image.ProjectID
	e.host(t, "node1", 8, 16384)
	e.placeVMs(t, "node1", map[string]VMSpec{"scan": {VCPUs: 1, RAMMiB: 512, DiskGiB: 2, Image: e.image.ID}})
	if _, err := e.svc.Do(ctx, e.admin, "scan", OpStop, 0); err != nil {
		t.Fatal(err)
	}
	st := VMStatus{State: StateStopped, Accel: "tcg", UpdatedAt: time.Now()}
	if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-scan", Node: "node1", Status: st}, nil); err != nil {
		t.Fatal(err)
	}
	// This service makes no volumes: only an orphan can be taken, and
	// not one of another VM's disk, nor one too small for this disk (made
	// before the VM grew).
	e.volumeRecord(t, "vol-other", ward, &volume.Source{VMDisk: "vm-other"})
	e.volumeRecord(t, "vol-small", ward, &volume.Source{VMDisk: "vm-scan"})
	_, err := e.svc.ConvertDisk(ctx, e.admin, "scan", 0)
	wantCode(t, "convert with no orphan and no disks", err, consensus.CodeUnavailable)
	v := volume.Volume{ID: "vol-orphan", Name: "vol-orphan", ProjectID: ward, SizeBytes: 2 * volume.GiB, Source: &volume.Source{VMDisk: "vm-scan"}, CreatedAt: time.Now().UTC(),
		Replicas: []volume.Replica{{ID: "vol-orphan-r0", Node: "node1", Disk: "d1"}}}
	if _, err := e.node.Apply(ctx, volume.MsgCreateVolume, map[string]any{"volume": v}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, volume.MsgSetVolumeState, map[string]any{"id": v.ID, "state": volume.StateAvailable}, nil); err != nil {
		t.Fatal(err)
	}
	vm, err := e.svc.ConvertDisk(ctx, e.admin, "scan", 0)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.BootVolume != "vol-orphan" || e.vol("vol-orphan").Attachment == nil || e.vol("vol-other").Attachment != nil {
		t.Fatalf("boot volume %q; orphan %+v; other %+v", vm.Spec.BootVolume, e.vol("vol-orphan").Attachment, e.vol("vol-other").Attachment)
	}
}
