package consensus

import (
	"context"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// The cluster's protocol: which replicated commands every server knows.
//
// A node that meets a command it does not know in the log must stop (fsm.go:
// skipping it would diverge its state). In a rolling upgrade the upgraded
// nodes know commands the others do not, so a command added in protocol N
// is proposed only once every server of the Raft configuration is known to
// run N or later; until then Apply refuses it, and says which node holds the
// upgrade back. The idea is Nomad's ServersMeetMinimumVersion, with the
// versions kept in the replicated state rather than read from gossip alone:
// a server that is down keeps the protocol it last ran, so a box dead during
// an upgrade neither blocks the cluster nor, when it comes back older,
// meets a command it cannot apply (it would then be the one upgraded).
//
// Each node says its protocol in its gossip metadata; the leader records
// what each server says (msgRecordProtocol, which older binaries may skip).
// A server with no record yet counts as BaseProtocol. A node that speaks
// less than some server has recorded is not added to the configuration
// (leader.go): it could stop at the first newer command in the log. The
// inner command of a wrapper (an audited one) is checked on the node that
// proposes it only.

// Protocol is the protocol this binary speaks. Raise it when a command is
// added, and register that command with HandleSince(…, Protocol, …).
//
//	1  every command there was when the gate came
//	2  hypervisor.MsgSwitchMigration, the one-step switchover
//	3  hypervisor.MsgStartPostCopyMigration, a live migration the admin
//	   lets go post-copy
//	4  hypervisor.MsgCreateVMWithVars and MsgAttachVars: a UEFI VM's
//	   variable store on a volume
//	5  identity.MsgSetUserDisabled, and MsgDeleteEmptyProject, which also
//	   counts what other domains keep of a project
//	6  hypervisor.MsgDrainNodeConvert, a drain that may move VMs' local
//	   disks onto volumes
//	7  federation.MsgJoinHub, MsgLeaveHub and MsgHubCA: a site's
//	   membership of a hub
//	8  federation.MsgSiteInventory, MsgSiteSession, MsgSetSiteGroup and
//	   MsgSetGrant: a hub's cached inventory of its sites and its users'
//	   roles on them
//	9  entries with bytes beside their JSON (AttachedFlag, attach.go)
const Protocol = 9

// ReasonProtocol is the Reason of the gate's refusals: the command is
// certainly not applied, and a caller may fall back to what older nodes
// know.
const ReasonProtocol = "protocol"

// BaseProtocol is every command registered with Handle: all there was when
// the protocol was introduced.
const BaseProtocol = 1

const msgRecordProtocol MessageType = 8

const tableProtocols = "protocols"

// nodeProtocol is the protocol a server last said it runs.
type nodeProtocol struct {
	Node     string `json:"node"`
	Protocol int    `json:"protocol"`
}

func registerProtocolTables(r *Registry) {
	RegisterTable[nodeProtocol](r, &memdb.TableSchema{
		Name: tableProtocols,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Node"}},
		},
	})
	Handle(r, msgRecordProtocol, "RecordProtocol", applyRecordProtocol)
}

func applyRecordProtocol(tx *Tx, c *nodeProtocol) (any, error) {
	if c.Node == "" || c.Protocol < BaseProtocol {
		return nil, Errorf(CodeInvalid, "record protocol: node %q, protocol %d", c.Node, c.Protocol)
	}
	return nil, tx.Insert(tableProtocols, c)
}

// recorded is the protocol a node last recorded, if it has.
func recorded(txn *memdb.Txn, node string) (int, bool) {
	if raw, err := txn.First(tableProtocols, "id", node); err == nil && raw != nil {
		return raw.(*nodeProtocol).Protocol, true
	}
	return 0, false
}

// protocolOf is the protocol a node last recorded, or BaseProtocol.
func protocolOf(txn *memdb.Txn, node string) int {
	if p, ok := recorded(txn, node); ok {
		return p
	}
	return BaseProtocol
}

// lowestServer is the server of the configuration with the lowest
// protocol, and that protocol (BaseProtocol for one without a record).
func lowestServer(txn *memdb.Txn, servers []raft.Server) (string, int) {
	name, low := "", 0
	for _, s := range servers {
		if p := protocolOf(txn, string(s.ID)); low == 0 || p < low {
			name, low = string(s.ID), p
		}
	}
	return name, max(low, BaseProtocol)
}

// protocol is what this node speaks (a test may pretend an older one).
func (n *Node) protocol() int {
	if n.cfg.protocol != 0 {
		return n.cfg.protocol
	}
	return Protocol
}

// Gate refuses a command of type t that some server of the configuration
// would not know. Apply checks it on the node that proposes and again on
// the leader; a wrapper that carries another command (an audited one)
// checks the inner command's type with it before it proposes.
//
// It reads this node's state as it is, without waiting for writes it
// acknowledged (Store.ReadTxn): the gate is asked before every attached
// write, and the leader asks again with its own state anyway.
func (n *Node) Gate(t MessageType) error {
	since := n.reg.since[t.base()]
	if t&AttachedFlag != 0 {
		since = max(since, attachProtocol)
	}
	if since <= BaseProtocol {
		return nil
	}
	servers, err := n.servers()
	if err != nil {
		return err
	}
	if name, p := lowestServer(n.store.txn(), servers); p < since {
		return Reasonf(CodeConflict, ReasonProtocol, "the cluster is being upgraded: %s needs protocol %d on every node, and %s runs %d; upgrade it first",
			n.reg.CommandName(t), since, name, p)
	}
	return nil
}

// recordProtocolsLoop (leader) records what each server says it speaks.
func (n *Node) recordProtocolsLoop(ctx context.Context) {
	for {
		n.recordProtocols(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) recordProtocols(ctx context.Context) {
	servers, err := n.servers()
	if err != nil {
		return
	}
	said := map[string]int{}
	for _, m := range n.members() {
		if m.State == memberlist.StateAlive {
			// A binary older than the gate says nothing: the base
			// protocol is what it knows (a node rolled back to one).
			said[m.Name] = max(m.Meta.Protocol, BaseProtocol)
		}
	}
	txn := n.store.ReadTxn()
	for _, s := range servers {
		name := string(s.ID)
		p, ok := said[name]
		if !ok {
			continue // down: it keeps its record
		}
		if had, ok := recorded(txn, name); ok && had == p {
			continue
		}
		if _, err := n.Apply(ctx, msgRecordProtocol|IgnoreUnknownTypeFlag, nodeProtocol{Node: name, Protocol: p}, nil); err != nil {
			n.log.Warn("record a node's protocol", "node", name, "protocol", p, "err", err)
			return
		}
		n.log.Info("node protocol recorded", "node", name, "protocol", p)
	}
}

// highestProtocol is the highest protocol the configuration's servers
// last recorded, or 0 when none has a record: the log may hold commands
// of it.
func highestProtocol(txn *memdb.Txn, servers []raft.Server) int {
	high := 0
	for _, s := range servers {
		if p, ok := recorded(txn, string(s.ID)); ok {
			high = max(high, p)
		}
	}
	return high
}

// ClusterProtocol is the protocol every server of the configuration is
// known to speak: the commands of that protocol may be proposed.
func (n *Node) ClusterProtocol() int {
	servers, err := n.servers()
	if err != nil {
		return BaseProtocol
	}
	_, p := lowestServer(n.store.ReadTxn(), servers)
	return p
}
