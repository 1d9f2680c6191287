package hypervisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
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
	why := strings.Join(c.Why, "; ")
	if c.NPlusOne || !strings.Contains(why, "lack the vCPUs or memory to restart small") || !strings.Contains(why, "local stay down") {
		t.Fatalf("verdict: %v %q", c.NPlusOne, why)
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
	if !c.NPlusOne || len(c.Why) != 0 || strings.Join(c.IfLost[0].Restarted, ",") != "big,small" {
		t.Fatalf("after making room: %v %q %+v", c.NPlusOne, c.Why, c.IfLost[0])
	}

	// A node that stopped reporting offers nothing, and one node alone is
	// never N+1.
	old := time.Now().Add(-time.Hour)
	if _, err := e.node.Apply(ctx, MsgReportHost, &Host{Name: "node2", VCPUs: 2, RAMMiB: 4096, Accel: "tcg", ReportedAt: old}, nil); err != nil {
		t.Fatal(err)
	}
	if c, err = e.svc.Capacity(ctx, e.admin, CapacitySources{}); err != nil {
		t.Fatal(err)
	}
	if c.NPlusOne || c.Nodes[1].Available || c.VCPUs != 8 || !strings.Contains(strings.Join(c.Why, "; "), "only 1 node can run VMs") ||
		strings.Join(c.IfLost[0].NoRoom, ",") != "big,small" {
		t.Fatalf("with node2 silent: %v %q %+v", c.NPlusOne, c.Why, c.IfLost[0])
	}
}
