package consensus

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairnhq/cairn/qa/testutil"
)

// TestProtocolGate is a rolling upgrade. node3 runs a binary of protocol
// 1, which does not know a command added in protocol 2 and would stop at
// it: the command is refused wherever it is proposed (node3 itself does
// not know it is gated, and the leader refuses it for it), also while
// node3 is down, and while a server has no record at all; it goes
// through once node3 is upgraded, and then also while node3 is down. A
// node of protocol 1 is not let into the upgraded cluster.
func TestProtocolGate(t *testing.T) {
	tc := &testCluster{t: t}
	for i := 1; i <= 3; i++ {
		cfg := newTestConfig(t, i, 3, "test-token")
		cfg.DeadServerGrace = time.Minute // node3 stays a server while down
		cfg.protocol = 2
		if i == 3 {
			cfg.protocol = 1 // not upgraded yet
		}
		tc.cfgs = append(tc.cfgs, cfg)
	}
	for i := range tc.cfgs {
		tc.cfgs[i].Join = []string{tc.cfgs[0].BindAddr + ":18445"}
		tc.nodes = append(tc.nodes, tc.start(tc.cfgs[i]))
	}
	tc.waitVoters(3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recorded := func(want ...int) func() error {
		return func() error {
			for _, n := range tc.nodes {
				if n == nil {
					continue
				}
				for i, p := range want {
					raw, _ := n.Store().ReadTxn().First(tableProtocols, "id", fmt.Sprintf("node%d", i+1))
					if raw == nil || raw.(*nodeProtocol).Protocol != p {
						return fmt.Errorf("%s: node%d's record %+v, want %d", n.cfg.Name, i+1, raw, p)
					}
				}
			}
			return nil
		}
	}
	testutil.WaitFor(t, 20*time.Second, "the protocols recorded", recorded(2, 2, 1))

	newer := func(n *Node, key string) error {
		_, err := n.Apply(ctx, msgTestNewer, putCmd{Key: key, Value: "v"}, nil)
		return err
	}
	refused := func(what, culprit string, nodes ...*Node) {
		t.Helper()
		for _, n := range nodes {
			err := newer(n, what)
			if ErrorReason(err) != ReasonProtocol || !strings.Contains(err.Error(), culprit+" runs 1") {
				t.Fatalf("%s: a protocol-2 command proposed on %s: %v", what, n.cfg.Name, err)
			}
		}
	}
	refused("early", "node3", tc.nodes...)
	if _, err := tc.nodes[2].Apply(ctx, msgTestPut, putCmd{Key: "base", Value: "v"}, nil); err != nil {
		t.Fatalf("a base command during the upgrade: %v", err)
	}
	for _, n := range tc.nodes {
		if err := n.ConsistentRead(ctx); err != nil {
			t.Fatal(err)
		}
		if get(n, "early") != nil || get(n, "base") == nil {
			t.Fatalf("%s: refused command applied, or base command lost", n.cfg.Name)
		}
	}

	// Down, node3 still runs what it last said.
	if err := tc.nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	tc.nodes[2] = nil
	refused("node3 down at 1", "node3", tc.nodes[0], tc.nodes[1])

	// node3 is upgraded: started again, speaking 2 and knowing the command.
	tc.cfgs[2].protocol = 2
	tc.nodes[2] = tc.start(tc.cfgs[2])
	testutil.WaitFor(t, 30*time.Second, "node3's new protocol recorded", recorded(2, 2, 2))
	if err := newer(tc.nodes[0], "after"); err != nil {
		t.Fatalf("after the upgrade: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "every node to apply it", func() error {
		for _, n := range tc.nodes {
			if get(n, "after") == nil {
				return fmt.Errorf("%s has not", n.cfg.Name)
			}
		}
		return nil
	})

	// A server the cluster knows nothing of yet runs the base protocol.
	l := tc.leader()
	if err := l.Raft().AddNonvoter("ghost", "127.0.0.1:1", 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	refused("a server without a record", "ghost", l)
	if err := l.Raft().RemoveServer("ghost", 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}

	// A server that is down keeps its record: it does not hold the
	// cluster back.
	if err := tc.nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	tc.nodes[2] = nil
	if err := newer(tc.nodes[0], "node3 down at 2"); err != nil {
		t.Fatalf("with node3 down: %v", err)
	}

	// A node of protocol 1 is not added to the upgraded cluster.
	cfg := newTestConfig(t, 4, 3, "test-token")
	cfg.protocol = 1
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg.EnrolToken = tc.enrolToken()
	tc.nodes = append(tc.nodes, tc.start(cfg))
	time.Sleep(5 * time.Second)
	f := tc.leader().Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID("node4") {
			t.Fatal("a node of protocol 1 joined a cluster at 2")
		}
	}
}
