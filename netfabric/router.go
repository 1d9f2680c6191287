package netfabric

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Routers and floating IPs, Neutron's L3, distributed:
//
//   - A router belongs to a project and connects some of its networks to
//     each other and, through a gateway, to an external network (SNAT out).
//     Every box that has a port on one of its networks runs it (routerns.go),
//     with the same gateway address and MAC on each, so a guest's traffic
//     is routed on its own box and no box is a bottleneck or a single point
//     of failure.
//   - A router with a gateway has one address on the external network per
//     box that runs it (a port of the router's, bound to that box): each
//     box's outgoing connections leave from its own address, so return
//     traffic comes back to the box that keeps their state. The agent asks
//     for its box's address (MsgRouterNodeAddress) when it first needs one.
//   - A floating IP is an address of the external network, given 1:1 to a
//     port of a network the router connects. The box the port is bound to
//     answers for it and NATs it, so it follows the VM; that box announces
//     it by gratuitous ARP when it starts to answer.
//
// A network is on one router at most. A router with networks cannot be
// deleted; neither can a network on a router, nor a router's gateway or
// interface that an associated floating IP needs.

// Netfabric's L3 commands.
const (
	MsgCreateRouter        consensus.MessageType = 394
	MsgDeleteRouter        consensus.MessageType = 395
	MsgRouterInterface     consensus.MessageType = 396
	MsgSetRouterGateway    consensus.MessageType = 397
	MsgRouterNodeAddress   consensus.MessageType = 398
	MsgCreateFloatingIP    consensus.MessageType = 399
	MsgDeleteFloatingIP    consensus.MessageType = 400
	MsgAssociateFloatingIP consensus.MessageType = 401
)

const (
	tRouters     = "routers"
	tFloatingIPs = "floating_ips"
)

// Router is a project's router; it is also the payload of MsgCreateRouter
// (with no networks and no gateway yet).
type Router struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Project  string   `json:"project"`
	Networks []string `json:"networks,omitempty"` // the project networks it connects, by id
	// External is the external network its gateway is on ("": none).
	External  string    `json:"external_network,omitempty"`
	Charged   bool      `json:"charged,omitempty"` // counted in the project's routers quota
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"`
}

// RouterIDCmd names a router or floating IP to delete.
type RouterIDCmd struct {
	ID string `json:"id"`
}

// RouterInterfaceCmd connects a network to a router, or (Remove) takes it off.
type RouterInterfaceCmd struct {
	Router  string `json:"router"`
	Network string `json:"network"`
	Remove  bool   `json:"remove,omitempty"`
}

// RouterGatewayCmd puts a router's gateway on an external network ("": none).
type RouterGatewayCmd struct {
	Router  string `json:"router"`
	Network string `json:"network"`
}

// RouterNodeAddressCmd gives a router an address on its external network
// for one node; the node's agent asks when it starts running the router.
type RouterNodeAddressCmd struct {
	Router    string    `json:"router"`
	Node      string    `json:"node"`
	CreatedAt time.Time `json:"created_at"`
}

// FloatingIP is a project's address on an external network, NATed 1:1 to
// a port while associated. It is also the payload of MsgCreateFloatingIP
// (IP empty: the lowest free address of the network's pools).
type FloatingIP struct {
	ID        string    `json:"id"`
	Project   string    `json:"project"`
	NetworkID string    `json:"network_id"`
	IP        string    `json:"ip"`
	PortID    string    `json:"port_id,omitempty"` // the port it is given to ("": none)
	Charged   bool      `json:"charged,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"`
}

// AssociateCmd gives a floating IP to a port ("": takes it back).
type AssociateCmd struct {
	ID     string `json:"id"`
	PortID string `json:"port_id"`
}

func registerRouters(reg *consensus.Registry) {
	consensus.RegisterTable[Router](reg, &memdb.TableSchema{Name: tRouters, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.RegisterTable[FloatingIP](reg, &memdb.TableSchema{Name: tFloatingIPs, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"port": {Name: "port", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "PortID"}},
	}})
	// Routers and floating IPs keep their project, charged to its quota
	// or not (commands written before they were counted are not).
	identity.HoldProjects(identity.ProjectHolder{Kind: "routers", Held: heldBy(tRouters, func(r *Router) (string, string) { return r.Project, r.Name })})
	identity.HoldProjects(identity.ProjectHolder{Kind: "floating IPs", Held: heldBy(tFloatingIPs, func(f *FloatingIP) (string, string) { return f.Project, f.IP })})
	consensus.Handle(reg, MsgCreateRouter, "CreateRouter", applyCreateRouter)
	consensus.Handle(reg, MsgDeleteRouter, "DeleteRouter", applyDeleteRouter)
	consensus.Handle(reg, MsgRouterInterface, "RouterInterface", applyRouterInterface)
	consensus.Handle(reg, MsgSetRouterGateway, "SetRouterGateway", applySetRouterGateway)
	consensus.Handle(reg, MsgRouterNodeAddress, "RouterNodeAddress", applyRouterNodeAddress)
	consensus.Handle(reg, MsgCreateFloatingIP, "CreateFloatingIP", applyCreateFloatingIP)
	consensus.Handle(reg, MsgDeleteFloatingIP, "DeleteFloatingIP", applyDeleteFloatingIP)
	consensus.Handle(reg, MsgAssociateFloatingIP, "AssociateFloatingIP", applyAssociateFloatingIP)
}

// maxRouterNetworks bounds a router's interfaces.
const maxRouterNetworks = 32

// GetRouter returns the router with this id, or nil.
func GetRouter(txn *memdb.Txn, id string) *Router {
	return consensus.First[Router](txn, tRouters, "id", id)
}

// ListRouters returns every router, by id.
func ListRouters(txn *memdb.Txn) []Router {
	out := []Router{}
	if it, err := txn.Get(tRouters, "id"); err == nil {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			out = append(out, *obj.(*Router))
		}
	}
	return out
}

// GetFloatingIP returns the floating IP with this id, or nil.
func GetFloatingIP(txn *memdb.Txn, id string) *FloatingIP {
	return consensus.First[FloatingIP](txn, tFloatingIPs, "id", id)
}

// ListFloatingIPs returns every floating IP, by id.
func ListFloatingIPs(txn *memdb.Txn) []FloatingIP {
	out := []FloatingIP{}
	if it, err := txn.Get(tFloatingIPs, "id"); err == nil {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			out = append(out, *obj.(*FloatingIP))
		}
	}
	return out
}

// RouterOf returns the router a network is on, or nil.
func RouterOf(txn *memdb.Txn, networkID string) *Router {
	for _, r := range ListRouters(txn) {
		if slices.Contains(r.Networks, networkID) {
			return &r
		}
	}
	return nil
}

func routerOwner(id string) string { return "router:" + id }
func fipOwner(id string) string    { return "fip:" + id }

// routerAddressPort names the port that is a router's address on its
// external network for one node.
func routerAddressPort(router, node string) string {
	sum := sha256.Sum256([]byte(router + "\x00" + node))
	return "rgw-" + hex.EncodeToString(sum[:8])
}

func applyCreateRouter(tx *consensus.Tx, r *Router) (any, error) {
	if !idPattern.MatchString(r.ID) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "router id %q: use 1-32 lowercase letters, digits and dashes", r.ID)
	}
	if !nameRE.MatchString(r.Name) {
		return nil, consensus.Errorm(consensus.CodeInvalid, "name_rule", "router name %q must be 1-63 letters, digits, dots, dashes or underscores", r.Name)
	}
	if GetRouter(tx.Txn, r.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "router %s already exists", r.ID)
	}
	if len(r.Networks) > 0 || r.External != "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "router %s: add its networks and gateway after creating it", r.ID)
	}
	if _, err := identity.Limits(tx, r.Project); err != nil {
		return nil, err
	}
	for _, o := range ListRouters(tx.Txn) {
		if o.Project == r.Project && o.Name == r.Name {
			return nil, consensus.Errorm(consensus.CodeAlreadyExists, "router_exists", "a router named %q already exists in this project", r.Name)
		}
	}
	if r.Charged {
		if err := identity.Charge(tx, r.Project, identity.Resources{Routers: 1}); err != nil {
			return nil, err
		}
	}
	row := *r
	row.Version = tx.Index
	return &row, tx.Insert(tRouters, &row)
}

func applyDeleteRouter(tx *consensus.Tx, c *RouterIDCmd) (any, error) {
	r := GetRouter(tx.Txn, c.ID)
	if r == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "router %q not found", c.ID)
	}
	if len(r.Networks) > 0 {
		return nil, consensus.Errorf(consensus.CodeConflict, "router %s still connects %d networks: remove them first", r.Name, len(r.Networks))
	}
	if err := ReleasePorts(tx, routerOwner(r.ID)); err != nil {
		return nil, err
	}
	if err := refund(tx, r.Charged, r.Project, identity.Resources{Routers: -1}); err != nil {
		return nil, err
	}
	return r, tx.Delete(tRouters, r)
}

// floatingOn returns the associated floating IPs whose ports are on one
// of networks.
func floatingOn(txn *memdb.Txn, networks ...string) []FloatingIP {
	var out []FloatingIP
	for _, f := range ListFloatingIPs(txn) {
		if f.PortID == "" {
			continue
		}
		if p := GetPort(txn, f.PortID); p != nil && slices.Contains(networks, p.NetworkID) {
			out = append(out, f)
		}
	}
	return out
}

func applyRouterInterface(tx *consensus.Tx, c *RouterInterfaceCmd) (any, error) {
	r := GetRouter(tx.Txn, c.Router)
	if r == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "router %q not found", c.Router)
	}
	row := *r
	row.Networks = slices.Clone(r.Networks)
	if c.Remove {
		i := slices.Index(row.Networks, c.Network)
		if i < 0 {
			return nil, consensus.Errorf(consensus.CodeNotFound, "router %s does not connect network %q", r.Name, c.Network)
		}
		if fs := floatingOn(tx.Txn, c.Network); len(fs) > 0 {
			return nil, consensus.Errorf(consensus.CodeConflict, "floating IP %s is given to a port of network %s: take it back first", fs[0].IP, c.Network)
		}
		row.Networks = slices.Delete(row.Networks, i, i+1)
		row.Version = tx.Index
		if err := tx.Insert(tRouters, &row); err != nil {
			return nil, err
		}
		return &row, pruneRouterAddresses(tx)
	}
	nw := GetNetwork(tx.Txn, c.Network)
	if nw == nil || nw.Project != r.Project {
		return nil, consensus.Errorf(consensus.CodeNotFound, "network %q not found in the router's project", c.Network)
	}
	if nw.SiteGateway {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s is routed by the site's router %s, not Cairn's", nw.Name, nw.Gateway)
	}
	if o := RouterOf(tx.Txn, nw.ID); o != nil {
		if o.ID == r.ID {
			return r, nil
		}
		return nil, consensus.Errorf(consensus.CodeConflict, "network %s is on router %s already", nw.Name, o.Name)
	}
	if len(row.Networks) >= maxRouterNetworks {
		return nil, consensus.Errorf(consensus.CodeInvalid, "router %s connects %d networks, the most it may", r.Name, maxRouterNetworks)
	}
	if ext := GetNetwork(tx.Txn, r.External); ext != nil && ext.Prefix().Overlaps(nw.Prefix()) {
		return nil, consensus.Errorf(consensus.CodeConflict, "network %s (%s) overlaps the router's external network %s (%s)", nw.Name, nw.CIDR, ext.Name, ext.CIDR)
	}
	row.Networks = append(row.Networks, nw.ID)
	sort.Strings(row.Networks)
	row.Version = tx.Index
	return &row, tx.Insert(tRouters, &row)
}

func applySetRouterGateway(tx *consensus.Tx, c *RouterGatewayCmd) (any, error) {
	r := GetRouter(tx.Txn, c.Router)
	if r == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "router %q not found", c.Router)
	}
	if r.External == c.Network {
		return r, nil
	}
	if c.Network != "" {
		ext := GetNetwork(tx.Txn, c.Network)
		if ext == nil || !ext.External {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network %q is not an external network", c.Network)
		}
		for _, id := range r.Networks {
			if nw := GetNetwork(tx.Txn, id); nw != nil && nw.Prefix().Overlaps(ext.Prefix()) {
				return nil, consensus.Errorf(consensus.CodeConflict, "the router's network %s (%s) overlaps external network %s (%s)", nw.Name, nw.CIDR, ext.Name, ext.CIDR)
			}
		}
	}
	if fs := floatingOn(tx.Txn, r.Networks...); len(fs) > 0 {
		return nil, consensus.Errorf(consensus.CodeConflict, "floating IP %s reaches its port through this router's gateway: take it back first", fs[0].IP)
	}
	// The old network's addresses go back.
	if err := ReleasePorts(tx, routerOwner(r.ID)); err != nil {
		return nil, err
	}
	row := *r
	row.External, row.Version = c.Network, tx.Index
	return &row, tx.Insert(tRouters, &row)
}

// applyRouterNodeAddress gives a router its address for a node on its
// external network, once: asking again returns the same port.
func applyRouterNodeAddress(tx *consensus.Tx, c *RouterNodeAddressCmd) (any, error) {
	r := GetRouter(tx.Txn, c.Router)
	if r == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "router %q not found", c.Router)
	}
	if r.External == "" {
		return nil, consensus.Errorf(consensus.CodeConflict, "router %s has no gateway", r.Name)
	}
	if c.Node == "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "router %s: an address for which node?", r.Name)
	}
	id := routerAddressPort(r.ID, c.Node)
	if p := GetPort(tx.Txn, id); p != nil {
		return p, nil
	}
	// Asked late (the node's last port went meanwhile): nothing to give.
	if !slices.ContainsFunc(AllPorts(tx.Txn), func(p Port) bool { return p.Node == c.Node && slices.Contains(r.Networks, p.NetworkID) }) {
		return nil, consensus.Errorf(consensus.CodeConflict, "node %s has no port on router %s's networks", c.Node, r.Name)
	}
	return AllocatePort(tx, PortRequest{ID: id, NetworkID: r.External, Owner: routerOwner(r.ID), Node: c.Node, CreatedAt: c.CreatedAt})
}

func applyCreateFloatingIP(tx *consensus.Tx, f *FloatingIP) (any, error) {
	if !portIDPattern.MatchString(f.ID) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "floating IP id %q: use 1-64 lowercase letters, digits, dots, dashes and underscores", f.ID)
	}
	if GetFloatingIP(tx.Txn, f.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "floating IP %s already exists", f.ID)
	}
	if f.PortID != "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "floating IP %s: create it, then give it to a port", f.ID)
	}
	ext := GetNetwork(tx.Txn, f.NetworkID)
	if ext == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "network %q not found", f.NetworkID)
	}
	if !ext.External {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s is not an external network: floating IPs come from one", ext.Name)
	}
	if _, err := identity.Limits(tx, f.Project); err != nil {
		return nil, err
	}
	if f.Charged {
		if err := identity.Charge(tx, f.Project, identity.Resources{FloatingIPs: 1}); err != nil {
			return nil, err
		}
	}
	p, err := AllocatePort(tx, PortRequest{ID: f.ID, NetworkID: ext.ID, Owner: fipOwner(f.ID), IP: f.IP, Project: f.Project, CreatedAt: f.CreatedAt})
	if err != nil {
		return nil, err
	}
	row := *f
	row.IP, row.Version = p.IP, tx.Index
	return &row, tx.Insert(tFloatingIPs, &row)
}

func applyDeleteFloatingIP(tx *consensus.Tx, c *RouterIDCmd) (any, error) {
	f := GetFloatingIP(tx.Txn, c.ID)
	if f == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "floating IP %q not found", c.ID)
	}
	if err := ReleasePorts(tx, fipOwner(f.ID)); err != nil {
		return nil, err
	}
	if err := refund(tx, f.Charged, f.Project, identity.Resources{FloatingIPs: -1}); err != nil {
		return nil, err
	}
	return f, tx.Delete(tFloatingIPs, f)
}

func applyAssociateFloatingIP(tx *consensus.Tx, c *AssociateCmd) (any, error) {
	f := GetFloatingIP(tx.Txn, c.ID)
	if f == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "floating IP %q not found", c.ID)
	}
	row := *f
	row.PortID, row.Version = c.PortID, tx.Index
	if c.PortID == "" || c.PortID == f.PortID {
		if c.PortID == f.PortID {
			return f, nil
		}
		return &row, tx.Insert(tFloatingIPs, &row)
	}
	p := GetPort(tx.Txn, c.PortID)
	if p == nil || p.Project != f.Project {
		return nil, consensus.Errorf(consensus.CodeNotFound, "port %q not found in the floating IP's project", c.PortID)
	}
	nw := GetNetwork(tx.Txn, p.NetworkID)
	if nw == nil || !nw.IsOverlay() {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port %s is not on a project network: a floating IP reaches a port through its network's router", p.ID)
	}
	r := RouterOf(tx.Txn, nw.ID)
	if r == nil || r.External != f.NetworkID {
		return nil, consensus.Errorf(consensus.CodeConflict, "network %s has no router with a gateway on %s: connect one first", nw.Name, f.NetworkID)
	}
	if o := consensus.First[FloatingIP](tx.Txn, tFloatingIPs, "port", p.ID); o != nil && o.ID != f.ID {
		return nil, consensus.Errorf(consensus.CodeConflict, "port %s has floating IP %s already", p.ID, o.IP)
	}
	return &row, tx.Insert(tFloatingIPs, &row)
}

// disassociate takes floating IPs back from a port that is going away,
// inside the caller's transaction.
func disassociate(tx *consensus.Tx, portID string) error {
	f := consensus.First[FloatingIP](tx.Txn, tFloatingIPs, "port", portID)
	if f == nil {
		return nil
	}
	row := *f
	row.PortID, row.Version = "", tx.Index
	return tx.Insert(tFloatingIPs, &row)
}

// pruneRouterAddresses gives back, inside the caller's transaction, the
// external addresses of routers on nodes that no longer run them (no port
// of their networks is bound there), so a VM that moved leaves no address
// behind on its old node.
func pruneRouterAddresses(tx *consensus.Tx) error {
	routers := ListRouters(tx.Txn)
	if len(routers) == 0 {
		return nil
	}
	on := map[string]map[string]bool{} // network -> nodes with its ports
	for _, p := range AllPorts(tx.Txn) {
		if p.Node != "" {
			if on[p.NetworkID] == nil {
				on[p.NetworkID] = map[string]bool{}
			}
			on[p.NetworkID][p.Node] = true
		}
	}
	for _, r := range routers {
		for _, p := range PortsOf(tx.Txn, routerOwner(r.ID)) {
			if !slices.ContainsFunc(r.Networks, func(id string) bool { return on[id][p.Node] }) {
				if err := tx.Delete(tPorts, &p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// RouterPlan is what one node builds for one router it runs.
type RouterPlan struct {
	Router   Router
	Networks []Network // the networks it connects, all carried here
	// Neighbours are the ports of those networks: the router resolves
	// their MACs from the state, never by ARP (which would teach guests a
	// node's own MAC for their gateway).
	Neighbours []Port
	External   *Network // nil: no gateway
	// Address is this node's address on External (invalid: not given
	// yet; the agent asks with MsgRouterNodeAddress), MAC its MAC.
	Address  netip.Prefix
	MAC      net.HardwareAddr
	Floating []FloatingNAT // the floating IPs of this node's ports
}

// FloatingNAT maps a floating IP to a port's fixed address.
type FloatingNAT struct {
	Floating netip.Addr
	Fixed    netip.Addr
}

// RouterPlans returns the routers node runs: those with a network that has
// a port bound to node.
func RouterPlans(txn *memdb.Txn, node string) []RouterPlan {
	local := map[string]bool{}
	byNet := map[string][]Port{}
	for _, p := range AllPorts(txn) {
		byNet[p.NetworkID] = append(byNet[p.NetworkID], p)
		if p.Node == node && p.Node != "" {
			local[p.NetworkID] = true
		}
	}
	fipOf := map[string]FloatingIP{}
	for _, f := range ListFloatingIPs(txn) {
		if f.PortID != "" {
			fipOf[f.PortID] = f
		}
	}
	var out []RouterPlan
	for _, r := range ListRouters(txn) {
		if !slices.ContainsFunc(r.Networks, func(id string) bool { return local[id] }) {
			continue
		}
		pl := RouterPlan{Router: r}
		for _, id := range r.Networks {
			nw := GetNetwork(txn, id)
			if nw == nil {
				continue
			}
			pl.Networks = append(pl.Networks, *nw)
			for _, p := range byNet[id] {
				pl.Neighbours = append(pl.Neighbours, p)
				if f, ok := fipOf[p.ID]; ok && p.Node == node && f.NetworkID == r.External {
					pl.Floating = append(pl.Floating, FloatingNAT{Floating: netip.MustParseAddr(f.IP), Fixed: p.Addr()})
				}
			}
		}
		if ext := GetNetwork(txn, r.External); ext != nil {
			pl.External = ext
			if p := GetPort(txn, routerAddressPort(r.ID, node)); p != nil && p.NetworkID == ext.ID {
				pl.Address = netip.PrefixFrom(p.Addr(), ext.Prefix().Bits())
				pl.MAC = p.HardwareAddr()
			}
		}
		out = append(out, pl)
	}
	return out
}

// RouterAddresses returns a router's addresses on its external network,
// by node.
func RouterAddresses(txn *memdb.Txn, routerID string) map[string]string {
	out := map[string]string{}
	for _, p := range PortsOf(txn, routerOwner(routerID)) {
		out[p.Node] = p.IP
	}
	return out
}
