package cluster_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// Three boxes started at the same instant with no seed addresses find each
// other by LAN discovery, bootstrap exactly one cluster with three voters and
// one CA, and create the admin from the password file once.
func TestColdStartWithDiscovery(t *testing.T) {
	c := startCluster(t, opts{n: 3, discovery: true})
	a := admin(t, c.Node(1))
	waitShape(t, a, 3, 0)
	ca1, _ := os.ReadFile(filepath.Join(c.Node(1).DataDir, "ca.crt"))
	for _, n := range c.Nodes {
		ca, err := os.ReadFile(filepath.Join(n.DataDir, "ca.crt"))
		if err != nil || !bytes.Equal(ca, ca1) {
			t.Fatalf("%s has a different cluster CA (%v)", n.Name, err)
		}
		st, err := a.on(n).status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Voters != 3 {
			t.Fatalf("%s sees %d voters", n.Name, st.Voters)
		}
	}
	var users []struct{ Name string }
	if err := a.call("GET", "/api/v1/users", nil, 200, &users); err != nil || len(users) != 1 {
		t.Fatalf("want exactly one admin user, got %v (%v)", users, err)
	}
}

// Kill the leader: the survivors elect a new one and take writes; the killed
// node comes back with its data and catches up. Then cut the leader off in a
// minority: it cannot write, the majority can, and after healing everyone
// agrees and the minority's attempt never appears.
func TestFailoverPartitionAndRejoin(t *testing.T) {
	c := startCluster(t, opts{n: 3})
	a := admin(t, c.Node(1))
	st := waitShape(t, a, 3, 0)
	if _, err := a.createProject("before-kill"); err != nil {
		t.Fatal(err)
	}

	old := nodeByName(c, st.Leader)
	old.Kill()
	var survivor *harness.Node
	for _, n := range c.Nodes {
		if n != old {
			survivor = n
		}
	}
	as := a.on(survivor)
	testutil.WaitFor(t, 15*time.Second, "a write after the leader was killed", func() error {
		_, err := as.createProject("after-kill")
		var he *httpError
		if errors.As(err, &he) && he.Code == "already_exists" {
			return nil // an earlier attempt timed out client-side but committed
		}
		return err
	})

	old.Restart()
	waitReady(t, old)
	ao := a.on(old)
	testutil.WaitFor(t, 30*time.Second, "the restarted node to have all projects", func() error {
		for _, name := range []string{"before-kill", "after-kill"} {
			if err := ao.call("GET", "/api/v1/projects/"+name+"?consistent=true", nil, 200, nil); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})
	st = waitShape(t, a, 3, 0)

	// Partition the current leader away from the other two.
	lead := nodeByName(c, st.Leader)
	var majority []*harness.Node
	for _, n := range c.Nodes {
		if n != lead {
			majority = append(majority, n)
		}
	}
	c.Partition([]*harness.Node{lead}, majority)
	minority := a.on(lead)
	minority.http.Timeout = 20 * time.Second // longer than the server's apply deadline: a definite answer
	if _, err := minority.createProject("from-minority"); err == nil {
		t.Fatal("the isolated minority accepted a write")
	}
	am := a.on(majority[0])
	testutil.WaitFor(t, 15*time.Second, "a majority write during the partition", func() error {
		_, err := am.createProject("from-majority")
		var he *httpError
		if errors.As(err, &he) && he.Code == "already_exists" {
			return nil
		}
		return err
	})
	c.Heal()
	testutil.WaitFor(t, 30*time.Second, "the healed node to see the majority's write", func() error {
		return minority.call("GET", "/api/v1/projects/from-majority?consistent=true", nil, 200, nil)
	})
	for _, n := range c.Nodes {
		err := a.on(n).call("GET", "/api/v1/projects/from-minority?consistent=true", nil, 404, nil)
		if err != nil {
			t.Fatalf("%s: the minority's refused write must not exist: %v", n.Name, err)
		}
	}
}

// Grow from 3 to 5 voters; then lose two nodes and, after the grace period,
// shrink back to 3 voters that still accept writes.
func TestGrowAndShrink(t *testing.T) {
	c := startCluster(t, opts{n: 3, grace: "3s"})
	a := admin(t, c.Node(1))
	waitShape(t, a, 3, 0)
	n4, n5 := c.AddNode(), c.AddNode()
	waitReady(t, n4)
	waitReady(t, n5)
	waitShape(t, a, 5, 0)
	if _, err := a.on(n5).createProject("on-five"); err != nil {
		t.Fatal(err)
	}
	c.RemoveNode(n4)
	c.RemoveNode(n5)
	waitShape(t, a, 3, 0)
	if _, err := a.createProject("back-to-three"); err != nil {
		t.Fatal(err)
	}
	if err := a.on(c.Node(2)).call("GET", "/api/v1/projects/on-five?consistent=true", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
}
