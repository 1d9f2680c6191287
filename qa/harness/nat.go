package harness

import (
	"fmt"
	"net/netip"
)

// natIndex is the NAT router's place on both bridges (.251).
const natIndex = 241

// BehindNAT puts c's nodes behind a NAT router, as a branch site behind
// its firewall: a namespace of its own with one leg on c's bridge and
// one on dst's. c's nodes reach dst's nodes through it, their connections
// masqueraded as its address on dst's bridge (returned); nothing on dst's
// side can open a connection to them. The host itself, the test process,
// still reaches every node on its own bridge. Nodes added to c later are
// not behind it. Several clusters may be behind NATs to one dst. It goes
// with c. BehindNAT needs root.
func (c *Cluster) BehindNAT(dst *Cluster) string {
	c.t.Helper()
	c.needRoot("BehindNAT")
	dst.needRoot("BehindNAT")
	lan, err := nodeAddr(c.subnet, natIndex)
	if err != nil {
		c.t.Fatalf("harness: NAT: %v", err)
	}
	wan, err := nodeAddr(dst.subnet, natIndex-dst.nats) // each NAT its own address there
	dst.nats++
	if err != nil {
		c.t.Fatalf("harness: NAT: %v", err)
	}
	ns := netnsName(c.name, natIndex)
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", vethName(c.name, natIndex), "type", "veth", "peer", "name", "lan", "netns", ns},
		{"ip", "link", "set", vethName(c.name, natIndex), "master", c.name, "up"},
		{"ip", "link", "add", vethName(c.name, natIndex+1), "type", "veth", "peer", "name", "wan", "netns", ns},
		{"ip", "link", "set", vethName(c.name, natIndex+1), "master", dst.name, "up"},
		{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(lan, c.subnet.Bits()).String(), "dev", "lan"},
		{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(wan, dst.subnet.Bits()).String(), "dev", "wan"},
		{"ip", "-n", ns, "link", "set", "lan", "up"},
		{"ip", "-n", ns, "link", "set", "wan", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, argv := range steps {
		if _, err := run(argv[0], argv[1:]...); err != nil {
			c.t.Fatalf("harness: NAT: %v", err)
		}
	}
	if _, err := runInput([]byte(natRuleset), "ip", "netns", "exec", ns, "nft", "-f", "-"); err != nil {
		c.t.Fatalf("harness: NAT: %v", err)
	}
	for _, n := range c.Nodes {
		if _, err := run("ip", "-n", n.Netns, "route", "replace", dst.subnet.String(), "via", lan.String()); err != nil {
			c.t.Fatalf("harness: NAT: route of %s: %v", n.Name, err)
		}
	}
	c.t.Logf("harness: %s's nodes reach %s's through a NAT at %s (%s on their side)", c.name, dst.name, wan, lan)
	return wan.String()
}

// CutNAT takes the link between c's NAT router and the other side down
// (cut) or up again: the site loses its uplink, as when a branch's line
// fails; packets are dropped, connections are not reset.
func (c *Cluster) CutNAT(cut bool) {
	c.t.Helper()
	state := "up"
	if cut {
		state = "down"
	}
	if _, err := run("ip", "-n", netnsName(c.name, natIndex), "link", "set", "wan", state); err != nil {
		c.t.Fatalf("harness: NAT link %s: %v", state, err)
	}
	c.t.Logf("harness: %s's NAT link %s", c.name, state)
}

// natRuleset lets connections out from the lan side and their answers
// back, masqueraded, and nothing else through.
var natRuleset = fmt.Sprintf(`table ip %[1]s {
	chain forward {
		type filter hook forward priority 0; policy drop;
		iifname "lan" oifname "wan" accept
		iifname "wan" oifname "lan" ct state established,related accept
	}
	chain postrouting {
		type nat hook postrouting priority 100;
		oifname "wan" masquerade
	}
}
`, nftTable)
