package harness

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnhq/cairn/appliance/agent"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestPartitionRulesetGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  []string
	}{
		{"partition", []string{"10.200.1.12", "10.200.1.13"}},
		{"heal", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := partitionRuleset(tc.cut)
			path := filepath.Join("testdata", tc.name+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("ruleset differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"ip", "netns", "exec", "cqa0a1b2c-n1", "/bin/x", "--name", "it's here", ""})
	want := `ip netns exec cqa0a1b2c-n1 /bin/x --name 'it'\''s here' ''`
	if got != want {
		t.Errorf("shellJoin = %s, want %s", got, want)
	}
}

func TestSanitize(t *testing.T) {
	if got := sanitize("TestCluster/kill and restart#01"); got != "TestCluster_kill_and_restart_01" {
		t.Errorf("sanitize = %q", got)
	}
}

func TestOwnedName(t *testing.T) {
	for name, want := range map[string]bool{
		"cqa0a1b2c":     true,
		"cqa0a1b2cv12":  true,
		"cqa0a1b2c-n3":  true,
		"cqa0a1b2":      false,
		"cqa0a1b2cx":    false,
		"cqaZZZZZZ":     false,
		"xcqa0a1b2c":    false,
		"cqa0a1b2c-n":   false,
		"docker0":       false,
		"cqa0a1b2c-n3x": false,
	} {
		if got := ownedName.MatchString(name); got != want {
			t.Errorf("ownedName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNodeAddr(t *testing.T) {
	subnet := netip.MustParsePrefix("10.201.7.0/24")
	if got := hostAddr(subnet).String(); got != "10.201.7.1" {
		t.Errorf("hostAddr = %s", got)
	}
	if got, err := nodeAddr(subnet, 3); err != nil || got.String() != "10.201.7.13" {
		t.Errorf("nodeAddr(3) = %v, %v", got, err)
	}
	if _, err := nodeAddr(subnet, 245); err == nil {
		t.Error("nodeAddr(245) succeeded")
	}
}

func TestOverlapsAny(t *testing.T) {
	used := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")}
	if !overlapsAny(netip.MustParsePrefix("10.201.7.0/24"), used) {
		t.Error("10.201.7.0/24 should overlap 10.0.0.0/8")
	}
	if overlapsAny(netip.MustParsePrefix("10.201.7.0/24"), used[1:]) {
		t.Error("10.201.7.0/24 should not overlap 192.0.2.0/24")
	}
}

// Clusters never get a subnet inside the agent's default VM network: the
// nodes' own bridge would then hold the host's address.
func TestSubnetsAvoidTheAgentsVMNetwork(t *testing.T) {
	def := netip.MustParsePrefix(agent.DefaultConfig().VMNetwork)
	used, err := avoided()
	if err != nil {
		t.Fatal(err)
	}
	if !overlapsAny(def, used) {
		t.Fatalf("the agent's default VM network %s is not avoided by new clusters: %v", def, used)
	}
}
