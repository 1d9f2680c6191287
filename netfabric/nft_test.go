package netfabric

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The NAT table, exactly as Reconcile sends it to the kernel.
func TestNATRulesetGolden(t *testing.T) {
	got := buildNATRuleset("cairn_nat", "cairnbr0", netip.MustParsePrefix("10.42.0.0/22")).String()
	path := filepath.Join("testdata", "nat_ruleset.golden")
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
