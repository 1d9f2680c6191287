package cluster_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// Three boxes started at the same instant with no seed addresses find each
// other by LAN discovery, bootstrap exactly one cluster with three voters and
// one CA, and create the admin from the password file once.
func TestColdStartWithDiscovery(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Discovery: true})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	ca1, _ := os.ReadFile(filepath.Join(c.Node(1).DataDir, "ca.crt"))
	for _, n := range c.Nodes {
		ca, err := os.ReadFile(filepath.Join(n.DataDir, "ca.crt"))
		if err != nil || !bytes.Equal(ca, ca1) {
			t.Fatalf("%s has a different cluster CA (%v)", n.Name, err)
		}
		st, err := a.On(n).Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Voters != 3 {
			t.Fatalf("%s sees %d voters", n.Name, st.Voters)
		}
	}
	var users []struct{ Name string }
	if err := a.Call("GET", "/api/v1/users", nil, 200, &users); err != nil || len(users) != 1 {
		t.Fatalf("want exactly one admin user, got %v (%v)", users, err)
	}

	// Health and metrics, including Raft and gossip health.
	if err := a.Call("GET", "/healthz", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	// Metrics take a metrics token, as Prometheus sends it; anonymous
	// callers (a VM on the network, say) get nothing.
	res, err := a.HTTP.Get(a.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous /metrics: %s", res.Status)
	}
	var prom struct{ Token string }
	if err := a.Call("POST", "/api/v1/metrics/tokens", map[string]string{"name": "prometheus"}, 201, &prom); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", a.URL("/metrics"), nil)
	req.Header.Set("Authorization", "Bearer "+prom.Token)
	res, err = a.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics with a metrics token: %s", res.Status)
	}
	for _, m := range []string{"cairn_raft_state ", "cairn_raft_voters 3", "cairn_gossip_members_alive 3", "cairn_gossip_health_score 0", "cairn_api_request_duration_seconds"} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	// SIGTERM: a graceful shutdown, exit status 0, and the others carry on.
	n3 := c.Node(3)
	if err := syscall.Kill(n3.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "node3 to exit after SIGTERM", func() error {
		if n3.Running() {
			return errors.New("still running")
		}
		return nil
	})
	log, _ := os.ReadFile(n3.LogPath)
	last := string(log[max(0, strings.LastIndex(string(log), "exited at")):])
	if !strings.Contains(string(log), "shutting down") || !strings.Contains(last, "exit status 0") {
		t.Fatalf("node3 did not shut down gracefully:\n%s", log[max(0, len(log)-600):])
	}
	if _, err := a.CreateProject("after-sigterm"); err != nil {
		t.Fatalf("the other two stopped accepting writes: %v", err)
	}
}

// Kill the leader: the survivors elect a new one and take writes; the killed
// node comes back with its data and catches up. Then cut the leader off in a
// minority: it cannot write, the majority can, and after healing everyone
// agrees and the minority's attempt never appears.
func TestFailoverPartitionAndRejoin(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3})
	a := cairntest.Admin(t, c.Node(1))
	st := cairntest.WaitShape(t, a, 3, 0)
	if _, err := a.CreateProject("before-kill"); err != nil {
		t.Fatal(err)
	}

	old := cairntest.NodeByName(c, st.Leader)
	old.Kill()
	var survivor *harness.Node
	for _, n := range c.Nodes {
		if n != old {
			survivor = n
		}
	}
	as := a.On(survivor)
	testutil.WaitFor(t, 15*time.Second, "a write after the leader was killed", func() error {
		_, err := as.CreateProject("after-kill")
		var he *cairntest.HTTPError
		if errors.As(err, &he) && he.Code == "already_exists" {
			return nil // an earlier attempt timed out client-side but committed
		}
		return err
	})

	old.Restart()
	cairntest.WaitReady(t, old)
	ao := a.On(old)
	testutil.WaitFor(t, 30*time.Second, "the restarted node to have all projects", func() error {
		for _, name := range []string{"before-kill", "after-kill"} {
			if err := ao.Call("GET", "/api/v1/projects/"+name+"?consistent=true", nil, 200, nil); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})
	st = cairntest.WaitShape(t, a, 3, 0)

	// Partition the current leader away from the other two.
	lead := cairntest.NodeByName(c, st.Leader)
	var majority []*harness.Node
	for _, n := range c.Nodes {
		if n != lead {
			majority = append(majority, n)
		}
	}
	c.Partition([]*harness.Node{lead}, majority)
	minority := a.On(lead)
	minority.HTTP.Timeout = 20 * time.Second // longer than the server's apply deadline: a definite answer
	if _, err := minority.CreateProject("from-minority"); err == nil {
		t.Fatal("the isolated minority accepted a write")
	}
	am := a.On(majority[0])
	testutil.WaitFor(t, 15*time.Second, "a majority write during the partition", func() error {
		_, err := am.CreateProject("from-majority")
		var he *cairntest.HTTPError
		if errors.As(err, &he) && he.Code == "already_exists" {
			return nil
		}
		return err
	})
	c.Heal()
	testutil.WaitFor(t, 30*time.Second, "the healed node to see the majority's write", func() error {
		return minority.Call("GET", "/api/v1/projects/from-majority?consistent=true", nil, 200, nil)
	})
	for _, n := range c.Nodes {
		err := a.On(n).Call("GET", "/api/v1/projects/from-minority?consistent=true", nil, 404, nil)
		if err != nil {
			t.Fatalf("%s: the minority's refused write must not exist: %v", n.Name, err)
		}
	}
}

// Grow from 3 to 5 voters; then lose two nodes and, after the grace period,
// shrink back to 3 voters that still accept writes.
func TestGrowAndShrink(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Grace: "3s"})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	n4, n5 := c.AddNode(), c.AddNode()
	cairntest.WaitReady(t, n4)
	cairntest.WaitReady(t, n5)
	cairntest.WaitShape(t, a, 5, 0)
	if _, err := a.On(n5).CreateProject("on-five"); err != nil {
		t.Fatal(err)
	}
	c.RemoveNode(n4)
	c.RemoveNode(n5)
	cairntest.WaitShape(t, a, 3, 0)
	if _, err := a.CreateProject("back-to-three"); err != nil {
		t.Fatal(err)
	}
	if err := a.On(c.Node(2)).Call("GET", "/api/v1/projects/on-five?consistent=true", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
}
