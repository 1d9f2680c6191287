package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/volume"
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
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{}); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "no other node") {
		t.Fatalf("drain the only node: %v", err)
	}
	e.host(t, "node2", 2, 2048) // 1024 MiB for VMs after the reserve
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{}); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "no room for") {
		t.Fatalf("drain onto a small node: %v", err)
	}
	e.svc.Quorum = func(string) error { return fmt.Errorf("without it 1 of 3 voting nodes would be up") }
	e.host(t, "node2", 8, 16384)
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{}); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "voting nodes") {
		t.Fatalf("drain without quorum after: %v", err)
	}
	if _, err := e.svc.DrainNode(ctx, e.user, "node1", DrainOptions{}); consensus.ErrorCode(err) != consensus.CodeForbidden {
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
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{}); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "no room for") {
		t.Fatalf("drain onto a small node beside a lost one: %v", err)
	}
	e.host(t, "node2", 8, 16384)
	c, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{Restart: true})
	if err != nil || c.Drain == nil || c.Drain.State != DrainDraining || !c.Drain.Restart {
		t.Fatalf("drain: %+v %v", c, err)
	}
	if _, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{Restart: true}); consensus.ErrorCode(err) != consensus.CodeConflict {
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
	if dr.Moved != 2 || dr.Restarted != 2 || !strings.Contains(dr.Message, "local stays: it has local disks (drain with consent to convert disks") || !strings.Contains(dr.Message, "vol-live") {
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
	// The ungated drain command (what older nodes know) never carries
	// consent to convert disks: only MsgDrainNodeConvert does.
	if _, err := e.node.Apply(ctx, MsgDrainNode, drainCmd{ID: "drain-old", Node: "node1", Convert: true, By: "admin", At: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if c := cordonOf(e.node.Store().ReadTxn(), "node1"); c == nil || c.Drain == nil || c.Drain.Convert {
		t.Fatalf("a MsgDrainNode gave consent to convert disks: %+v", c)
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
	c, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{})
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

// fakeDisks converts disks for the drainer as the compute service does
// (a volume record made from the VM's disk, then MsgConvertDisk), with
// refusals and failures set per VM name.
type fakeDisks struct {
	e       *computeEnv
	mu      sync.Mutex
	refuse  map[string]error // the pre-flight's answer
	fail    map[string]error // the convert's, once
	applied map[string]bool  // a failed convert that went through anyway
	calls   map[string]int
}

func (f *fakeDisks) CanConvertDisk(txn *memdb.Txn, vm *VM) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refuse[vm.Name]
}

func (f *fakeDisks) ConvertDiskForDrain(ctx context.Context, vmID string, ifMatch uint64, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vm := getVM(f.e.node.Store().ReadTxn(), vmID)
	f.calls[vm.Name]++
	err, failing := f.fail[vm.Name]
	delete(f.fail, vm.Name)
	if failing && !f.applied[vm.Name] {
		return err
	}
	id := fmt.Sprintf("vol-%s-%d", vm.Name, f.calls[vm.Name])
	v := volume.Volume{ID: id, Name: id, ProjectID: vm.ProjectID, SizeBytes: volume.GiB, Source: &volume.Source{VMDisk: vmID}, CreatedAt: time.Now().UTC(),
		Replicas: []volume.Replica{{ID: id + "-r0", Node: "node2", Disk: "d1"}}}
	if _, err := f.e.node.Apply(ctx, volume.MsgCreateVolume, map[string]any{"volume": v}, nil); err != nil {
		return err
	}
	if _, err := f.e.node.Apply(ctx, volume.MsgSetVolumeState, map[string]any{"id": id, "state": volume.StateAvailable}, nil); err != nil {
		return err
	}
	if _, cerr := f.e.node.Apply(ctx, MsgConvertDisk, convertDiskCmd{VM: vmID, Volume: id, IfMatch: ifMatch, User: by, At: time.Now()}, nil); cerr != nil || !failing {
		return cerr
	}
	return err
}

// With the admin's consent to convert disks, a drain takes VMs with a
// local boot disk away too: a running one is stopped, its disk converted
// onto a volume, and once its node has filled the volume it is moved and
// started again; a stopped one is converted and moved, and stays stopped.
// Refused conversions (no room in the quota, a refused command) leave the
// VM where it was, running, and a stopped one whose volume cannot be made
// stays stopped; an unknown outcome is looked at again and makes no
// second volume; a VM with local data disks stays.
func TestDrainConvertsLocalDisks(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node1", 8, 16384)
	spec := VMSpec{VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID}
	data := spec
	data.DataDisks = []DataDisk{{SizeGiB: 1}}
	e.placeVMs(t, "node1", map[string]VMSpec{"disk-data": data, "disk-nodisk": spec, "disk-off": spec, "disk-quota": spec, "disk-refused": spec, "disk-run": spec, "disk-unknown": spec})
	get := func(name string) *VM {
		t.Helper()
		v, err := e.svc.VM(e.admin, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, n := range []string{"disk-off", "disk-nodisk"} {
		if _, err := e.svc.Do(ctx, e.admin, n, OpStop, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The nodes' agents: each VM soon is as its owner wants it.
	actx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for actx.Err() == nil {
			for _, vm := range onNode(e.node.Store().ReadTxn(), "node1") {
				e.reportAs(vm)
			}
			for _, vm := range onNode(e.node.Store().ReadTxn(), "node2") {
				e.reportAs(vm)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	testutil.WaitFor(t, 5*time.Second, "the VMs running, disk-off stopped", func() error {
		for _, n := range []string{"disk-data", "disk-quota", "disk-refused", "disk-run", "disk-unknown"} {
			if s := get(n).Status.State; s != StateRunning {
				return fmt.Errorf("%s %s", n, s)
			}
		}
		for _, n := range []string{"disk-off", "disk-nodisk"} {
			if s := get(n).Status.State; s != StateStopped {
				return fmt.Errorf("%s %s", n, s)
			}
		}
		return nil
	})
	e.host(t, "node2", 8, 16384)
	quotaRefusal := consensus.Errorm(consensus.CodeQuotaExceeded, "quota_exceeded", "quota exceeded for volume_gib in project ward: limit 1, in use 1, requested 1")
	disks := &fakeDisks{e: e, calls: map[string]int{},
		refuse:  map[string]error{"disk-quota": quotaRefusal, "disk-nodisk": errNoVolumeDisk},
		fail:    map[string]error{"disk-refused": consensus.Errorf(consensus.CodeConflict, "volume disk-refused-boot exists"), "disk-unknown": errors.New("leadership lost while committing log")},
		applied: map[string]bool{"disk-unknown": true}}
	before := map[string]uint64{"disk-quota": get("disk-quota").Version, "disk-data": get("disk-data").Version, "disk-nodisk": get("disk-nodisk").Version}

	c, err := e.svc.DrainNode(ctx, e.admin, "node1", DrainOptions{Convert: true})
	if err != nil || !c.Drain.Convert || c.Drain.Restart {
		t.Fatalf("drain: %+v %v", c, err)
	}
	// A step never gives consent the admin did not give, nor takes it.
	if _, err := e.node.Apply(ctx, MsgDrainStep, drainStepCmd{Node: "node1", Drain: Drain{ID: c.Drain.ID, State: DrainDraining}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := cordonOf(e.node.Store().ReadTxn(), "node1"); !got.Drain.Convert {
		t.Fatal("a drain step took the consent to convert disks back")
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := NewDrainer(e.node, slog.New(slog.DiscardHandler))
	d.Disks = disks
	go d.Run(dctx)

	// Each converted VM waits on node1 until its node has filled the
	// volume from the local disk, which only node1 can copy.
	fill := func(name string) {
		t.Helper()
		var vol string
		testutil.WaitFor(t, 10*time.Second, name+" converted", func() error {
			if vol = get(name).Spec.BootVolume; vol == "" {
				return fmt.Errorf("%s boots from its local disk, %s", name, get(name).Status.State)
			}
			return nil
		})
		if vm := get(name); vm.Node != "node1" || vm.Status.State != StateStopped {
			t.Fatalf("%s converted while %s on %s", name, vm.Status.State, vm.Node)
		}
		time.Sleep(300 * time.Millisecond)
		if vm := get(name); vm.Node != "node1" {
			t.Fatalf("%s moved to %s before its volume was filled", name, vm.Node)
		}
		if _, err := e.node.Apply(ctx, volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: vol, Node: "node1"}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.node.Apply(ctx, volume.MsgSourceFilled, &volume.SourceFilled{Volume: vol, Node: "node1", Epoch: e.vol(vol).Epoch}, nil); err != nil {
			t.Fatal(err)
		}
	}
	fill("disk-off")
	fill("disk-run")
	fill("disk-unknown")
	var dr *Drain
	testutil.WaitFor(t, 10*time.Second, "the drain done", func() error {
		c := cordonOf(e.node.Store().ReadTxn(), "node1")
		if c == nil || c.Drain == nil || c.Drain.State != DrainDone {
			return fmt.Errorf("%+v", c.Drain)
		}
		dr = c.Drain
		return nil
	})
	if dr.Converted != 3 || dr.Restarted != 2 || dr.Moved != 1 {
		t.Fatalf("drain: %+v", dr)
	}
	for _, want := range []string{"disk-data stays: it has local data disks, which cannot leave its node", "disk-nodisk stays: its local disk cannot move onto a volume: no node has a disk for a volume", "disk-quota stays: its local disk cannot move onto a volume: quota exceeded", "disk-refused stays: its local disk cannot move onto a volume: volume disk-refused-boot exists"} {
		if !strings.Contains(dr.Message, want) {
			t.Fatalf("drain message %q, want %q", dr.Message, want)
		}
	}
	for name, desired := range map[string]string{"disk-off": DesiredStopped, "disk-run": DesiredRunning, "disk-unknown": DesiredRunning} {
		if vm := get(name); vm.Node != "node2" || vm.Desired != desired || !e.vol(vm.Spec.BootVolume).Source.Filled {
			t.Fatalf("%s: %s on %s, volume %+v", name, vm.Desired, vm.Node, e.vol(vm.Spec.BootVolume))
		}
	}
	// The unknown outcome was looked at, not tried again: one volume.
	if disks.calls["disk-unknown"] != 1 || disks.calls["disk-refused"] != 1 || disks.calls["disk-quota"] != 0 || disks.calls["disk-nodisk"] != 0 {
		t.Fatalf("convert calls %v", disks.calls)
	}
	// Refused before anything changed, or started again where it was.
	for name, desired := range map[string]string{"disk-quota": DesiredRunning, "disk-data": DesiredRunning, "disk-nodisk": DesiredStopped} {
		if vm := get(name); vm.Version != before[name] || vm.Node != "node1" || vm.Desired != desired {
			t.Fatalf("%s changed: %s on %s, version %d (was %d)", name, vm.Desired, vm.Node, vm.Version, before[name])
		}
	}
	if vm := get("disk-refused"); vm.Node != "node1" || vm.Desired != DesiredRunning || vm.Spec.BootVolume != "" {
		t.Fatalf("disk-refused: %s on %s, boot volume %q", vm.Desired, vm.Node, vm.Spec.BootVolume)
	}
}

// reportAs reports vm in the state its owner wants, as its node would.
func (e *computeEnv) reportAs(vm *VM) {
	if vm.Status.State == vm.Desired || vm.Desired != DesiredRunning && vm.Desired != DesiredStopped {
		return
	}
	st := VMStatus{State: vm.Desired, Accel: "tcg", UpdatedAt: time.Now()}
	_, _ = e.node.Apply(context.Background(), MsgReportVM, reportVMCmd{ID: vm.ID, Node: vm.Node, Status: st}, nil)
}
