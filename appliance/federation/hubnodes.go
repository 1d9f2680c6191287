package federation

import (
	"context"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
)

// Where a site finds the hub. Every hub node records the address sites
// reach it at (its federation URL); the hub's hello gives a site all of
// them, and the site keeps them with its membership. A site whose hub
// node is gone dials the others in turn: a hub of three nodes outlives
// one, for its sites too.

// MsgHubNodeURL records a hub node's federation URL.
const MsgHubNodeURL consensus.MessageType = 536

const tHubNodes = "federation_hub_nodes"

// HubNode is a hub node as sites reach it.
type HubNode struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

func registerHubNodes(reg *consensus.Registry) {
	consensus.RegisterTable[HubNode](reg, &memdb.TableSchema{Name: tHubNodes, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
	}})
	consensus.HandleSince(reg, MsgHubNodeURL, "SetHubNodeURL", 8, applyHubNodeURL)
}

func applyHubNodeURL(tx *consensus.Tx, c *HubNode) (any, error) {
	if u, err := url.Parse(c.URL); err != nil || u.Scheme != "https" || u.Host == "" || c.Name == "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a hub node's federation URL is https://host:port")
	}
	if cur := consensus.First[HubNode](tx.Txn, tHubNodes, "id", c.Name); cur != nil && *cur == *c {
		return nil, nil
	}
	return nil, tx.Insert(tHubNodes, c)
}

// Announce records the URL sites reach this hub node at, trying until it
// is recorded or ctx ends (at the node's start, while the hub may still
// be electing a leader).
func (h *Hub) Announce(ctx context.Context, fedURL string) {
	for ctx.Err() == nil {
		if cur := consensus.First[HubNode](h.c.Store().ReadTxn(), tHubNodes, "id", h.c.Name()); cur != nil && cur.URL == fedURL {
			return
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := h.c.Apply(actx, MsgHubNodeURL, &HubNode{Name: h.c.Name(), URL: fedURL}, nil)
		cancel()
		if err == nil {
			return
		}
		h.log.Warn("record this hub node's address for sites", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// hubURLs is the federation URL of every hub node in the hub's Raft
// configuration (a node removed from the hub is left out), sorted.
func (h *Hub) hubURLs() []string {
	var out []string
	it, err := h.c.Store().ReadTxn().Get(tHubNodes, "id")
	if err != nil {
		return nil
	}
	inRaft := func(string) bool { return true }
	if sc, ok := h.c.(interface{ Status() consensus.Status }); ok {
		st := sc.Status()
		inRaft = func(name string) bool {
			return slices.ContainsFunc(st.Nodes, func(n consensus.NodeStatus) bool { return n.Name == name && n.Role != "none" })
		}
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if n := o.(*HubNode); inRaft(n.Name) {
			out = append(out, n.URL)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
