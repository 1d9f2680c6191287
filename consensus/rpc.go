package consensus

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairnhq/cairn/consensus/tlsbatch"
)

// The cluster RPC is plain HTTP/1.1 inside the mutual-TLS cluster port.
const (
	rpcReadIndex = "/cluster/v1/readindex"
	rpcJoin      = "/cluster/v1/join"
	rpcSelf      = "/cluster/v1/self"
	maxRPCBody   = 8 << 20
)

type readIndexResponse struct {
	Index uint64 `json:"index"`
	Error *Error `json:"error,omitempty"`
}

func (n *Node) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+rpcApplyBatch, n.requireMember(n.handleApplyBatch))
	mux.HandleFunc("POST "+rpcReadIndex, n.requireMember(n.handleReadIndex))
	mux.HandleFunc("POST "+rpcJoin, n.handleJoin)
	mux.HandleFunc("POST "+rpcSelf, n.requireMember(n.handleSelf))
	for _, h := range n.extraRPC {
		mux.Handle(h.pattern, n.requireMember(h.handler.ServeHTTP))
	}
	return mux
}

type rpcRoute struct {
	pattern string
	handler http.Handler
}

// HandleRPC mounts a domain's handler on the cluster port, for node-to-node
// traffic (storage shards, later migration). Only peers with a certificate of
// the cluster CA reach it. Register before Start.
func (n *Node) HandleRPC(pattern string, h http.Handler) {
	n.extraRPC = append(n.extraRPC, rpcRoute{pattern: pattern, handler: h})
}

// RPCClient is an HTTP client that presents this node's cluster certificate
// and trusts only the cluster CA; nil before the node has joined. Use it with
// PeerAddr for node-to-node requests.
func (n *Node) RPCClient() *http.Client { return n.rpc() }

// PeerAddr returns the cluster (RPC) address of a node by name, from gossip.
func (n *Node) PeerAddr(name string) (string, bool) {
	if name == n.cfg.Name {
		return n.RaftAddr(), true
	}
	for _, m := range n.members() {
		if m.Name == name && m.Meta.RaftAddr != "" {
			return m.Meta.RaftAddr, true
		}
	}
	return "", false
}

// requireMember admits only peers that presented a certificate of our CA.
func (n *Node) requireMember(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "cluster certificate required", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

// selfResponse is a node's own word on who and where it is, given on a
// mutually authenticated connection: the leader moves a server only to the
// address the server itself states.
type selfResponse struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
}

func (n *Node) handleSelf(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, selfResponse{Name: n.cfg.Name, RaftAddr: n.RaftAddr()})
}

func (n *Node) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := n.leaderReads.index(r.Context())
	writeJSON(w, readIndexResponse{Index: idx, Error: asError(err)})
}

// asError turns any error into the wire form. Raft's "not leader" becomes a
// code the caller recognises as safe to retry elsewhere.
func asError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, raft.ErrNotLeader) {
		return &Error{Code: codeNotLeader, Message: err.Error()}
	}
	return &Error{Code: CodeUnavailable, Message: err.Error()}
}

// codeNotLeader marks a command that was never accepted, so retrying is safe.
const codeNotLeader = "not_leader"

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// rpcClient calls peers over the cluster port with this node's certificate.
func newRPCClient(id *identity) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialTLSContext: tlsbatch.Dial(func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialPeer(ctx, network, addr, 2*time.Second)
		}, id.clientTLS(alpnRPC)),
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
	}}
}

func (n *Node) callRPC(ctx context.Context, addr, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, bytesReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := n.rpc().Do(hr)
	if err != nil {
		return fmt.Errorf("rpc %s to %s: %w", path, addr, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return fmt.Errorf("rpc %s to %s: %s: %s", path, addr, res.Status, msg)
	}
	err = json.NewDecoder(io.LimitReader(res.Body, maxRPCBody)).Decode(resp)
	// A body not read to EOF keeps the transport from reusing the connection.
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4096))
	return err
}

// --- join -------------------------------------------------------------------

// The join protocol runs over TLS before the joiner can verify the server's
// certificate. Both sides prove they know the join token (or enrolment token)
// with an HMAC bound to the TLS session (exported keying material), and the
// joiner signs the request and the session with the key it asks a
// certificate for, so a man in the middle, even one that knows the cluster
// key, cannot relay the exchange and collect the answer.
type joinRequest struct {
	Name     string   `json:"name"`
	IPs      []string `json:"ips"`
	RaftAddr string   `json:"raft_addr"`
	PubKey   []byte   `json:"pub_key"` // PEM public key
	// EnrolID names the enrolment token EnrolSig is made with (see
	// enrolKeys); empty when Proof is keyed with the cluster key.
	EnrolID  string `json:"enrol_id,omitempty"`
	EnrolSig []byte `json:"enrol_sig,omitempty"`
	Proof    []byte `json:"proof,omitempty"`
	// Pair marks a request from a node that does not know the cluster key.
	Pair bool `json:"pair,omitempty"`
	// KeySig is the requester's signature, with the key it asks a
	// certificate for, over the TLS session's exported keying material and
	// the request (joinDigest). Every request carries one.
	KeySig []byte `json:"key_sig,omitempty"`
}

type joinResponse struct {
	CACert   []byte `json:"ca_cert"`
	CAKey    []byte `json:"ca_key"`
	NodeCert []byte `json:"node_cert"`
	Proof    []byte `json:"proof"`
	// JoinToken is the cluster key, sent to a paired node only.
	JoinToken string `json:"join_token,omitempty"`
	Error     *Error `json:"error,omitempty"`
}

func joinProof(token string, ekm []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write(ekm)
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write(p)
	}
	return m.Sum(nil)
}

func exportedKey(cs *tls.ConnectionState) ([]byte, error) {
	return cs.ExportKeyingMaterial("cairn-join", nil, 32)
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
