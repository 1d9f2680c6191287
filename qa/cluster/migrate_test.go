package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// migrateStopped moves a VM booted from a volume to another node (not
// avoid) while it is stopped: stopped, moved, started. It boots there from the same volume and answers at the
// same address; its old node keeps nothing of it.
func migrateStopped(t *testing.T, c *harness.Cluster, a, a2 *cairntest.Client, name, avoid string) {
	t.Helper()
	vm := waitVM(t, a, name, time.Minute, "running", inState("running"))
	before := vmBootVolume(t, a, vm)
	target := ""
	for _, n := range c.Nodes {
		if n.Name != vm.Node && n.Name != avoid {
			target = n.Name
		}
	}
	if err := a2.Call("POST", "/api/v1/vms/"+name+"/stop", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, name, time.Minute, "stopped", inState("stopped"))
	var moved vmView
	if err := a2.Call("POST", "/api/v1/vms/"+name+"/migrate", map[string]string{"node": target}, 200, &moved); err != nil {
		t.Fatal(err)
	}
	if moved.Node != target || moved.Status.State != "stopped" {
		t.Fatalf("after the move: on %q, %s", moved.Node, moved.Status.State)
	}
	old := cairntest.NodeByName(c, vm.Node)
	testutil.WaitFor(t, time.Minute, vm.Node+" lets go of "+name, func() error {
		if left := vmLeftovers(old, vm.ID, vm.Status.PID); len(left) > 0 {
			return fmt.Errorf("left on %s: %v", vm.Node, left)
		}
		return nil
	})
	if err := a.Call("POST", "/api/v1/vms/"+name+"/start", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	now := waitVM(t, a2, name, 3*time.Minute, "running on "+target, func(v vmView) error {
		if err := inState("running")(v); err != nil {
			return err
		}
		if v.Node != target {
			return fmt.Errorf("running on %s", v.Node)
		}
		return nil
	})
	hello := "hostname=" + name + " ip=" + vm.IP()
	waitSerial(t, a, name, "cairn-guest: "+hello, 1) // the new node's serial log
	waitProbe(t, cairntest.NodeByName(c, target), vm.IP(), hello)
	// The same volume, not made or filled again: its bytes came along.
	bv := vmBootVolume(t, a, now)
	if bv.ID != before.ID || bv.Source == nil || !bv.Source.Filled || bv.Attachment == nil || bv.Attachment.Node != target || bv.Writer != target || bv.Epoch <= before.Epoch {
		t.Fatalf("the boot volume after the move: %+v (before: %+v)", bv, before)
	}
}
