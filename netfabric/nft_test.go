package netfabric

import (
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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
	}
	got := buildPortRuleset("cairn_ports", "cvm", ports).String() + buildGuardRuleset("cairn_guard", "cairnbr0", "cn", []netip.Addr{netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.2")}).String()
	golden(t, "port_ruleset.golden", got)
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
