package netfabric

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Port is one NIC on a network: a MAC and the IPv4 address DHCP gives it.
type Port struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	Owner     string `json:"owner"`              // who releases it, e.g. a VM id
	MAC       string `json:"mac"`                // lowercase, colon-separated
	IP        string `json:"ip"`                 // unique within the network
	IP6       string `json:"ip6,omitempty"`      // on a network with an IPv6 subnet: its prefix and the MAC's EUI-64
	Hostname  string `json:"hostname,omitempty"` // DHCP option 12
	Project   string `json:"project,omitempty"`  // the project whose VM has it
	Charged   bool   `json:"charged,omitempty"`  // counted in the project's ports quota
	// Node is where the port's VM runs (Neutron's binding host), empty
	// while it runs nowhere: project networks' segments reach it there.
	Node string `json:"node,omitempty"`
	// SecurityGroups filter a project network's port (EffectiveGroups);
	// AddressPairs are further addresses it may send as.
	SecurityGroups []string      `json:"security_groups,omitempty"`
	AddressPairs   []AddressPair `json:"allowed_address_pairs,omitempty"`
	CreatedAt      time.Time     `json:"created_at"`
	Version        uint64        `json:"version"`
}

// Addr returns the port's address.
func (p Port) Addr() netip.Addr { a, _ := netip.ParseAddr(p.IP); return a }

// HardwareAddr returns the port's MAC.
func (p Port) HardwareAddr() net.HardwareAddr { m, _ := net.ParseMAC(p.MAC); return m }

// PortRequest asks for a port; it is also the payload of MsgCreatePort.
// Everything in it must be decided before the command is proposed (the FSM
// has no clock and no randomness): CreatedAt travels in it, and an empty MAC
// becomes MACFor(ID).
type PortRequest struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	Owner     string `json:"owner"`
	MAC       string `json:"mac,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
	IP        string `json:"ip,omitempty"` // a fixed address; empty: the lowest free one
	// Project is the project asking: a project network takes ports of its
	// own project only. The NAT network takes any.
	Project string `json:"project,omitempty"`
	Node    string `json:"node,omitempty"`
	// Charge counts the port in its project's ports quota. The proposer
	// decides, so a command written before ports were counted replays as
	// it applied.
	Charge bool `json:"charge,omitempty"`
	// SecurityGroups are a project network's port's groups, at least one
	// (the proposer names the project's default group when the user named
	// none); the cluster's network takes none.
	SecurityGroups []string  `json:"security_groups,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

// ReleasePortsCmd removes every port of an owner.
type ReleasePortsCmd struct {
	Owner string `json:"owner"`
}

// BindPortsCmd moves every port of an owner to a node (empty: to none).
type BindPortsCmd struct {
	Owner string `json:"owner"`
	Node  string `json:"node"`
}

// portIDPattern admits the ids other domains derive port ids from ("vm-…-nic0", UUIDs).
var portIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// hostnamePattern admits RFC 1123 host names, dotted or not, as cloud-init does.
var hostnamePattern = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// MACFor derives a port's MAC from its id: 02 (locally administered,
// unicast) followed by 40 bits of SHA-256(id). We do not use QEMU's and
// libvirt's 52:54:00 prefix: it leaves 24 bits, and with a cluster-wide
// unique index a few hundred VMs would already collide now and then; 40 bits
// make that negligible. A collision is still caught by AllocatePort.
func MACFor(id string) net.HardwareAddr {
	h := sha256.Sum256([]byte(id))
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}

// AllocatePort adds a port to a network inside the caller's transaction, so a
// command that creates a VM and its NICs commits or fails as one. Without a
// fixed IP it takes the lowest free host address, skipping the network
// address, the gateway and the broadcast address, which makes the choice the
// same on every replica.
func AllocatePort(tx *consensus.Tx, p PortRequest) (*Port, error) {
	if !portIDPattern.MatchString(p.ID) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port id %q: use 1-64 lowercase letters, digits, dots, dashes and underscores", p.ID)
	}
	if p.Owner == "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port %s needs an owner", p.ID)
	}
	if p.Hostname != "" && (len(p.Hostname) > 253 || !hostnamePattern.MatchString(p.Hostname)) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: hostname %q is not a valid host name", p.ID, p.Hostname)
	}
	nw := GetNetwork(tx.Txn, p.NetworkID)
	if nw == nil || (nw.IsOverlay() && nw.Project != p.Project) {
		// Another project's network is not there for this port.
		return nil, consensus.Errorf(consensus.CodeNotFound, "port %s: network %q not found", p.ID, p.NetworkID)
	}
	if nw.External && !strings.HasPrefix(p.Owner, "router:") && !strings.HasPrefix(p.Owner, "fip:") {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: network %s is external: only routers and floating IPs take its addresses", p.ID, nw.ID)
	}
	if consensus.First[Port](tx.Txn, tPorts, "id", p.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "port %s already exists", p.ID)
	}
	mac := MACFor(p.ID)
	if p.MAC != "" {
		m, err := parseUnicastMAC(p.MAC)
		if err != nil {
			return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: %q is not a unicast Ethernet MAC", p.ID, p.MAC)
		}
		mac = m
	}
	var groups []string
	if nw.IsOverlay() {
		var err error
		if groups, err = portGroups(tx, p.Project, p.SecurityGroups, p.CreatedAt); err != nil {
			return nil, err
		}
	} else if len(p.SecurityGroups) > 0 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: the cluster's network %s has no security groups", p.ID, nw.ID)
	}
	if other := consensus.First[Port](tx.Txn, tPorts, "mac", mac.String()); other != nil {
		return nil, consensus.Errorf(consensus.CodeConflict, "port %s: MAC %s is taken by port %s", p.ID, mac, other.ID)
	}
	ip, err := pickAddr(tx.Txn, nw, p)
	if err != nil {
		return nil, err
	}
	// A project's ports count against its quota, on any network.
	if p.Charge {
		if p.Project == "" {
			return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: a charged port needs a project", p.ID)
		}
		if err := identity.Charge(tx, p.Project, identity.Resources{Ports: 1}); err != nil {
			return nil, err
		}
	}
	row := &Port{ID: p.ID, NetworkID: nw.ID, Owner: p.Owner, MAC: mac.String(), IP: ip.String(),
		Hostname: p.Hostname, Project: p.Project, Charged: p.Charge, Node: p.Node, SecurityGroups: groups, CreatedAt: p.CreatedAt, Version: tx.Index}
	if p6, ok := nw.Prefix6(); ok {
		row.IP6 = EUI64(p6, mac).String()
	}
	return row, tx.Insert(tPorts, row)
}

// parseUnicastMAC parses a MAC a guest may have: 6 bytes, unicast, not zero.
func parseUnicastMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 || m[0]&1 != 0 || binary.BigEndian.Uint32(m[:4])|uint32(m[4])|uint32(m[5]) == 0 {
		return nil, fmt.Errorf("%q is not a unicast Ethernet MAC", s)
	}
	return m, nil
}

// BindPorts records, inside the caller's transaction, that owner's ports
// are now on node (empty: on none), as a VM is placed, moved or stopped.
func BindPorts(tx *consensus.Tx, owner, node string) error {
	for _, p := range PortsOf(tx.Txn, owner) {
		if p.Node == node {
			continue
		}
		p.Node, p.Version = node, tx.Index
		if err := tx.Insert(tPorts, &p); err != nil {
			return err
		}
	}
	return pruneRouterAddresses(tx)
}

func pickAddr(txn *memdb.Txn, nw *Network, p PortRequest) (netip.Addr, error) {
	pfx := nw.Prefix()
	first, last := hostRange(pfx)
	if p.IP != "" {
		a, err := netip.ParseAddr(p.IP)
		if err != nil || !a.Is4() || !pfx.Contains(a) {
			return netip.Addr{}, consensus.Errorf(consensus.CodeInvalid, "port %s: %q is not an address in %s", p.ID, p.IP, nw.CIDR)
		}
		if a.Less(first) || last.Less(a) || a == nw.GatewayAddr() {
			return netip.Addr{}, consensus.Errorf(consensus.CodeInvalid, "port %s: %s is the network, gateway or broadcast address of %s", p.ID, a, nw.CIDR)
		}
		// An external network's other addresses are the hospital's
		// machines': only its pools are Cairn's to give.
		if nw.External && len(nw.Pools) > 0 && !inPools(nw.Pools, a) {
			return netip.Addr{}, consensus.Errorf(consensus.CodeInvalid, "port %s: %s is not in the allocation pools of external network %s", p.ID, a, nw.Name)
		}
		if other := consensus.First[Port](txn, tPorts, "ip", nw.ID, a.String()); other != nil {
			return netip.Addr{}, consensus.Errorf(consensus.CodeConflict, "port %s: %s is taken by port %s", p.ID, a, other.ID)
		}
		return a, nil
	}
	used := map[netip.Addr]bool{nw.GatewayAddr(): true}
	for _, q := range portsOn(txn, nw.ID) {
		used[q.Addr()] = true
	}
	ranges := [][2]netip.Addr{{first, last}}
	if len(nw.Pools) > 0 {
		ranges = ranges[:0]
		for _, pl := range nw.Pools {
			ranges = append(ranges, [2]netip.Addr{netip.MustParseAddr(pl.Start), netip.MustParseAddr(pl.End)})
		}
	}
	for _, r := range ranges {
		for a := r[0]; !r[1].Less(a); a = a.Next() {
			if !used[a] {
				return a, nil
			}
		}
	}
	return netip.Addr{}, consensus.Errorf(consensus.CodeConflict, "port %s: network %s (%s) has no free addresses", p.ID, nw.ID, nw.CIDR)
}

func inPools(pools []Pool, a netip.Addr) bool {
	for _, pl := range pools {
		if s, e := netip.MustParseAddr(pl.Start), netip.MustParseAddr(pl.End); !a.Less(s) && !e.Less(a) {
			return true
		}
	}
	return false
}

// hostRange returns the first and last addresses a port may have: after the
// gateway, before the broadcast address.
func hostRange(p netip.Prefix) (first, last netip.Addr) {
	b := p.Addr().As4()
	base := binary.BigEndian.Uint32(b[:])
	size := uint32(1) << (32 - p.Bits())
	var f, l [4]byte
	binary.BigEndian.PutUint32(f[:], base+2)
	binary.BigEndian.PutUint32(l[:], base+size-2)
	return netip.AddrFrom4(f), netip.AddrFrom4(l)
}

// ReleasePorts removes every port of owner inside the caller's transaction.
// Releasing an owner with no ports is not an error, so retries are safe.
func ReleasePorts(tx *consensus.Tx, owner string) error {
	for _, p := range PortsOf(tx.Txn, owner) {
		if err := tx.Delete(tPorts, &p); err != nil {
			return err
		}
		// A floating IP given to the port stays the project's.
		if err := disassociate(tx, p.ID); err != nil {
			return err
		}
		if err := refund(tx, p.Charged, p.Project, identity.Resources{Ports: -1}); err != nil {
			return err
		}
	}
	return pruneRouterAddresses(tx)
}

func applyCreatePort(tx *consensus.Tx, p *PortRequest) (any, error) { return AllocatePort(tx, *p) }

func applyReleasePorts(tx *consensus.Tx, c *ReleasePortsCmd) (any, error) {
	return nil, ReleasePorts(tx, c.Owner)
}

func applyBindPorts(tx *consensus.Tx, c *BindPortsCmd) (any, error) {
	if c.Owner == "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "bind ports: no owner")
	}
	return nil, BindPorts(tx, c.Owner, c.Node)
}

// AllPorts returns every port of every network, by id.
func AllPorts(txn *memdb.Txn) []Port {
	return collect(txn, "id")
}

// PortsOf returns owner's ports, by id.
func PortsOf(txn *memdb.Txn, owner string) []Port {
	return collect(txn, "owner", owner)
}

func portsOn(txn *memdb.Txn, networkID string) []Port {
	// The prefix index matches "net1" to "net10" too: keep the network's own.
	var out []Port
	for _, p := range collect(txn, "ip_prefix", networkID) {
		if p.NetworkID == networkID {
			out = append(out, p)
		}
	}
	return out
}

func collect(txn *memdb.Txn, index string, args ...any) []Port {
	out := []Port{}
	it, err := txn.Get(tPorts, index, args...)
	if err != nil {
		return out
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, *obj.(*Port))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PortByMAC returns the port with the given MAC, or nil.
func PortByMAC(txn *memdb.Txn, mac net.HardwareAddr) *Port {
	return consensus.First[Port](txn, tPorts, "mac", mac.String())
}

// GetPort returns the port with the given id, or nil.
func GetPort(txn *memdb.Txn, id string) *Port {
	return consensus.First[Port](txn, tPorts, "id", id)
}

// refund gives back what a row was charged, if it was; a project that is
// gone has nothing to give back to, and must not block the removal.
func refund(tx *consensus.Tx, charged bool, project string, delta identity.Resources) error {
	if !charged || project == "" {
		return nil
	}
	if err := identity.Charge(tx, project, delta); err != nil && consensus.ErrorCode(err) != consensus.CodeNotFound {
		return err
	}
	return nil
}
