package cluster_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// The cluster's own address (--vip): the API and S3 answer there, from the
// Raft leader, with a certificate that names the address; when the holder
// is killed or cut off from the others, another node takes the address;
// exactly one node ever holds it once things settle, and a node that comes
// back does not keep a stale copy.
func TestClusterAddressMoves(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, VIP: true})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	vip, vip6 := cairntest.VIPOf(c), cairntest.VIP6Of(c)
	// a's HTTP client (it trusts the cluster CA), sent to the cluster
	// address.
	viaVIP := a
	get := func(path string) (string, error) { return getAt(viaVIP, vip, path) }
	// The IPv6 twin answers from the same node as the address.
	twin := func(want string) {
		t.Helper()
		testutil.WaitFor(t, 30*time.Second, "the API at ["+vip6+"] on "+want, func() error {
			self, err := getAt(viaVIP, "["+vip6+"]", "/api/v1/cluster")
			if err == nil && self != want {
				err = fmt.Errorf("%s answers, not %s", self, want)
			}
			return err
		})
	}
	holder := func(want func(string) error) string {
		t.Helper()
		var self string
		testutil.WaitFor(t, 30*time.Second, "the API at "+vip, func() error {
			var err error
			if self, err = get("/api/v1/cluster"); err != nil {
				return err
			}
			return want(self)
		})
		return self
	}
	first := holder(func(string) error { return nil })
	checkHolders(t, c, vip, get)
	twin(first)
	// S3 answers there too (an anonymous request: S3's own refusal).
	res, err := viaVIP.HTTP.Get("https://" + vip + ":8447/")
	if err != nil {
		t.Fatalf("S3 at the cluster address: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("S3 at the cluster address: HTTP %d", res.StatusCode)
	}

	// The holder is killed: another node answers at the address.
	old := cairntest.NodeByName(c, first)
	start := time.Now()
	old.Kill()
	second := holder(func(self string) error {
		if self == first {
			return fmt.Errorf("still %s", self)
		}
		return nil
	})
	t.Logf("the cluster address moved from %s (killed) to %s in %s", first, second, time.Since(start).Round(10*time.Millisecond))
	twin(second)
	// The killed agent's box runs on: the address it held lapses there
	// (the holder keeps renewing a short lifetime), so only one box
	// answers ARP for it even before the agent comes back.
	testutil.WaitFor(t, 20*time.Second, "the killed holder's copy to lapse", func() error {
		out, err := old.Command("ip", "-4", "-o", "addr", "show").CombinedOutput()
		if err != nil || strings.Contains(string(out), " "+vip+"/") {
			return fmt.Errorf("%s still has it: %s %v", old.Name, out, err)
		}
		return nil
	})
	old.Start()
	cairntest.WaitReady(t, old)
	checkHolders(t, c, vip, get)

	// The holder is cut off from the other two: it gives the address up
	// as it loses its quorum, and one of them takes it.
	cut := cairntest.NodeByName(c, second)
	var rest []*harness.Node
	for _, n := range c.Nodes {
		if n != cut {
			rest = append(rest, n)
		}
	}
	start = time.Now()
	c.Partition([]*harness.Node{cut}, rest)
	third := holder(func(self string) error {
		if self == second {
			return fmt.Errorf("still %s", self)
		}
		return nil
	})
	t.Logf("the cluster address moved from %s (cut off) to %s in %s", second, third, time.Since(start).Round(10*time.Millisecond))
	twin(third)
	checkHolders(t, c, vip, get)
	c.Heal()
}

// getAt asks the API at host which node answers, and fails unless that
// node leads (only the leader holds the cluster's addresses once things
// settle).
func getAt(a *cairntest.Client, host, path string) (string, error) {
	req, _ := http.NewRequest("GET", "https://"+host+":8443"+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.Token())
	res, err := a.HTTP.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var st struct {
		Self   string `json:"self"`
		Leader string `json:"leader"`
	}
	if res.StatusCode != 200 {
		return "", fmt.Errorf("HTTP %d", res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return "", err
	}
	if st.Self != st.Leader {
		return "", fmt.Errorf("%s answers at the address, but %q leads", st.Self, st.Leader)
	}
	return st.Self, nil
}

// holders checks that exactly want has the address on an interface.
func holders(c *harness.Cluster, vip, want string) error {
	var have []string
	for _, n := range c.Nodes {
		out, err := n.Command("ip", "-4", "-o", "addr", "show").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v %s", n.Name, err, out)
		}
		if strings.Contains(string(out), " "+vip+"/") {
			have = append(have, n.Name)
		}
	}
	if len(have) != 1 || have[0] != want {
		return fmt.Errorf("the address is on %v, want %s alone", have, want)
	}
	return nil
}

// checkHolders waits until exactly the node answering at the address has
// it (leadership may move on a busy machine: whoever answers holds it).
func checkHolders(t *testing.T, c *harness.Cluster, vip string, get func(string) (string, error)) {
	t.Helper()
	testutil.WaitFor(t, 15*time.Second, "one holder of "+vip, func() error {
		self, err := get("/api/v1/cluster")
		if err != nil {
			return err
		}
		return holders(c, vip, self)
	})
}
