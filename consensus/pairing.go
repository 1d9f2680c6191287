package consensus

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pairing: a box started with no cluster key (an image carries none) makes
// one of its own, and may form a cluster with it. While it has not, it also
// asks the formed clusters it can reach (its --join seeds, and the senders
// of discovery beacons it cannot read) to pair it. Without a shared secret
// such a request can only make it a pending node; once an admin approves it
// (by name, checking the key fingerprint its log and console show), its next
// request is answered with its certificate and the cluster key, which it
// adopts for gossip and discovery. The box trusts that answer on first use;
// the cluster trusts the box because an admin approved its key.

// pairCandidateTTL forgets beacon senders that went quiet.
const pairCandidateTTL = time.Minute

// clusterKey is the cluster key (join token) as it is now: a paired node
// changes it once.
func (n *Node) clusterKey() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg.JoinToken
}

// adoptClusterKey switches gossip and discovery to the cluster's key.
func (n *Node) adoptClusterKey(key string) error {
	gk := deriveGossipKey(key)
	if n.keyring != nil {
		if err := n.keyring.AddKey(gk); err != nil {
			return fmt.Errorf("adopt cluster key: %w", err)
		}
		if err := n.keyring.UseKey(gk); err != nil {
			return fmt.Errorf("adopt cluster key: %w", err)
		}
		_ = n.keyring.RemoveKey(n.gossipKey)
	}
	n.mu.Lock()
	n.cfg.JoinToken, n.gossipKey, n.pairing = key, gk, false
	n.mu.Unlock()
	return nil
}

func (n *Node) isPairing() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pairing
}

// notePairCandidate remembers the host of a foreign beacon's gossip address.
func (n *Node) notePairCandidate(gossipAddr string) {
	host, _, err := net.SplitHostPort(gossipAddr)
	if err != nil || net.ParseIP(host) == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.pairing {
		return
	}
	if n.pairCandidates == nil {
		n.pairCandidates = map[string]time.Time{}
	}
	n.pairCandidates[host] = time.Now()
}

// pairTargets are the cluster addresses to ask for pairing: the seeds' hosts
// and the hosts of recent foreign beacons, on our cluster port.
func (n *Node) pairTargets() []string {
	hosts := map[string]bool{}
	for _, j := range n.cfg.Join {
		if h, _, err := net.SplitHostPort(j); err == nil {
			j = h
		}
		hosts[j] = true
	}
	n.mu.Lock()
	for h, seen := range n.pairCandidates {
		if time.Since(seen) > pairCandidateTTL {
			delete(n.pairCandidates, h)
			continue
		}
		hosts[h] = true
	}
	n.mu.Unlock()
	delete(hosts, n.cfg.AdvertiseAddr)
	var out []string
	for h := range hosts {
		out = append(out, net.JoinHostPort(h, strconv.Itoa(n.cfg.RPCPort)))
	}
	sort.Strings(out)
	return out
}

// tryPairing asks each target once; it returns true once this node joined.
func (n *Node) tryPairing(ctx context.Context, lastLog *time.Time) bool {
	for _, addr := range n.pairTargets() {
		// The dial is short (a target may be a box that is not listening
		// yet, see sendJoin); the answer may take a Raft commit.
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resp, keyPEM, err := n.askToJoin(actx, addr, true)
		cancel()
		if err != nil {
			if ErrorReason(err) == reasonPendingApproval && time.Since(*lastLog) > 30*time.Second {
				*lastLog = time.Now()
				n.log.Warn("waiting for an admin to approve pairing", "via", addr, "fingerprint", n.JoinFingerprint(), "err", err)
			}
			continue
		}
		if host, _, err := net.SplitHostPort(addr); err == nil {
			n.mu.Lock()
			n.pairedSeed = net.JoinHostPort(host, strconv.Itoa(n.cfg.GossipPort))
			n.mu.Unlock()
		}
		if err := n.adopt(resp, keyPEM, addr); err != nil {
			n.log.Error("pairing failed", "via", addr, "err", err)
			continue
		}
		n.log.Info("paired with a cluster", "via", addr)
		return true
	}
	return false
}

// JoinFingerprint is the fingerprint of the key this node asks a
// certificate for, as `cairn node pending` shows it: an admin compares the
// two before approving.
func (n *Node) JoinFingerprint() string {
	key, _, err := n.joinKey()
	if err != nil {
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return ""
	}
	return keyFingerprint(pemBlock("PUBLIC KEY", der))
}

// joinDigest is what a join request's KeySig signs: the TLS session (so the
// request cannot be relayed onto another) and everything the certificate and
// the admission depend on.
func joinDigest(ekm []byte, req *joinRequest) []byte {
	h := sha256.New()
	pair := "0"
	if req.Pair {
		pair = "1"
	}
	for _, p := range [][]byte{[]byte("cairn join request v2"), ekm, []byte(req.Name), []byte(req.RaftAddr), req.PubKey,
		[]byte(strings.Join(req.IPs, ",")), []byte(req.EnrolID), []byte(pair)} {
		h.Write(p)
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

func signJoin(key *ecdsa.PrivateKey, ekm []byte, req *joinRequest) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, key, joinDigest(ekm, req))
}

// verifyKeySig checks that the request is signed, for this session, with the
// key it asks a certificate for.
func verifyKeySig(ekm []byte, req *joinRequest) error {
	blk, _ := pem.Decode(req.PubKey)
	if blk == nil {
		return errors.New("join: bad public key")
	}
	anyPub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	pub, ok := anyPub.(*ecdsa.PublicKey)
	if err != nil || !ok {
		return errors.New("join: public key must be ECDSA")
	}
	if len(req.KeySig) == 0 || !ecdsa.VerifyASN1(pub, joinDigest(ekm, req), req.KeySig) {
		return errors.New("join: the request is not signed, on this session, with the key it names")
	}
	return nil
}
