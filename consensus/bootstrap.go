package consensus

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// How a cluster is born (--expect N):
//
//  1. Every new node gossips (encrypted with a key derived from the join token,
//     so only nodes that know the token see each other) and advertises the
//     phase "joining".
//  2. Once a node has seen at least N joining peers, unchanged for
//     BootstrapSettle, the one with the lowest name becomes the bootstrapper: it
//     creates the cluster CA and advertises "bootstrapping".
//  3. The others ask it for a certificate (join protocol, see rpc.go). A node
//     that got one has committed to that CA and never asks anyone else.
//  4. When N-1 peers have committed, the bootstrapper bootstraps Raft with
//     itself and them as voters: exactly one configuration, whatever the start
//     order. A bootstrapper nobody committed to steps down if it sees a lower
//     name bootstrapping, which settles the rare race of two candidates.
//  5. Any node that comes later finds a "member" and joins through it; the
//     leader's membership controller adds it to Raft.

// bootstrapState is the bootstrapper's list of committed peers. It is saved so
// a bootstrapper that restarts before Raft starts still knows them.
type bootstrapState struct {
	mu    sync.Mutex
	Peers map[string]string `json:"peers"` // name -> raft address
}

const fileBootstrap = "bootstrap.json"

func loadBootstrapState(dir string) (*bootstrapState, error) {
	b, err := os.ReadFile(filepath.Join(dir, fileBootstrap))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var s bootstrapState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("load %s: %w", fileBootstrap, err)
	}
	return &s, nil
}

func (s *bootstrapState) add(dir, name, addr string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Peers[name] = addr
	b, _ := json.Marshal(s)
	return len(s.Peers), writeFileAtomic(filepath.Join(dir, fileBootstrap), b, 0o600)
}

func (s *bootstrapState) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.Peers)
}

func (s *bootstrapState) configuration(selfName, selfAddr string) raft.Configuration {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(selfName), Address: raft.ServerAddress(selfAddr)}}}
	names := make([]string, 0, len(s.Peers))
	for name := range s.Peers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(name), Address: raft.ServerAddress(s.Peers[name])})
	}
	return c
}

// joinLoop drives a node without credentials until it runs Raft.
func (n *Node) joinLoop(ctx context.Context) {
	var lastSet string
	var stableSince, lastPendingLog, lastPair time.Time
	joinTries := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.events:
		case <-time.After(250 * time.Millisecond):
		}
		n.mu.Lock()
		phase, boot := n.phase, n.boot
		n.mu.Unlock()
		switch phase {
		case phaseMember:
			return
		case phaseWaiting:
			// Only a node in a Raft configuration may admit others: one that
			// merely holds a certificate might belong to a cluster that never forms.
			if n.inConfiguration() {
				n.mu.Lock()
				n.phase = phaseMember
				n.mu.Unlock()
				n.updateGossipMeta()
				return
			}
			continue
		}

		alive := n.aliveMembers()
		if phase == phaseBootstrapping {
			if boot.count()+1 >= n.cfg.Expect {
				cfg := boot.configuration(n.cfg.Name, n.RaftAddr())
				if err := n.startRaft(n.identity(), &cfg); err != nil {
					n.log.Error("bootstrap failed", "err", err)
				}
				continue
			}
			if boot.count() == 0 {
				if other := lowestSigner(alive, n.cfg.Name); other != nil && other.Name < n.cfg.Name {
					n.log.Info("stepping down as bootstrapper", "in_favour_of", other.Name)
					n.abandonBootstrap()
				}
			}
			continue
		}

		if signer := pickSigner(alive, n.cfg.Name, joinTries); signer != nil {
			if err := n.requestJoin(ctx, signer); err != nil {
				joinTries++
				if ErrorReason(err) == reasonPendingApproval {
					if time.Since(lastPendingLog) > 30*time.Second {
						lastPendingLog = time.Now()
						n.log.Warn("waiting for approval to join", "via", signer.Name, "err", err)
					}
				} else {
					n.log.Warn("join failed", "via", signer.Name, "err", err)
				}
				select { // do not hammer the cluster (each pending request may be a Raft write)
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			continue
		}
		if n.isPairing() && time.Since(lastPair) > 2*time.Second {
			lastPair = time.Now()
			if n.tryPairing(ctx, &lastPendingLog) {
				continue
			}
		}
		var joining []string
		for _, m := range alive {
			if m.Meta.Phase == phaseJoining {
				joining = append(joining, m.Name)
			}
		}
		sort.Strings(joining)
		if len(joining) < n.cfg.Expect {
			lastSet = ""
			continue
		}
		if set := strings.Join(joining, ","); set != lastSet {
			lastSet, stableSince = set, time.Now()
		}
		settle := n.cfg.BootstrapSettle
		if n.cfg.Expect == 1 {
			settle = 0
		}
		if time.Since(stableSince) < settle || joining[0] != n.cfg.Name {
			continue
		}
		if err := n.becomeBootstrapper(nil, &bootstrapState{Peers: map[string]string{}}); err != nil {
			n.log.Error("cannot become bootstrapper", "err", err)
		}
	}
}

// lowestSigner picks whom to ask for a certificate: any member if there is
// one, else the bootstrapper with the lowest name.
func lowestSigner(alive []member, self string) *member {
	var best *member
	for i := range alive {
		m := &alive[i]
		if m.Name == self || (m.Meta.Phase != phaseMember && m.Meta.Phase != phaseBootstrapping) {
			continue
		}
		switch {
		case best == nil:
			best = m
		case m.Meta.Phase == phaseMember && best.Meta.Phase != phaseMember:
			best = m
		case m.Meta.Phase == best.Meta.Phase && m.Name < best.Name:
			best = m
		}
	}
	return best
}

// pickSigner is whom to ask on the tries-th attempt. Members take turns:
// gossip only needs the cluster key, so a member that sorts first may be a
// liar that never admits us (it can no longer relay our request, which is
// bound to our session, but it must not trap us either). Bootstrappers do
// not: while the first voters form, everyone must commit to the same one.
func pickSigner(alive []member, self string, tries int) *member {
	best := lowestSigner(alive, self)
	if best == nil || best.Meta.Phase != phaseMember {
		return best
	}
	var members []*member
	for i := range alive {
		if m := &alive[i]; m.Name != self && m.Meta.Phase == phaseMember {
			members = append(members, m)
		}
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	return members[tries%len(members)]
}

// inConfiguration reports whether this node is in its Raft configuration.
func (n *Node) inConfiguration() bool {
	servers, err := n.servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if string(s.ID) == n.cfg.Name {
			return true
		}
	}
	return false
}

func (n *Node) aliveMembers() []member {
	var out []member
	for _, m := range n.members() {
		if m.State == memberlist.StateAlive {
			out = append(out, m)
		}
	}
	return out
}

// becomeBootstrapper creates the cluster CA (or reuses the one from before a
// restart) and starts serving joins.
func (n *Node) becomeBootstrapper(id *identity, boot *bootstrapState) error {
	if id == nil {
		c, err := newCA(n.cfg.Name)
		if err != nil {
			return err
		}
		key, keyPEM, err := newNodeKey()
		if err != nil {
			return err
		}
		certPEM, err := c.issue(&key.PublicKey, n.cfg.Name, []net.IP{net.ParseIP(n.cfg.AdvertiseAddr)})
		if err != nil {
			return err
		}
		b, _ := json.Marshal(boot)
		if err := writeFileAtomic(filepath.Join(n.cfg.DataDir, fileBootstrap), b, 0o600); err != nil {
			return err
		}
		if err := saveIdentity(n.cfg.DataDir, c.certPEM, c.keyPEM, certPEM, keyPEM, n.clusterKey()); err != nil {
			return err
		}
		if id, err = loadIdentity(n.cfg.DataDir); err != nil {
			return err
		}
	}
	// Record the peer list before the listener opens, so no join is admitted
	// without being counted.
	n.mu.Lock()
	n.phase, n.boot = phaseBootstrapping, boot
	n.mu.Unlock()
	if err := n.startListener(id); err != nil {
		n.mu.Lock()
		n.phase, n.boot = phaseJoining, nil
		n.mu.Unlock()
		return err
	}
	n.updateGossipMeta()
	n.log.Info("collecting the first voters", "expect", n.cfg.Expect)
	return nil
}

// abandonBootstrap undoes becomeBootstrapper while nobody depends on our CA.
func (n *Node) abandonBootstrap() {
	n.mu.Lock()
	ln, srv := n.listener, n.rpcServer
	n.listener, n.rpcServer, n.id, n.rpcClient, n.boot, n.phase = nil, nil, nil, nil, nil, phaseJoining
	n.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	if ln != nil {
		ln.Close()
	}
	for _, f := range []string{fileCACert, fileBootstrap, fileCAKey, fileNodeCert, fileNodeKey} {
		_ = os.Remove(filepath.Join(n.cfg.DataDir, f))
	}
	n.updateGossipMeta()
}

// requestJoin runs the client side of the join protocol against m and, once
// admitted, starts Raft with the certificate it got.
func (n *Node) requestJoin(ctx context.Context, m *member) error {
	resp, keyPEM, err := n.askToJoin(ctx, m.Meta.RaftAddr, false)
	if err != nil {
		return err
	}
	return n.adopt(resp, keyPEM, m.Name)
}

// adopt saves the credentials a join answer brought and starts Raft.
func (n *Node) adopt(resp *joinResponse, keyPEM []byte, via string) error {
	if resp.JoinToken != "" && resp.JoinToken != n.clusterKey() {
		if err := n.adoptClusterKey(resp.JoinToken); err != nil {
			return err
		}
	}
	if err := saveIdentity(n.cfg.DataDir, resp.CACert, resp.CAKey, resp.NodeCert, keyPEM, n.clusterKey()); err != nil {
		return err
	}
	id, err := loadIdentity(n.cfg.DataDir)
	if err != nil {
		return err
	}
	n.log.Info("received cluster certificate", "via", via)
	return n.startRaft(id, nil)
}

// joinKey is the key this node asks a certificate for. It is the same for
// every request of this run, so an admin's approval of its fingerprint holds.
func (n *Node) joinKey() (*ecdsa.PrivateKey, []byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.joinPriv == nil {
		key, keyPEM, err := newNodeKey()
		if err != nil {
			return nil, nil, err
		}
		n.joinPriv, n.joinPrivPEM = key, keyPEM
	}
	return n.joinPriv, n.joinPrivPEM, nil
}

// askToJoin sends one join request to the node at raftAddr and checks the
// answer; it changes nothing locally. A pairing request (pair) is made by a
// node that does not know the cluster key: it can only be admitted by an
// admin's approval, and it trusts the answer on first use.
func (n *Node) askToJoin(ctx context.Context, raftAddr string, pair bool) (*joinResponse, []byte, error) {
	key, keyPEM, err := n.joinKey()
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	pubPEM := pemBlock("PUBLIC KEY", pubDER)
	// With an enrolment token the request is signed with a key derived
	// from it and the answer proven with another (enrolKeys), with or
	// without the cluster key; else both are proven with the cluster key,
	// except for a pairing request, which has no secret to prove.
	proofKey, enrolID := n.clusterKey(), ""
	var enrolPriv ed25519.PrivateKey
	if n.cfg.EnrolToken != "" {
		id, ok := enrolTokenID(n.cfg.EnrolToken)
		if !ok {
			return nil, nil, errors.New("join: malformed enrolment token (want ID.SECRET)")
		}
		enrolID = id
		enrolPriv, proofKey = enrolKeys(n.cfg.EnrolToken)
	}
	var ekm []byte
	resp, err := sendJoin(ctx, raftAddr, func(sessionKey []byte) (joinRequest, error) {
		ekm = sessionKey
		req := joinRequest{Name: n.cfg.Name, IPs: []string{n.cfg.AdvertiseAddr}, RaftAddr: n.RaftAddr(), PubKey: pubPEM, EnrolID: enrolID, Pair: pair}
		switch {
		case enrolPriv != nil:
			req.EnrolSig = ed25519.Sign(enrolPriv, joinDigest(ekm, &req))
		case !pair:
			req.Proof = joinProof(proofKey, ekm, []byte("join"), []byte(req.Name), []byte(req.RaftAddr), pubPEM)
		}
		var err error
		req.KeySig, err = signJoin(key, ekm, &req)
		return req, err
	})
	if err != nil {
		return nil, nil, err
	}
	want := joinProof(proofKey, ekm, []byte("accept"), resp.CACert, resp.CAKey, resp.NodeCert)
	if (!pair || enrolPriv != nil) && !hmac.Equal(want, resp.Proof) {
		return nil, nil, errors.New("join: the server does not know our join token")
	}
	if err := verifyIssued(resp.CACert, resp.NodeCert, &key.PublicKey); err != nil {
		return nil, nil, err
	}
	return resp, keyPEM, nil
}

// sendJoin opens a TLS session to raftAddr, sends the request build makes
// from the session's exported keying material, and returns the answer.
func sendJoin(ctx context.Context, raftAddr string, build func(ekm []byte) (joinRequest, error)) (*joinResponse, error) {
	// Longer than the server's admission (a Raft commit, up to 10 s): an
	// answer given up on is a certificate issued to nobody.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The server's certificate cannot be checked yet; the proofs bound
		// to this session authenticate both sides instead.
		InsecureSkipVerify: true,
		NextProtos:         []string{alpnRPC},
	}}
	conn, err := d.DialContext(ctx, "tcp", raftAddr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", raftAddr, err)
	}
	defer conn.Close()
	cs := conn.(*tls.Conn).ConnectionState()
	ekm, err := exportedKey(&cs)
	if err != nil {
		return nil, err
	}
	req, err := build(ekm)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(req)
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+raftAddr+rpcJoin, strings.NewReader(string(body)))
	hr.Header.Set("Content-Type", "application/json")
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := hr.Write(conn); err != nil {
		return nil, err
	}
	res, err := http.ReadResponse(bufioReader(conn), hr)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var resp joinResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, maxRPCBody)).Decode(&resp); err != nil {
		return nil, fmt.Errorf("join response (%s): %w", res.Status, err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return &resp, nil
}

func verifyIssued(caPEM, certPEM []byte, pub *ecdsa.PublicKey) error {
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("join: bad CA certificate")
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("join: issued certificate does not verify: %w", err)
	}
	if got, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || !got.Equal(pub) {
		return errors.New("join: issued certificate is not for our key")
	}
	return nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// handleJoin is the server side of the join protocol.
func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	fail := func(err error) {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeUnavailable, Message: err.Error()}
		}
		writeJSON(w, joinResponse{Error: e})
	}
	var req joinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		fail(Errorf(CodeInvalid, "bad join request: %v", err))
		return
	}
	ekm, err := exportedKey(r.TLS)
	if err != nil {
		fail(Errorf(CodeInvalid, "%v", err))
		return
	}
	proofKey := n.clusterKey()
	var tok *enrolToken
	if req.EnrolID != "" {
		if tok = n.store.enrolToken(req.EnrolID); tok == nil {
			n.log.Warn("join refused: unknown enrolment token", "name", req.Name, "token_id", req.EnrolID, "remote", r.RemoteAddr)
			fail(Errorf(CodeForbidden, "enrolment token %s is unknown or already used", req.EnrolID))
			return
		}
		proofKey = tok.Accept
	}
	// Every request proves, on this very TLS session, that it holds the key
	// it asks a certificate for: what an admin approves (that key's
	// fingerprint) is then who gets the answer, and a request relayed by
	// someone who knows only the cluster key is refused.
	if err := verifyKeySig(ekm, &req); err != nil {
		n.log.Warn("join refused", "name", req.Name, "remote", r.RemoteAddr, "err", err)
		fail(Errorf(CodeForbidden, "%v", err))
		return
	}
	want := joinProof(proofKey, ekm, []byte("join"), []byte(req.Name), []byte(req.RaftAddr), req.PubKey)
	switch {
	case tok != nil:
		// A keyless box may hold an enrolment token too: the token, not
		// the cluster key, is what it proves.
		if err := verifyEnrolSig(tok, ekm, &req); err != nil {
			n.log.Warn("join refused: wrong enrolment token", "name", req.Name, "token_id", req.EnrolID, "remote", r.RemoteAddr)
			fail(err)
			return
		}
	case req.Pair:
		// No shared secret: only an admin's approval can admit it.
	case !hmac.Equal(want, req.Proof):
		n.log.Warn("join refused: wrong join token", "name", req.Name, "remote", r.RemoteAddr)
		fail(Errorf(CodeForbidden, "join token mismatch"))
		return
	}
	id := n.identity()
	if id == nil {
		fail(Errorf(CodeUnavailable, "this node cannot issue certificates yet"))
		return
	}
	blk, _ := pem.Decode(req.PubKey)
	if blk == nil {
		fail(Errorf(CodeInvalid, "bad public key"))
		return
	}
	anyPub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	pub, ok := anyPub.(*ecdsa.PublicKey)
	if err != nil || !ok {
		fail(Errorf(CodeInvalid, "public key must be ECDSA"))
		return
	}
	n.mu.Lock()
	boot := n.boot
	n.mu.Unlock()
	forming := boot != nil && n.Raft() == nil
	if forming && req.Pair {
		fail(Errorf(CodeUnavailable, "this cluster is still forming; pairing needs a formed cluster"))
		return
	}
	if !forming {
		if err := n.checkNameFree(req.Name, r.TLS); err != nil {
			n.log.Warn("join refused", "name", req.Name, "remote", r.RemoteAddr, "err", err)
			fail(err)
			return
		}
		if err := n.admit(r.Context(), &req, tok, r.RemoteAddr); err != nil {
			lvl := slog.LevelInfo
			if ErrorReason(err) == reasonPendingApproval {
				lvl = slog.LevelDebug // it asks again every few seconds
			}
			n.log.Log(r.Context(), lvl, "join not admitted", "name", req.Name, "remote", r.RemoteAddr, "err", err)
			fail(err)
			return
		}
	}
	var ips []net.IP
	for _, s := range req.IPs {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		}
	}
	certPEM, err := id.ca.issue(pub, req.Name, ips)
	if err != nil {
		fail(err)
		return
	}
	if forming {
		if _, err := boot.add(n.cfg.DataDir, req.Name, req.RaftAddr); err != nil {
			fail(err)
			return
		}
		n.poke()
	}
	n.log.Info("issued a node certificate", "node", req.Name, "addr", req.RaftAddr, "enrolment_token", req.EnrolID)
	resp := joinResponse{CACert: id.ca.certPEM, CAKey: id.ca.keyPEM, NodeCert: certPEM,
		Proof: joinProof(proofKey, ekm, []byte("accept"), id.ca.certPEM, id.ca.keyPEM, certPEM)}
	if req.Pair {
		resp.JoinToken = n.clusterKey() // the paired node does not know it yet
	}
	writeJSON(w, resp)
}

// admit decides a join to a formed cluster: an enrolment token is used up,
// an approved pending node is admitted once, anyone else is listed as
// pending and refused for now.
func (n *Node) admit(ctx context.Context, req *joinRequest, tok *enrolToken, remote string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fp := keyFingerprint(req.PubKey)
	if tok != nil {
		_, err := n.Apply(ctx, msgConsumeEnrolToken, consumeEnrolToken{ID: tok.ID, Key: tok.Key, Node: req.Name, Fingerprint: fp, Now: time.Now().UnixNano()}, nil)
		return err
	}
	var cur *PendingNode
	if raw, err := n.store.txn().First(tablePendingNodes, "id", req.Name, fp); err == nil && raw != nil {
		cur = raw.(*PendingNode)
	}
	if cur != nil && cur.Approved {
		_, err := n.Apply(ctx, msgAdmitPendingNode, admitPendingNode{Name: req.Name, Fingerprint: fp, Now: time.Now().UTC()}, nil)
		return err
	}
	src := sourceGroup(remote)
	if cur == nil {
		// Checked here too, so a flood of new names costs no Raft writes
		// (the FSM decides again, and evicts for a keyed request).
		all := n.PendingNodes()
		fromSource := 0
		for _, p := range all {
			if p.Source == src {
				fromSource++
			}
		}
		switch {
		case fromSource >= maxPendingPerSource:
			return Errorf(CodeUnavailable, "too many nodes from %s are waiting for approval", src)
		case len(all) >= maxPending && req.Pair:
			return Errorf(CodeUnavailable, "too many nodes are waiting for approval")
		}
	}
	// A node asks every second or so: write its entry when it is new or
	// moved, and refresh it now and then only; and no source may write
	// often, since a pending request needs no secret at all.
	now := time.Now().UTC()
	if cur == nil || cur.RaftAddr != req.RaftAddr || now.Sub(cur.LastSeen) > pendingRefresh {
		if !n.pendingLimit.allow(src, now) {
			return Errorf(CodeUnavailable, "too many join requests from %s; try again in a minute", src)
		}
		p := PendingNode{Name: req.Name, RaftAddr: req.RaftAddr, Fingerprint: fp, FirstSeen: now, LastSeen: now, Source: src, Keyed: !req.Pair}
		if _, err := n.Apply(ctx, msgRecordPendingNode, p, nil); err != nil {
			return err
		}
	}
	return Reasonf(CodeForbidden, reasonPendingApproval,
		"the cluster key alone does not admit a node to a formed cluster: %s (key %s) waits for an admin's approval (cairn node approve %s --fingerprint %s), or join with an enrolment token (cairn node enrol-token create)",
		req.Name, fp, req.Name, fp)
}
