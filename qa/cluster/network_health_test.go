package cluster_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A default VM network that holds the box's own address on its LAN (a
// hospital LAN in the same range) is refused by the node's network agent,
// which changes nothing: the node stays reachable. The refusal does not
// stay in the node's log: the node reports that it cannot run VMs, and why,
// on its host record, which the API and `cairn host list` show and the
// scheduler passes by.
func TestRefusedVMNetworkShowsOnTheHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the node in a network namespace of its own and needs root; make test runs as root")
	}
	c := cairntest.Start(t, cairntest.Options{N: 1, NodeExtra: func(n *harness.Node) []string {
		ip := netip.MustParseAddr(n.IP).As4()
		return []string{"--vm-network", fmt.Sprintf("%d.%d.0.0/16", ip[0], ip[1])}
	}})
	n := c.Node(1)
	a := cairntest.Admin(t, n)
	want := "the VM network is not set up on this node: "
	var reason string
	testutil.WaitFor(t, time.Minute, "node1 to report its VM network refused", func() error {
		var hs []struct {
			Name  string `json:"name"`
			Error string `json:"error"`
		}
		if err := a.Call("GET", "/api/v1/hosts", nil, 200, &hs); err != nil {
			return err
		}
		for _, h := range hs {
			if h.Name == n.Name && strings.Contains(h.Error, want) {
				reason = h.Error
				return nil
			}
		}
		return fmt.Errorf("hosts %+v", hs)
	})
	if !strings.Contains(reason, "holds "+n.IP+"/") {
		t.Fatalf("the reason does not name the node's own address %s: %q", n.IP, reason)
	}
	if out := adminCLI(t, n).ok("", "host", "list"); !strings.Contains(out, want) {
		t.Fatalf("cairn host list does not say why the node runs no VMs:\n%s", out)
	}
	// Nothing was changed: no bridge holds the network's gateway, which
	// would have cut the node off its LAN (the API answering above says
	// the same).
	out, err := exec.Command("ip", "-n", n.Netns, "-br", "addr").CombinedOutput()
	if err != nil || strings.Contains(string(out), "cairnbr0") {
		t.Fatalf("the refused network left a bridge behind (%v):\n%s", err, out)
	}
}
