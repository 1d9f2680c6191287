package harness

import (
	"fmt"
	"slices"
	"strings"
)

// nftTable is the harness's own table inside each node's namespace. Nothing
// else in a node namespace is touched.
const nftTable = "cairnqa"

// Partition cuts IPv4 traffic, both directions, between nodes in different
// groups; nodes named in no group form one more group together. It replaces any
// earlier partition. Traffic between a node and the test process (the bridge
// address, HostIP) is not cut, so the test can still observe and drive every
// node. A partition lives in the node namespaces, so it survives node restarts;
// a node added later is not partitioned until Partition is called again.
// Partition needs root.
func (c *Cluster) Partition(groups ...[]*Node) {
	c.t.Helper()
	c.needRoot("Partition")
	group := map[*Node]int{}
	for gi, g := range groups {
		for _, n := range g {
			if !slices.Contains(c.Nodes, n) {
				c.t.Fatalf("harness: partition: %s is not in the cluster", n.Name)
			}
			if _, dup := group[n]; dup {
				c.t.Fatalf("harness: partition: %s is in more than one group", n.Name)
			}
			group[n] = gi
		}
	}
	rest := len(groups)
	groupOf := func(n *Node) int {
		if g, ok := group[n]; ok {
			return g
		}
		return rest
	}

	var desc []string
	for _, n := range c.Nodes {
		var cut []string
		for _, m := range c.Nodes {
			if groupOf(m) != groupOf(n) {
				cut = append(cut, m.IP)
			}
		}
		if err := c.applyRuleset(n, partitionRuleset(cut)); err != nil {
			c.t.Fatalf("harness: partition: %v", err)
		}
		desc = append(desc, fmt.Sprintf("%s(group %d)", n.Name, groupOf(n)))
	}
	c.t.Logf("harness: partition: %s", strings.Join(desc, " "))
}

// Heal removes every partition.
func (c *Cluster) Heal() {
	c.t.Helper()
	c.needRoot("Heal")
	for _, n := range c.Nodes {
		if err := c.applyRuleset(n, partitionRuleset(nil)); err != nil {
			c.t.Fatalf("harness: heal: %v", err)
		}
	}
	c.t.Logf("harness: healed")
}

func (c *Cluster) needRoot(op string) {
	c.t.Helper()
	if c.name == "" {
		c.t.Fatalf("harness: %s needs root: it uses a network namespace per node and nftables; run the test as root (make test does)", op)
	}
}

func (c *Cluster) applyRuleset(n *Node, ruleset string) error {
	if _, err := runInput([]byte(ruleset), "ip", "netns", "exec", n.Netns, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}

// partitionRuleset returns an nft script that atomically replaces the
// harness's table with one dropping all IPv4 traffic to and from cut. With
// nothing to cut it just deletes the table.
func partitionRuleset(cut []string) string {
	var b strings.Builder
	// Declaring the table first makes the delete succeed when it is absent.
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	if len(cut) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, `table inet %s {
	set cut {
		type ipv4_addr
		elements = { %s }
	}
	chain input {
		type filter hook input priority filter - 10; policy accept;
		ip saddr @cut drop
	}
	chain output {
		type filter hook output priority filter - 10; policy accept;
		ip daddr @cut drop
	}
}
`, nftTable, strings.Join(cut, ", "))
	return b.String()
}
