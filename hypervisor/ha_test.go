package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/volume"
)

// testClock is a monotonic clock a test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// leaseWatch is a Leases driven by hand: renew renews nodes' leases in
// the state, look lets the watcher see the state after d has passed.
type leaseWatch struct {
	*Leases
	clock *testClock
	node  *consensus.Node
}

func newLeaseWatch(t *testing.T, node *consensus.Node) *leaseWatch {
	clock := &testClock{now: time.Unix(1000, 0)}
	l := NewLeases(node, DefaultHATiming)
	l.now = clock.Now
	return &leaseWatch{Leases: l, clock: clock, node: node}
}

func (w *leaseWatch) renew(t *testing.T, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		if _, err := w.node.Apply(context.Background(), MsgRenewLease, renewLeaseCmd{Node: n, At: time.Now().UTC()}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func (w *leaseWatch) look(t *testing.T, d time.Duration) {
	t.Helper()
	w.clock.Add(d)
	it, err := w.node.Store().ReadTxn().Get(tLeases, "id")
	if err != nil {
		t.Fatal(err)
	}
	w.observe(allLeases(it))
}

// A lease is lost after Lease of counted silence and not before; silence
// is counted only while some other node's lease is renewed, so a cluster
// whose log stands still (a stalled leader, a slow disk) loses nobody; a
// renewal ends the silence.
func TestLeasesLostOnlyWhileTheLogMoves(t *testing.T) {
	e := newComputeEnv(t)
	w := newLeaseWatch(t, e.node)
	step := DefaultHATiming.Renew
	w.renew(t, "node1", "node2", "node3")
	w.look(t, 0)
	// Nothing is renewed at all for far longer than a lease: nobody is
	// lost, the log is what stopped (the first moments count: nobody can
	// tell a stall from a pause between renewals).
	for range 30 {
		w.look(t, step)
	}
	for _, n := range []string{"node1", "node2", "node3"} {
		if _, lost := w.Lost(n); lost {
			t.Fatalf("%s lost while no lease was renewed at all", n)
		}
	}
	// node3 falls silent while the others renew.
	w.renew(t, "node1", "node2", "node3")
	w.look(t, 0)
	for i := time.Duration(1); ; i++ {
		w.renew(t, "node1", "node2")
		w.look(t, step)
		_, lost := w.Lost("node3")
		if i*step < DefaultHATiming.Lease && lost {
			t.Fatalf("node3 lost after %s of silence, before its lease of %s", i*step, DefaultHATiming.Lease)
		}
		if lost {
			break
		}
		if i > 20 {
			t.Fatal("node3 never lost")
		}
	}
	if l := w.lostNodes(); len(l) != 1 || l[0] != "node3" {
		t.Fatalf("lost: %v, want node3 alone", l)
	}
	w.renew(t, "node3")
	w.look(t, step)
	if _, lost := w.Lost("node3"); lost {
		t.Fatal("node3 still lost after renewing")
	}
}

// The leader restarts a lost node's HA VMs elsewhere, highest priority
// first where room is short (xray, whose name sorts after ris's): each on a node with room, its volume handed
// to that node at a new writer epoch and its ports with it, the history
// saying what happened. A VM that cannot move (local disk, HA off, no
// room) stays and its history says why, once. A judgement of a lease
// renewed since is refused.
func TestFailoverRestartsHAVMsElsewhere(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node3", 8, 16384)
	vms := map[string]VMSpec{
		"xray":  {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-xray", HAPriority: 10},
		"ris":   {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-ris"},
		"off":   {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-off", HAOff: true},
		"local": {VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID},
	}
	e.placeVMs(t, "node3", vms)
	for name := range vms {
		if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-" + name, Node: "node3", Status: VMStatus{State: StateRunning}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Writers on node3, as its volume server would have taken them.
	for _, id := range []string{"vol-xray", "vol-ris", "vol-off"} {
		e.acquireWriter(t, id, "node3")
	}
	xrayEpoch := e.vol("vol-xray").Epoch
	if v, _ := e.svc.VM(e.admin, "xray"); v.HA != "on" {
		t.Fatalf("xray's HA reads %q", v.HA)
	}
	if v, _ := e.svc.VM(e.admin, "local"); !strings.HasPrefix(v.HA, "unavailable: ") {
		t.Fatalf("local's HA reads %q", v.HA)
	}
	// Room for one VM on node1 (1 GiB is kept for the host), none on node2.
	e.host(t, "node1", 2, 1536)
	e.host(t, "node2", 2, 1024)

	w := newLeaseWatch(t, e.node)
	w.renew(t, "node1", "node2", "node3")
	w.look(t, 0)
	for range 10 {
		w.renew(t, "node1", "node2")
		w.look(t, time.Second)
	}
	lease, lost := w.Lost("node3")
	if !lost {
		t.Fatal("node3 not lost")
	}
	f := NewFailover(e.node, w.Leases, slog.Default())
	f.failover(ctx, "node3")

	txn := e.node.Store().ReadTxn()
	xray := getVM(txn, "vm-xray")
	if xray.Node != "node1" || xray.Status.State != StateBuilding {
		t.Fatalf("xray: on %q, %s; want restarted on node1", xray.Node, xray.Status.State)
	}
	if v := e.vol("vol-xray"); v.Attachment.Node != "node1" || v.Writer != "node1" || v.Epoch != xrayEpoch+1 {
		t.Fatalf("xray's volume: attached on %q, writer %q at epoch %d (was %d)", v.Attachment.Node, v.Writer, v.Epoch, xrayEpoch)
	}
	for _, nic := range xray.NICs {
		if p := netfabric.GetPort(txn, nic.ID); p == nil || p.Node != "node1" {
			t.Fatalf("xray's port %s is not bound to node1: %+v", nic.ID, p)
		}
	}
	for _, name := range []string{"ris", "off", "local"} {
		if v := getVM(txn, "vm-"+name); v.Node != "node3" {
			t.Fatalf("%s moved to %s", name, v.Node)
		}
	}
	if v := e.vol("vol-ris"); v.Writer != "node3" {
		t.Fatalf("ris's volume changed writer to %s", v.Writer)
	}
	lastEvent := func(name string) Event {
		t.Helper()
		evs, err := e.svc.Events(e.admin, name)
		if err != nil || len(evs) == 0 {
			t.Fatalf("%s's history: %v %v", name, evs, err)
		}
		return evs[len(evs)-1]
	}
	ev := lastEvent("xray")
	from, at, to, why, ok := FailoverParts(ev.Message)
	if ev.Kind != "failover" || !ok || from != "node3" || to != "node1" || why != "" || !at.Equal(lease.At.Truncate(time.Second)) {
		t.Fatalf("xray's history ends with %+v (parts %q %v %q %q %v)", ev, from, at, to, why, ok)
	}
	for name, why := range map[string]string{"ris": "no node has", "off": "switched off", "local": "local disks"} {
		ev := lastEvent(name)
		from, _, to, said, ok := FailoverParts(ev.Message)
		if ev.Kind != "failover" || !ok || from != "node3" || to != "" || !strings.Contains(said, why) {
			t.Fatalf("%s's history ends with %+v, want why (%s)", name, ev, why)
		}
	}
	// Said once per lost lease, however often the controller looks.
	before, _ := e.svc.Events(e.admin, "ris")
	f.failover(ctx, "node3")
	if after, _ := e.svc.Events(e.admin, "ris"); len(after) != len(before) {
		t.Fatalf("ris's history grew from %d to %d lines on a second look", len(before), len(after))
	}

	// node2 gets room: ris follows there.
	e.host(t, "node2", 2, 4096)
	f.failover(ctx, "node3")
	if v := getVM(e.node.Store().ReadTxn(), "vm-ris"); v.Node != "node2" {
		t.Fatalf("ris on %s, want node2", v.Node)
	}

	// A judgement made before node3 renewed is refused.
	w.renew(t, "node3")
	cmd := failoverCmd{ID: "vm-off", From: "node3", To: "node2", Lease: lease.Index, At: time.Now().UTC()}
	if _, err := e.node.Apply(ctx, MsgFailoverVM, cmd, nil); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "renewed") {
		t.Fatalf("failover on a stale judgement: %v", err)
	}
}

// acquireWriter makes node the volume's writer at a new epoch, as its
// volume server does when it opens the volume.
func (e *computeEnv) acquireWriter(t *testing.T, volumeID, node string) {
	t.Helper()
	if _, err := e.node.Apply(context.Background(), volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: volumeID, Node: node}, nil); err != nil {
		t.Fatal(err)
	}
}

// fakeWatchdog counts pets.
type fakeWatchdog struct{ pets atomic.Int64 }

func (w *fakeWatchdog) Pet() error { w.pets.Add(1); return nil }

// renewals is the cluster as a node's agent reaches it, with lease
// renewals that fail while cut is set (the node cut off from the leader).
type renewals struct {
	Cluster
	cut atomic.Bool
}

func (r *renewals) Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error) {
	if t == MsgRenewLease && r.cut.Load() {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return r.Cluster.Apply(ctx, t, cmd, out)
}

// A node that cannot renew its lease kills its HA VMs' QEMUs (real ones)
// once it has not renewed for Fence, leaves a VM that is not HA running,
// starts no HA VM while it cannot renew, and keeps petting its watchdog
// as long as it is alive and has fenced what it must. Alone in its
// cluster, it kills nothing: nobody would restart them.
func TestSelfFenceKillsHAVMs(t *testing.T) {
	e := newComputeEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ward := e.image.ProjectID
	e.host(t, "node1", 8, 16384)
	e.volumeRecord(t, "vol-ha", ward, nil)
	for name, spec := range map[string]VMSpec{
		"ha":    {VCPUs: 1, RAMMiB: 128, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-ha"},
		"local": {VCPUs: 1, RAMMiB: 128, DiskGiB: 1, Image: e.image.ID},
	} {
		vm := VM{ID: "vm-" + name, Name: name, ProjectID: ward, Desired: DesiredRunning, CreatedAt: time.Now().UTC(), Spec: spec}
		if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm, BootVolumeOwned: spec.BootVolume != ""}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Two VMs that moved live from node1 to node2 and whose streams this
	// node still sends: a post-copy one, whose guest on node2 may still
	// need memory only this node's QEMU has (and which cannot write), and
	// a pre-copy one.
	q, err := e.id.GetQuota(e.admin, "ward")
	if err != nil {
		t.Fatal(err)
	}
	q.Limits.Instances, q.Limits.VCPUs = 10, 10
	if _, err := e.id.SetQuota(ctx, e.admin, "ward", q.Limits, 0); err != nil {
		t.Fatal(err)
	}
	for name, postCopy := range map[string]bool{"pc": true, "pre": false} {
		vm := VM{ID: "vm-" + name, Name: name, ProjectID: ward, Desired: DesiredRunning, CreatedAt: time.Now().UTC(), Node: "node2",
			Spec:      VMSpec{VCPUs: 1, RAMMiB: 128, DiskGiB: 1, Image: e.image.ID},
			Migration: &Migration{ID: "mig-" + name, Source: "node1", Target: "node2", Phase: PhaseSwitched, PostCopy: postCopy}}
		if postCopy {
			vm.Migration.Progress.PostCopyAt = time.Now().UTC()
		}
		if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm}, nil); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		for _, id := range []string{"vm-ha", "vm-local"} {
			if getVM(e.node.Store().ReadTxn(), id).Node != "node1" {
				return fmt.Errorf("%s not placed", id)
			}
		}
		return nil
	})
	drv := testDriver(t, "fence")
	for _, id := range []string{"vm-ha", "vm-local", "vm-pc", "vm-pre"} {
		inst, err := drv.Start(ctx, qemu.Machine{Name: id, VCPUs: 1, MemoryMiB: 64, Accel: "tcg"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = inst.Kill(context.Background()) })
	}
	timing := HATiming{Renew: 100 * time.Millisecond, Fence: 600 * time.Millisecond, Lease: 1200 * time.Millisecond}
	c := &renewals{Cluster: e.node}
	wd := &fakeWatchdog{}
	n := NewNodeAgent(c, NodeConfig{Name: "node1", Driver: drv, HA: timing, Watchdog: wd,
		Logger: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))})
	go n.KeepLease(ctx)
	testutil.WaitFor(t, 5*time.Second, "the first renewal", func() error {
		if GetLease(e.node.Store().ReadTxn(), "node1") == nil {
			return fmt.Errorf("no lease yet")
		}
		return nil
	})

	// Alone: cut off for several fence times, nothing is killed.
	c.cut.Store(true)
	time.Sleep(3 * timing.Fence)
	if !drv.Running("vm-ha") || !drv.Running("vm-local") {
		t.Fatal("a node alone in its cluster killed its VMs")
	}
	c.cut.Store(false)
	idx := GetLease(e.node.Store().ReadTxn(), "node1").Index
	testutil.WaitFor(t, 5*time.Second, "renewed", func() error {
		if GetLease(e.node.Store().ReadTxn(), "node1").Index == idx {
			return fmt.Errorf("not renewed yet")
		}
		return nil
	})

	// With another node that could restart them (one that reported as a
	// host of VMs, before it ever held a lease): the HA VM dies, within
	// Fence of the last renewal and before Lease.
	e.host(t, "node2", 8, 16384)
	time.Sleep(2 * timing.Renew)
	c.cut.Store(true)
	cutAt := time.Now()
	pets := wd.pets.Load()
	testutil.WaitFor(t, 10*time.Second, "the HA VM killed", func() error {
		if drv.Running("vm-ha") {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if took := time.Since(cutAt); took >= timing.Lease {
		t.Fatalf("the HA VM died %s after the cut, after its lease (%s) could be lost", took, timing.Lease)
	}
	if !drv.Running("vm-local") {
		t.Fatal("the VM that is not HA was killed too")
	}
	if !drv.Running("vm-pc") {
		t.Fatal("the source of a post-copy migration was killed: its guest on the target loses the memory not sent yet")
	}
	if drv.Running("vm-pre") {
		t.Fatal("the source of a pre-copy migration that switched away was spared")
	}
	if !n.fenced() {
		t.Fatal("not fenced")
	}
	if err := n.fencedStart(getVM(e.node.Store().ReadTxn(), "vm-ha")); err == nil {
		t.Fatal("an HA VM may start on a fenced node")
	}
	if err := n.fencedStart(getVM(e.node.Store().ReadTxn(), "vm-local")); err != nil {
		t.Fatalf("the VM that is not HA may not start: %v", err)
	}
	time.Sleep(3 * timing.Renew)
	if wd.pets.Load() <= pets {
		t.Fatal("the watchdog went unpetted by a live agent that has fenced")
	}
	// Back in touch: HA VMs may start again.
	c.cut.Store(false)
	testutil.WaitFor(t, 5*time.Second, "renewed", func() error {
		if n.fenced() {
			return fmt.Errorf("still fenced")
		}
		return nil
	})
}

// A VM's owner switches its HA off and on; only a cluster admin sets a
// restart priority, within bounds; each change is in the history and
// nothing changes on a refusal.
func TestSetHA(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node1", 8, 16384)
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "ris", Image: "guest", Flavor: "small", HAPriority: 5})
	if consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member's VM with a priority: %v", err)
	}
	if vm, err = e.svc.CreateVM(ctx, e.user, VMCreate{Name: "ris", Image: "guest", Flavor: "small"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetHA(ctx, e.user, "ris", new(true), nil, 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.svc.VM(e.user, "ris"); !v.Spec.HAOff || !strings.HasPrefix(v.HA, "unavailable: ") {
		t.Fatalf("after switching off: %+v, %q (its disk is local: HA is not possible either way)", v.Spec, v.HA)
	}
	for _, prio := range []int{10, 0} {
		if _, err := e.svc.SetHA(ctx, e.user, "ris", nil, new(prio), 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
			t.Fatalf("a member's priority %d: %v", prio, err)
		}
	}
	if _, err := e.svc.SetHA(ctx, e.admin, "ris", nil, new(101), 0); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("priority 101: %v", err)
	}
	if _, err := e.svc.SetHA(ctx, e.admin, "ris", new(false), new(-7), 0); err != nil {
		t.Fatal(err)
	}
	v, _ := e.svc.VM(e.admin, "ris")
	if v.Spec.HAOff || v.Spec.HAPriority != -7 {
		t.Fatalf("after the admin's change: %+v", v.Spec)
	}
	evs, _ := e.svc.Events(e.admin, vm.ID)
	if last := evs[len(evs)-1]; last.Kind != "ha" || last.Message != "high availability on, restart priority -7" {
		t.Fatalf("history ends with %+v", last)
	}
}

// A guest that powers itself off while its node is fenced stays off: the
// node says so once it reaches the cluster again, instead of booting it
// afresh (the guest's own shutdown is not a crash, nor the fence's kill).
func TestGuestPowerOffWhileFenced(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node1", 8, 16384)
	e.volumeRecord(t, "vol-ha", e.image.ProjectID, nil)
	vm := VM{ID: "vm-ha", Name: "ha", ProjectID: e.image.ProjectID, Desired: DesiredRunning, CreatedAt: time.Now().UTC(),
		Spec: VMSpec{VCPUs: 1, RAMMiB: 128, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-ha"}}
	if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: vm, BootVolumeOwned: true}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		if getVM(e.node.Store().ReadTxn(), vm.ID).Node != "node1" {
			return fmt.Errorf("not placed")
		}
		return nil
	})
	if err := Protected(e.node.Store().ReadTxn(), getVM(e.node.Store().ReadTxn(), vm.ID)); err != nil {
		t.Fatalf("not an HA VM: %v", err)
	}
	drv := testDriver(t, "poweroff")
	inst, err := drv.Start(ctx, qemu.Machine{Name: vm.ID, VCPUs: 1, MemoryMiB: 64, Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Kill(context.Background()) })
	n := NewNodeAgent(e.node, NodeConfig{Name: "node1", Driver: drv, Logger: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))})
	w := newWorker(n, vm.ID)
	w.adopt(inst)
	// Fenced, the guest powers off: QEMU says SHUTDOWN with guest=true
	// (what a guest's ACPI power-off gives; this QEMU has no guest to do
	// it) and exits.
	n.isFenced.Store(true)
	close(w.guestShutdown)
	if err := inst.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	<-inst.Exited()
	w.exited(ctx)
	if v := getVM(e.node.Store().ReadTxn(), vm.ID); v.Desired != DesiredRunning {
		t.Fatalf("a fenced node changed the VM: %s", v.Desired)
	}
	// Back in touch: the VM is recorded stopped by its guest, not booted.
	n.isFenced.Store(false)
	if _, err := w.reconcile(ctx, getVM(e.node.Store().ReadTxn(), vm.ID)); err != nil {
		t.Fatal(err)
	}
	v := getVM(e.node.Store().ReadTxn(), vm.ID)
	if v.Desired != DesiredStopped || v.Status.State != StateStopped || drv.Running(vm.ID) {
		t.Fatalf("after the node came back: desired %s, %s, QEMU running %v", v.Desired, v.Status.State, drv.Running(vm.ID))
	}
	evs, _ := e.svc.Events(e.admin, vm.ID)
	if !slices.ContainsFunc(evs, func(ev Event) bool { return ev.Message == "the guest shut itself down" }) {
		t.Fatalf("history: %+v", evs)
	}
}
