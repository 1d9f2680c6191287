package consensus

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Admission: once a cluster has formed, the cluster key (--join-token) only
// lets a node find the others (gossip and discovery are keyed with it); it no
// longer admits anyone. A new node is admitted with
//
//   - a one-time enrolment token that a cluster admin created: it expires
//     (DefaultEnrolTokenTTL), the join consumes it in the FSM, so a second
//     use fails, and the replicated state keeps only the public half of a
//     key pair derived from it (see enrolKeys), so a reader of a snapshot or
//     of the log cannot use it; or
//   - an admin's approval: a node holding the cluster key but no enrolment
//     token is recorded as pending, with the fingerprint of the key it asks a
//     certificate for; once approved, its next join request is admitted.
//
// While the first voters are collected (before Raft is bootstrapped) the
// cluster key still admits: the boxes of a new site have nothing else in
// common yet.

// Admission commands. Numbers are never reused.
const (
	msgCreateEnrolToken  MessageType = 2
	msgConsumeEnrolToken MessageType = 3
	msgRecordPendingNode MessageType = 4
	msgApproveNode       MessageType = 5
	msgAdmitPendingNode  MessageType = 6
	msgRejectPendingNode MessageType = 7
)

// DefaultEnrolTokenTTL is how long an enrolment token is valid, as a
// Kubernetes bootstrap token.
const DefaultEnrolTokenTTL = time.Hour

// pendingTTL is how long a pending node that stopped asking stays listed
// (a node that keeps asking is refreshed every pendingRefresh); maxPending
// bounds the list, since anyone who reaches the cluster port can add to it.
const (
	pendingTTL     = time.Hour
	pendingRefresh = pendingTTL / 4
	maxPending     = 32
	// pendingWritesPerMinute is how many pending entries one source
	// address may write per minute.
	pendingWritesPerMinute = 6
	// maxPendingPerSource is how many entries one source (an IPv4
	// address, an IPv6 /64) may hold at once, however long it refreshes.
	maxPendingPerSource = 4
)

// reasonPendingApproval marks the answer to a node that waits for approval.
const reasonPendingApproval = "pending_approval"

const (
	tableEnrolTokens  = "enrol_tokens"
	tablePendingNodes = "pending_nodes"
)

// enrolToken is a stored enrolment token: the secret itself is never stored,
// nor anything a join could be proven with.
type enrolToken struct {
	ID string `json:"id"`
	// Hash is what tokens made before Key existed stored; such a token no
	// longer admits anyone.
	Hash string `json:"hash,omitempty"`
	// Key is the hex ed25519 public key derived from the token: a join
	// signs with the private half.
	Key string `json:"key,omitempty"`
	// Accept keys the server's answer (enrolKeys): it lets a reader of the
	// state pose as the cluster to an enrolling box, nothing more, and such
	// a reader holds the CA key anyway.
	Accept  string `json:"accept,omitempty"`
	Created int64  `json:"created"` // unix nanoseconds
	Expires int64  `json:"expires"` // unix nanoseconds
	Creator string `json:"creator,omitempty"`
	// UsedBy and UsedKey name the node, and the fingerprint of the key,
	// that used the token: until it expires, that key (and no other) may
	// fetch its certificate again, should the first answer have been lost.
	UsedBy  string `json:"used_by,omitempty"`
	UsedKey string `json:"used_key,omitempty"`
}

type consumeEnrolToken struct {
	ID          string `json:"id"`
	Hash        string `json:"hash,omitempty"` // from before Key
	Key         string `json:"key,omitempty"`
	Node        string `json:"node"`
	Fingerprint string `json:"fingerprint"` // of the key the node asks a certificate for
	Now         int64  `json:"now"`
}

// PendingNode is a node that asked to join without an enrolment token.
type PendingNode struct {
	Name        string    `json:"name"`
	RaftAddr    string    `json:"raft_addr"`
	Fingerprint string    `json:"fingerprint"` // of the public key it wants certified
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	Approved    bool      `json:"approved"`
	ApprovedBy  string    `json:"approved_by,omitempty"`
	// Admitted is when the approval was used; until readmitWindow later
	// the same key may fetch its certificate again (the first answer may
	// have been lost). Such an entry is no longer pending.
	Admitted time.Time `json:"admitted,omitzero"`
	// Source is where the request came from (an IPv4 address, an IPv6 /64).
	Source string `json:"source,omitempty"`
	// Keyed marks a request that proved the cluster key; a bare pairing
	// request proves nothing, and gives way to it when the list is full.
	Keyed bool `json:"keyed,omitempty"`
}

type approveNode struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint,omitempty"`
	By          string `json:"by,omitempty"`
}

type rejectPendingNode struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

type admitPendingNode struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Now         time.Time `json:"now"`
}

func registerAdmissionTables(r *Registry) {
	RegisterTable[enrolToken](r, &memdb.TableSchema{Name: tableEnrolTokens, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	RegisterTable[PendingNode](r, &memdb.TableSchema{Name: tablePendingNodes, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "Name"}, &memdb.StringFieldIndex{Field: "Fingerprint"}}}},
		"name": {Name: "name", Indexer: &memdb.StringFieldIndex{Field: "Name"}},
	}})
	Handle(r, msgCreateEnrolToken, "CreateEnrolToken", applyCreateEnrolToken)
	Handle(r, msgConsumeEnrolToken, "ConsumeEnrolToken", applyConsumeEnrolToken)
	Handle(r, msgRecordPendingNode, "RecordPendingNode", applyRecordPendingNode)
	Handle(r, msgApproveNode, "ApproveNode", applyApproveNode)
	Handle(r, msgAdmitPendingNode, "AdmitPendingNode", applyAdmitPendingNode)
	Handle(r, msgRejectPendingNode, "RejectPendingNode", applyRejectPendingNode)
}

// applyCreateEnrolToken stores a token and drops the expired ones.
func applyCreateEnrolToken(tx *Tx, c *enrolToken) (any, error) {
	if c.ID == "" || (c.Hash == "" && c.Key == "") || c.Expires <= c.Created {
		return nil, Errorf(CodeInvalid, "enrolment token needs an ID, a hash and a lifetime")
	}
	it, err := tx.Get(tableEnrolTokens, "id")
	if err != nil {
		return nil, err
	}
	var expired []any
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if t := raw.(*enrolToken); t.Expires <= c.Created {
			expired = append(expired, t)
		} else if t.ID == c.ID {
			return nil, Errorf(CodeAlreadyExists, "enrolment token %s exists", c.ID)
		}
	}
	for _, t := range expired {
		if err := tx.Delete(tableEnrolTokens, t); err != nil {
			return nil, err
		}
	}
	row := *c
	return nil, tx.Insert(tableEnrolTokens, &row)
}

// applyConsumeEnrolToken uses a token up: it admits exactly one key (that
// key again, until the token expires, since an answer may be lost).
func applyConsumeEnrolToken(tx *Tx, c *consumeEnrolToken) (any, error) {
	raw, err := tx.First(tableEnrolTokens, "id", c.ID)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, Errorf(CodeForbidden, "enrolment token %s is unknown or already used", c.ID)
	}
	t := raw.(*enrolToken)
	if (c.Key == "" || t.Key != c.Key) && (c.Hash == "" || t.Hash != c.Hash) {
		return nil, Errorf(CodeForbidden, "enrolment token %s does not match", c.ID)
	}
	if c.Now >= t.Expires {
		return nil, Errorf(CodeForbidden, "enrolment token %s expired at %s", c.ID, time.Unix(0, t.Expires).UTC().Format(time.RFC3339))
	}
	switch {
	case t.UsedKey == "":
	case t.UsedKey == c.Fingerprint && t.UsedBy == c.Node:
		return nil, nil
	default:
		return nil, Errorf(CodeForbidden, "enrolment token %s is unknown or already used", c.ID)
	}
	row := *t
	row.UsedBy, row.UsedKey = c.Node, c.Fingerprint
	return nil, tx.Insert(tableEnrolTokens, &row)
}

// applyRecordPendingNode lists (or refreshes) a node waiting for approval.
// Candidates are kept per name and key: anyone who can reach the cluster
// port can ask under any name, and must not displace the real node's entry
// (the admin approves a key by its fingerprint). Nor may anyone lock the
// list: one source holds at most maxPendingPerSource entries, and when the
// list is full a request that proved the cluster key evicts the oldest bare
// pairing request.
func applyRecordPendingNode(tx *Tx, c *PendingNode) (any, error) {
	if c.Name == "" || c.Fingerprint == "" {
		return nil, Errorf(CodeInvalid, "a pending node needs a name and a key fingerprint")
	}
	it, err := tx.Get(tablePendingNodes, "id")
	if err != nil {
		return nil, err
	}
	var stale []any
	count, fromSource := 0, 0
	var cur, evict *PendingNode
	for raw := it.Next(); raw != nil; raw = it.Next() {
		p := raw.(*PendingNode)
		switch {
		case p.Name == c.Name && p.Fingerprint == c.Fingerprint:
			cur = p
		case c.LastSeen.Sub(p.LastSeen) > pendingTTL:
			stale = append(stale, p)
		case !p.Admitted.IsZero():
		default:
			count++
			if c.Source != "" && p.Source == c.Source {
				fromSource++
			}
			if !p.Keyed && !p.Approved && (evict == nil || p.FirstSeen.Before(evict.FirstSeen)) {
				evict = p
			}
		}
	}
	for _, p := range stale {
		if err := tx.Delete(tablePendingNodes, p); err != nil {
			return nil, err
		}
	}
	row := *c
	row.Approved, row.ApprovedBy = false, ""
	switch {
	case cur != nil && !cur.Admitted.IsZero():
		return nil, nil // admitted: it fetches its certificate again
	case cur != nil:
		row.FirstSeen, row.Approved, row.ApprovedBy = cur.FirstSeen, cur.Approved, cur.ApprovedBy
	case fromSource >= maxPendingPerSource:
		return nil, Errorf(CodeUnavailable, "too many nodes from %s are waiting for approval", c.Source)
	case count >= maxPending && c.Keyed && evict != nil:
		if err := tx.Delete(tablePendingNodes, evict); err != nil {
			return nil, err
		}
	case count >= maxPending:
		return nil, Errorf(CodeUnavailable, "too many nodes are waiting for approval")
	}
	return nil, tx.Insert(tablePendingNodes, &row)
}

// applyRejectPendingNode forgets the candidates asking under a name (only
// the one with the fingerprint, when given), approved or not.
func applyRejectPendingNode(tx *Tx, c *rejectPendingNode) (any, error) {
	cands, err := pendingByName(tx.Txn, c.Name)
	if err != nil {
		return nil, err
	}
	gone := 0
	for _, p := range cands {
		if c.Fingerprint != "" && !strings.EqualFold(p.Fingerprint, c.Fingerprint) {
			continue
		}
		if err := tx.Delete(tablePendingNodes, p); err != nil {
			return nil, err
		}
		gone++
	}
	if gone == 0 {
		return nil, Errorf(CodeNotFound, "no node %s is waiting for approval", c.Name)
	}
	return nil, nil
}

// pendingByName lists the candidates that ask under name.
func pendingByName(tx *memdb.Txn, name string) ([]*PendingNode, error) {
	it, err := tx.Get(tablePendingNodes, "name", name)
	if err != nil {
		return nil, err
	}
	var out []*PendingNode
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*PendingNode))
	}
	return out, nil
}

func applyApproveNode(tx *Tx, c *approveNode) (any, error) {
	cands, err := pendingByName(tx.Txn, c.Name)
	if err != nil {
		return nil, err
	}
	if len(cands) == 0 {
		return nil, Errorf(CodeNotFound, "no node %s is waiting for approval", c.Name)
	}
	var p PendingNode
	switch {
	case c.Fingerprint == "" && len(cands) > 1:
		return nil, Errorf(CodeConflict, "%d keys ask to join as %s: name the one to approve by its fingerprint", len(cands), c.Name)
	case c.Fingerprint == "":
		p = *cands[0]
	default:
		var fps []string
		for _, q := range cands {
			fps = append(fps, q.Fingerprint)
			if strings.EqualFold(q.Fingerprint, c.Fingerprint) {
				p = *q
			}
		}
		if p.Name == "" {
			return nil, Errorf(CodeConflict, "node %s asks with key %s, not %s", c.Name, strings.Join(fps, " or "), c.Fingerprint)
		}
	}
	p.Approved, p.ApprovedBy = true, c.By
	return &p, tx.Insert(tablePendingNodes, &p)
}

// readmitWindow is how long an admitted key may fetch its certificate
// again, should the first answer have been lost.
const readmitWindow = DefaultEnrolTokenTTL

// applyAdmitPendingNode uses an approval up, and forgets the other keys that
// asked under the same name. The approved key itself may ask again for
// readmitWindow.
func applyAdmitPendingNode(tx *Tx, c *admitPendingNode) (any, error) {
	cands, err := pendingByName(tx.Txn, c.Name)
	if err != nil {
		return nil, err
	}
	var admit *PendingNode
	for _, p := range cands {
		if p.Approved && p.Fingerprint == c.Fingerprint {
			admit = p
		}
	}
	if admit == nil {
		return nil, Errorf(CodeForbidden, "node %s is not approved", c.Name)
	}
	if !admit.Admitted.IsZero() {
		if c.Now.Sub(admit.Admitted) > readmitWindow {
			return nil, Errorf(CodeForbidden, "node %s was admitted at %s: its approval is used up", c.Name, admit.Admitted.Format(time.RFC3339))
		}
		return nil, nil
	}
	for _, p := range cands {
		if err := tx.Delete(tablePendingNodes, p); err != nil {
			return nil, err
		}
	}
	row := *admit
	row.Admitted, row.LastSeen = c.Now, c.Now
	return nil, tx.Insert(tablePendingNodes, &row)
}

// EnrolToken is a freshly created enrolment token: Token is shown once.
type EnrolToken struct {
	ID      string    `json:"id"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// CreateEnrolToken creates a one-time enrolment token valid for ttl (the
// default when 0). Only the public half of a key derived from it is stored.
func (n *Node) CreateEnrolToken(ctx context.Context, ttl time.Duration, creator string) (EnrolToken, error) {
	if ttl <= 0 {
		ttl = DefaultEnrolTokenTTL
	}
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	id, secret := hex.EncodeToString(b[:4]), hex.EncodeToString(b[4:])
	tok := id + "." + secret
	now := time.Now()
	exp := now.Add(ttl)
	priv, accept := enrolKeys(tok)
	row := enrolToken{ID: id, Key: hex.EncodeToString(priv.Public().(ed25519.PublicKey)), Accept: accept, Created: now.UnixNano(), Expires: exp.UnixNano(), Creator: creator}
	if _, err := n.Apply(ctx, msgCreateEnrolToken, row, nil); err != nil {
		return EnrolToken{}, fmt.Errorf("create enrolment token: %w", err)
	}
	return EnrolToken{ID: id, Token: tok, Expires: exp.UTC()}, nil
}

// PendingNodes lists the nodes waiting for approval.
func (n *Node) PendingNodes() []PendingNode {
	it, err := n.store.ReadTxn().Get(tablePendingNodes, "id")
	if err != nil {
		return nil
	}
	var out []PendingNode
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if p := raw.(*PendingNode); p.Admitted.IsZero() {
			out = append(out, *p)
		}
	}
	return out
}

// ApproveNode lets the pending node name join on its next request. A
// non-empty fingerprint must match the key the node asked with (its console
// shows it).
func (n *Node) ApproveNode(ctx context.Context, name, fingerprint, by string) (PendingNode, error) {
	var p PendingNode
	if err := n.checkNameFree(name, nil); err != nil {
		return p, fmt.Errorf("approve node %s: %w", name, err)
	}
	if _, err := n.Apply(ctx, msgApproveNode, approveNode{Name: name, Fingerprint: fingerprint, By: by}, &p); err != nil {
		return p, fmt.Errorf("approve node %s: %w", name, err)
	}
	return p, nil
}

// RejectNode removes the pending node name (only its key with fingerprint,
// when given): a stranger's entry, or an approval given by mistake.
func (n *Node) RejectNode(ctx context.Context, name, fingerprint string) error {
	if _, err := n.Apply(ctx, msgRejectPendingNode, rejectPendingNode{Name: name, Fingerprint: fingerprint}, nil); err != nil {
		return fmt.Errorf("reject node %s: %w", name, err)
	}
	return nil
}

// enrolKeys derives from a token the key a join signs with (the state
// stores its public half, so a reader cannot sign) and the key the server's
// answer is proven with. Signing, rather than sending the secret itself, keeps
// the token from whoever answers a join: the joiner cannot check the server
// before it has the CA, and anyone with the cluster key can pose as a member.
func enrolKeys(token string) (ed25519.PrivateKey, string) {
	seed := sha256.Sum256([]byte("cairn enrolment token key\x00" + token))
	accept := sha256.Sum256([]byte("cairn enrolment token accept\x00" + token))
	return ed25519.NewKeyFromSeed(seed[:]), hex.EncodeToString(accept[:])
}

// verifyEnrolSig checks a join request's signature with a stored token.
func verifyEnrolSig(t *enrolToken, ekm []byte, req *joinRequest) error {
	pub, err := hex.DecodeString(t.Key)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return Errorf(CodeForbidden, "enrolment token %s predates signed joins: create a new one", t.ID)
	}
	if !ed25519.Verify(pub, joinDigest(ekm, req), req.EnrolSig) {
		return Errorf(CodeForbidden, "enrolment token mismatch")
	}
	return nil
}

// enrolTokenID is the public half of a token ("ID.SECRET").
func enrolTokenID(token string) (string, bool) {
	id, secret, ok := strings.Cut(token, ".")
	return id, ok && id != "" && secret != ""
}

// keyFingerprint names a public key for a person comparing it on two screens.
func keyFingerprint(pubPEM []byte) string {
	sum := sha256.Sum256(pubPEM)
	return hex.EncodeToString(sum[:8])
}

func (s *Store) enrolToken(id string) *enrolToken {
	raw, err := s.txn().First(tableEnrolTokens, "id", id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*enrolToken)
}

// checkNameFree refuses to admit a name that is a server in the Raft
// configuration: a new box under a dead voter's name would become that voter
// with an empty log, and Raft's safety rests on a voter never forgetting
// what it acknowledged. Only the node itself, showing its certificate for
// that name on this connection (cs), may ask again.
func (n *Node) checkNameFree(name string, cs *tls.ConnectionState) error {
	r := n.Raft()
	if r == nil {
		return nil
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return Errorf(CodeUnavailable, "read the Raft configuration: %v", err)
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) != name {
			continue
		}
		if cs != nil && len(cs.VerifiedChains) > 0 && cs.PeerCertificates[0].Subject.CommonName == name {
			return nil
		}
		return Errorf(CodeConflict, "a node named %s is still a server of this cluster (at %s): start the new box under another name, or wait until the old one is removed (a server gone longer than %s is removed automatically)",
			name, s.Address, n.cfg.DeadServerGrace)
	}
	return nil
}
