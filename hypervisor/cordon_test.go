package hypervisor

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A cordoned node takes no new VM: the scheduler passes it over, the FSM
// refuses a placement on it, and with every node cordoned the VM says so.
// What runs there stays and can still be resized there; the node's own
// reports do not lift the cordon; uncordon does. Only cluster admins
// cordon, and bad input changes nothing.
func TestCordonKeepsNewVMsOff(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	report := func(name string, ramMiB int64) {
		t.Helper()
		if _, err := e.node.Apply(ctx, MsgReportHost, &Host{Name: name, VCPUs: 8, RAMMiB: ramMiB, Accel: "tcg", ReportedAt: time.Now()}, nil); err != nil {
			t.Fatal(err)
		}
	}
	report("node1", 8192)
	report("node2", 8192)
	placedOn := func(name, node string) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, name+" placed on "+node, func() error {
			if vm, _ := e.svc.VM(e.user, name); vm == nil || vm.Node != node {
				return fmt.Errorf("%s on %q", name, vm.Node)
			}
			return nil
		})
	}
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "a", Image: "guest", Flavor: "small"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "a placed", func() error {
		if vm, _ := e.svc.VM(e.user, "a"); vm.Node == "" {
			return fmt.Errorf("a not placed: %s %s", vm.Status.State, vm.Status.Error)
		}
		return nil
	})
	a, _ := e.svc.VM(e.user, "a")
	other := map[string]string{"node1": "node2", "node2": "node1"}[a.Node]

	// Bad input, and a member's try, change nothing.
	for _, c := range []struct{ node, reason, code string }{
		{"nosuch", "", consensus.CodeNotFound},
		{a.Node, strings.Repeat("x", maxCordonReason+1), consensus.CodeInvalid},
		{a.Node, "two\nlines", consensus.CodeInvalid},
	} {
		if _, err := e.svc.CordonNode(ctx, e.admin, c.node, c.reason); consensus.ErrorCode(err) != c.code {
			t.Errorf("cordon %q %q: %v, want %s", c.node, c.reason, err, c.code)
		}
	}
	if _, err := e.svc.CordonNode(ctx, e.user, a.Node, ""); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a member cordoned a node: %v", err)
	}
	if err := e.svc.UncordonNode(ctx, e.admin, a.Node); err != nil {
		t.Errorf("uncordon of a node not cordoned: %v, want nothing done", err)
	}
	if err := e.svc.UncordonNode(ctx, e.admin, "nosuch"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Errorf("uncordon of no node: %v", err)
	}
	if c := cordonOf(e.node.Store().ReadTxn(), a.Node); c != nil {
		t.Fatalf("refused commands cordoned %s: %+v", a.Node, c)
	}

	// Cordon a's node: new VMs go to the other, whatever the weights say.
	c, err := e.svc.CordonNode(ctx, e.admin, a.Node, "  new RAM on Tuesday ")
	if err != nil || c.Reason != "new RAM on Tuesday" || c.By != "admin" {
		t.Fatalf("cordon: %+v %v", c, err)
	}
	// The node's own report keeps it cordoned; with 8 times the RAM it
	// would be the scheduler's first choice otherwise.
	report(a.Node, 65536)
	for _, name := range []string{"b"} {
		if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: name, Image: "guest", Flavor: "small"}); err != nil {
			t.Fatal(err)
		}
		placedOn(name, other)
	}
	hs, err := e.svc.Hosts(e.admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if (h.Cordon != nil) != (h.Name == a.Node) {
			t.Errorf("host %s shows cordon %+v", h.Name, h.Cordon)
		}
	}
	// What runs on the cordoned node stays, and may be resized there.
	if vm, err := e.svc.Resize(ctx, e.user, "a", "big", 0); err != nil || vm.Node != a.Node {
		t.Fatalf("resize of a VM on the cordoned node: %+v %v", vm, err)
	}

	// Both cordoned: a new VM fails and says why.
	if _, err := e.svc.CordonNode(ctx, e.admin, other, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "e", Image: "guest", Flavor: "small"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "e refused", func() error {
		vm, _ := e.svc.VM(e.user, "e")
		if vm.Status.State != StateError || !strings.Contains(vm.Status.Error, "2 of 2 nodes cordoned") {
			return fmt.Errorf("e on %q: %s %s", vm.Node, vm.Status.State, vm.Status.Error)
		}
		return nil
	})
	vmE, _ := e.svc.VM(e.user, "e")
	if _, err := e.node.Apply(ctx, MsgPlaceVM, placeVMCmd{ID: vmE.ID, Node: a.Node}, nil); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "cordoned") {
		t.Fatalf("the FSM placed a VM on a cordoned node: %v", err)
	}

	// Uncordoned, a's node takes VMs again.
	if err := e.svc.UncordonNode(ctx, e.admin, a.Node); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Do(ctx, e.user, "e", OpStart, 0); err != nil {
		t.Fatal(err)
	}
	placedOn("e", a.Node)
}
