package consensus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// gossipMeta is what each node tells the others about itself (memberlist
// limits it to 512 bytes).
type gossipMeta struct {
	Phase    string            `json:"p"`
	RaftAddr string            `json:"r"`
	Tags     map[string]string `json:"t,omitempty"`
	Protocol int               `json:"v,omitempty"` // protocol.go; 0: older than the protocol
}

// member is a gossip peer as the rest of consensus sees it.
type member struct {
	Name  string
	Addr  string // gossip address
	State memberlist.NodeStateType
	Meta  gossipMeta
}

func deriveGossipKey(token string) []byte {
	sum := sha256.Sum256([]byte("cairn gossip key\x00" + token))
	return sum[:]
}

func (n *Node) startGossip() error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.Name
	mc.BindAddr = n.cfg.BindAddr
	mc.BindPort = n.cfg.GossipPort
	mc.AdvertiseAddr = n.cfg.AdvertiseAddr
	mc.AdvertisePort = n.cfg.GossipPort
	n.gossipKey = deriveGossipKey(n.cfg.JoinToken)
	kr, err := memberlist.NewKeyring(nil, n.gossipKey)
	if err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	n.keyring, mc.Keyring = kr, kr
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	mc.Delegate = &gossipDelegate{n: n}
	mc.Events = n.gossipEvents
	mc.Conflict = &gossipConflict{n: n}
	mc.Logger = log.New(&levelFilter{log: n.log.With("component", "gossip")}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start gossip on %s:%d: %w", n.cfg.BindAddr, n.cfg.GossipPort, err)
	}
	n.gossip = ml
	return nil
}

func (n *Node) localMeta() gossipMeta {
	n.mu.Lock()
	defer n.mu.Unlock()
	return gossipMeta{Phase: n.phase, RaftAddr: n.RaftAddr(), Tags: n.cfg.Tags, Protocol: n.protocol()}
}

func (n *Node) updateGossipMeta() {
	if n.gossip != nil {
		_ = n.gossip.UpdateNode(time.Second)
	}
	n.poke()
}

// poke wakes the loops that react to membership changes.
func (n *Node) poke() {
	select {
	case n.events <- struct{}{}:
	default:
	}
}

// members returns the gossip peers that are not dead or gone, this node
// included, as memberlist's events last described them.
func (n *Node) members() []member {
	if n.gossip == nil {
		return nil
	}
	return n.gossipEvents.members()
}

// gossipJoinLoop joins the configured seeds and, after a restart, the peers
// Raft remembers, until gossip has company; then it idles and re-checks.
func (n *Node) gossipJoinLoop(ctx context.Context) {
	for {
		if n.gossip.NumMembers() < 2 {
			seeds := n.seedAddrs()
			if len(seeds) > 0 {
				if k, err := n.gossip.Join(seeds); err != nil {
					n.log.Debug("gossip join failed", "seeds", seeds, "err", err)
				} else {
					n.log.Info("joined gossip", "contacted", k)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (n *Node) seedAddrs() []string {
	var seeds []string
	n.mu.Lock()
	if n.pairedSeed != "" {
		seeds = append(seeds, n.pairedSeed)
	}
	n.mu.Unlock()
	for _, j := range n.cfg.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			j = net.JoinHostPort(j, strconv.Itoa(n.cfg.GossipPort))
		}
		seeds = append(seeds, j)
	}
	if r := n.Raft(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if string(s.ID) == n.cfg.Name {
					continue
				}
				if host, _, err := net.SplitHostPort(string(s.Address)); err == nil {
					seeds = append(seeds, net.JoinHostPort(host, strconv.Itoa(n.cfg.GossipPort)))
				}
			}
		}
	}
	return seeds
}

type gossipDelegate struct{ n *Node }

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	meta := d.n.localMeta()
	b, _ := json.Marshal(meta)
	if len(b) > limit {
		meta.Tags = nil // phase and address are what joining depends on
		b, _ = json.Marshal(meta)
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// gossipConflict hears of two gossip members under one name. Names are
// Raft server IDs, so such nodes can never form a cluster: nodes started on
// one host all default to its hostname. A node that has not joined yet stops
// with an error that names the fix; a member only logs it (after a crash a
// member may come back at a new address before its old entry is reaped).
type gossipConflict struct{ n *Node }

func (c *gossipConflict) NotifyConflict(existing, other *memberlist.Node) {
	err := fmt.Errorf("node name %q is used by %s and by %s: give every node a unique name with --name",
		existing.Name, existing.Address(), other.Address())
	if existing.Name != c.n.cfg.Name || c.n.Raft() != nil {
		c.n.log.Error("two gossip members share a name", "err", err)
		return
	}
	c.n.fail(err)
}

// gossipEvents keeps Cairn's own copy of the membership, as Serf does.
// memberlist changes a member's fields in place, under its own lock, while
// Members() hands out pointers to them, so reading those later races with
// its updates. The event callbacks run under that lock: they copy what we
// need. A member is here from its join until memberlist declares it dead or
// gone (memberlist's events, like its Members(), say nothing of suspicion).
type gossipEvents struct {
	n     *Node
	mu    sync.Mutex
	alive map[string]member
}

func newGossipEvents(n *Node) *gossipEvents {
	return &gossipEvents{n: n, alive: map[string]member{}}
}

func (e *gossipEvents) record(m *memberlist.Node) {
	var meta gossipMeta
	_ = json.Unmarshal(m.Meta, &meta)
	e.mu.Lock()
	e.alive[m.Name] = member{Name: m.Name, Addr: m.Address(), State: memberlist.StateAlive, Meta: meta}
	e.mu.Unlock()
}

// members returns the members, sorted by name.
func (e *gossipEvents) members() []member {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]member, 0, len(e.alive))
	for _, m := range e.alive {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (e *gossipEvents) NotifyJoin(m *memberlist.Node) {
	e.record(m)
	e.n.log.Info("gossip member joined", "member", m.Name, "addr", m.Address())
	e.n.poke()
}

func (e *gossipEvents) NotifyLeave(m *memberlist.Node) {
	e.mu.Lock()
	delete(e.alive, m.Name)
	e.mu.Unlock()
	e.n.log.Info("gossip member left or failed", "member", m.Name)
	e.n.poke()
}

func (e *gossipEvents) NotifyUpdate(m *memberlist.Node) {
	e.record(m)
	e.n.poke()
}

// levelFilter turns memberlist's "[LEVEL] memberlist: msg" lines into slog
// records, dropping debug chatter.
type levelFilter struct{ log *slog.Logger }

func (f *levelFilter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(line, "[DEBUG]"):
	case strings.Contains(line, "[ERR]"):
		f.log.Error(stripLevel(line))
	case strings.Contains(line, "[WARN]"):
		f.log.Warn(stripLevel(line))
	default:
		f.log.Info(stripLevel(line))
	}
	return len(p), nil
}

func stripLevel(line string) string {
	if i := strings.Index(line, "] "); i >= 0 {
		line = line[i+2:]
	}
	return strings.TrimPrefix(line, "memberlist: ")
}

// newHCLogger adapts slog for hashicorp/raft, which wants an hclog.Logger.
func newHCLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclog.Info,
		Output:     &hclogWriter{log: l},
		JSONFormat: true,
	})
}

type hclogWriter struct{ log *slog.Logger }

func (w *hclogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			w.log.Info(string(line))
			continue
		}
		msg, _ := rec["@message"].(string)
		lvl, _ := rec["@level"].(string)
		args := make([]any, 0, 2*len(rec))
		for k, v := range rec {
			if !strings.HasPrefix(k, "@") {
				args = append(args, k, v)
			}
		}
		switch lvl {
		case "error":
			w.log.Error(msg, args...)
		case "warn":
			w.log.Warn(msg, args...)
		default:
			w.log.Info(msg, args...)
		}
	}
	return len(p), nil
}

var _ io.Writer = (*hclogWriter)(nil)
