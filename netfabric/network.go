package netfabric

import (
	"encoding/binary"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Netfabric's commands (range 384-511). Numbers are never reused.
const (
	MsgCreateNetwork consensus.MessageType = 384
	MsgDeleteNetwork consensus.MessageType = 385
	MsgCreatePort    consensus.MessageType = 386
	MsgReleasePorts  consensus.MessageType = 387
	MsgBindPorts     consensus.MessageType = 388
)

// DefaultNetworkID names the network every VM gets a NIC on unless told otherwise.
const DefaultNetworkID = "default"

const (
	tNetworks = "networks"
	tPorts    = "ports"
)

// Network is one of two kinds, told apart by Project:
//
//   - The cluster's NAT network (no project; the default network): an IPv4
//     subnet behind a NAT gateway on every node. The VMs' bridge carries the
//     gateway address, netfabric's DHCP server hands out the ports'
//     addresses and the node masquerades traffic that leaves the subnet.
//   - A project network: a private layer-2 segment of one project, carried
//     between the nodes as a VXLAN segment (VNI) over the underlay, or, for
//     a provider network the cluster admin makes (VLAN), as an 802.1Q VLAN
//     on a physical interface every box has, shared with the machines on
//     that VLAN. Its CIDR may overlap other projects' networks: nothing on
//     the host routes it. Its gateway address is reserved for the project's
//     router.
//
// It is also the payload of MsgCreateNetwork; the FSM fills in Gateway, VNI,
// MTU and Version.
type Network struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Project string   `json:"project,omitempty"` // empty: the cluster's NAT network
	CIDR    string   `json:"cidr"`              // canonical IPv4 prefix, "10.42.0.0/24"
	Gateway string   `json:"gateway"`           // first host of CIDR, on each node's bridge; or an upstream router's (External, SiteGateway)
	DNS     []string `json:"dns,omitempty"`     // IPv4, handed out by DHCP; empty: the node's resolvers (a project network: the gateway, segdns.go)
	VNI     uint32   `json:"vni,omitempty"`     // project networks: the VXLAN segment id
	MTU     int      `json:"mtu,omitempty"`     // project networks: the guests' MTU
	// Pools are the ranges ports' addresses are taken from (empty: every
	// host address after the gateway); a fixed address may lie outside.
	Pools []Pool `json:"pools,omitempty"`
	// Routes are static routes DHCP hands out (option 121), beside the
	// default route through the gateway.
	Routes []Route `json:"routes,omitempty"`
	// CIDR6 is a project network's IPv6 subnet (a /64, subnet6.go), with
	// IPv6Mode saying how guests get their addresses there.
	CIDR6    string `json:"cidr6,omitempty"`
	IPv6Mode string `json:"ipv6_mode,omitempty"`
	// DNS6 are a project network's IPv6 DNS servers, in its router
	// advertisements (RDNSS) and DHCPv6. (A field of its own: commands
	// written when DNS took only IPv4 replay as they applied.)
	DNS6 []string `json:"dns6,omitempty"`
	// Domain is the DNS domain guests are told to search (DHCP options 15
	// and 119, the RAs' DNSSL, DHCPv6).
	Domain string `json:"domain,omitempty"`
	// CTZone is the network's conntrack zone (Zone), given by the FSM to a
	// project network whose create command has AllocZone.
	CTZone    uint16 `json:"ct_zone,omitempty"`
	AllocZone bool   `json:"alloc_zone,omitempty"`
	// External marks a cluster admin's external network: the uplink the
	// boxes share, flat on the interface named Interface on every box
	// (router.go). Routers send their projects' traffic out onto it and
	// floating IPs come from its Pools; VMs do not join it. Its Gateway is
	// the upstream router's address.
	External  bool   `json:"external,omitempty"`
	Interface string `json:"interface,omitempty"`
	// VLAN makes a project network a VLAN provider network: the cluster
	// admin's, carried on VLAN VLAN (1-4094) of Interface on every box
	// instead of a VXLAN segment (its VNI then only names its devices).
	VLAN int `json:"vlan,omitempty"`
	// SiteGateway: a VLAN network's Gateway is a router of the site's on
	// the VLAN, not Cairn's: the boxes hand it out by DHCP as the guests'
	// router and never answer for it (no ARP, no DNS there); the network
	// joins no Cairn router and has no IPv6 subnet of Cairn's.
	SiteGateway bool `json:"site_gateway,omitempty"`
	// Charged: counted in the project's networks quota (the network
	// service's creates are; the proposer decides, so a command written
	// before networks were counted replays as it applied).
	Charged   bool      `json:"charged,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"`
}

// Pool is an inclusive range of a network's addresses.
type Pool struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Route is a static route for the guests: Destination through Nexthop,
// an address of the network.
type Route struct {
	Destination string `json:"destination"`
	Nexthop     string `json:"nexthop"`
}

// maxPools and maxRoutes bound what a network may list: the routes must
// fit a DHCP answer.
const (
	maxPools  = 16
	maxRoutes = 16
)

// checkPoolsAndRoutes validates a project network's pools and routes
// against its prefix, and returns them in canonical form.
func checkPoolsAndRoutes(id string, p netip.Prefix, pools []Pool, routes []Route) ([]Pool, []Route, error) {
	bad := func(format string, args ...any) ([]Pool, []Route, error) {
		return nil, nil, consensus.Errorf(consensus.CodeInvalid, "network %s: "+format, append([]any{id}, args...)...)
	}
	if len(pools) > maxPools || len(routes) > maxRoutes {
		return bad("at most %d allocation pools and %d routes", maxPools, maxRoutes)
	}
	first, last := hostRange(p)
	var outP []Pool
	type span struct{ a, b netip.Addr }
	var spans []span
	for _, pl := range pools {
		a, err1 := netip.ParseAddr(pl.Start)
		b, err2 := netip.ParseAddr(pl.End)
		if err1 != nil || err2 != nil || !a.Is4() || !b.Is4() || b.Less(a) {
			return bad("allocation pool %s-%s is not a range of IPv4 addresses", pl.Start, pl.End)
		}
		if a.Less(first) || last.Less(b) {
			return bad("allocation pool %s-%s must lie within %s-%s (not the network, gateway or broadcast address)", a, b, first, last)
		}
		for _, o := range spans {
			if !(b.Less(o.a) || o.b.Less(a)) {
				return bad("allocation pools %s-%s and %s-%s overlap", a, b, o.a, o.b)
			}
		}
		spans = append(spans, span{a, b})
		outP = append(outP, Pool{Start: a.String(), End: b.String()})
	}
	var outR []Route
	for _, r := range routes {
		d, err := netip.ParsePrefix(r.Destination)
		nh, err2 := netip.ParseAddr(r.Nexthop)
		if err != nil || err2 != nil || !d.Addr().Is4() || !nh.Is4() || d != d.Masked() {
			return bad("route %s via %s: give a canonical IPv4 destination and an IPv4 next hop", r.Destination, r.Nexthop)
		}
		if d.Bits() == 0 {
			return bad("route %s: the default route is the gateway's", r.Destination)
		}
		if d.Overlaps(p) {
			return bad("route %s overlaps the network's own subnet %s", d, p)
		}
		for _, f := range forbidden {
			if f.Overlaps(d) {
				return bad("route %s overlaps reserved range %s", d, f)
			}
		}
		for _, o := range outR {
			if o.Destination == d.String() {
				return bad("route %s is given twice", d)
			}
		}
		if !p.Contains(nh) || nh == p.Addr() || nh == lastAddr(p) {
			return bad("route %s: next hop %s is not a host of %s", d, nh, p)
		}
		outR = append(outR, Route{Destination: d.String(), Nexthop: nh.String()})
	}
	return outP, outR, nil
}

// lastAddr is a prefix's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	n := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// IsOverlay tells whether the network is a project network, carried
// between nodes as a VXLAN segment.
func (n Network) IsOverlay() bool { return n.Project != "" }

// IsVLAN tells whether a project network is a VLAN provider network.
func (n Network) IsVLAN() bool { return n.IsOverlay() && n.VLAN != 0 }

// VLAN ids a provider network may use: 0 means untagged and 4095 is
// reserved by 802.1Q.
const (
	minVLAN = 1
	maxVLAN = 4094
)

// checkVLAN validates a VLAN provider network's interface and VLAN id:
// one network per VLAN of an interface.
func checkVLAN(txn *memdb.Txn, n *Network) error {
	bad := func(format string, args ...any) error {
		return consensus.Errorf(consensus.CodeInvalid, "VLAN network %s: "+format, append([]any{n.ID}, args...)...)
	}
	if n.VLAN < minVLAN || n.VLAN > maxVLAN {
		return bad("VLAN id %d is outside %d-%d", n.VLAN, minVLAN, maxVLAN)
	}
	if !ifnamePattern.MatchString(n.Interface) {
		return bad("interface %q is not an interface name (1-15 letters, digits, dots, dashes, underscores)", n.Interface)
	}
	for _, o := range ListNetworks(txn) {
		if o.VLAN == n.VLAN && o.Interface == n.Interface {
			return consensus.Errorf(consensus.CodeConflict, "VLAN %d on %s is network %s's already", n.VLAN, n.Interface, o.ID)
		}
	}
	return nil
}

// VXLAN segment ids of project networks: from 4096 up, so a segment id never
// reads as a VLAN id, to the 24-bit limit.
const (
	minVNI = 4096
	maxVNI = 1<<24 - 1
)

// VXLAN over IPv4 adds 50 bytes (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8)
// to a guest's frame. Project networks default to 1450, for the 1500-byte
// underlay most switches have; a jumbo-frame underlay allows more.
const (
	vxlanOverhead = 50
	DefaultMTU    = 1500 - vxlanOverhead
	minMTU        = 1280 // IPv6's minimum link MTU
	maxMTU        = 9000 - vxlanOverhead
)

// vlanExtra is how much larger a network's MTU may be than a VXLAN
// segment's: a VLAN carries guests' frames without encapsulation.
func vlanExtra(n *Network) int {
	if n.VLAN != 0 {
		return vxlanOverhead
	}
	return 0
}

// Prefix returns the network's CIDR, which the FSM has validated.
func (n Network) Prefix() netip.Prefix { p, _ := netip.ParsePrefix(n.CIDR); return p }

// GatewayAddr returns the gateway address.
func (n Network) GatewayAddr() netip.Addr { a, _ := netip.ParseAddr(n.Gateway); return a }

// DeleteNetworkCmd removes a network that has no ports left.
type DeleteNetworkCmd struct {
	ID string `json:"id"`
}

var idPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// generatedID is the shape of the IDs the network service makes.
var generatedID = regexp.MustCompile(`^net-[0-9a-f]{16}$`)

// maxDNS is how many DNS servers a project network hands out: DHCP's
// answer must fit a packet, and resolvers use three at most.
const maxDNS = 8

// forbidden are ranges a VM network must never overlap: they mean something
// on every host, so routing or NAT for them would break the host itself.
var forbidden = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved and broadcast
}

// ParseCIDR validates a network's CIDR: canonical IPv4, /16 to /29 (a /16
// is 65,534 addresses, plenty for a site; a /29 still leaves 5 for VMs), and
// clear of loopback, link-local, multicast and reserved space.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "network CIDR %q: %v", s, err)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "network CIDR %q: only IPv4 networks are supported", s)
	}
	if p.Bits() < 16 || p.Bits() > 29 {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "network CIDR %q: prefix length must be between 16 and 29", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "network CIDR %q has host bits set; did you mean %s?", s, p.Masked())
	}
	for _, f := range forbidden {
		if f.Overlaps(p) {
			return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "network CIDR %q overlaps reserved range %s", s, f)
		}
	}
	return p, nil
}

// Register adds netfabric's tables and commands.
func Register(reg *consensus.Registry) {
	consensus.RegisterTable[Network](reg, &memdb.TableSchema{Name: tNetworks, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.RegisterTable[Port](reg, &memdb.TableSchema{Name: tPorts, Indexes: map[string]*memdb.IndexSchema{
		"id":    {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"owner": {Name: "owner", Indexer: &memdb.StringFieldIndex{Field: "Owner"}},
		// MACs are unique cluster-wide: the NAT network shares one bridge per
		// node, and a guest keeps its MAC across networks and nodes.
		"mac": {Name: "mac", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "MAC"}},
		"ip": {Name: "ip", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "NetworkID"},
			&memdb.StringFieldIndex{Field: "IP"},
		}}},
	}})
	identity.HoldProjects(identity.ProjectHolder{Kind: "networks", Held: heldBy(tNetworks, func(n *Network) (string, string) { return n.Project, n.Name })})
	consensus.Handle(reg, MsgCreateNetwork, "CreateNetwork", applyCreateNetwork)
	consensus.Handle(reg, MsgDeleteNetwork, "DeleteNetwork", applyDeleteNetwork)
	consensus.Handle(reg, MsgCreatePort, "CreatePort", applyCreatePort)
	consensus.Handle(reg, MsgReleasePorts, "ReleasePorts", applyReleasePorts)
	consensus.Handle(reg, MsgBindPorts, "BindPorts", applyBindPorts)
	consensus.Handle(reg, MsgAddSubnet6, "AddSubnet6", applyAddSubnet6)
	registerSecurityGroups(reg)
	registerRouters(reg)
}

// applyCreateNetwork is idempotent for the same project and CIDR, so every
// node's start-up may ask for the default network without coordinating.
func applyCreateNetwork(tx *consensus.Tx, n *Network) (any, error) {
	if !idPattern.MatchString(n.ID) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network id %q: use 1-32 lowercase letters, digits and dashes", n.ID)
	}
	p, err := ParseCIDR(n.CIDR)
	if err != nil {
		return nil, err
	}
	if cur := GetNetwork(tx.Txn, n.ID); cur != nil {
		if cur.CIDR != p.String() || cur.Project != n.Project {
			return nil, consensus.Errorf(consensus.CodeConflict, "network %s exists with CIDR %s, not %s", n.ID, cur.CIDR, p)
		}
		return cur, nil
	}
	if n.IsOverlay() {
		if n.External {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: an external network is the cluster's, not a project's", n.ID)
		}
		if n.VLAN != 0 || n.Interface != "" {
			if err := checkVLAN(tx.Txn, n); err != nil {
				return nil, err
			}
		}
		if !nameRE.MatchString(n.Name) {
			return nil, consensus.Errorm(consensus.CodeInvalid, "name_rule", "network name %q must be 1-63 letters, digits, dots, dashes or underscores", n.Name)
		}
		// A name that reads as a network's ID would pick that network.
		if n.Name == DefaultNetworkID || generatedID.MatchString(n.Name) {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network name %q is reserved: choose another", n.Name)
		}
		if _, _, err := checkPoolsAndRoutes(n.ID, p, n.Pools, n.Routes); err != nil {
			return nil, err
		}
		if len(n.DNS) > maxDNS {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: at most %d DNS servers, not %d", n.ID, maxDNS, len(n.DNS))
		}
		// The project must exist; its networks are its own business.
		if _, err := identity.Limits(tx, n.Project); err != nil {
			return nil, err
		}
	} else if n.External {
		if err := checkExternal(n, p); err != nil {
			return nil, err
		}
	} else if n.VNI != 0 || n.MTU != 0 || len(n.Pools) > 0 || len(n.Routes) > 0 || n.Interface != "" || n.VLAN != 0 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: only project networks have a VXLAN segment, an MTU, allocation pools and routes", n.ID)
	}
	if n.SiteGateway {
		if !n.IsVLAN() {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: only a VLAN network has a site's router as its gateway", n.ID)
		}
		if err := checkSiteGateway(n, p); err != nil {
			return nil, err
		}
	}
	gw := p.Addr().Next()
	if (n.External || n.SiteGateway) && n.Gateway != "" {
		gw = netip.MustParseAddr(n.Gateway) // checkExternal or checkSiteGateway parsed it
	} else if n.Gateway != "" && n.Gateway != gw.String() {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: the gateway is the first host, %s, not %s", n.ID, gw, n.Gateway)
	}
	for _, s := range n.DNS {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: DNS server %q is not an IPv4 address", n.ID, s)
		}
	}
	if len(n.DNS6) > maxDNS || len(n.DNS6) > 0 && !n.IsOverlay() {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: at most %d IPv6 DNS servers, on a project network", n.ID, maxDNS)
	}
	for _, s := range n.DNS6 {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || !a.IsGlobalUnicast() {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: IPv6 DNS server %q is not a global IPv6 address", n.ID, s)
		}
	}
	if n.Domain != "" && (!n.IsOverlay() || !validDomain(n.Domain)) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: DNS domain %q: give a domain of a project network such as ward.example.org", n.ID, n.Domain)
	}
	if n.CIDR6 != "" || n.IPv6Mode != "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: an IPv6 subnet is added to a network once it exists", n.ID)
	}
	// Networks of one project must not overlap (its router would not know
	// where to send), nor may NAT networks, which every host routes. A
	// project's CIDR may repeat another project's, or a NAT network's: a
	// segment has no address on the host.
	for _, other := range ListNetworks(tx.Txn) {
		if n.IsOverlay() && other.Project == n.Project && other.Name == n.Name {
			return nil, consensus.Errorm(consensus.CodeAlreadyExists, "network_exists", "a network named %q already exists in this project", n.Name)
		}
		if other.Project == n.Project && other.Prefix().Overlaps(p) {
			return nil, consensus.Errorf(consensus.CodeConflict, "network %s: CIDR %s overlaps network %s (%s)", n.ID, p, other.ID, other.CIDR)
		}
	}
	row := *n
	row.CIDR, row.Gateway, row.Version = p.String(), gw.String(), tx.Index
	row.DNS, row.DNS6 = append([]string(nil), n.DNS...), append([]string(nil), n.DNS6...)
	if n.External {
		row.Pools, _, _ = checkPoolsAndRoutes(n.ID, p, n.Pools, nil)
	}
	if n.IsOverlay() {
		row.Pools, row.Routes, _ = checkPoolsAndRoutes(n.ID, p, n.Pools, n.Routes)
		if row.MTU == 0 {
			row.MTU = DefaultMTU
			if n.VLAN != 0 {
				row.MTU = 1500 // no encapsulation: the VLAN's own
			}
		}
		if top := maxMTU + vlanExtra(n); row.MTU < minMTU || row.MTU > top {
			return nil, consensus.Errorf(consensus.CodeInvalid, "network %s: MTU %d is outside %d-%d", n.ID, n.MTU, minMTU, top)
		}
		if row.VNI, err = freeVNI(tx.Txn, n, tx.Index); err != nil {
			return nil, err
		}
		row.CTZone, row.AllocZone = 0, false
		if n.AllocZone {
			if row.CTZone, err = freeZone(tx.Txn, tx.Index); err != nil {
				return nil, err
			}
		}
		if n.Charged {
			if err := identity.Charge(tx, n.Project, identity.Resources{Networks: 1}); err != nil {
				return nil, err
			}
		}
	}
	return &row, tx.Insert(tNetworks, &row)
}

// freeVNI returns the segment id asked for if it is free, else the first
// free one from a point the command's log index gives: the same answer on
// every replica, and an id freed by a deleted network comes back only
// after millions of commands, so nothing left of the old network (a tap
// of a VM being stopped) ever meets the new one.
func freeVNI(txn *memdb.Txn, n *Network, index uint64) (uint32, error) {
	used := map[uint32]string{}
	for _, o := range ListNetworks(txn) {
		if o.VNI != 0 {
			used[o.VNI] = o.ID
		}
	}
	if n.VNI != 0 {
		if n.VNI < minVNI || n.VNI > maxVNI {
			return 0, consensus.Errorf(consensus.CodeInvalid, "network %s: VXLAN segment %d is outside %d-%d", n.ID, n.VNI, minVNI, maxVNI)
		}
		if o, ok := used[n.VNI]; ok {
			return 0, consensus.Errorf(consensus.CodeConflict, "network %s: VXLAN segment %d is network %s's", n.ID, n.VNI, o)
		}
		return n.VNI, nil
	}
	const span = maxVNI - minVNI + 1
	start := uint32(index % span)
	for i := uint32(0); i < span; i++ {
		v := minVNI + (start+i)%span
		if _, ok := used[v]; !ok {
			return v, nil
		}
	}
	return 0, consensus.Errorf(consensus.CodeConflict, "network %s: no VXLAN segment id is free", n.ID)
}

// Conntrack zones: a project network's connections are tracked in a zone
// of their own on every node, since two projects may use the same
// addresses. The FSM gives a network made by a command that asks
// (Network.AllocZone, which the network service sets) the first free
// zone from a point the log index gives, in 1-32767; a network made by an
// earlier command has none recorded and uses the low 16 bits of its
// segment id, which two such networks share only if their segment ids
// differ by a multiple of 65536. A zone's leftover connections are
// forgotten on a node when the segment leaves it.
const maxAllocZone = 1<<15 - 1

func freeZone(txn *memdb.Txn, index uint64) (uint16, error) {
	used := map[uint16]bool{}
	for _, o := range ListNetworks(txn) {
		used[o.Zone()] = true
	}
	start := uint16(index % maxAllocZone)
	for i := uint16(0); i < maxAllocZone; i++ {
		if z := 1 + (start+i)%maxAllocZone; !used[z] {
			return z, nil
		}
	}
	return 0, consensus.Errorf(consensus.CodeConflict, "no conntrack zone is free: the cluster has %d project networks", maxAllocZone)
}

// Zone is the network's conntrack zone on every node (0, the host's own,
// for the cluster's network).
func (n Network) Zone() uint16 {
	switch {
	case !n.IsOverlay():
		return 0
	case n.CTZone != 0:
		return n.CTZone
	case uint16(n.VNI) != 0:
		return uint16(n.VNI)
	}
	return 1 << 15
}

func applyDeleteNetwork(tx *consensus.Tx, c *DeleteNetworkCmd) (any, error) {
	cur := GetNetwork(tx.Txn, c.ID)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "network %q not found", c.ID)
	}
	if n := len(portsOn(tx.Txn, c.ID)); n > 0 {
		return nil, consensus.Errorf(consensus.CodeConflict, "network %s still has %d ports", c.ID, n)
	}
	for _, r := range ListRouters(tx.Txn) {
		if r.External == c.ID || slices.Contains(r.Networks, c.ID) {
			return nil, consensus.Errorf(consensus.CodeConflict, "network %s is connected to router %s: remove it from the router first", c.ID, r.Name)
		}
	}
	if err := refund(tx, cur.Charged, cur.Project, identity.Resources{Networks: -1}); err != nil {
		return nil, err
	}
	return nil, tx.Delete(tNetworks, cur)
}

// ifnamePattern is a Linux interface name.
var ifnamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)

// checkSiteGateway validates a VLAN network's site gateway: a host
// address of the network, outside its allocation pools. The network shares
// the subnet with the site, so it names its pools (the addresses the site
// leaves to Cairn) and its DNS servers (the site's: the gateway is not the
// boxes' to answer DNS on).
func checkSiteGateway(n *Network, p netip.Prefix) error {
	bad := func(format string, args ...any) error {
		return consensus.Errorf(consensus.CodeInvalid, "VLAN network %s: "+format, append([]any{n.ID}, args...)...)
	}
	if err := checkUpstreamGateway(n, p, true); err != nil {
		return err
	}
	if len(n.Pools) == 0 {
		return bad("with the site's router as gateway, name the pools the site leaves to the VMs")
	}
	if len(n.DNS) == 0 {
		return bad("with the site's router as gateway, name the site's DNS servers")
	}
	return nil
}

// checkUpstreamGateway validates a network whose gateway is a router of
// its own (an external network's, a site's on a VLAN network): a host
// address of the network (default: the first), outside the allocation
// pools.
func checkUpstreamGateway(n *Network, p netip.Prefix, vlan bool) error {
	gw := p.Addr().Next()
	if n.Gateway != "" {
		a, err := netip.ParseAddr(n.Gateway)
		if err != nil || !a.Is4() || !p.Contains(a) || a == p.Addr() || a == lastAddr(p) {
			if vlan {
				return invalid("VLAN network %s: gateway %q is not a host address of %s", n.ID, n.Gateway, p)
			}
			return invalid("external network %s: gateway %q is not a host address of %s", n.ID, n.Gateway, p)
		}
		gw = a
	}
	pools, _, err := checkPoolsAndRoutes(n.ID, p, n.Pools, nil)
	if err != nil {
		return err
	}
	for _, pl := range pools {
		if a, b := netip.MustParseAddr(pl.Start), netip.MustParseAddr(pl.End); !gw.Less(a) && !b.Less(gw) {
			if vlan {
				return invalid("VLAN network %s: allocation pool %s-%s holds the gateway %s", n.ID, a, b, gw)
			}
			return invalid("external network %s: allocation pool %s-%s holds the gateway %s", n.ID, a, b, gw)
		}
	}
	return nil
}

// checkExternal validates an external network: the cluster's (no
// project), on a named interface, with an upstream gateway inside it and
// allocation pools that leave the gateway out.
func checkExternal(n *Network, p netip.Prefix) error {
	bad := func(format string, args ...any) error {
		return consensus.Errorf(consensus.CodeInvalid, "external network %s: "+format, append([]any{n.ID}, args...)...)
	}
	if n.VNI != 0 || n.MTU != 0 || len(n.Routes) > 0 || len(n.DNS) > 0 || n.AllocZone {
		return bad("an external network has no VXLAN segment, MTU, routes or DNS servers of its own")
	}
	if !ifnamePattern.MatchString(n.Interface) {
		return bad("interface %q is not an interface name (1-15 letters, digits, dots, dashes, underscores)", n.Interface)
	}
	return checkUpstreamGateway(n, p, false)
}

// GetNetwork returns the network with the given id, or nil.
func GetNetwork(txn *memdb.Txn, id string) *Network {
	return consensus.First[Network](txn, tNetworks, "id", id)
}

// ListNetworks returns every network, by id.
func ListNetworks(txn *memdb.Txn) []Network {
	out := []Network{}
	it, err := txn.Get(tNetworks, "id")
	if err != nil {
		return out
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, *obj.(*Network))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// heldBy is a project holder (identity.HoldProjects) over a table whose
// rows say their project: it names the project's rows. The tables are
// small; a scan is enough.
func heldBy[T any](table string, of func(*T) (project, name string)) func(*memdb.Txn, string) []string {
	return func(txn *memdb.Txn, project string) []string {
		var names []string
		for _, row := range consensus.All[T](txn, table, "id") {
			if p, name := of(&row); p == project {
				names = append(names, name)
			}
		}
		return names
	}
}
