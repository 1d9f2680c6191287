package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A drain's pre-flight refuses a node with nowhere to send its VMs; a
// drain moves a running VM live and a stopped one as it is, one at a
// time; with the admin's consent it stops, moves and starts again a VM
// that cannot move live; a VM with local disks stays, and the drain says
// so, and which volumes keep a copy on the node.
func TestDrainNode(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node1", 8, 16384)
	e.placeVMs(t, "node1", map[string]VMSpec{
		"live":    {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-live"},
		"live-ok": {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-live-ok"},
		"resized": {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-resized"},
		"parked":  {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-parked"},
		"local":   {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID},
	})
	report := func(id, node, state, pending string) {
		t.Helper()
		st := VMStatus{State: state, Accel: "tcg", Pending: pending, UpdatedAt: time.Now()}
		if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: id, Node: node, Status: st}, nil); err != nil {
			t.Fatal(err)
		}
	}
	report("vm-live", "node1", StateRunning, "")
	report("vm-live-ok", "node1", StateRunning, "")
	report("vm-local", "node1", StateRunning, "")
	report("vm-resized", "node1", StateRunning, "512 MiB at the next start")
	if _, err := e.svc.Do(ctx, e.admin, "parked", OpStop, 0); err != nil {
		t.Fatal(err)
	}
	report("vm-parked", "node1", StateStopped, "")
	if err := EnsureMigrationCA(ctx, e.node); err != nil {
		t.Fatal(err)
	}

	// Nowhere to go: no other node, then one too small for them all.
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", false); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "no other node") {
		t.Fatalf("drain the only node: %v", err)
	}
	e.host(t, "node2", 2, 2048) // 1024 MiB for VMs after the reserve
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", false); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "no room for") {
		t.Fatalf("drain onto a small node: %v", err)
	}
	e.svc.Quorum = func(string) error { return fmt.Errorf("without it 1 of 3 voting nodes would be up") }
	e.host(t, "node2", 8, 16384)
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", false); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "voting nodes") {
		t.Fatalf("drain without quorum after: %v", err)
	}
	if _, err := e.svc.DrainNode(ctx, e.user, "node1", false); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member drained a node: %v", err)
	}
	if c := cordonOf(e.node.Store().ReadTxn(), "node1"); c != nil {
		t.Fatalf("refused drains cordoned node1: %+v", c)
	}
	e.svc.Quorum = nil
	// node3 has the most room, and has lost contact with the cluster (its
	// lease is lost): nothing goes there, and alone it is no room at all.
	lost := func(n string) bool { return n == "node3" }
	e.host(t, "node3", 32, 65536)
	e.svc.Lost = lost
	e.host(t, "node2", 2, 2048)
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", false); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "no room for") {
		t.Fatalf("drain onto a small node beside a lost one: %v", err)
	}
	e.host(t, "node2", 8, 16384)
	c, err := e.svc.DrainNode(ctx, e.admin, "node1", true)
	if err != nil || c.Drain == nil || c.Drain.State != DrainDraining || !c.Drain.Restart {
		t.Fatalf("drain: %+v %v", c, err)
	}
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", true); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("a second drain: %v", err)
	}

	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := NewDrainer(e.node, slog.New(slog.DiscardHandler))
	d.Lost = lost
	go d.Run(dctx)
	get := func(name string) *VM {
		v, err := e.svc.VM(e.admin, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Alphabetically first that can go: live moves live (one at a time).
	testutil.WaitFor(t, 10*time.Second, "live's migration", func() error {
		if m := get("live").Migration; m == nil || m.Target != "node2" {
			return fmt.Errorf("%+v", m)
		}
		return nil
	})
	if get("parked").Node != "node1" {
		t.Fatal("a second VM moved while the first was on its way")
	}
	// Its live migration fails before the switchover (the target's agent
	// gone): with the admin's consent to restarts, live is stopped, moved
	// and started again.
	m := get("live").Migration
	for _, s := range []struct{ node, phase string }{{"node1", PhasePreparing}, {"node2", PhaseTransferring}} {
		if _, err := e.node.Apply(ctx, MsgMigrationStep, migrationCmd{VM: "vm-live", ID: m.ID, Node: s.node, Phase: s.phase, At: time.Now()}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.node.Apply(ctx, MsgEndMigration, endMigrationCmd{VM: "vm-live", ID: m.ID, Node: "node1", Error: "node2 stopped answering", At: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "live stopped to move", func() error {
		if l := get("live"); l.Node != "node1" || l.Desired != DesiredStopped || l.Migration != nil {
			return fmt.Errorf("on %s, %s, migration %+v", l.Node, l.Desired, l.Migration)
		}
		return nil
	})
	report("vm-live", "node1", StateStopped, "")
	testutil.WaitFor(t, 10*time.Second, "live moved and started", func() error {
		if l := get("live"); l.Node != "node2" || l.Desired != DesiredRunning {
			return fmt.Errorf("on %s, %s", l.Node, l.Desired)
		}
		return nil
	})
	report("vm-live", "node2", StateRunning, "")
	// live-ok moves live, to the end.
	testutil.WaitFor(t, 10*time.Second, "live-ok's migration", func() error {
		if m := get("live-ok").Migration; m == nil || m.Target != "node2" {
			return fmt.Errorf("%+v", m)
		}
		return nil
	})
	m = get("live-ok").Migration
	for _, s := range []struct{ node, phase string }{{"node1", PhasePreparing}, {"node2", PhaseTransferring}, {"node1", PhaseSwitching}, {"node2", PhaseSwitched}} {
		if _, err := e.node.Apply(ctx, MsgMigrationStep, migrationCmd{VM: "vm-live-ok", ID: m.ID, Node: s.node, Phase: s.phase, At: time.Now()}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.node.Apply(ctx, MsgEndMigration, endMigrationCmd{VM: "vm-live-ok", ID: m.ID, Node: "node2", At: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	// parked moves as it is; resized (a change pending) is stopped to move.
	testutil.WaitFor(t, 10*time.Second, "parked moved, resized stopped", func() error {
		if p, r := get("parked"), get("resized"); p.Node != "node2" || r.Desired != DesiredStopped {
			return fmt.Errorf("parked on %s, resized %s", p.Node, r.Desired)
		}
		return nil
	})
	if get("parked").Desired != DesiredStopped {
		t.Fatal("a stopped VM was started by the drain")
	}
	report("vm-resized", "node1", StateStopped, "")
	testutil.WaitFor(t, 10*time.Second, "resized moved and started", func() error {
		if r := get("resized"); r.Node != "node2" || r.Desired != DesiredRunning {
			return fmt.Errorf("on %s, %s", r.Node, r.Desired)
		}
		return nil
	})
	var dr *Drain
	testutil.WaitFor(t, 10*time.Second, "the drain done", func() error {
		c := cordonOf(e.node.Store().ReadTxn(), "node1")
		if c == nil || c.Drain == nil || c.Drain.State != DrainDone {
			return fmt.Errorf("%+v", c)
		}
		dr = c.Drain
		return nil
	})
	if dr.Moved != 2 || dr.Restarted != 2 || !strings.Contains(dr.Message, "local stays: it has local disks") || !strings.Contains(dr.Message, "vol-live") {
		t.Fatalf("drain: %+v", dr)
	}
	if get("local").Node != "node1" || get("local").Desired != DesiredRunning {
		t.Fatal("the VM with a local disk was touched")
	}
	// Uncordoned, the node takes VMs again and the drain is over.
	if err := e.svc.UncordonNode(ctx, e.admin, "node1"); err != nil {
		t.Fatal(err)
	}
	if c := cordonOf(e.node.Store().ReadTxn(), "node1"); c != nil {
		t.Fatalf("after uncordon: %+v", c)
	}
}

// Without the admin's consent a drain stops no VM: one that cannot move
// live stays running, and the drain says so.
func TestDrainWithoutRestartStopsNothing(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	ward := e.image.ProjectID
	e.host(t, "node1", 8, 16384)
	e.volumeRecord(t, "vol-p", ward, nil)
	vm := VM{ID: "vm-p", Name: "pending", ProjectID: ward, Desired: DesiredRunning, CreatedAt: time.Now().UTC(),
		Spec: VMSpec{VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-p"}}
	if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm, BootVolumeOwned: true}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		if v, _ := e.svc.VM(e.admin, "pending"); v.Node != "node1" {
			return fmt.Errorf("on %q", v.Node)
		}
		return nil
	})
	st := VMStatus{State: StateRunning, Accel: "tcg", Pending: "4 vCPUs at the next start", UpdatedAt: time.Now()}
	if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-p", Node: "node1", Status: st}, nil); err != nil {
		t.Fatal(err)
	}
	e.host(t, "node2", 8, 16384)
	c, err := e.svc.DrainNode(ctx, e.admin, "node1", false)
	if err != nil {
		t.Fatal(err)
	}
	// A step of another drain (a stale leader's) is refused; a step of
	// this one never gives consent the admin did not give.
	_, err = e.node.Apply(ctx, MsgDrainStep, drainStepCmd{Node: "node1", Drain: Drain{ID: "drain-other", State: DrainDraining}}, nil)
	wantCode(t, "a step of another drain", err, consensus.CodeConflict)
	if _, err := e.node.Apply(ctx, MsgDrainStep, drainStepCmd{Node: "node1", Drain: Drain{ID: c.Drain.ID, State: DrainDraining, Restart: true}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := cordonOf(e.node.Store().ReadTxn(), "node1"); got.Drain.Restart {
		t.Fatal("a drain step gave consent to restart VMs")
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go NewDrainer(e.node, slog.New(slog.DiscardHandler)).Run(dctx)
	testutil.WaitFor(t, 10*time.Second, "the drain done", func() error {
		c := cordonOf(e.node.Store().ReadTxn(), "node1")
		if c == nil || c.Drain == nil || c.Drain.State != DrainDone {
			return fmt.Errorf("%+v", c)
		}
		if !strings.Contains(c.Drain.Message, "pending stays") || !strings.Contains(c.Drain.Message, "drain with restart") {
			return fmt.Errorf("message %q", c.Drain.Message)
		}
		return nil
	})
	if v, _ := e.svc.VM(e.admin, "pending"); v.Desired != DesiredRunning || v.Node != "node1" || v.Migration != nil {
		t.Fatalf("a drain without consent touched the VM: %s on %s, %+v", v.Desired, v.Node, v.Migration)
	}
}

// placeVMs records the VMs of specs in project ward (a volume record for
// each boot volume; room in the quota for them all) and waits until the
// scheduler has placed them all on node, the only node that can take them.
func (e *computeEnv) placeVMs(t *testing.T, node string, specs map[string]VMSpec) {
	t.Helper()
	ctx := context.Background()
	ward := e.image.ProjectID
	q, err := e.id.GetQuota(e.admin, "ward")
	if err != nil {
		t.Fatal(err)
	}
	limits := q.Limits
	limits.Instances, limits.VCPUs, limits.RAMMiB, limits.VolumeGiB = 10, 10, 8192, 10
	if _, err := e.id.SetQuota(ctx, e.admin, "ward", limits, 0); err != nil {
		t.Fatal(err)
	}
	for name, spec := range specs {
		if spec.BootVolume != "" {
			e.volumeRecord(t, spec.BootVolume, ward, nil)
		}
		vm := VM{ID: "vm-" + name, Name: name, ProjectID: ward, Desired: DesiredRunning, CreatedAt: time.Now().UTC(), Spec: spec}
		if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm, BootVolumeOwned: spec.BootVolume != ""}, nil); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		for name := range specs {
			if v, _ := e.svc.VM(e.admin, name); v.Node != node {
				return fmt.Errorf("%s on %q", name, v.Node)
			}
		}
		return nil
	})
}
