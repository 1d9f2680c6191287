package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairnhq/cairn/qa/testutil"
)

type envelopeCmd struct {
	Type    MessageType     `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// blobCmd is msgTestBlob's command: Value is the plain form's bytes.
type blobCmd struct {
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
}

// applyTestBlob records how the value came: beside the command or in it.
func applyTestBlob(tx *Tx, c *blobCmd) (any, error) {
	v := "plain:" + string(c.Value)
	if b := tx.Attached(); b != nil {
		if len(c.Value) > 0 {
			return nil, Errorf(CodeInvalid, "bytes both attached and in the command")
		}
		v = "attached:" + string(b)
	}
	return nil, tx.Insert("kv", &kv{Key: c.Key, Value: v, Version: tx.Index})
}

func attachedBlob(key string, value []byte) Attached {
	return Attached{Cmd: blobCmd{Key: key}, Bytes: value, Plain: func() (any, error) {
		return blobCmd{Key: key, Value: value}, nil
	}}
}

// An attached command's bytes reach the handler on every node, from the
// leader and from a follower (whose batch to the leader carries them), and
// inside an envelope that dispatches it. While a server runs a protocol
// that does not know the attached form, the same command goes in its
// plain form; once it is upgraded, attached. A body that does not frame
// is refused before it reaches the log.
func TestAttachedBytes(t *testing.T) {
	tc := &testCluster{t: t}
	for i := 1; i <= 3; i++ {
		cfg := newTestConfig(t, i, 3, "test-token")
		cfg.DeadServerGrace = time.Minute
		cfg.protocol = attachProtocol
		if i == 3 {
			cfg.protocol = attachProtocol - 1
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
	lowest := func(want int) func() error {
		return func() error {
			for _, n := range tc.nodes {
				if _, p := lowestServer(n.store.txn(), mustServers(t, n)); p != want {
					return fmt.Errorf("%s: lowest protocol %d", n.cfg.Name, p)
				}
			}
			return nil
		}
	}
	testutil.WaitFor(t, 20*time.Second, "node3's protocol recorded", lowest(attachProtocol-1))

	// value is 4 KiB that JSON would have to escape and base64 would grow.
	value := bytes.Repeat([]byte("\x00\"\\é"), 1024)
	put := func(n *Node, key string) {
		t.Helper()
		if _, err := n.Apply(ctx, msgTestBlob, attachedBlob(key, value), nil); err != nil {
			t.Fatalf("%s on %s: %v", key, n.cfg.Name, err)
		}
	}
	everywhere := func(key, how string) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, key+" on every node", func() error {
			for _, n := range tc.nodes {
				if kv := get(n, key); kv == nil || kv.Value != how+string(value) {
					return fmt.Errorf("%s has %+v", n.cfg.Name, kv)
				}
			}
			return nil
		})
	}
	follower := tc.follower()
	put(tc.leader(), "old-leader")
	put(follower, "old-follower")
	everywhere("old-leader", "plain:")
	everywhere("old-follower", "plain:")

	// node3 upgraded.
	if err := tc.nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	tc.cfgs[2].protocol = attachProtocol
	tc.nodes[2] = tc.start(tc.cfgs[2])
	testutil.WaitFor(t, 30*time.Second, "node3's new protocol recorded", lowest(attachProtocol))
	follower = tc.follower()
	put(tc.leader(), "new-leader")
	put(follower, "new-follower")
	everywhere("new-leader", "attached:")
	everywhere("new-follower", "attached:")

	// In an envelope: the inner command runs in the same Tx.
	if _, err := tc.leader().Apply(ctx, msgTestEnvelope, Attached{
		Cmd:   envelopeCmd{Type: msgTestBlob, Payload: mustMarshal(t, blobCmd{Key: "enveloped"})},
		Bytes: value,
		Plain: func() (any, error) { return nil, fmt.Errorf("not asked for") },
	}, nil); err != nil {
		t.Fatal(err)
	}
	everywhere("enveloped", "attached:")

	// A proposer that takes every server for protocol 9 where the leader
	// does not (here: a server the leader has just added, with no record
	// yet): the leader refuses the attached form, and the proposer sends
	// the plain one.
	l := tc.leader()
	if err := l.Raft().AddNonvoter("ghost", "127.0.0.1:1", 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	follower = tc.follower()
	follower.attachAnyway.Store(true)
	put(follower, "ahead")
	follower.attachAnyway.Store(false)
	everywhere("ahead", "plain:")
	if err := l.Raft().RemoveServer("ghost", 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}

	// A body whose JSON length runs past its end, as a follower could
	// forward it, never reaches the log.
	for _, body := range [][]byte{{0, 0}, {0, 0, 0, 9, '{', '}'}} {
		f := applyAsync(l.Raft(), msgTestBlob|AttachedFlag, body, 5*time.Second)
		if err := f.Error(); ErrorCode(err) != CodeInvalid || !strings.Contains(err.Error(), "malformed") {
			t.Fatalf("a malformed attached body %x: %v", body, err)
		}
	}
	if err := l.ConsistentRead(ctx); err != nil {
		t.Fatal(err)
	}
}

func mustServers(t *testing.T, n *Node) []raft.Server {
	t.Helper()
	s, err := n.servers()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
