package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// The capacity is the nodes' after the ratios, less what their VMs take;
// losing a node is played as the HA controller would meet it: protected
// VMs restart where they fit, the biggest first, VMs with local disks
// stay down, and the verdict says why the cluster is not N+1.
func TestCapacityAndHeadroom(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node1", 2, 4096) // 8 vCPUs, 3072 MiB after the 1 GiB reserve
	e.placeVMs(t, "node1", map[string]VMSpec{
		"big":   {VCPUs: 2, RAMMiB: 1024, BootVolume: "vol-big", Firmware: "bios", Image: e.image.ID},
		"small": {VCPUs: 1, RAMMiB: 512, BootVolume: "vol-small", Firmware: "bios", Image: e.image.ID},
		"local": {VCPUs: 1, RAMMiB: 256, DiskGiB: 1, Firmware: "bios", Image: e.image.ID},
		"off":   {VCPUs: 1, RAMMiB: 256, BootVolume: "vol-off", HAOff: true, Firmware: "bios", Image: e.image.ID},
	})
	e.host(t, "node2", 2, 2048) // 1024 MiB for VMs: room for big only

	if _, err := e.svc.Capacity(ctx, e.user, CapacitySources{}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a project member saw the cluster's capacity: %v", err)
	}
	c, err := e.svc.Capacity(ctx, e.admin, CapacitySources{})
	if err != nil {
		t.Fatal(err)
	}
	if c.CPURatio != 4 || c.RAMRatio != 1 || c.VCPUs != 16 || c.RAMMiB != 3072+1024 || c.UsedVCPUs != 5 || c.UsedRAMMiB != 2048 {
		t.Fatalf("cluster: %+v", c)
	}
	n1 := c.Nodes[0]
	if len(c.Nodes) != 2 || n1.Node != "node1" || n1.VCPUs != 8 || n1.RAMMiB != 3072 || n1.UsedVCPUs != 5 || n1.UsedRAMMiB != 2048 || n1.VMs != 4 || !n1.Available {
		t.Fatalf("nodes: %+v", c.Nodes)
	}
	l1 := c.IfLost[0]
	if strings.Join(l1.Restarted, ",") != "big" || strings.Join(l1.NoRoom, ",") != "small" ||
		strings.Join(l1.Stay, ",") != "local" || strings.Join(l1.HAOff, ",") != "off" {
		t.Fatalf("losing node1: %+v", l1)
	}
	if l2 := c.IfLost[1]; l2.Node != "node2" || len(l2.Restarted)+len(l2.NoRoom)+len(l2.Stay) != 0 {
		t.Fatalf("losing node2: %+v", l2)
	}
	if c.NPlusOne || kinds(c) != "no_room:node1:small stay_down:node1:local" {
		t.Fatalf("verdict: %v %s", c.NPlusOne, kinds(c))
	}

	// More memory on node2, and the VM with a local disk shut down: the
	// cluster can lose either node.
	e.host(t, "node2", 2, 4096)
	if _, err := e.svc.Do(ctx, e.admin, "local", OpStop, 0); err != nil {
		t.Fatal(err)
	}
	if c, err = e.svc.Capacity(ctx, e.admin, CapacitySources{}); err != nil {
		t.Fatal(err)
	}
	if !c.NPlusOne || len(c.Reasons) != 0 || strings.Join(c.IfLost[0].Restarted, ",") != "big,small" {
		t.Fatalf("after making room: %v %s %+v", c.NPlusOne, kinds(c), c.IfLost[0])
	}

	// Losing node2 would cost the control plane its quorum: not N+1,
	// whatever the room.
	e.svc.Quorum = func(without string) error {
		if without == "node2" {
			return errors.New("2 of 3 voters would be left, 2 are reachable")
		}
		return nil
	}
	if c, err = e.svc.Capacity(ctx, e.admin, CapacitySources{}); err != nil {
		t.Fatal(err)
	}
	if c.NPlusOne || kinds(c) != "quorum:node2:" {
		t.Fatalf("with node2 holding the quorum: %v %s", c.NPlusOne, kinds(c))
	}
	e.svc.Quorum = nil

	// A node that stopped reporting offers nothing, and one node alone is
	// never N+1.
	old := time.Now().Add(-time.Hour)
	if _, err := e.node.Apply(ctx, MsgReportHost, &Host{Name: "node2", VCPUs: 2, RAMMiB: 4096, Accel: "tcg", ReportedAt: old}, nil); err != nil {
		t.Fatal(err)
	}
	if c, err = e.svc.Capacity(ctx, e.admin, CapacitySources{}); err != nil {
		t.Fatal(err)
	}
	if c.NPlusOne || c.Nodes[1].Available || c.VCPUs != 8 || kinds(c) != "few_nodes:: no_room:node1:big,small" {
		t.Fatalf("with node2 silent: %v %s %+v", c.NPlusOne, kinds(c), c.IfLost[0])
	}
}

// kinds is c's reasons, kind:node:names each.
func kinds(c *Capacity) string {
	var out []string
	for _, r := range c.Reasons {
		out = append(out, r.Kind+":"+r.Node+":"+strings.Join(r.Names, ","))
	}
	return strings.Join(out, " ")
}

// The loss is played as the failover controller plays it: in its order
// (priority, then name) and with placement's choice of node (the most room
// left in proportion), not as a packing that would fit more.
func TestCapacityPlaysTheFailoverOrder(t *testing.T) {
	e := newComputeEnv(t)
	e.host(t, "nodeB", 2, 5120) // 4096 MiB for VMs
	e.placeVMs(t, "nodeB", map[string]VMSpec{"filler": {VCPUs: 1, RAMMiB: 3328, BootVolume: "vol-filler", Firmware: "bios", Image: e.image.ID}})
	e.host(t, "nodeL", 4, 16384)
	e.placeVMs(t, "nodeL", map[string]VMSpec{
		"a": {VCPUs: 1, RAMMiB: 256, BootVolume: "vol-a", Firmware: "bios", Image: e.image.ID},
		"b": {VCPUs: 1, RAMMiB: 1024, BootVolume: "vol-b", Firmware: "bios", Image: e.image.ID},
	})
	e.host(t, "nodeA", 2, 2048) // 1024 MiB for VMs
	c, err := e.svc.Capacity(context.Background(), e.admin, CapacitySources{})
	if err != nil {
		t.Fatal(err)
	}
	// a goes first, to nodeA (3/4 of it left against 1/8 of nodeB); then b
	// fits nowhere, though b on nodeA and a on nodeB would have fitted.
	for _, l := range c.IfLost {
		if l.Node == "nodeL" && (strings.Join(l.Restarted, ",") != "a" || strings.Join(l.NoRoom, ",") != "b") {
			t.Fatalf("losing nodeL: %+v", l)
		}
	}
	if c.NPlusOne {
		t.Fatalf("N+1 with b homeless: %s", kinds(c))
	}
}

// What new volumes and objects can still take: each copy (or each of an
// object's shards beyond m) must go to another node, so one big node's free
// space cannot all be used.
func TestSpread(t *testing.T) {
	const G = 1 << 30
	for _, c := range []struct {
		free     map[string]uint64
		num, den uint64
		want     uint64
	}{
		{map[string]uint64{"a": 10 * G, "b": 10 * G, "c": 10 * G}, 1, 3, 30 * G},  // even: all of it
		{map[string]uint64{"a": 100 * G, "b": 10 * G, "c": 10 * G}, 1, 3, 30 * G}, // three copies: the two small nodes bound it
		{map[string]uint64{"a": 100 * G, "b": 10 * G}, 1, 2, 20 * G},
		{map[string]uint64{"a": 100 * G}, 1, 1, 100 * G}, // one node, no cap
		{map[string]uint64{"a": 100 * G, "b": 100 * G, "c": 100 * G, "d": 10 * G}, 1, 3, 310 * G},
		{map[string]uint64{"a": 100 * G, "b": 10 * G, "c": 10 * G}, 2, 6, 30 * G},
		// Odd sizes: a third is a third (no float rounding).
		{map[string]uint64{"a": 3<<40 + 7, "b": 3<<40 + 7, "c": 3<<40 + 7}, 1, 3, 3 * (3<<40 + 7)},
		{map[string]uint64{"a": 12345678901, "b": 23456789012, "c": 34567890123}, 2, 6, 3 * 12345678901},
	} {
		if got := spread(c.free, c.num, c.den); got != c.want {
			t.Errorf("spread(%v, %d/%d) = %d, want %d", c.free, c.num, c.den, got, c.want)
		}
	}
}

// A node that holds pool disks but runs no VMs has a row of its own: it is
// not judged a node short, and its loss is judged for the volumes whose only
// copy it holds.
func TestStorageOnlyNodes(t *testing.T) {
	c := &Capacity{Nodes: []NodeCapacity{{Node: "node1", Available: true}, {Node: "node2", Available: true}},
		IfLost: []NodeLoss{{Node: "node1"}, {Node: "node2"}}}
	n := c.node("node3")
	n.DiskBytes, n.DiskFree = 100, 40
	if again := c.node("node3"); again != &c.Nodes[2] || !again.StorageOnly || again.DiskBytes != 100 {
		t.Fatalf("node3's row: %+v", c.Nodes)
	}
	if c.node("node1").StorageOnly {
		t.Fatal("a VM node became storage only")
	}
	c.judge(nil)
	if !c.NPlusOne {
		t.Fatalf("a storage-only node counted against N+1: %+v", c.Reasons)
	}
	c.IfLost[2].Volumes = []string{"scans"} // its only in-sync copy
	c.judge(nil)
	if c.NPlusOne || len(c.Reasons) != 1 || c.Reasons[0].Node != "node3" {
		t.Fatalf("losing node3 loses volume scans's only copy: %+v", c.Reasons)
	}
}

// A node whose VM network cannot be set up says so on its host record, at
// once rather than at its next heartbeat: the scheduler passes it by with
// the reason until the network is set up again, and a repeated error is
// not reported twice.
func TestNetworkErrorTakesTheNodeOutOfPlacement(t *testing.T) {
	e := newComputeEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := NewNodeAgent(e.node, NodeConfig{Name: "node1", VCPUs: 4, RAMMiB: 8192, ReportEvery: time.Hour})
	go n.reportHost(ctx)
	reported := func(want string) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, "the host record to say "+strconv.Quote(want), func() error {
			h := consensus.First[Host](e.node.Store().ReadTxn(), tHosts, "id", "node1")
			if h == nil || h.Error != want {
				return fmt.Errorf("host %+v", h)
			}
			return nil
		})
	}
	reported("")
	vm := &VM{ID: "vm-1", ProjectID: e.image.ProjectID, Spec: VMSpec{VCPUs: 1, RAMMiB: 256, DiskGiB: 1, Image: e.image.ID}}
	if err := fits(e.node.Store().ReadTxn(), "node1", vm); err != nil {
		t.Fatalf("a healthy node refused: %v", err)
	}

	refusal := errors.New("the VM network 10.0.0.0/8 holds 10.1.1.1/24 on eth0, this node's own network")
	n.SetNetworkError(refusal)
	want := "the VM network is not set up on this node: " + refusal.Error()
	reported(want)
	err := fits(e.node.Store().ReadTxn(), "node1", vm)
	if consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "cannot run VMs: "+want) {
		t.Fatalf("placement on a node without its VM network: %v", err)
	}
	// The same error again changes nothing, so wakes no report; another
	// one does (an agent of its own, whose reports nothing else takes).
	quiet := NewNodeAgent(e.node, NodeConfig{Name: "node2"})
	woke := func() bool {
		select {
		case <-quiet.reportNow:
			return true
		default:
			return false
		}
	}
	quiet.SetNetworkError(refusal)
	first := woke()
	quiet.SetNetworkError(errors.New(refusal.Error()))
	again := woke()
	quiet.SetNetworkError(errors.New("list addresses: no such device"))
	other := woke()
	if !first || again || !other {
		t.Fatalf("reports woken: by the first error %v, the same again %v, another %v", first, again, other)
	}

	n.SetNetworkError(nil)
	reported("")
	if err := fits(e.node.Store().ReadTxn(), "node1", vm); err != nil {
		t.Fatalf("the node's network is back, and placement still refused: %v", err)
	}
}
