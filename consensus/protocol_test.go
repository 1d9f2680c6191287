package consensus

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// TestProtocolGate is a rolling upgrade: a command added in protocol 2 is
// refused while one server still speaks 1 (it would stop that server's
// state machine), and goes through once that server is upgraded; a server
// that is down keeps the protocol it last spoke.
func TestProtocolGate(t *testing.T) {
	tc := &testCluster{t: t}
	for i := 1; i <= 3; i++ {
		cfg := newTestConfig(t, i, 3, "test-token")
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recorded := func(want ...int) func() error {
		return func() error {
			for _, n := range tc.nodes {
				if n == nil {
					continue
				}
				for i, p := range want {
					if got := protocolOf(n.Store().ReadTxn(), fmt.Sprintf("node%d", i+1)); got != p {
						return fmt.Errorf("%s: node%d at protocol %d, want %d", n.cfg.Name, i+1, got, p)
					}
				}
			}
			return nil
		}
	}
	// node3's record is the base protocol either way: wait for the others'.
	testutil.WaitFor(t, 20*time.Second, "the protocols recorded", recorded(2, 2, 1))

	newer := func(n *Node, key string) error {
		_, err := n.Apply(ctx, msgTestNewer, putCmd{Key: key, Value: "v"}, nil)
		return err
	}
	for _, n := range tc.nodes {
		err := newer(n, "early")
		if ErrorCode(err) != CodeUnavailable || !strings.Contains(err.Error(), "node3 runs 1") {
			t.Fatalf("a protocol-2 command proposed on %s with node3 at 1: %v", n.cfg.Name, err)
		}
	}
	if _, err := tc.nodes[0].Apply(ctx, msgTestPut, putCmd{Key: "base", Value: "v"}, nil); err != nil {
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

	// node3 is upgraded: stopped, started again speaking 2.
	if err := tc.nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
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

	// A server that is down keeps its record: it does not hold the
	// cluster back.
	if err := tc.nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	tc.nodes[2] = nil
	if err := newer(tc.nodes[0], "node3 down"); err != nil {
		t.Fatalf("with node3 down: %v", err)
	}
}
