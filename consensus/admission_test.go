package consensus

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/cairnhq/cairn/qa/testutil"
)

// startOne forms a one-node cluster with the cluster key "site-key".
func startOne(t *testing.T) (*testCluster, *Node) {
	tc := &testCluster{t: t}
	cfg := newTestConfig(t, 1, 1, "site-key")
	n1 := tc.start(cfg)
	tc.nodes, tc.cfgs = append(tc.nodes, n1), append(tc.cfgs, cfg)
	tc.waitVoters(1)
	return tc, n1
}

// joiner is node i configured to join n1's cluster, not started.
func joiner(t *testing.T, tc *testCluster, i int, enrol string) *Node {
	cfg := newTestConfig(t, i, 3, "site-key") // 3: never bootstraps alone
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg.EnrolToken = enrol
	nd, err := New(cfg, testRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

func askCode(t *testing.T, nd *Node, to *Node) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := nd.askToJoin(ctx, to.RaftAddr(), false)
	return err
}

// The cluster key (the old join token) alone no longer admits a node once
// the cluster has formed; an enrolment token admits once, and not twice.
func TestJoinNeedsAnEnrolmentTokenOnce(t *testing.T) {
	tc, n1 := startOne(t)
	if err := askCode(t, joiner(t, tc, 2, ""), n1); ErrorCode(err) != CodeForbidden || ErrorReason(err) != reasonPendingApproval {
		t.Fatalf("join with the cluster key alone: %v, want forbidden (pending approval)", err)
	}
	tok := tc.enrolToken()
	if err := askCode(t, joiner(t, tc, 3, tok), n1); err != nil {
		t.Fatalf("join with a fresh enrolment token: %v", err)
	}
	if err := askCode(t, joiner(t, tc, 4, tok), n1); ErrorCode(err) != CodeForbidden {
		t.Fatalf("second join with the same enrolment token: %v, want forbidden", err)
	}
	// A token whose secret is wrong (same ID) does not pass either.
	tok2 := tc.enrolToken()
	id, _ := enrolTokenID(tok2)
	if err := askCode(t, joiner(t, tc, 5, id+".00"), n1); ErrorCode(err) != CodeForbidden {
		t.Fatalf("join with a forged enrolment token: %v, want forbidden", err)
	}
	// The whole way: a node started with a token becomes a voter.
	cfg := newTestConfig(t, 6, 3, "site-key")
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg.EnrolToken = tok2
	tc.nodes = append(tc.nodes, tc.start(cfg))
	tc.waitVoters(2)
}

func TestExpiredEnrolmentTokenIsRefused(t *testing.T) {
	tc, n1 := startOne(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := n1.CreateEnrolToken(ctx, 50*time.Millisecond, "test")
	if err != nil {
		t.Fatal(err)
	}
	nd := joiner(t, tc, 2, tok.Token)
	testutil.WaitFor(t, 5*time.Second, "the token to expire", func() error {
		if time.Now().Before(tok.Expires) {
			return errors.New("not yet")
		}
		return nil
	})
	if err := askCode(t, nd, n1); ErrorCode(err) != CodeForbidden {
		t.Fatalf("join with an expired enrolment token: %v, want forbidden", err)
	}
}

// A node with the cluster key but no enrolment token waits as pending until
// an admin approves it (by the fingerprint of its key), then joins.
func TestApprovalAdmitsAPendingNode(t *testing.T) {
	tc, n1 := startOne(t)
	cfg := newTestConfig(t, 2, 3, "site-key")
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	n2 := tc.start(cfg)
	tc.nodes = append(tc.nodes, n2)
	var fp string
	testutil.WaitFor(t, 20*time.Second, "node2 pending", func() error {
		for _, p := range n1.PendingNodes() {
			if p.Name == "node2" {
				fp = p.Fingerprint
				return nil
			}
		}
		return errors.New("not listed")
	})
	if v := n1.Status().Voters; v != 1 || n2.Raft() != nil {
		t.Fatalf("a pending node was admitted before approval (%d voters)", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n1.ApproveNode(ctx, "node2", "0000000000000000", "admin"); ErrorCode(err) != CodeConflict {
		t.Fatalf("approval with the wrong fingerprint: %v, want conflict", err)
	}
	if _, err := n1.ApproveNode(ctx, "node2", fp, "admin"); err != nil {
		t.Fatal(err)
	}
	tc.waitVoters(2)
	testutil.WaitFor(t, 10*time.Second, "the approval used up", func() error {
		if p := n1.PendingNodes(); len(p) != 0 {
			return fmt.Errorf("still pending: %v", p)
		}
		return nil
	})
}

// Gossip needs only the cluster key, and a member's phase and address there
// are only claims: a node that claims to be "waiting" without holding a
// certificate of the cluster CA is not added to Raft.
func TestGossipClaimAloneDoesNotMakeAVoter(t *testing.T) {
	tc, n1 := startOne(t)
	cfg := newTestConfig(t, 2, 3, "site-key")
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	liar := tc.start(cfg)
	liar.mu.Lock()
	liar.phase = phaseWaiting
	liar.mu.Unlock()
	liar.updateGossipMeta()
	testutil.WaitFor(t, 10*time.Second, "the leader to see the claim", func() error {
		for _, m := range n1.aliveMembers() {
			if m.Name == "node2" && m.Meta.Phase == phaseWaiting {
				return nil
			}
		}
		return errors.New("not yet")
	})
	settleMembership(n1)
	if v := n1.Status().Voters; v != 1 {
		t.Fatalf("a node with the cluster key but no certificate became a voter (%d voters)", v)
	}
}

// A box started with no cluster key (an image carries none) asks the
// formed cluster it can reach to pair it; it waits as pending, and once an
// admin approves its key it gets its certificate and the cluster key, and
// becomes a voter.
func TestPairingWithoutTheClusterKey(t *testing.T) {
	tc, n1 := startOne(t)
	cfg := newTestConfig(t, 2, 3, "") // no key: it makes its own
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	n2 := tc.start(cfg)
	tc.nodes = append(tc.nodes, n2)
	if n2.JoinToken() == n1.JoinToken() {
		t.Fatal("the keyless node has the cluster key already")
	}
	var fp string
	testutil.WaitFor(t, 20*time.Second, "node2 pending", func() error {
		for _, p := range n1.PendingNodes() {
			if p.Name == "node2" {
				fp = p.Fingerprint
				return nil
			}
		}
		return errors.New("not listed")
	})
	if fp != n2.JoinFingerprint() {
		t.Fatalf("pending fingerprint %s, the node's own %s", fp, n2.JoinFingerprint())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n1.ApproveNode(ctx, "node2", fp, "admin"); err != nil {
		t.Fatal(err)
	}
	tc.waitVoters(2)
	if n2.JoinToken() != n1.JoinToken() {
		t.Fatal("the paired node did not adopt the cluster key")
	}
}

// A pairing request must be signed, on its own TLS session, with the key it
// asks a certificate for: one relayed from another session is refused.
func TestPairingRequestIsBoundToItsSession(t *testing.T) {
	key, _, err := newNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	req := joinRequest{Name: "n", RaftAddr: "10.0.0.1:8444", PubKey: pemBlock("PUBLIC KEY", der), Pair: true}
	if req.KeySig, err = signJoin(key, []byte("session-a"), &req); err != nil {
		t.Fatal(err)
	}
	if err := verifyKeySig([]byte("session-a"), &req); err != nil {
		t.Fatalf("own session: %v", err)
	}
	if err := verifyKeySig([]byte("session-b"), &req); err == nil {
		t.Fatal("a pairing request relayed onto another TLS session was accepted")
	}
}

// relayJoin sends, on its own TLS session, the request a relay in the middle
// would: name and key of another node, a fresh proof keyed with the cluster
// key, and the signature that node made for a different session.
func relayJoin(t *testing.T, to *Node, name string, key *ecdsa.PrivateKey, enrolID string) (*joinResponse, error) {
	t.Helper()
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pemBlock("PUBLIC KEY", der)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return sendJoin(ctx, to.RaftAddr(), func(ekm []byte) (joinRequest, error) {
		req := joinRequest{Name: name, IPs: []string{"127.0.0.99"}, RaftAddr: "127.0.0.99:18444", PubKey: pubPEM, EnrolID: enrolID}
		req.Proof = joinProof(to.JoinToken(), ekm, []byte("join"), []byte(req.Name), []byte(req.RaftAddr), pubPEM)
		var err error
		req.KeySig, err = signJoin(key, []byte("the victim's own session"), &req)
		return req, err
	})
}

// Someone with the cluster key who gets a real node's join request (by
// gossiping a member that sorts first) and relays it on its own session
// must not get the certificate and the CA key when an admin approves the
// real node's fingerprint: every request is signed, for its own session,
// with the key it names.
func TestRelayedJoinRequestIsRefused(t *testing.T) {
	tc, n1 := startOne(t)
	victim := joiner(t, tc, 2, "")
	if err := askCode(t, victim, n1); ErrorReason(err) != reasonPendingApproval {
		t.Fatalf("the real node's request: %v, want pending", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n1.ApproveNode(ctx, "node2", victim.JoinFingerprint(), "admin"); err != nil {
		t.Fatal(err)
	}
	key, _, _ := victim.joinKey()
	if resp, err := relayJoin(t, n1, "node2", key, ""); err == nil || resp != nil {
		t.Fatalf("a relayed request was admitted (CA key handed out)")
	} else if ErrorCode(err) != CodeForbidden {
		t.Fatalf("relayed request: %v, want forbidden", err)
	}
	// The real node, asking itself, is still admitted.
	if err := askCode(t, victim, n1); err != nil {
		t.Fatalf("the approved node itself: %v", err)
	}
}

// A member that gossip claims (anyone with the cluster key can) and that
// never answers does not keep a joining node from the real cluster.
func TestGossipClaimDoesNotTrapAJoiner(t *testing.T) {
	tc, _ := startOne(t)
	cfg := newTestConfig(t, 0, 3, "site-key") // "node0" sorts before node1
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	liar := tc.start(cfg)
	liar.mu.Lock()
	liar.phase = phaseMember
	liar.mu.Unlock()
	liar.updateGossipMeta()
	testutil.WaitFor(t, 10*time.Second, "the claim to spread", func() error {
		for _, m := range tc.nodes[0].aliveMembers() {
			if m.Name == "node0" && m.Meta.Phase == phaseMember {
				return nil
			}
		}
		return errors.New("not yet")
	})
	cfg2 := newTestConfig(t, 2, 3, "site-key")
	cfg2.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg2.EnrolToken = tc.enrolToken()
	tc.nodes = append(tc.nodes, tc.start(cfg2))
	tc.waitVoters(2)
}

// What the replicated state keeps of an enrolment token does not admit
// anyone: a reader of a snapshot or of the log cannot use the token.
func TestStoredEnrolmentTokenDoesNotAdmit(t *testing.T) {
	tc, n1 := startOne(t)
	id, _ := enrolTokenID(tc.enrolToken())
	raw, _ := json.Marshal(n1.store.enrolToken(id))
	var stored map[string]any
	_ = json.Unmarshal(raw, &stored)
	key, _, _ := newNodeKey()
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pemBlock("PUBLIC KEY", der)
	for field, v := range stored {
		s, ok := v.(string)
		if !ok || s == "" || field == "id" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := sendJoin(ctx, n1.RaftAddr(), func(ekm []byte) (joinRequest, error) {
			req := joinRequest{Name: "reader", IPs: []string{"127.0.0.98"}, RaftAddr: "127.0.0.98:18444", PubKey: pubPEM, EnrolID: id}
			req.Proof = joinProof(s, ekm, []byte("join"), []byte(req.Name), []byte(req.RaftAddr), pubPEM)
			var err error
			req.KeySig, err = signJoin(key, ekm, &req)
			return req, err
		})
		cancel()
		if ErrorCode(err) != CodeForbidden {
			t.Fatalf("a join proven with the stored %q of the token: %v, want forbidden", field, err)
		}
	}
}

// A box with no cluster key but an enrolment token (cairn.enrol=) pairs
// with the token, with no admin approval, and adopts the cluster key.
func TestKeylessBoxJoinsWithAnEnrolmentToken(t *testing.T) {
	tc, n1 := startOne(t)
	cfg := newTestConfig(t, 2, 3, "") // no key: it makes its own
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg.EnrolToken = tc.enrolToken()
	n2 := tc.start(cfg)
	tc.nodes = append(tc.nodes, n2)
	tc.waitVoters(2)
	if n2.JoinToken() != n1.JoinToken() {
		t.Fatal("the enrolled node did not adopt the cluster key")
	}
	if p := n1.PendingNodes(); len(p) != 0 {
		t.Fatalf("an enrolled node was listed as pending: %v", p)
	}
}

// A box that takes the name of a server still in the Raft configuration (a
// replacement for a dead voter, within DeadServerGrace) is refused: it would
// become that voter with an empty log.
func TestNameOfAServerIsNotAdmitted(t *testing.T) {
	tc, n1 := startOne(t)
	if err := askCode(t, joiner(t, tc, 1, tc.enrolToken()), n1); ErrorCode(err) != CodeConflict {
		t.Fatalf("a new box named like a voter, with an enrolment token: %v, want conflict", err)
	}
	if err := askCode(t, joiner(t, tc, 1, ""), n1); ErrorCode(err) != CodeConflict {
		t.Fatalf("a new box named like a voter, asking for approval: %v, want conflict", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n1.ApproveNode(ctx, "node1", "", "admin"); ErrorCode(err) != CodeConflict {
		t.Fatalf("approving a voter's name: %v, want conflict", err)
	}
}

// Gossip alone (the cluster key) cannot move a server's Raft address: the
// node at the new address must show its certificate for that name.
func TestGossipClaimDoesNotMoveAServer(t *testing.T) {
	tc, n1 := startOne(t)
	cfg := newTestConfig(t, 2, 3, "site-key")
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg.EnrolToken = tc.enrolToken()
	n2 := tc.start(cfg)
	tc.nodes = append(tc.nodes, n2)
	tc.waitVoters(2)
	// What a liar's gossip would say: node2 now lives at the liar's address.
	liar, err := net.Listen("tcp", tc.cfgs[0].BindAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer liar.Close()
	n1.gossipEvents.mu.Lock()
	m := n1.gossipEvents.alive["node2"]
	m.Meta.RaftAddr = liar.Addr().String()
	n1.gossipEvents.alive["node2"] = m
	n1.gossipEvents.mu.Unlock()
	settleMembership(n1)
	for _, s := range n1.Raft().GetConfiguration().Configuration().Servers {
		if s.ID == "node2" && string(s.Address) != n2.RaftAddr() {
			t.Fatalf("gossip moved node2 to %s", s.Address)
		}
	}
}

// Raft dials by address only; the peer there must hold the certificate of
// the server the configuration places at that address.
func TestRaftDialChecksTheServerName(t *testing.T) {
	_, n1 := startOne(t)
	if got := n1.raftNamesAt(n1.RaftAddr()); len(got) != 1 || got[0] != "node1" {
		t.Fatalf("names at node1's address: %v", got)
	}
	for _, c := range []struct {
		name string
		ok   bool
	}{{"node1", true}, {"node9", false}} {
		s := &raftStream{tls: n1.identity().clientTLS(alpnRaft), names: func(string) []string { return []string{c.name} }}
		conn, err := s.Dial(raft.ServerAddress(n1.RaftAddr()), 2*time.Second)
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != c.ok {
			t.Fatalf("dial node1 as %s: %v", c.name, err)
		}
	}
}

// Anyone who reaches the cluster port can ask to join under any name: a
// second key asking as a pending node does not displace the first (the
// admin approves by fingerprint), and one source cannot flood the list
// with Raft writes.
func TestPendingRequestsCannotDisplaceOrFlood(t *testing.T) {
	tc, n1 := startOne(t)
	real := joiner(t, tc, 2, "")
	if err := askCode(t, real, n1); ErrorReason(err) != reasonPendingApproval {
		t.Fatalf("the real node: %v, want pending", err)
	}
	if err := askCode(t, joiner(t, tc, 2, ""), n1); ErrorReason(err) != reasonPendingApproval {
		t.Fatalf("another key under the same name: %v, want pending", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n1.ApproveNode(ctx, "node2", real.JoinFingerprint(), "admin"); err != nil {
		t.Fatalf("approving the real node's key after another asked under its name: %v", err)
	}
	if err := askCode(t, real, n1); err != nil {
		t.Fatalf("the approved node: %v", err)
	}
	before := n1.Raft().LastIndex()
	for i := 10; i < 30; i++ {
		_ = askCode(t, joiner(t, tc, i, ""), n1)
	}
	if got := len(n1.PendingNodes()); got > pendingWritesPerMinute {
		t.Fatalf("one source listed %d pending nodes in a minute, want at most %d", got, pendingWritesPerMinute)
	}
	if writes := n1.Raft().LastIndex() - before; writes > pendingWritesPerMinute {
		t.Fatalf("one source caused %d Raft writes", writes)
	}
}

// Members that gossip claims and that never answer (anyone with the cluster
// key can make many) do not stall the leader's membership loop: their
// certificates are checked in parallel, and the answers remembered a while.
func TestSilentMembersDoNotStallMembership(t *testing.T) {
	_, n1 := startOne(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never speaks TLS
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	n1.gossipEvents.mu.Lock()
	for i := range 8 {
		name := fmt.Sprintf("fake%d", i)
		n1.gossipEvents.alive[name] = member{Name: name, State: memberlist.StateAlive,
			Meta: gossipMeta{Phase: phaseMember, RaftAddr: silent.Addr().String()}}
	}
	n1.gossipEvents.mu.Unlock()
	for _, round := range []string{"first", "second"} {
		start := time.Now()
		n1.reconcileMembership(map[string]time.Time{})
		if d := time.Since(start); d > 8*time.Second {
			t.Fatalf("%s round with 8 silent members took %s", round, d)
		}
	}
	if v := n1.Status().Voters; v != 1 {
		t.Fatalf("%d voters, want 1", v)
	}
}

// relayTo forwards every TCP connection on a new loopback port to target.
func relayTo(t *testing.T, host, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String()
}

// claimAddr makes n's gossip say that name lives at addr.
func claimAddr(n *Node, name, addr string) {
	n.gossipEvents.mu.Lock()
	m := n.gossipEvents.alive[name]
	m.Meta.RaftAddr = addr
	n.gossipEvents.alive[name] = m
	n.gossipEvents.mu.Unlock()
}

func serverAddr(n *Node, name string) string {
	for _, s := range n.Raft().GetConfiguration().Configuration().Servers {
		if string(s.ID) == name {
			return string(s.Address)
		}
	}
	return ""
}

// A plain TCP relay to the real node shows that node's certificate; gossip
// claiming the relay's address must still not move the server there.
func TestRelayDoesNotMoveAServer(t *testing.T) {
	tc, n1 := startOne(t)
	cfg := newTestConfig(t, 2, 3, "site-key")
	cfg.Join = []string{tc.cfgs[0].BindAddr + ":18445"}
	cfg.EnrolToken = tc.enrolToken()
	n2 := tc.start(cfg)
	tc.nodes = append(tc.nodes, n2)
	tc.waitVoters(2)
	relay := relayTo(t, tc.cfgs[0].BindAddr, n2.RaftAddr())
	for range 3 {
		claimAddr(n1, "node2", relay)
		settleMembership(n1)
		if got := serverAddr(n1, "node2"); got != n2.RaftAddr() {
			t.Fatalf("gossip and a relay moved node2 to %s", got)
		}
	}
}

// A server that really moves (a new DHCP lease) is moved in the Raft
// configuration once it answers at the new address, however many silent
// members gossip lists; a dead server is still removed after its grace.
func TestAddressChangeMovesAServer(t *testing.T) {
	tc := startCluster(t, 3)
	tc.waitVoters(3)
	// Many members that never answer (anyone with the cluster key can make
	// them) must not delay the move: 48 of them once cost 18 s a round.
	for _, n := range tc.nodes {
		addSilentMembers(t, n, 48)
	}
	i := 1
	if tc.nodes[1].IsLeader() {
		i = 2
	}
	name := tc.nodes[i].Name()
	if err := tc.nodes[i].Shutdown(); err != nil {
		t.Fatal(err)
	}
	cfg := tc.cfgs[i]
	cfg.BindAddr, cfg.AdvertiseAddr = newTestConfig(t, 7, 3, "").BindAddr, ""
	moved := tc.start(cfg)
	tc.nodes[i] = moved
	testutil.WaitFor(t, 30*time.Second, name+" moved to "+moved.RaftAddr(), func() error {
		l := tc.leader()
		if l == nil {
			return errors.New("no leader")
		}
		if got := serverAddr(l, name); got != moved.RaftAddr() {
			return fmt.Errorf("%s still at %s", name, got)
		}
		return nil
	})
	if err := moved.Shutdown(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testutil.WaitFor(t, 15*time.Second, name+" removed after its grace period", func() error {
		l := tc.leader()
		if l == nil {
			return errors.New("no leader")
		}
		if got := serverAddr(l, name); got != "" {
			return fmt.Errorf("%s still a server at %s", name, got)
		}
		return nil
	})
	if d := time.Since(start); d > tc.cfgs[i].DeadServerGrace+6*time.Second {
		t.Fatalf("a dead server was removed %s after it left (grace %s)", d, tc.cfgs[i].DeadServerGrace)
	}
}

// settleMembership runs membership rounds until the certificate checks they
// started have ended, and one more that acts on their results.
func settleMembership(n *Node) {
	gone := map[string]time.Time{}
	deadline := time.Now().Add(10 * time.Second)
	n.reconcileMembership(gone)
	for n.certChecks.busy() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	n.reconcileMembership(gone)
}

// addSilentMembers makes n's gossip list count members at an address that
// accepts connections and never answers.
func addSilentMembers(t *testing.T, n *Node, count int) {
	t.Helper()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	n.gossipEvents.mu.Lock()
	defer n.gossipEvents.mu.Unlock()
	for i := range count {
		name := fmt.Sprintf("silent%d", i)
		n.gossipEvents.alive[name] = member{Name: name, State: memberlist.StateAlive,
			Meta: gossipMeta{Phase: phaseMember, RaftAddr: silent.Addr().String()}}
	}
}

// Pairing needs no secret, so nobody may lock the approval flow: one
// source (an IPv6 /64 counts as one) holds a few entries at most, a node
// that proves the cluster key is listed even when strangers filled the
// list, and an admin can reject an entry.
func TestPendingListCannotBeLocked(t *testing.T) {
	tc, n1 := startOne(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	record := func(name, remote string) error {
		now := time.Now().UTC()
		_, err := n1.Apply(ctx, msgRecordPendingNode, PendingNode{Name: name, Fingerprint: "00" + name, RaftAddr: remote,
			FirstSeen: now, LastSeen: now, Source: sourceGroup(remote)}, nil)
		return err
	}
	for i := range 10 {
		err := record(fmt.Sprintf("flood%d", i), fmt.Sprintf("[2001:db8::%x:%x]:1234", i, i+1))
		if i < maxPendingPerSource && err != nil {
			t.Fatalf("entry %d from one /64: %v", i, err)
		}
		if i >= maxPendingPerSource && ErrorCode(err) != CodeUnavailable {
			t.Fatalf("entry %d from one /64: %v, want unavailable", i, err)
		}
	}
	for i := len(n1.PendingNodes()); i < maxPending; i++ {
		if err := record(fmt.Sprintf("stranger%d", i), fmt.Sprintf("198.51.100.%d:1234", i)); err != nil {
			t.Fatalf("stranger %d: %v", i, err)
		}
	}
	if err := record("late", "198.51.100.200:1234"); ErrorCode(err) != CodeUnavailable {
		t.Fatalf("a bare request to a full list: %v, want unavailable", err)
	}
	real := joiner(t, tc, 2, "")
	if err := askCode(t, real, n1); ErrorReason(err) != reasonPendingApproval {
		t.Fatalf("a node with the cluster key, the list full of strangers: %v, want pending", err)
	}
	listed := func(name, fp string) bool {
		for _, p := range n1.PendingNodes() {
			if p.Name == name && (fp == "" || p.Fingerprint == fp) {
				return true
			}
		}
		return false
	}
	if !listed("node2", real.JoinFingerprint()) || listed("flood0", "") || len(n1.PendingNodes()) != maxPending {
		t.Fatalf("after a keyed request to a full list: %+v", n1.PendingNodes())
	}
	if err := n1.RejectNode(ctx, "node2", "ffff"); ErrorCode(err) != CodeNotFound {
		t.Fatalf("rejecting another key: %v, want not found", err)
	}
	if err := n1.RejectNode(ctx, "node2", real.JoinFingerprint()); err != nil {
		t.Fatal(err)
	}
	if listed("node2", "") {
		t.Fatal("a rejected node is still listed")
	}
}

// A join whose answer is lost after its commit (the box gave up waiting)
// may ask again with the same key, for an enrolment token as for an
// approval; another key still may not.
func TestLostJoinAnswerCanBeFetchedAgain(t *testing.T) {
	tc, n1 := startOne(t)
	tok := tc.enrolToken()
	first := joiner(t, tc, 2, tok)
	if err := askCode(t, first, n1); err != nil {
		t.Fatalf("join with a fresh enrolment token: %v", err)
	}
	// Its answer lost, the same box (same key) asks again.
	if err := askCode(t, first, n1); err != nil {
		t.Fatalf("the same key asking again with its used token: %v", err)
	}
	if err := askCode(t, joiner(t, tc, 2, tok), n1); ErrorCode(err) != CodeForbidden {
		t.Fatalf("another key with the used token: %v, want forbidden", err)
	}

	real := joiner(t, tc, 3, "")
	if err := askCode(t, real, n1); ErrorReason(err) != reasonPendingApproval {
		t.Fatalf("node3 before approval: %v, want pending", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n1.ApproveNode(ctx, "node3", real.JoinFingerprint(), "admin"); err != nil {
		t.Fatal(err)
	}
	for _, try := range []string{"first", "second"} {
		if err := askCode(t, real, n1); err != nil {
			t.Fatalf("%s request of the approved key: %v", try, err)
		}
	}
	if err := askCode(t, joiner(t, tc, 3, ""), n1); ErrorReason(err) != reasonPendingApproval {
		t.Fatalf("another key under the approved name: %v, want pending", err)
	}
	for _, p := range n1.PendingNodes() {
		if p.Fingerprint == real.JoinFingerprint() {
			t.Fatalf("the admitted key is still listed as pending: %+v", p)
		}
	}
}
