package netfabric

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The NAT table, exactly as Reconcile sends it to the kernel.
func TestNATRulesetGolden(t *testing.T) {
	got := buildNATRuleset("cairn_nat", "cairnbr0", netip.MustParsePrefix("10.42.0.0/22")).String()
	golden(t, "nat_ruleset.golden", got)
}

// The port-security and host-guard tables, exactly as they are applied.
func TestPortRulesetGolden(t *testing.T) {
	ports := []securedPort{
		{tap: "cvm0b1c2d3e4f5a", mac: net.HardwareAddr{0x02, 0xca, 0x1e, 0, 0, 3}, ip: netip.MustParseAddr("10.42.0.3")},
		{tap: "cvm00aa11bb22cc", mac: net.HardwareAddr{0x02, 0xca, 0x1e, 0, 0, 2}, ip: netip.MustParseAddr("10.42.0.2")},
		// A VLAN network's port, with IPv6.
		{tap: "cvm0c0c0c0c0c0c", mac: net.HardwareAddr{0x02, 0xca, 0x1e, 0, 0, 4}, ip: netip.MustParseAddr("10.60.0.4"),
			ip6: netip.MustParseAddr("fd00:60::ca:1eff:fe00:4"), uplink: "cnv001014",
			segNet: Network{ID: "ward-net", Project: "p1", CIDR: "10.60.0.0/24", Gateway: "10.60.0.1", VNI: 0x1014, VLAN: 120, Interface: "eth1"}},
		// A VLAN network whose gateway is the site's router.
		{tap: "cvm0d0d0d0d0d0d", mac: net.HardwareAddr{0x02, 0xca, 0x1e, 0, 0, 5}, ip: netip.MustParseAddr("10.61.0.100"), uplink: "cnv001015",
			segNet: Network{ID: "site-net", Project: "p1", CIDR: "10.61.0.0/24", Gateway: "10.61.0.254", SiteGateway: true, VNI: 0x1015, VLAN: 121, Interface: "eth1"}},
	}
	rs := buildPortRuleset("cairn_ports", "cvm", "cn", ports)
	got := rs.String() + buildGuardRuleset("cairn_guard", "cairnbr0", "cn", []netip.Addr{netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.2")}).String()
	golden(t, "port_ruleset.golden", got)

	// From a VLAN uplink, nothing may speak as the box's guests or its
	// gateway, but a site's router is the site's: it must get through.
	var segIPs []string
	for _, s := range rs.sets {
		if s.set.Name == "seg_ips" {
			for _, e := range s.elements {
				a, _ := netip.AddrFromSlice(e.Key[len(e.Key)-4:])
				segIPs = append(segIPs, string(bytes.TrimRight(e.Key[:16], "\x00"))+" "+a.String())
			}
		}
	}
	slices.Sort(segIPs)
	if want := []string{"cnv001014 10.60.0.1", "cnv001014 10.60.0.4", "cnv001015 10.61.0.100"}; fmt.Sprint(segIPs) != fmt.Sprint(want) {
		t.Fatalf("addresses dropped as source from the uplinks: %v, want %v", segIPs, want)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./netfabric -run Golden -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("ruleset changed; if that is intended, run with -update.\n--- got\n%s--- want\n%s", got, want)
	}
}

// The security groups' table for one open and one guarded port.
func TestSGRulesetGolden(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	f := PortFilter{Port: Port{ID: "srv"}, Zone: 4105,
		In4: splitBoxes([]box{
			{proto: [2]uint8{6, 6}, port: [2]uint16{8080, 8080}, addr: anyIPv4},
			{proto: [2]uint8{0, 255}, port: [2]uint16{0, 65535}, addr: [2]netip.Addr{a("10.60.0.20"), a("10.60.0.20")}},
		}),
		Out4: splitBoxes([]box{{proto: [2]uint8{0, 255}, port: [2]uint16{0, 65535}, addr: anyIPv4}}),
		In6:  splitBoxes([]box{{proto: [2]uint8{58, 58}, port: [2]uint16{128 << 8, 128<<8 | 0xff}, addr: [2]netip.Addr{a("fe80::"), a("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}}}),
	}
	got := buildSGRuleset("cairn_sg", "cvm", []uint32{7}, []guardedPort{{ifindex: 9, filter: f}}, []zoneOf{{ifindex: 4, zone: 4105}}).String()
	golden(t, "sg_ruleset.golden", got)
}
