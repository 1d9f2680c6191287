package consensus

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/hashicorp/go-memdb"
)

// A tiny domain for tests: a key/value table with put and compare-and-set.
type kv struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	Version uint64 `json:"version"`
}

type putCmd struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	IfMatch uint64 `json:"if_match,omitempty"`
}

const (
	msgTestPut MessageType = 9000
	// msgTestNewer is a command added in protocol 2 (protocol_test.go).
	msgTestNewer MessageType = 9002
	// msgTestBlob puts a value that may come attached (attach_test.go).
	msgTestBlob MessageType = 9003
	// msgTestEnvelope runs another command inside it, as identity's
	// audited envelope does.
	msgTestEnvelope MessageType = 9004
)

func testRegistry() *Registry { return testRegistryAt(2) }

// testRegistryAt is the registry of a binary of that protocol: before 2 it
// does not know msgTestNewer, and would stop at it.
func testRegistryAt(protocol int) *Registry {
	r := NewRegistry()
	RegisterTable[kv](r, &memdb.TableSchema{Name: "kv", Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
	}})
	Handle(r, msgTestPut, "TestPut", func(tx *Tx, c *putCmd) (any, error) {
		raw, _ := tx.First("kv", "id", c.Key)
		if c.IfMatch != 0 && (raw == nil || raw.(*kv).Version != c.IfMatch) {
			return nil, Errorf(CodePreconditionFailed, "version mismatch")
		}
		row := &kv{Key: c.Key, Value: c.Value, Version: tx.Index}
		return row, tx.Insert("kv", row)
	})
	Handle(r, msgTestBlob, "TestBlob", applyTestBlob)
	Handle(r, msgTestEnvelope, "TestEnvelope", func(tx *Tx, c *envelopeCmd) (any, error) { return tx.Dispatch(c.Type, c.Payload) })
	if protocol >= 2 {
		HandleSince(r, msgTestNewer, "TestNewerPut", 2, func(tx *Tx, c *putCmd) (any, error) {
			return nil, tx.Insert("kv", &kv{Key: c.Key, Value: c.Value, Version: tx.Index})
		})
	}
	return r
}

func get(n *Node, key string) *kv {
	raw, _ := n.Store().ReadTxn().First("kv", "id", key)
	if raw == nil {
		return nil
	}
	return raw.(*kv)
}

type testCluster struct {
	t     *testing.T
	nodes []*Node
	cfgs  []Config
}

// newTestConfig gives node i its own loopback address, so every node uses the
// same ports as in production.
func newTestConfig(t *testing.T, i, expect int, token string) Config {
	cfg := DefaultConfig()
	cfg.Name = fmt.Sprintf("node%d", i)
	cfg.DataDir = t.TempDir()
	cfg.BindAddr = fmt.Sprintf("127.0.%d.%d", 40+os.Getpid()%150, 10+i)
	cfg.RPCPort, cfg.GossipPort, cfg.DiscoveryPort = 18444, 18445, 0
	cfg.Expect = expect
	cfg.JoinToken = token
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.BootstrapSettle = 200 * time.Millisecond
	cfg.DeadServerGrace = 2 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(testutil.LogWriter(t), &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", cfg.Name)
	return cfg
}

func startCluster(t *testing.T, n int) *testCluster {
	tc := &testCluster{t: t}
	for i := 1; i <= n; i++ {
		cfg := newTestConfig(t, i, n, "test-token")
		if i == 3 {
			// Nodes created before raft-wal keep their log in bbolt, so a
			// cluster can mix the two: every cluster test runs both.
			cfg.LogStore = LogStoreBoltDB
		}
		tc.cfgs = append(tc.cfgs, cfg)
	}
	for i := range tc.cfgs {
		tc.cfgs[i].Join = []string{tc.cfgs[0].BindAddr + ":18445"}
		tc.nodes = append(tc.nodes, tc.start(tc.cfgs[i]))
	}
	return tc
}

func (tc *testCluster) start(cfg Config) *Node {
	tc.t.Helper()
	reg := testRegistry()
	if cfg.protocol != 0 {
		reg = testRegistryAt(cfg.protocol)
	}
	nd, err := New(cfg, reg)
	if err != nil {
		tc.t.Fatal(err)
	}
	if err := nd.Start(context.Background()); err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { _ = nd.Shutdown() })
	return nd
}

// follower is a running node that does not lead.
func (tc *testCluster) follower() *Node {
	for _, n := range tc.nodes {
		if n != nil && !n.IsLeader() {
			return n
		}
	}
	return nil
}

func (tc *testCluster) leader() *Node {
	for _, n := range tc.nodes {
		if n != nil && n.IsLeader() {
			return n
		}
	}
	return nil
}

// enrolToken creates a one-time enrolment token, which a node joining a
// formed cluster needs.
func (tc *testCluster) enrolToken() string {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := tc.leader().CreateEnrolToken(ctx, 0, "test")
	if err != nil {
		tc.t.Fatal(err)
	}
	return tok.Token
}

func (tc *testCluster) waitVoters(want int) {
	tc.t.Helper()
	testutil.WaitFor(tc.t, 20*time.Second, fmt.Sprintf("%d voters and a leader", want), func() error {
		l := tc.leader()
		if l == nil {
			return errors.New("no leader")
		}
		if v := l.Status().Voters; v != want {
			return fmt.Errorf("%d voters", v)
		}
		return nil
	})
}

func TestClusterBootstrapForwardAndFailover(t *testing.T) {
	tc := startCluster(t, 3)
	tc.waitVoters(3)

	// Every node ended up with the same CA, written to ca.crt.
	ca0, _ := os.ReadFile(tc.cfgs[0].DataDir + "/ca.crt")
	for i := range tc.nodes {
		b, err := os.ReadFile(tc.cfgs[i].DataDir + "/ca.crt")
		if err != nil || string(b) != string(ca0) {
			t.Fatalf("node%d has a different or no CA: %v", i+1, err)
		}
	}

	// A write on a follower is forwarded, and readable there right after.
	var follower *Node
	for _, n := range tc.nodes {
		if !n.IsLeader() {
			follower = n
		}
	}
	ctx := context.Background()
	var got kv
	if _, err := follower.Apply(ctx, msgTestPut, putCmd{Key: "a", Value: "1"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Value != "1" || get(follower, "a") == nil {
		t.Fatalf("forwarded write not visible: %+v", got)
	}
	// A rejected command changes nothing and keeps its code across forwarding.
	_, err := follower.Apply(ctx, msgTestPut, putCmd{Key: "a", Value: "2", IfMatch: got.Version + 100}, nil)
	if ErrorCode(err) != CodePreconditionFailed {
		t.Fatalf("want precondition_failed, got %v", err)
	}
	if v := get(follower, "a"); v.Value != "1" {
		t.Fatalf("rejected write changed state: %+v", v)
	}

	// Kill the leader: the others elect a new one and accept writes.
	old := tc.leader()
	_ = old.Shutdown()
	for i, n := range tc.nodes {
		if n == old {
			tc.nodes[i] = nil
		}
	}
	testutil.WaitFor(t, 10*time.Second, "a write after leader loss", func() error {
		for _, n := range tc.nodes {
			if n != nil {
				_, err := n.Apply(ctx, msgTestPut, putCmd{Key: "b", Value: "after"}, nil)
				return err
			}
		}
		return errors.New("no node")
	})
	for _, n := range tc.nodes {
		if n == nil {
			continue
		}
		if err := n.ConsistentRead(ctx); err != nil {
			t.Fatal(err)
		}
		if v := get(n, "b"); v == nil || v.Value != "after" {
			t.Fatalf("%s: consistent read missed the write", n.Name())
		}
	}
}

// Concurrent writes through a follower travel to the leader in batches; each
// caller still gets its own command's outcome: its result, its index, or its
// own rejection.
func TestForwardedBatchesKeepPerCommandOutcomes(t *testing.T) {
	tc := startCluster(t, 3)
	tc.waitVoters(3)
	var follower *Node
	for _, n := range tc.nodes {
		if !n.IsLeader() {
			follower = n
		}
	}
	ctx := context.Background()
	const writers = 64
	type outcome struct {
		got kv
		idx uint64
		err error
	}
	outs := make([]outcome, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			c := putCmd{Key: fmt.Sprintf("k%d", i), Value: fmt.Sprint(i)}
			if i%4 == 3 {
				c.IfMatch = 1 << 40 // never matches: rejected
			}
			outs[i].idx, outs[i].err = follower.Apply(ctx, msgTestPut, c, &outs[i].got)
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for i, o := range outs {
		if i%4 == 3 {
			if ErrorCode(o.err) != CodePreconditionFailed {
				t.Errorf("writer %d: want precondition_failed, got %v", i, o.err)
			}
			if get(follower, fmt.Sprintf("k%d", i)) != nil {
				t.Errorf("writer %d: rejected write is visible", i)
			}
			continue
		}
		if o.err != nil {
			t.Errorf("writer %d: %v", i, o.err)
			continue
		}
		if o.got.Key != fmt.Sprintf("k%d", i) || o.got.Value != fmt.Sprint(i) || o.got.Version != o.idx {
			t.Errorf("writer %d: result %+v at index %d is not its own", i, o.got, o.idx)
		}
		if seen[o.idx] {
			t.Errorf("writer %d: index %d returned twice", i, o.idx)
		}
		seen[o.idx] = true
		if v := get(follower, o.got.Key); v == nil || v.Version != o.idx {
			t.Errorf("writer %d: not readable on the follower right after: %+v", i, v)
		}
	}
}

func TestWrongTokenCannotJoin(t *testing.T) {
	good := newTestConfig(t, 1, 1, "right")
	n1 := (&testCluster{t: t}).start(good)
	testutil.WaitFor(t, 10*time.Second, "single node leader", func() error {
		if !n1.IsLeader() {
			return errors.New("not leader")
		}
		return nil
	})
	bad := newTestConfig(t, 2, 1, "wrong")
	bad.Join = []string{good.BindAddr + ":18445"}
	n2 := (&testCluster{t: t}).start(bad)
	// The intruder's gossip cannot decrypt ours, so it never sees the cluster;
	// it bootstraps a cluster of its own instead of joining ours.
	testutil.WaitFor(t, 10*time.Second, "intruder to settle alone", func() error {
		if !n2.IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	if v := n1.Status().Voters; v != 1 {
		t.Fatalf("cluster admitted a node with the wrong token: %d voters", v)
	}
	if len(n1.aliveMembers()) != 1 {
		t.Fatalf("gossip admitted a node with the wrong token")
	}
}

func TestSnapshotRestore(t *testing.T) {
	for _, store := range []string{LogStoreWAL, LogStoreBoltDB} {
		t.Run(store, func(t *testing.T) { testSnapshotRestore(t, store) })
	}
}

func testSnapshotRestore(t *testing.T, store string) {
	cfg := newTestConfig(t, 1, 1, "snap")
	cfg.LogStore = store
	tc := &testCluster{t: t}
	n := tc.start(cfg)
	tc.nodes = []*Node{n}
	tc.waitVoters(1)
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		if _, err := n.Apply(ctx, msgTestPut, putCmd{Key: fmt.Sprintf("k%02d", i), Value: "v"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(ctx, msgTestPut, putCmd{Key: "after-snap", Value: "v"}, nil); err != nil {
		t.Fatal(err)
	}
	applied := n.Store().AppliedIndex()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	cfg.LogStore = "" // a restarted node finds its own store
	n2 := tc.start(cfg)
	tc.nodes = []*Node{n2}
	if n2.raftDisk.kind != store {
		t.Fatalf("restarted with the %s log store, was %s", n2.raftDisk.kind, store)
	}
	tc.waitVoters(1)
	testutil.WaitFor(t, 10*time.Second, "state restored from snapshot and log", func() error {
		if n2.Store().AppliedIndex() < applied {
			return fmt.Errorf("applied %d < %d", n2.Store().AppliedIndex(), applied)
		}
		return nil
	})
	for i := 0; i < 50; i++ {
		if get(n2, fmt.Sprintf("k%02d", i)) == nil {
			t.Fatalf("k%02d lost across snapshot restore", i)
		}
	}
	if get(n2, "after-snap") == nil {
		t.Fatal("write after the snapshot lost")
	}
}

// A node keeps the log store it was created with: asking an existing node
// for the other one is refused before anything starts, and changes nothing.
func TestLogStoreStaysWithTheNode(t *testing.T) {
	for _, c := range []struct{ have, other string }{
		{LogStoreWAL, LogStoreBoltDB},
		{LogStoreBoltDB, LogStoreWAL},
	} {
		t.Run(c.have, func(t *testing.T) {
			cfg := newTestConfig(t, 1, 1, "stores")
			cfg.LogStore = c.have
			tc := &testCluster{t: t}
			n := tc.start(cfg)
			tc.nodes = []*Node{n}
			tc.waitVoters(1)
			if _, err := n.Apply(context.Background(), msgTestPut, putCmd{Key: "k", Value: "v"}, nil); err != nil {
				t.Fatal(err)
			}
			if err := n.Shutdown(); err != nil {
				t.Fatal(err)
			}
			_, walErr := os.Stat(filepath.Join(cfg.DataDir, "raft", "wal"))
			if hasWAL := walErr == nil; hasWAL != (c.have == LogStoreWAL) {
				t.Fatalf("log store %s, but the wal directory exists: %v", c.have, hasWAL)
			}
			before := listTree(t, cfg.DataDir)

			cfg.LogStore = c.other
			if _, err := New(cfg, testRegistry()); err == nil || !strings.Contains(err.Error(), "keeps the store it was created with") {
				t.Fatalf("switching %s to %s: want a refusal, got %v", c.have, c.other, err)
			}
			cfg.LogStore = "bogus"
			if _, err := New(cfg, testRegistry()); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
				t.Fatalf("unknown log store: got %v", err)
			}
			cfg.LogStore, cfg.WALSegmentSize = "", 1000
			if _, err := New(cfg, testRegistry()); err == nil || !strings.Contains(err.Error(), "segment size") {
				t.Fatalf("tiny segments: got %v", err)
			}
			cfg.WALSegmentSize = DefaultConfig().WALSegmentSize
			if after := listTree(t, cfg.DataDir); after != before {
				t.Fatalf("a refused start changed the data dir:\n%s\nbecame\n%s", before, after)
			}

			cfg.LogStore = c.have
			n = tc.start(cfg)
			tc.nodes = []*Node{n}
			tc.waitVoters(1)
			if get(n, "k") == nil {
				t.Fatal("write lost across restarts")
			}
		})
	}
}

// listTree lists the files under dir with their sizes and modification times.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %s\n", path, info.Size(), info.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A node that joins an idle cluster is ready for linearizable reads even
// though the log ends in configuration entries, which never reach the FSM.
func TestConsistentReadAfterConfigChange(t *testing.T) {
	tc := startCluster(t, 3)
	tc.waitVoters(3)
	ctx := context.Background()
	if _, err := tc.nodes[0].Apply(ctx, msgTestPut, putCmd{Key: "x", Value: "1"}, nil); err != nil {
		t.Fatal(err)
	}
	cfg := newTestConfig(t, 4, 3, "test-token")
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg.EnrolToken = tc.enrolToken()
	n4 := tc.start(cfg)
	tc.nodes = append(tc.nodes, n4)
	tc.waitVoters(4)
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := n4.ConsistentRead(rctx); err != nil {
		t.Fatalf("consistent read on the new node: %v", err)
	}
	if v := get(n4, "x"); v == nil {
		t.Fatal("new node missed the write")
	}
	if err := tc.leader().ConsistentRead(rctx); err != nil {
		t.Fatalf("consistent read on the leader: %v", err)
	}
}

// Beyond MaxVoters a node joins as a non-voter; when a voter dies and its
// grace period passes, it is removed and the non-voter is promoted.
func TestNonVoterPromotedAfterDeadVoterRemoved(t *testing.T) {
	tc := &testCluster{t: t}
	for i := 1; i <= 4; i++ {
		cfg := newTestConfig(t, i, 3, "nv-token")
		cfg.MaxVoters = 3
		tc.cfgs = append(tc.cfgs, cfg)
	}
	for i := range tc.cfgs {
		tc.cfgs[i].Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	}
	for _, cfg := range tc.cfgs[:3] {
		tc.nodes = append(tc.nodes, tc.start(cfg))
	}
	tc.waitVoters(3)
	tc.cfgs[3].EnrolToken = tc.enrolToken()
	n4 := tc.start(tc.cfgs[3])
	tc.nodes = append(tc.nodes, n4)
	role := func(name string) string {
		l := tc.leader()
		if l == nil {
			return "no leader"
		}
		for _, ns := range l.Status().Nodes {
			if ns.Name == name {
				return ns.Role
			}
		}
		return "absent"
	}
	testutil.WaitFor(t, 20*time.Second, "node4 as a non-voter", func() error {
		if r := role("node4"); r != "nonvoter" {
			return fmt.Errorf("node4 is %s", r)
		}
		return nil
	})
	var victim *Node
	for _, n := range tc.nodes[:3] {
		if !n.IsLeader() {
			victim = n
			break
		}
	}
	_ = victim.Shutdown()
	for i, n := range tc.nodes {
		if n == victim {
			tc.nodes[i] = nil
		}
	}
	testutil.WaitFor(t, 30*time.Second, "the dead voter removed and node4 promoted", func() error {
		if r := role(victim.Name()); r != "absent" {
			return fmt.Errorf("%s is still %s", victim.Name(), r)
		}
		if r := role("node4"); r != "voter" {
			return fmt.Errorf("node4 is %s", r)
		}
		return nil
	})
	if _, err := n4.Apply(context.Background(), msgTestPut, putCmd{Key: "after", Value: "v"}, nil); err != nil {
		t.Fatal(err)
	}
}

// A follower learns that its forwarded write is committed from the leader's
// answer, not from the leader's next AppendEntries: with CommitTimeout so
// long that those never come, a write through a follower is still readable
// there at once. A hint that does not match the follower's log is refused by
// Raft's own checks and applies nothing.
func TestFollowerLearnsCommitFromLeadersAnswer(t *testing.T) {
	tc := &testCluster{t: t}
	for i := 1; i <= 3; i++ {
		cfg := newTestConfig(t, i, 3, "test-token")
		cfg.CommitTimeout = time.Minute
		tc.cfgs = append(tc.cfgs, cfg)
	}
	for i := range tc.cfgs {
		tc.cfgs[i].Join = []string{tc.cfgs[0].BindAddr + ":18445"}
		tc.nodes = append(tc.nodes, tc.start(tc.cfgs[i]))
	}
	tc.waitVoters(3)
	leader := tc.leader()
	var follower *Node
	for _, n := range tc.nodes {
		if n != leader {
			follower = n
		}
	}
	ctx := context.Background()
	for i := range 20 {
		key := fmt.Sprintf("f%d", i)
		start := time.Now()
		idx, err := follower.Apply(ctx, msgTestPut, putCmd{Key: key, Value: "x"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if v := get(follower, key); v == nil || v.Version != idx {
			t.Fatalf("write %d at index %d not readable on the follower: %+v", i, idx, v)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("write %d took %s to become readable on the follower", i, d)
		}
	}

	// A write through the leader reaches the follower's log; the commit does
	// not follow for a minute. A hint with the wrong term is refused, the
	// right one is taken. (The cluster's own background writes would carry
	// the commit too: a round with one is not conclusive and is repeated.)
	for round := 0; ; round++ {
		if round == 5 {
			t.Fatal("no round without a background write")
		}
		if hintRound(t, leader, follower, round) {
			break
		}
	}
}

// hintRound writes through the leader, offers the follower a wrong hint and
// then the right one, and reports whether the round was conclusive.
func hintRound(t *testing.T, leader, follower *Node, round int) bool {
	ctx := context.Background()
	key := fmt.Sprintf("l%d", round)
	idx, err := leader.Apply(ctx, msgTestPut, putCmd{Key: key, Value: "y"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the entry in the follower's log", func() error {
		if follower.hinter.stored.Load() < idx {
			return errors.New("not yet")
		}
		return nil
	})
	term := leader.Raft().CurrentTerm()
	addr, lid := follower.Raft().LeaderWithID()
	follower.hinter.offer(commitHint{index: idx, term: term + 7, leader: lid, addr: addr})
	time.Sleep(200 * time.Millisecond)
	if leader.Raft().LastIndex() != idx {
		return false
	}
	if got := follower.Store().AppliedIndex(); got >= idx {
		if leader.Raft().LastIndex() != idx {
			// A background write came after the check above and carried
			// the commit: not conclusive either.
			return false
		}
		t.Fatalf("a hint with the wrong term applied index %d (applied %d)", idx, got)
	}
	follower.hinter.offer(commitHint{index: idx, term: term, leader: lid, addr: addr})
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := follower.Store().WaitApplied(wctx, idx); err != nil {
		t.Fatalf("the matching hint was not applied: %v", err)
	}
	if v := get(follower, key); v == nil || v.Value != "y" {
		t.Fatalf("follower state after the hint: %+v", v)
	}
	return leader.Raft().LastIndex() == idx
}

// A node that kept its certificate but lost its Raft state must not come
// back as a voter with an empty log: it refuses to start, saying what to do.
func TestNodeWithoutRaftStateRefusesToStart(t *testing.T) {
	tc := startCluster(t, 1)
	tc.waitVoters(1)
	if err := tc.nodes[0].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(tc.cfgs[0].DataDir, "raft")); err != nil {
		t.Fatal(err)
	}
	nd, err := New(tc.cfgs[0], testRegistry())
	if err != nil {
		t.Fatal(err)
	}
	err = nd.Start(context.Background())
	t.Cleanup(func() { _ = nd.Shutdown() })
	if err == nil || !strings.Contains(err.Error(), "Raft state") || !strings.Contains(err.Error(), "new node") {
		t.Fatalf("start without Raft state: %v, want a refusal that says what to do", err)
	}
}

// stuckFuture is a command Raft took and will never answer.
type stuckFuture struct{ failedFuture }

func (stuckFuture) Error() error { select {} }

// A command Raft never answers (queued when it shut down) does not hold
// its caller past the caller's own end.
func TestWaitAppliedStopsWithItsCaller(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- waitApplied(stuckFuture{}, stop) }()
	close(stop)
	select {
	case err := <-done:
		if !errors.Is(err, errApplyAbandoned) {
			t.Fatalf("waitApplied: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitApplied did not return when its caller stopped")
	}
	if err := waitApplied(failedFuture{ErrNoLeader}, nil); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("waitApplied of an answered command: %v", err)
	}
}
