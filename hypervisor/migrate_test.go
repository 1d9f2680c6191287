package hypervisor

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/volume"
)

// A stopped VM whose disks are volumes moves to another node: its
// volumes' attachments follow it with no writer left, and its history
// says so. One with local disks or UEFI settings, a move
// to its own node, to no node, to a cordoned or full node, and a member's
// try are refused and change nothing.
func TestMigrateStoppedVM(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	ward := e.risOnNode1(t)
	e.host(t, "node2", 2, 4096)
	e.host(t, "tiny", 1, 256)
	if _, err := e.node.Apply(ctx, MsgReportHost, &Host{Name: "gone", VCPUs: 8, RAMMiB: 8192, Accel: "tcg", ReportedAt: time.Now().Add(-time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	report := func(state string) {
		t.Helper()
		if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-1", Node: "node1", Status: VMStatus{State: state, UpdatedAt: time.Now()}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	report(StateRunning)
	// A running VM moves live (live_test.go), which needs the migration
	// CA: without it, nothing starts.
	if _, err := e.svc.Migrate(ctx, e.admin, "ris", "node2", false, 0); consensus.ErrorCode(err) != consensus.CodeUnavailable || !strings.Contains(err.Error(), "migration CA") {
		t.Fatalf("migrate a running VM without a migration CA: %v", err)
	}
	if _, err := e.svc.Do(ctx, e.user, "ris", OpStop, 0); err != nil {
		t.Fatal(err)
	}
	report(StateStopped)
	if _, err := e.svc.CordonNode(ctx, e.admin, "node2", ""); err != nil {
		t.Fatal(err)
	}
	before, _ := e.svc.VM(e.admin, "ris")
	for _, c := range []struct {
		what, node, code string
	}{
		{"to its own node", "node1", consensus.CodeInvalid},
		{"to no such node", "node9", consensus.CodeNotFound},
		{"to a cordoned node", "node2", consensus.CodeConflict},
		{"to a node without room", "tiny", consensus.CodeConflict},
		{"to a node that stopped reporting", "gone", consensus.CodeConflict},
		{"with no other node free", "", consensus.CodeConflict},
	} {
		if _, err := e.svc.Migrate(ctx, e.admin, "ris", c.node, false, 0); consensus.ErrorCode(err) != c.code {
			t.Errorf("migrate %s: %v, want %s", c.what, err, c.code)
		}
	}
	if _, err := e.svc.Migrate(ctx, e.user, "ris", "node2", false, 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a member migrated a VM: %v", err)
	}
	if after, _ := e.svc.VM(e.admin, "ris"); after.Node != "node1" || after.Version != before.Version {
		t.Fatalf("refused moves changed the VM: %+v", after)
	}

	// Uncordoned, node2 is where the scheduler sends it.
	if err := e.svc.UncordonNode(ctx, e.admin, "node2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Migrate(ctx, e.admin, "ris", "node2", false, before.Version-1); consensus.ErrorCode(err) != consensus.CodePreconditionFailed {
		t.Errorf("migrate with a stale If-Match: %v", err)
	}
	_, err := e.node.Apply(ctx, MsgMoveVM, moveVMCmd{ID: "vm-1", Node: "node2", IfMatch: before.Version - 1, At: time.Now()}, nil)
	wantCode(t, "the move command with a stale If-Match", err, consensus.CodePreconditionFailed)
	// A volume still to be filled (from an image here; from the old
	// node's local disk after a convert-disk) keeps the VM where it is.
	e.volumeRecord(t, "vol-fill", ward, &volume.Source{Image: e.image.ID})
	if _, err := e.node.Apply(ctx, MsgAttachVolume, attachVolumeCmd{VM: "vm-1", Volume: "vol-fill"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Migrate(ctx, e.admin, "ris", "node2", false, 0)
	wantCode(t, "migrate with a volume still to be filled", err, consensus.CodeConflict)
	if !strings.Contains(err.Error(), "still being filled") {
		t.Fatalf("refused for another reason: %v", err)
	}
	_, err = e.node.Apply(ctx, MsgMoveVM, moveVMCmd{ID: "vm-1", Node: "node2", At: time.Now()}, nil)
	wantCode(t, "the move command with a volume still to be filled", err, consensus.CodeConflict)
	if _, err := e.node.Apply(ctx, MsgDetachVolume, detachVolumeCmd{Volume: "vol-fill"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: "vol-boot", Node: "node1"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Migrate(ctx, e.admin, "ris", "node2", true, 0)
	wantCode(t, "post-copy for a stopped VM", err, consensus.CodeInvalid)
	moved, err := e.svc.Migrate(ctx, e.admin, "ris", "", false, 0)
	if err != nil || moved.Node != "node2" || moved.Status.State != StateStopped || moved.Desired != DesiredStopped {
		t.Fatalf("migrate: %+v %v", moved, err)
	}
	for _, id := range []string{"vol-boot", "vol-data"} {
		if v := e.vol(id); v.Attachment == nil || v.Attachment.Node != "node2" || v.Attachment.VM != "vm-1" || v.Writer != "" {
			t.Fatalf("%s after the move: %+v writer %q", id, v.Attachment, v.Writer)
		}
	}
	_, err = e.node.Apply(ctx, volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: "vol-boot", Node: "node1"}, nil)
	wantCode(t, "the old node takes the boot volume's writer", err, consensus.CodeConflict)
	evs, err := e.svc.Events(e.admin, "ris")
	if err != nil || len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Message, "moved from node1 to node2") {
		t.Fatalf("history: %+v %v", evs, err)
	}

	// Local disks and UEFI settings stay on their node.
	for _, spec := range []VMSpec{
		{VCPUs: 1, RAMMiB: 256, DiskGiB: 1, Image: e.image.ID},
		{VCPUs: 1, RAMMiB: 256, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-x", Firmware: "uefi"},
	} {
		v := &VM{Name: "x", Node: "node1", Desired: DesiredStopped, Status: VMStatus{State: StateStopped}, Spec: spec}
		if err := movable(e.node.Store().ReadTxn(), v); consensus.ErrorCode(err) != consensus.CodeConflict {
			t.Errorf("movable(%+v): %v", spec, err)
		}
	}
}

// risOnNode1 makes VM "ris" (vm-1) of the test project, booted from volume
// vol-boot with data volume vol-data, placed on node1 (2 vCPUs, 4 GiB),
// and returns its project.
func (e *computeEnv) risOnNode1(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ward := e.image.ProjectID
	e.volumeRecord(t, "vol-boot", ward, nil)
	e.volumeRecord(t, "vol-data", ward, nil)
	vm := VM{ID: "vm-1", Name: "ris", ProjectID: ward, Desired: DesiredRunning, CreatedAt: time.Now().UTC(),
		Spec: VMSpec{VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-boot"}}
	if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm, BootVolumeOwned: true}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, MsgAttachVolume, attachVolumeCmd{VM: "vm-1", Volume: "vol-data"}, nil); err != nil {
		t.Fatal(err)
	}
	e.host(t, "node1", 2, 4096)
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		if v, _ := e.svc.VM(e.admin, "ris"); v.Node != "node1" {
			return fmt.Errorf("ris on %q", v.Node)
		}
		return nil
	})
	return ward
}
