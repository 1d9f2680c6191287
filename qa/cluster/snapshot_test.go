package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// With frequent snapshots, a short log tail and small log segments (the WAL
// frees whole segments), a node that joins late can only catch up from a
// snapshot, and a restarted node restores from its own snapshot plus the log
// after it. Both end up with every write.
func TestSnapshotInstallAndRestore(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--raft-snapshot-threshold", "40", "--raft-trailing-logs", "10",
		"--raft-wal-segment-size", "65536"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	const n = 150
	for i := range n {
		if _, err := a.CreateProject(fmt.Sprintf("snap-%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	countOn := func(cl *cairntest.Client) error {
		var ps []cairntest.Project
		if err := cl.Call("GET", "/api/v1/projects?consistent=true", nil, 200, &ps); err != nil {
			return err
		}
		if len(ps) != n {
			return fmt.Errorf("%d projects, want %d", len(ps), n)
		}
		return nil
	}
	snapshots := func(dataDir string) int {
		es, _ := os.ReadDir(filepath.Join(dataDir, "raft", "snapshots"))
		return len(es)
	}
	testutil.WaitFor(t, 60*time.Second, "snapshots on node1", func() error {
		if snapshots(c.Node(1).DataDir) == 0 {
			return fmt.Errorf("no snapshot yet")
		}
		return nil
	})

	n4 := c.AddNode()
	cairntest.WaitReady(t, n4)
	cairntest.WaitShape(t, a, 4, 0)
	testutil.WaitFor(t, 30*time.Second, "the late node to have every project", func() error { return countOn(a.On(n4)) })
	if snapshots(n4.DataDir) == 0 {
		t.Fatal("the late node caught up without installing a snapshot; the test did not exercise snapshots")
	}

	c.Node(1).Restart()
	cairntest.WaitReady(t, c.Node(1))
	testutil.WaitFor(t, 30*time.Second, "the restarted node to have every project", func() error { return countOn(a.On(c.Node(1))) })
}
