package hypervisor

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// Thin disks count at their virtual size against the node's disk times the
// admin's ratio: placement skips a node they would overfill, the FSM
// refuses such a placement, and raising the ratio makes room.
func TestSchedulerCountsThinDisksUnderTheDiskRatio(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	if DefaultSettings.DiskAllocationRatio != 1 {
		t.Fatalf("default disk ratio %v, want Nova's 1.0", DefaultSettings.DiskAllocationRatio)
	}
	// Plenty of CPU and RAM; 2 GiB of disk.
	if _, err := e.node.Apply(ctx, MsgReportHost, &Host{Name: "node1", VCPUs: 8, RAMMiB: 8192, DiskGiB: 2, Accel: "tcg", ReportedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "a", Image: "guest", Flavor: "big"}); err != nil { // 2 GiB
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "a placed", func() error {
		if a, _ := e.svc.VM(e.user, "a"); a.Node != "node1" {
			return fmt.Errorf("a on %q, state %s %s", a.Node, a.Status.State, a.Status.Error)
		}
		return nil
	})
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "b", Image: "guest", Flavor: "small"}); err != nil { // 1 GiB more
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "b refused for disk", func() error {
		b, _ := e.svc.VM(e.user, "b")
		if b.Status.State != StateError {
			return fmt.Errorf("b on %q, state %s", b.Node, b.Status.State)
		}
		if !strings.Contains(b.Status.Error, "GiB of disk") {
			t.Fatalf("b failed for another reason: %s", b.Status.Error)
		}
		return nil
	})
	b, _ := e.svc.VM(e.user, "b")
	if _, err := e.node.Apply(ctx, MsgPlaceVM, placeVMCmd{ID: b.ID, Node: "node1"}, nil); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("the FSM accepted 3 GiB of disks on a 2 GiB node: %v", err)
	}
	if _, err := e.svc.SetSettings(ctx, e.admin, Settings{CPUAllocationRatio: 4, RAMAllocationRatio: 1, DiskAllocationRatio: 99}, 0); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("disk ratio 99 accepted: %v", err)
	}
	if _, err := e.svc.SetSettings(ctx, e.admin, Settings{CPUAllocationRatio: 4, RAMAllocationRatio: 1, DiskAllocationRatio: 1.5}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Do(ctx, e.user, "b", OpStart, 0); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "b placed under ratio 1.5", func() error {
		if b, _ := e.svc.VM(e.user, "b"); b.Node != "node1" {
			return fmt.Errorf("b on %q, state %s %s", b.Node, b.Status.State, b.Status.Error)
		}
		return nil
	})
	hs, err := e.svc.Hosts(e.admin)
	if err != nil || len(hs) != 1 || hs[0].UsedDiskGiB != 3 {
		t.Fatalf("hosts: %+v, %v", hs, err)
	}
}
