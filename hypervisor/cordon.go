package hypervisor

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// A cordoned node takes no new VMs: the scheduler passes it over and the
// FSM refuses a placement on it. The VMs it runs keep running (and may be
// restarted, resized or stopped there), as with Kubernetes' cordon and
// Proxmox's maintenance mode; moving them away is the drain's job. The
// cordon is the admin's, kept apart from the node's own reports, so a
// report cannot lift it.

// Cordon is a node's cordon.
type Cordon struct {
	Node   string    `json:"node"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	// Drain is set while (and after) the node is drained (drain.go).
	Drain *Drain `json:"drain,omitempty"`
}

const tCordons = "node_cordons"

// maxCordonReason bounds a cordon's reason, in characters.
const maxCordonReason = 200

type cordonCmd struct {
	Node   string    `json:"node"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

type uncordonCmd struct {
	Node string    `json:"node"`
	By   string    `json:"by,omitempty"`
	At   time.Time `json:"at,omitzero"`
}

func registerCordons(reg *consensus.Registry) {
	consensus.RegisterTable[Cordon](reg, &memdb.TableSchema{Name: tCordons, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Node"}},
	}})
	consensus.Handle(reg, MsgCordonNode, "CordonNode", applyCordonNode)
	consensus.Handle(reg, MsgUncordonNode, "UncordonNode", applyUncordonNode)
}

// applyCordonNode cordons a node that has reported as a host; cordoning
// it again changes the reason.
func applyCordonNode(tx *consensus.Tx, c *cordonCmd) (any, error) {
	if consensus.First[Host](tx.Txn, tHosts, "id", c.Node) == nil {
		return nil, notFound("node", c.Node)
	}
	if err := checkCordonReason(c.Reason); err != nil {
		return nil, err
	}
	row := Cordon{Node: c.Node, Reason: c.Reason, By: c.By, At: c.At}
	if cur := cordonOf(tx.Txn, c.Node); cur != nil {
		row.Drain = cur.Drain // a new reason does not end a drain
	}
	return &row, tx.Insert(tCordons, &row)
}

// applyUncordonNode lifts a cordon; a node that has none is left as it
// is (kubectl's uncordon does the same), an unknown one is refused.
func applyUncordonNode(tx *consensus.Tx, c *uncordonCmd) (any, error) {
	cur := consensus.First[Cordon](tx.Txn, tCordons, "id", c.Node)
	if cur == nil {
		if consensus.First[Host](tx.Txn, tHosts, "id", c.Node) == nil {
			return nil, notFound("node", c.Node)
		}
		return nil, nil
	}
	// A drain ends with the cordon: VMs it stopped to move are started
	// again where they are.
	if d := cur.Drain; d != nil {
		for _, id := range d.Restarting {
			vm := getVM(tx.Txn, id)
			if vm == nil || vm.Desired != DesiredStopped {
				continue
			}
			up := *vm
			up.Desired, up.StopMode, up.Version = DesiredRunning, "", tx.Index
			if err := tx.Insert(tVMs, &up); err != nil {
				return nil, err
			}
			if err := addEvent(tx, vm.ID, OpStart, evm("drain_restart"), c.By, "", c.At); err != nil {
				return nil, err
			}
		}
	}
	return nil, tx.Delete(tCordons, cur)
}

func checkCordonReason(r string) error {
	if !utf8.ValidString(r) || utf8.RuneCountInString(r) > maxCordonReason || strings.ContainsFunc(r, func(c rune) bool { return c < ' ' || c == 0x7f }) {
		return consensus.Errorf(consensus.CodeInvalid, "a cordon's reason is one line of at most %d characters", maxCordonReason)
	}
	return nil
}

// cordonOf returns node's cordon, or nil.
func cordonOf(txn *memdb.Txn, node string) *Cordon {
	return consensus.First[Cordon](txn, tCordons, "id", node)
}

// CordonNode keeps new VMs off a node (cluster admin).
func (s *Service) CordonNode(ctx context.Context, p *identity.Principal, node, reason string) (*Cordon, error) {
	const action = "node.cordon"
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, node, "", consensus.Errorf(consensus.CodeForbidden, "only cluster admins cordon nodes"))
	}
	var out Cordon
	err := s.id.Mutate(ctx, p, action, node, "", MsgCordonNode, cordonCmd{Node: node, Reason: strings.TrimSpace(reason), By: p.User.Name, At: time.Now().UTC()}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UncordonNode lets the scheduler use a node again (cluster admin).
func (s *Service) UncordonNode(ctx context.Context, p *identity.Principal, node string) error {
	const action = "node.uncordon"
	if !p.IsClusterAdmin() {
		return s.id.Deny(ctx, p, action, node, "", consensus.Errorf(consensus.CodeForbidden, "only cluster admins uncordon nodes"))
	}
	return s.id.Mutate(ctx, p, action, node, "", MsgUncordonNode, uncordonCmd{Node: node, By: p.User.Name, At: time.Now().UTC()}, nil)
}
