package hypervisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// A live migration's record moves on one phase at a time, each by the node
// whose turn it is; the VM is counted on both nodes while it moves and
// takes no other change; the switchover moves the VM, its volumes'
// attachment and writer (at a new epoch) in one command; before it a
// cancel leaves everything where it was, after it nothing but the target
// can end the migration.
func TestLiveMigrationSteps(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.risOnNode1(t)
	e.host(t, "node2", 2, 4096)
	e.host(t, "tiny", 1, 256)
	if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-1", Node: "node1", Status: VMStatus{State: StateRunning, Accel: "tcg", UpdatedAt: time.Now()}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := EnsureMigrationCA(ctx, e.node); err != nil {
		t.Fatal(err)
	}
	epoch := e.vol("vol-boot").Epoch

	for _, c := range []struct{ what, node, code string }{
		{"to its own node", "node1", consensus.CodeInvalid},
		{"to no such node", "node9", consensus.CodeNotFound},
		{"to a node without room", "tiny", consensus.CodeConflict},
	} {
		if _, err := e.svc.Migrate(ctx, e.admin, "ris", c.node, false, 0); consensus.ErrorCode(err) != c.code {
			t.Errorf("migrate %s: %v, want %s", c.what, err, c.code)
		}
	}
	if _, err := e.svc.Migrate(ctx, e.user, "ris", "node2", false, 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a member migrated a VM: %v", err)
	}
	// A node with another QEMU (or, under KVM, another CPU) cannot take
	// the stream.
	for _, h := range []Host{{Name: "node1", VCPUs: 2, RAMMiB: 4096, Accel: "tcg", Version: "7.2.19"}, {Name: "oldq", VCPUs: 8, RAMMiB: 8192, Accel: "tcg", Version: "6.2.0"}} {
		h.ReportedAt = time.Now()
		if _, err := e.node.Apply(ctx, MsgReportHost, &h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.Migrate(ctx, e.admin, "ris", "oldq", false, 0); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "same QEMU") {
		t.Fatalf("migrate to another QEMU: %v", err)
	}
	if _, err := e.node.Apply(ctx, MsgReportHost, &Host{Name: "oldq", VCPUs: 8, RAMMiB: 8192, Accel: "tcg", Version: "6.2.0", Error: "retired", ReportedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	// A node whose lease is lost takes nothing, named or chosen.
	e.svc.Lost = func(n string) bool { return n == "node2" }
	if _, err := e.svc.Migrate(ctx, e.admin, "ris", "node2", false, 0); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "lost contact") {
		t.Fatalf("migrate to a lost node: %v", err)
	}
	if m, err := e.svc.Migrate(ctx, e.admin, "ris", "", false, 0); err == nil {
		t.Fatalf("placed on %s with node2 lost", m.Migration.Target)
	}
	e.svc.Lost = nil
	m, err := e.svc.Migrate(ctx, e.admin, "ris", "", false, 0)
	if err != nil || m.Migration == nil || m.Migration.Phase != PhasePlanning || m.Migration.Source != "node1" || m.Migration.Target != "node2" || m.Node != "node1" {
		t.Fatalf("start: %+v %v", m, err)
	}
	id := m.Migration.ID
	for _, v := range []string{"vol-boot", "vol-data"} {
		if a := e.vol(v).Attachment; a.Node != "node1" || a.Incoming != "node2" {
			t.Fatalf("%s while moving: %+v", v, a)
		}
	}
	// Counted on node2 too: 3072 MiB there, 512 of them the moving VM's.
	big := &VM{Name: "big", Spec: VMSpec{VCPUs: 1, RAMMiB: 2700}}
	if err := fits(e.node.Store().ReadTxn(), "node2", big); err == nil {
		t.Fatal("node2 takes a VM that fits only without the one moving there")
	}
	// The VM takes no other change while it moves.
	if _, err := e.svc.Do(ctx, e.user, "ris", OpStop, 0); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "moving") {
		t.Fatalf("stop while moving: %v", err)
	}
	if _, err := e.svc.Migrate(ctx, e.admin, "ris", "node2", false, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("a second migration: %v", err)
	}

	step := func(node, phase string) error {
		_, err := e.node.Apply(ctx, MsgMigrationStep, migrationCmd{VM: "vm-1", ID: id, Node: node, Phase: phase, At: time.Now()}, nil)
		return err
	}
	switchOver := func(node string) error {
		_, err := e.node.Apply(ctx, MsgSwitchMigration, migrationCmd{VM: "vm-1", ID: id, Node: node, At: time.Now()}, nil)
		return err
	}
	wantCode(t, "the target plans", step("node2", PhasePreparing), consensus.CodeConflict)
	wantCode(t, "the source skips to switched", step("node1", PhaseSwitched), consensus.CodeConflict)
	wantCode(t, "the source switches before the stream", switchOver("node1"), consensus.CodeConflict)
	wantCode(t, "an unknown phase", step("node1", "done"), consensus.CodeConflict)
	if err := step("node1", PhasePreparing); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "the source says it listens", step("node1", PhaseTransferring), consensus.CodeConflict)
	if err := step("node2", PhaseTransferring); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "the target switches before the source paused", step("node2", PhaseSwitched), consensus.CodeConflict)
	wantCode(t, "the source switches in the older command's one step", step("node1", PhaseSwitched), consensus.CodeConflict)
	wantCode(t, "the target switches in one step", switchOver("node2"), consensus.CodeConflict)
	_, err = e.node.Apply(ctx, MsgEndMigration, endMigrationCmd{VM: "vm-1", ID: id, Node: "node2", At: time.Now()}, nil)
	wantCode(t, "ending well before the switch", err, consensus.CodeConflict)
	// The source, its guest paused and the target's yes in hand, hands
	// the VM over in one command.
	if err := switchOver("node1"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "a second switch", switchOver("node1"), consensus.CodeConflict)
	now, _ := e.svc.VM(e.admin, "ris")
	if now.Node != "node2" || now.Migration == nil || now.Migration.Phase != PhaseSwitched {
		t.Fatalf("after the switch: node %s, %+v", now.Node, now.Migration)
	}
	for _, v := range []string{"vol-boot", "vol-data"} {
		vv := e.vol(v)
		if vv.Attachment.Node != "node2" || vv.Attachment.Incoming != "" || vv.Writer != "node2" || vv.Epoch <= epoch {
			t.Fatalf("%s after the switch: %+v writer %s epoch %d (was %d)", v, vv.Attachment, vv.Writer, vv.Epoch, epoch)
		}
	}
	// Too late to cancel; the source cannot end it either.
	if _, err := e.svc.CancelMigration(ctx, e.admin, "ris"); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "no longer be cancelled") {
		t.Fatalf("cancel after the switch: %v", err)
	}
	_, err = e.node.Apply(ctx, MsgEndMigration, endMigrationCmd{VM: "vm-1", ID: id, Node: "node1", Error: "gave up", At: time.Now()}, nil)
	wantCode(t, "the source ends it after the switch", err, consensus.CodeConflict)
	if _, err := e.node.Apply(ctx, MsgEndMigration, endMigrationCmd{VM: "vm-1", ID: id, Node: "node2", At: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if now, _ = e.svc.VM(e.admin, "ris"); now.Migration != nil || now.Node != "node2" {
		t.Fatalf("after the end: %+v on %s", now.Migration, now.Node)
	}
	if err := fits(e.node.Store().ReadTxn(), "node1", big); err != nil {
		t.Fatalf("node1 still counts the VM that left: %v", err)
	}

	// Back to node1 the older agents' way (two steps: "switching" by the
	// source, "switched" by the target), which a cluster halfway through
	// an upgrade takes.
	back, err := e.svc.Migrate(ctx, e.admin, "ris", "node1", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	id = back.Migration.ID
	for _, s := range []struct{ node, phase string }{{"node2", PhasePreparing}, {"node1", PhaseTransferring}, {"node2", PhaseSwitching}} {
		if err := step(s.node, s.phase); err != nil {
			t.Fatal(s, err)
		}
	}
	wantCode(t, "the source finishes the older switchover", step("node2", PhaseSwitched), consensus.CodeConflict)
	if err := step("node1", PhaseSwitched); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, MsgEndMigration, endMigrationCmd{VM: "vm-1", ID: id, Node: "node1", At: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if now, _ = e.svc.VM(e.admin, "ris"); now.Migration != nil || now.Node != "node1" || e.vol("vol-boot").Writer != "node1" {
		t.Fatalf("after the older switchover: %+v on %s", now.Migration, now.Node)
	}

	// To node2 again, allowed to go post-copy (its own command), and
	// cancelled before the switch: all as it was.
	back, err = e.svc.Migrate(ctx, e.admin, "ris", "node2", true, 0)
	if err != nil || !back.Migration.PostCopy {
		t.Fatalf("a post-copy migration: %+v, %v", back, err)
	}
	if _, err := e.svc.CancelMigration(ctx, e.user, "ris"); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member cancelled: %v", err)
	}
	if _, err := e.svc.CancelMigration(ctx, e.admin, "ris"); err != nil {
		t.Fatal(err)
	}
	now, _ = e.svc.VM(e.admin, "ris")
	if now.Migration != nil || now.Node != "node1" || e.vol("vol-boot").Attachment.Incoming != "" {
		t.Fatalf("after a cancel: %+v on %s, boot volume %+v", now.Migration, now.Node, e.vol("vol-boot").Attachment)
	}
	wantCode(t, "a step of the cancelled migration", func() error {
		_, err := e.node.Apply(ctx, MsgMigrationStep, migrationCmd{VM: "vm-1", ID: back.Migration.ID, Node: "node1", Phase: PhasePreparing, At: time.Now()}, nil)
		return err
	}(), consensus.CodeConflict)
	evs, _ := e.svc.Events(e.admin, "ris")
	var msgs []string
	for _, ev := range evs {
		if ev.Kind == "migrate" {
			msgs = append(msgs, ev.Message)
		}
	}
	want := []string{"live migration from node1 to node2 started", "switched over from node1 to node2", "moved live from node1 to node2",
		"live migration from node2 to node1 started", "switched over from node2 to node1", "moved live from node2 to node1",
		"live migration from node1 to node2 started, allowed to go post-copy", "live migration to node2 cancelled"}
	if len(msgs) != len(want) {
		t.Fatalf("history %q, want %q", msgs, want)
	}
	for i := range want {
		if !strings.HasPrefix(msgs[i], want[i]) {
			t.Fatalf("history %q, want %q", msgs, want)
		}
	}
	// The cancel's reason keeps its format, for pages in another language.
	last := evs[len(evs)-1]
	for _, ev := range evs {
		if ev.Kind == "migrate" {
			last = ev
		}
	}
	if last.Key != "migration_cancel" || len(last.Inner) != 2 || last.Inner[1] == nil || last.Inner[1].Format != "cancelled by %s" {
		t.Fatalf("the cancel's line: %+v", last)
	}

	// What cannot move live says why.
	for _, spec := range []VMSpec{
		{VCPUs: 1, RAMMiB: 256, DiskGiB: 1, Image: e.image.ID},
		{VCPUs: 1, RAMMiB: 256, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-x", Firmware: "uefi"},
	} {
		v := &VM{Name: "x", Node: "node1", Desired: DesiredRunning, Status: VMStatus{State: StateRunning}, Spec: spec}
		if err := liveMovable(e.node.Store().ReadTxn(), v); consensus.ErrorCode(err) != consensus.CodeConflict {
			t.Errorf("liveMovable(%+v): %v", spec, err)
		}
	}
	pending := &VM{Name: "x", Node: "node1", Desired: DesiredRunning, Status: VMStatus{State: StateRunning, Pending: "256 MiB at the next start"},
		Spec: VMSpec{BootVolume: "vol-x"}}
	if err := liveMovable(e.node.Store().ReadTxn(), pending); err == nil || !strings.Contains(err.Error(), "next start") {
		t.Errorf("liveMovable with a pending change: %v", err)
	}
}
