package placement

import (
	"fmt"
	"testing"

	"github.com/cairnhq/cairn/storage/erasure"
)

func cluster(nodes, disksPer int) []Disk {
	var ds []Disk
	for n := 1; n <= nodes; n++ {
		for d := 1; d <= disksPer; d++ {
			ds = append(ds, Disk{ID: fmt.Sprintf("n%d-d%d", n, d), Node: fmt.Sprintf("node%d", n), Free: 1 << 30})
		}
	}
	return ds
}

func TestDefaultLayoutFollowsShape(t *testing.T) {
	for _, c := range []struct {
		nodes, disks int
		want         string
	}{
		{3, 2, "4+2"}, {1, 1, "1+0"}, {1, 2, "1+1"}, {1, 4, "3+1"}, {1, 6, "4+2"},
		{2, 1, "1+1"}, {2, 2, "2+2"}, {3, 1, "2+1"}, {5, 2, "8+2"}, {3, 4, "8+4"}, {4, 8, "12+4"},
	} {
		l, err := DefaultLayout(cluster(c.nodes, c.disks))
		if err != nil || l.String() != c.want {
			t.Errorf("%d nodes x %d disks: %s (%v), want %s", c.nodes, c.disks, l, err, c.want)
		}
	}
}

// Every placement survives the loss of any one node, uses distinct disks, and
// is deterministic.
func TestPlaceSurvivesAnyNodeLoss(t *testing.T) {
	for _, shape := range [][2]int{{3, 2}, {2, 2}, {3, 1}, {5, 2}, {3, 4}, {4, 3}} {
		disks := cluster(shape[0], shape[1])
		l, _ := DefaultLayout(disks)
		for i := range 200 {
			key := fmt.Sprintf("obj-%d", i)
			p, err := Place(l, disks, key)
			if err != nil {
				t.Fatalf("%v %s: %v", shape, l, err)
			}
			seen := map[string]bool{}
			nodes := make([]string, len(p))
			for j, d := range p {
				if seen[d.ID] {
					t.Fatalf("%v: disk %s used twice", shape, d.ID)
				}
				seen[d.ID] = true
				nodes[j] = d.Node
			}
			if !SurvivesNodeLoss(l, nodes) {
				t.Fatalf("%v %s: placement %v does not survive a node loss", shape, l, nodes)
			}
			again, _ := Place(l, disks, key)
			if fmt.Sprint(again) != fmt.Sprint(p) {
				t.Fatalf("placement is not deterministic")
			}
		}
	}
}

func TestDegradedWritesAndFullDisks(t *testing.T) {
	disks := cluster(3, 2)
	l, _ := DefaultLayout(disks)
	// node3 is gone: 4 shards on nodes 1 and 2 cannot survive losing one of them.
	if SurvivesNodeLoss(l, []string{"node1", "node1", "node2", "node2", "", ""}) {
		t.Fatal("4 of 6 shards on two nodes cannot survive losing one of them")
	}
	if !SurvivesNodeLoss(l, []string{"node1", "node1", "node2", "node2", "node3", "node3"}) {
		t.Fatal("a full 4+2 placement survives a node loss")
	}
	if SurvivesNodeLoss(l, []string{"node1", "node1", "node2", "node2", "node3", ""}) {
		t.Fatal("5 of 6 shards split 2/2/1 lose 2 with node1, leaving 3 of the 4 needed")
	}
	for i := range disks {
		disks[i].Free = 0
	}
	if _, err := Place(l, disks, "x"); err == nil {
		t.Fatal("placed on full disks")
	}
}

// On one node, the failure domain is the filesystem: directories that
// share one count once, and no filesystem holds more than m shards of an
// object. Several nodes keep the node as the domain, whatever the devices.
// A layout wider than the filesystems (an admin's) is placed by the node
// rule, as before they were known.
func TestFilesystemsAsFailureDomains(t *testing.T) {
	disk := func(id, node, dev string) Disk { return Disk{ID: id, Node: node, Free: 1 << 40, Device: dev} }
	for _, c := range []struct {
		name  string
		disks []Disk
		data  int
		par   int
	}{
		{"two directories of one filesystem and one of its own", []Disk{disk("a", "n1", "8:1"), disk("b", "n1", "8:1"), disk("c", "n1", "8:2")}, 1, 1},
		{"two filesystems of two directories each", []Disk{disk("a", "n1", "8:1"), disk("b", "n1", "8:1"), disk("c", "n1", "8:2"), disk("d", "n1", "8:2")}, 1, 1},
		{"four directories on one filesystem and a USB disk", []Disk{disk("a", "n1", "8:1"), disk("b", "n1", "8:1"), disk("c", "n1", "8:1"), disk("d", "n1", "8:1"), disk("e", "n1", "8:17")}, 1, 1},
		{"three filesystems, one shared", []Disk{disk("a", "n1", "8:1"), disk("b", "n1", "8:1"), disk("c", "n1", "8:2"), disk("d", "n1", "8:3")}, 2, 1},
		{"every directory its own filesystem", []Disk{disk("a", "n1", "8:1"), disk("b", "n1", "8:2"), disk("c", "n1", "8:3")}, 2, 1},
		{"one filesystem: nothing guards it, parity guards the files", []Disk{disk("a", "n1", "8:1"), disk("b", "n1", "8:1"), disk("c", "n1", "8:1")}, 2, 1},
		{"devices not reported (older nodes)", []Disk{disk("a", "n1", ""), disk("b", "n1", ""), disk("c", "n1", "")}, 2, 1},
		{"three nodes, shared filesystems in each", []Disk{disk("a", "n1", "8:1"), disk("b", "n1", "8:1"), disk("c", "n2", "8:1"), disk("d", "n2", "8:1"), disk("e", "n3", "8:1"), disk("f", "n3", "8:1")}, 4, 2},
	} {
		l, err := DefaultLayout(c.disks)
		if err != nil || l.Data != c.data || l.Parity != c.par {
			t.Errorf("%s: layout %v %v, want %d+%d", c.name, l, err, c.data, c.par)
			continue
		}
		domain, most := DomainCap(l, c.disks)
		for i := range 50 {
			placed, err := Place(l, c.disks, fmt.Sprintf("obj-%d", i))
			if err != nil {
				t.Fatalf("%s: place: %v", c.name, err)
			}
			per := map[string]int{}
			for _, d := range placed {
				per[domain(d)]++
				if per[domain(d)] > most {
					t.Fatalf("%s: %d shards in %s, most %d: %v", c.name, per[domain(d)], domain(d), most, placed)
				}
			}
		}
	}
}

func TestWiderLayoutFallsBackToTheNodeRule(t *testing.T) {
	disks := []Disk{{ID: "a", Node: "n1", Free: 1, Device: "8:1"}, {ID: "b", Node: "n1", Free: 1, Device: "8:1"},
		{ID: "c", Node: "n1", Free: 1, Device: "8:1"}, {ID: "d", Node: "n1", Free: 1, Device: "8:2"}}
	l := erasure.Layout{Data: 3, Parity: 1, StripeSize: erasure.DefaultStripeSize}
	placed, err := Place(l, disks, "old-bucket-layout")
	if err != nil || len(placed) != 4 {
		t.Fatalf("3+1 over two filesystems: %v %v", placed, err)
	}
}

// Whole copies (1+m) go one to a node where there are enough nodes, and
// fall back to the parity rule where there are not.
func TestCopiesSpreadOverNodes(t *testing.T) {
	copies := erasure.Layout{Data: 1, Parity: 2, StripeSize: erasure.DefaultStripeSize}
	for _, shape := range [][2]int{{3, 2}, {3, 1}, {4, 3}} {
		disks := cluster(shape[0], shape[1])
		for i := range 200 {
			out, err := Place(copies, disks, fmt.Sprintf("obj-%d", i))
			if err != nil || len(out) != 3 {
				t.Fatalf("%d nodes x %d disks: %v %v", shape[0], shape[1], out, err)
			}
			nodes := map[string]bool{}
			for _, d := range out {
				nodes[d.Node] = true
			}
			if len(nodes) != 3 {
				t.Fatalf("%d nodes x %d disks: copies on %v", shape[0], shape[1], out)
			}
		}
	}
	out, err := Place(copies, cluster(2, 2), "obj")
	nodes := map[string]int{}
	for _, d := range out {
		nodes[d.Node]++
	}
	if err != nil || len(out) != 3 || len(nodes) != 2 {
		t.Fatalf("2 nodes x 2 disks: %v %v", out, err)
	}
}
