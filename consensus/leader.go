package consensus

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// A controller is a loop that runs only on the leader (scheduler, healer
// planning, garbage collection). It starts when this node gains leadership and
// its context is cancelled when it loses it.
type controller struct {
	name string
	run  func(ctx context.Context)
}

// RegisterController adds a leader-only loop. Register before Start.
func (n *Node) RegisterController(name string, run func(ctx context.Context)) {
	n.controllers = append(n.controllers, controller{name: name, run: run})
}

// IsLeader reports whether this node is the Raft leader right now.
func (n *Node) IsLeader() bool {
	r := n.Raft()
	return r != nil && r.State() == raft.Leader
}

func (n *Node) monitorLeadership(ctx context.Context, notify <-chan bool) {
	var stop context.CancelFunc
	var wg sync.WaitGroup
	stopAll := func() {
		if stop != nil {
			stop()
			wg.Wait()
			stop = nil
			n.leaderSince.Store(0)
			n.log.Info("leader controllers stopped")
		}
	}
	defer stopAll()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-notify:
			if !isLeader {
				stopAll()
				continue
			}
			if stop != nil {
				continue
			}
			n.leaderSince.Store(time.Now().UnixNano())
			lctx, cancel := context.WithCancel(ctx)
			stop = cancel
			all := append([]controller{
				{"cluster-secrets", n.ensureSecrets},
				{"membership", n.reconcileMembershipLoop},
				{"protocols", n.recordProtocolsLoop},
			}, n.controllers...)
			for _, c := range all {
				wg.Add(1)
				go func(c controller) {
					defer wg.Done()
					c.run(lctx)
				}(c)
			}
			n.log.Info("became leader; controllers started", "count", len(all))
		}
	}
}

// ensureSecrets puts the CA and join token into the replicated state after a
// bootstrap, so every node can issue certificates and show the token.
func (n *Node) ensureSecrets(ctx context.Context) {
	for {
		if n.store.secrets() != nil {
			return
		}
		if id := n.identity(); id != nil {
			_, err := n.Apply(ctx, msgSetClusterSecrets, clusterSecrets{CACert: id.ca.certPEM, CAKey: id.ca.keyPEM, JoinToken: n.clusterKey()}, nil)
			if err == nil {
				return
			}
			n.log.Warn("recording cluster secrets failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// reconcileMembershipLoop makes the Raft configuration follow gossip: members
// that appear become voters (up to MaxVoters) or non-voters, non-voters are
// promoted when there is room, and voters gone longer than DeadServerGrace
// are removed. It is a small, Cairn-sized version of raft-autopilot.
func (n *Node) reconcileMembershipLoop(ctx context.Context) {
	gone := map[string]time.Time{}
	for {
		n.reconcileMembership(gone)
		select {
		case <-ctx.Done():
			return
		case <-n.events:
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) reconcileMembership(gone map[string]time.Time) {
	r := n.Raft()
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	inRaft := map[string]raft.Server{}
	voters := 0
	for _, s := range servers {
		inRaft[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	alive := map[string]member{}
	for _, m := range n.members() {
		if m.State == memberlist.StateAlive && (m.Meta.Phase == phaseMember || m.Meta.Phase == phaseWaiting) {
			alive[m.Name] = m
		}
	}
	// Gossip metadata is only a claim, and the cluster key is all gossip
	// needs: add a node, or move a server to a new address, only once
	// whoever is there shows a certificate of our CA for that name, i.e.
	// was admitted under it, and states that address as its own. The
	// checks run in the background and this loop acts on their remembered
	// results, so members that never answer cannot stall it; servers are
	// checked first, as moving them matters more than adding strangers.
	var toCheck []certCheck
	for name, m := range alive {
		if s, ok := inRaft[name]; !ok || string(s.Address) != m.Meta.RaftAddr {
			toCheck = append(toCheck, certCheck{name: name, addr: m.Meta.RaftAddr})
		}
	}
	sort.Slice(toCheck, func(i, j int) bool {
		_, si := inRaft[toCheck[i].name]
		_, sj := inRaft[toCheck[j].name]
		if si != sj {
			return si
		}
		return toCheck[i].name < toCheck[j].name
	})
	checked := n.certChecks.lookup(toCheck, n.holdsCertificate, n.poke)
	high := highestProtocol(n.store.ReadTxn(), servers)
	for name, m := range alive {
		delete(gone, name)
		s, ok := inRaft[name]
		if p := max(m.Meta.Protocol, BaseProtocol); !ok && p < high {
			// It would stop at the first newer command in the log.
			if n.oldJoiners[name] != p {
				n.log.Warn("not adding a node that runs an older protocol than the cluster: upgrade it first", "node", name, "protocol", p, "cluster", high)
				n.oldJoiners[name] = p
			}
			continue
		}
		if !ok || string(s.Address) != m.Meta.RaftAddr {
			err, done := checked[certCheck{name: name, addr: m.Meta.RaftAddr}]
			if !done {
				continue // checked in the background; a later round acts
			}
			if err != nil {
				n.log.Warn("not adding or moving a node without its cluster certificate", "node", name, "addr", m.Meta.RaftAddr, "err", err)
				continue
			}
		}
		switch {
		case !ok && voters < n.cfg.MaxVoters:
			if err := r.AddVoter(raft.ServerID(name), raft.ServerAddress(m.Meta.RaftAddr), 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("add voter failed", "node", name, "err", err)
				continue
			}
			voters++
			n.log.Info("added voter", "node", name)
		case !ok:
			if err := r.AddNonvoter(raft.ServerID(name), raft.ServerAddress(m.Meta.RaftAddr), 0, 5*time.Second).Error(); err == nil {
				n.log.Info("added non-voter", "node", name)
			}
		case s.Suffrage != raft.Voter && voters < n.cfg.MaxVoters:
			if err := r.AddVoter(s.ID, s.Address, 0, 5*time.Second).Error(); err == nil {
				voters++
				n.log.Info("promoted non-voter", "node", name)
			}
		case string(s.Address) != m.Meta.RaftAddr:
			// Same node, new address (DHCP): re-adding updates it.
			add := r.AddVoter
			if s.Suffrage != raft.Voter {
				add = r.AddNonvoter
			}
			if err := add(s.ID, raft.ServerAddress(m.Meta.RaftAddr), 0, 5*time.Second).Error(); err == nil {
				n.log.Info("moved server to a new address", "node", name, "from", s.Address, "to", m.Meta.RaftAddr)
			}
		}
	}
	for name, s := range inRaft {
		if name == n.cfg.Name {
			continue
		}
		if _, ok := alive[name]; ok {
			continue
		}
		since, seen := gone[name]
		if !seen {
			gone[name] = time.Now()
			continue
		}
		if time.Since(since) < n.cfg.DeadServerGrace {
			continue
		}
		if err := r.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
			n.log.Warn("remove dead server failed", "node", name, "err", err)
			continue
		}
		delete(gone, name)
		n.log.Warn("removed dead server after grace period", "node", name, "grace", n.cfg.DeadServerGrace)
	}
}

// holdsCertificate checks that the node at addr is name and lives there:
// it presents a certificate of the cluster CA issued to name and, asked on
// that mutually authenticated connection, states addr as its own Raft
// address. A certificate alone proves only that name answers through addr,
// which a plain TCP relay to the real node would also show.
func (n *Node) holdsCertificate(name, addr string) error {
	id := n.identity()
	if id == nil {
		return errors.New("this node has no credentials")
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: id.clientTLS(alpnRPC)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("check certificate of %s: %w", name, err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 || certs[0].Subject.CommonName != name {
		return fmt.Errorf("check certificate of %s: %s presents another node's certificate", name, addr)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+rpcSelf, strings.NewReader("{}"))
	hr.Header.Set("Content-Type", "application/json")
	if err := hr.Write(conn); err != nil {
		return fmt.Errorf("check address of %s: %w", name, err)
	}
	res, err := http.ReadResponse(bufioReader(conn), hr)
	if err != nil {
		return fmt.Errorf("check address of %s: %w", name, err)
	}
	defer res.Body.Close()
	var self selfResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, 4096)).Decode(&self); err != nil {
		return fmt.Errorf("check address of %s (%s): %w", name, res.Status, err)
	}
	if self.Name != name || self.RaftAddr != addr {
		return fmt.Errorf("check address of %s: the node reached at %s says it is %s at %s (a relay?)", name, addr, self.Name, self.RaftAddr)
	}
	return nil
}

// certCheck is one (name, address) whose certificate the leader checks.
type certCheck struct{ name, addr string }

// certChecker runs certificate checks in the background, at most
// certCheckWorkers at once, and remembers each result: a success for
// certCheckTTL, a failure for longer each time it repeats (up to
// certCheckMaxBackoff), so members that never answer cost little.
type certChecker struct {
	mu       sync.Mutex
	seen     map[certCheck]certResult
	inflight map[certCheck]bool
}

type certResult struct {
	err   error
	until time.Time
	fails int
}

const (
	certCheckWorkers    = 8
	certCheckTTL        = 15 * time.Second
	certCheckMaxBackoff = 5 * time.Minute
	certCheckMax        = 1024 // results remembered at most
)

// lookup returns the remembered results for checks and starts, in the
// order given, the checks that have none (while workers are free); done is
// called when one of them ends. A check without a result is absent from
// the answer. lookup never waits for a check.
func (c *certChecker) lookup(checks []certCheck, check func(name, addr string) error, done func()) map[certCheck]error {
	out := make(map[certCheck]error, len(checks))
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen, c.inflight = map[certCheck]certResult{}, map[certCheck]bool{}
	}
	for _, k := range checks {
		r, ok := c.seen[k]
		if ok && now.Before(r.until) {
			out[k] = r.err
			continue
		}
		if c.inflight[k] || len(c.inflight) >= certCheckWorkers {
			continue
		}
		c.inflight[k] = true
		go func() {
			err := check(k.name, k.addr)
			c.finish(k, err)
			done()
		}()
	}
	return out
}

func (c *certChecker) finish(k certCheck, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, k)
	now := time.Now()
	if len(c.seen) >= certCheckMax {
		for o, r := range c.seen {
			if now.After(r.until) {
				delete(c.seen, o)
			}
		}
		if len(c.seen) >= certCheckMax {
			c.seen = map[certCheck]certResult{}
		}
	}
	r := certResult{err: err, until: now.Add(certCheckTTL)}
	if err != nil {
		r.fails = c.seen[k].fails + 1
		backoff := certCheckTTL << min(r.fails-1, 8)
		r.until = now.Add(min(backoff, certCheckMaxBackoff))
	}
	c.seen[k] = r
}

// busy reports whether a check is running.
func (c *certChecker) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inflight) > 0
}
