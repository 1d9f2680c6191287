package consensus

import (
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// NodeStatus describes one node as this node sees it.
type NodeStatus struct {
	Name    string            `json:"name"`
	Address string            `json:"address"` // Raft/RPC address
	Role    string            `json:"role"`    // voter, nonvoter, or none (not in Raft)
	Gossip  string            `json:"gossip"`  // alive, suspect, dead, left, or unknown
	Leader  bool              `json:"leader"`
	Healthy bool              `json:"healthy"`
	Tags    map[string]string `json:"tags,omitempty"`
}

// Status is the cluster as this node sees it.
type Status struct {
	Self         string       `json:"self"`
	Phase        string       `json:"phase"`
	Leader       string       `json:"leader"`
	Term         uint64       `json:"term"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	Voters       int          `json:"voters"`
	GossipHealth int          `json:"gossip_health"` // memberlist awareness score; 0 is healthy
	Nodes        []NodeStatus `json:"nodes"`
}

// Status merges the Raft configuration with gossip membership.
func (n *Node) Status() Status {
	n.mu.Lock()
	st := Status{Self: n.cfg.Name, Phase: n.phase}
	n.mu.Unlock()
	byName := map[string]*NodeStatus{}
	get := func(name string) *NodeStatus {
		if s, ok := byName[name]; ok {
			return s
		}
		s := &NodeStatus{Name: name, Role: "none", Gossip: "unknown"}
		byName[name] = s
		return s
	}
	if r := n.Raft(); r != nil {
		_, lid := r.LeaderWithID()
		st.Leader = string(lid)
		st.Term = r.CurrentTerm()
		st.CommitIndex = r.CommitIndex()
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				ns := get(string(s.ID))
				ns.Address = string(s.Address)
				if s.Suffrage == raft.Voter {
					ns.Role = "voter"
					st.Voters++
				} else {
					ns.Role = "nonvoter"
				}
			}
		}
	}
	st.AppliedIndex = n.store.AppliedIndex()
	for _, m := range n.members() {
		ns := get(m.Name)
		ns.Gossip = gossipState(m.State)
		ns.Tags = m.Meta.Tags
		if ns.Address == "" {
			ns.Address = m.Meta.RaftAddr
		}
	}
	if n.gossip != nil {
		st.GossipHealth = n.gossip.GetHealthScore()
	}
	for _, ns := range byName {
		ns.Leader = ns.Name == st.Leader
		ns.Healthy = ns.Gossip == "alive" && ns.Role != "none"
		st.Nodes = append(st.Nodes, *ns)
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Name < st.Nodes[j].Name })
	return st
}

func gossipState(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// Ready reports whether the node serves reads and writes: it runs Raft, knows
// a leader and has applied at least the log it found at start.
func (n *Node) Ready() bool {
	r := n.Raft()
	if r == nil {
		return false
	}
	addr, _ := r.LeaderWithID()
	return addr != ""
}

// Collectors returns the Prometheus collectors for Raft and gossip health.
func (n *Node) Collectors() []prometheus.Collector {
	raftState := func() float64 {
		r := n.Raft()
		if r == nil {
			return -1
		}
		return float64(r.State()) // 0 follower, 1 candidate, 2 leader, 3 shutdown
	}
	stat := func(key string) func() float64 {
		return func() float64 {
			r := n.Raft()
			if r == nil {
				return 0
			}
			v, _ := strconv.ParseFloat(r.Stats()[key], 64)
			return v
		}
	}
	gauge := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "cairn", Name: name, Help: help}, fn)
	}
	return []prometheus.Collector{
		gauge("raft_state", "Raft state: -1 not started, 0 follower, 1 candidate, 2 leader, 3 shutdown.", raftState),
		gauge("raft_term", "Current Raft term.", stat("term")),
		gauge("raft_commit_index", "Raft commit index.", stat("commit_index")),
		gauge("raft_applied_index", "Index applied to the state store.", func() float64 { return float64(n.store.AppliedIndex()) }),
		gauge("raft_voters", "Voters in the Raft configuration.", func() float64 { return float64(n.Status().Voters) }),
		gauge("raft_last_contact_seconds", "Seconds since the leader was last heard from (0 on the leader).", func() float64 {
			r := n.Raft()
			if r == nil || r.State() == raft.Leader || r.LastContact().IsZero() {
				return 0
			}
			return timeSince(r.LastContact())
		}),
		gauge("gossip_members_alive", "Gossip members seen alive.", func() float64 { return float64(len(n.aliveMembers())) }),
		gauge("gossip_members", "Gossip members known, in any state.", func() float64 { return float64(len(n.members())) }),
		gauge("gossip_health_score", "memberlist awareness score; 0 is healthy, higher means this node is struggling.", func() float64 {
			if n.gossip == nil {
				return 0
			}
			return float64(n.gossip.GetHealthScore())
		}),
	}
}

func timeSince(t time.Time) float64 { return time.Since(t).Seconds() }
