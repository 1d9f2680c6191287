package netfabric

import (
	"net"
	"net/netip"
	"strings"

	"github.com/cairnhq/cairn/consensus"
)

// IPv6 on project networks. A network may have one IPv6 subnet beside its
// IPv4 one: a /64, added by MsgAddSubnet6. Every port's IPv6 address is
// the subnet's prefix with the port's MAC as modified EUI-64 (RFC 4291,
// appendix A), which is what a guest's SLAAC makes of it by default: the
// state knows every guest's address without asking the guest, so port
// security and security groups hold from its first packet, as Neutron
// does for SLAAC subnets. The address modes:
//
//   - slaac: router advertisements carry the prefix with the autonomous
//     flag; the guest forms the address itself.
//   - dhcpv6: the advertisement's managed flag, and DHCPv6 hands out the
//     same address (stateful DHCPv6 with the address fixed by the MAC).
//
// Either way the advertisements (segra.go) come from the node the guest's
// port is bound to, unicast to the guest's MAC, with the network's MTU,
// its IPv6 DNS servers (RDNSS) and its DNS domain (DNSSL), and name the
// gateway as the default router on a network a router connects.

// MsgAddSubnet6 adds an IPv6 subnet to a project network.
const MsgAddSubnet6 consensus.MessageType = 402

// IPv6 address modes.
const (
	IPv6SLAAC  = "slaac"
	IPv6DHCPv6 = "dhcpv6"
)

// AddSubnet6Cmd adds the IPv6 subnet CIDR to a network, with Mode (empty:
// slaac).
type AddSubnet6Cmd struct {
	Network string `json:"network"`
	CIDR    string `json:"cidr"`
	Mode    string `json:"ipv6_mode,omitempty"`
}

// reserved6 are ranges an IPv6 subnet must not overlap: they mean something
// on every host or link.
var reserved6 = []netip.Prefix{
	netip.MustParsePrefix("::/8"), // unspecified, loopback, IPv4-mapped and -compatible
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("fe80::/10"), // link-local
	netip.MustParsePrefix("fec0::/10"), // site-local, deprecated
	netip.MustParsePrefix("ff00::/8"),  // multicast
}

// ParseCIDR6 validates an IPv6 subnet: a canonical /64 of unicast space
// (SLAAC forms addresses only in a /64).
func ParseCIDR6(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "IPv6 subnet %q: %v", s, err)
	}
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "IPv6 subnet %q is not an IPv6 prefix", s)
	}
	if p.Bits() != 64 {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "IPv6 subnet %q: the prefix length must be 64 (guests form their addresses in a /64)", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "IPv6 subnet %q has host bits set; did you mean %s?", s, p.Masked())
	}
	for _, r := range reserved6 {
		if r.Overlaps(p) {
			return netip.Prefix{}, consensus.Errorf(consensus.CodeInvalid, "IPv6 subnet %q overlaps reserved range %s", s, r)
		}
	}
	return p, nil
}

// EUI64 is the address of the interface with MAC mac in the /64 prefix:
// the MAC's modified EUI-64 (FF:FE in the middle, the universal/local bit
// flipped) after the prefix.
func EUI64(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	if len(mac) != 6 || !prefix.Addr().Is6() {
		return netip.Addr{}
	}
	a := prefix.Masked().Addr().As16()
	copy(a[8:], []byte{mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return netip.AddrFrom16(a)
}

// LinkLocal is the link-local address of the interface with MAC mac.
func LinkLocal(mac net.HardwareAddr) netip.Addr {
	return EUI64(netip.MustParsePrefix("fe80::/64"), mac)
}

// Prefix6 returns the network's IPv6 subnet, if it has one.
func (n Network) Prefix6() (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(n.CIDR6)
	return p, err == nil
}

// Gateway6 is a project network's IPv6 gateway address, the subnet's
// first (::1; ports' addresses are EUI-64, never that): a router holds it
// on the network, and the nodes answer neighbour solicitations for it.
func (n Network) Gateway6() (netip.Addr, bool) {
	p, ok := n.Prefix6()
	if !ok {
		return netip.Addr{}, false
	}
	return p.Addr().Next(), true
}

// GatewayLL is the link-local address a project network's advertisements
// and DHCPv6 answers come from: the gateway MAC's, the same on every node.
func (n Network) GatewayLL() netip.Addr { return LinkLocal(GatewayMAC(n.ID)) }

// DNSServers6 returns the network's IPv6 DNS servers.
func (n Network) DNSServers6() []netip.Addr {
	var out []netip.Addr
	for _, s := range n.DNS6 {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			out = append(out, a)
		}
	}
	return out
}

// Addr6 returns the port's IPv6 address, if its network has an IPv6 subnet.
func (p Port) Addr6() (netip.Addr, bool) {
	a, err := netip.ParseAddr(p.IP6)
	return a, err == nil
}

func applyAddSubnet6(tx *consensus.Tx, c *AddSubnet6Cmd) (any, error) {
	cur := GetNetwork(tx.Txn, c.Network)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "network %q not found", c.Network)
	}
	if !cur.IsOverlay() {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s is the cluster's: only project networks have IPv6 subnets", cur.Name)
	}
	if cur.SiteGateway {
		return nil, consensus.Errorf(consensus.CodeInvalid, "network %s has the site's router as its gateway: Cairn gives it no IPv6 subnet", cur.Name)
	}
	p, err := ParseCIDR6(c.CIDR)
	if err != nil {
		return nil, err
	}
	mode := c.Mode
	if mode == "" {
		mode = IPv6SLAAC
	}
	if mode != IPv6SLAAC && mode != IPv6DHCPv6 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "IPv6 mode %q: use %s or %s", c.Mode, IPv6SLAAC, IPv6DHCPv6)
	}
	if cur.CIDR6 != "" {
		if cur.CIDR6 == p.String() && cur.IPv6Mode == mode {
			return cur, nil // the same command again
		}
		return nil, consensus.Errorf(consensus.CodeConflict, "network %s has the IPv6 subnet %s already", cur.Name, cur.CIDR6)
	}
	for _, o := range ListNetworks(tx.Txn) {
		if op, ok := o.Prefix6(); ok && o.Project == cur.Project && op.Overlaps(p) {
			return nil, consensus.Errorf(consensus.CodeConflict, "IPv6 subnet %s overlaps network %s (%s)", p, o.Name, o.CIDR6)
		}
	}
	row := *cur
	row.CIDR6, row.IPv6Mode, row.Version = p.String(), mode, tx.Index
	if err := tx.Insert(tNetworks, &row); err != nil {
		return nil, err
	}
	// The ports there already get their addresses in the same command.
	for _, port := range portsOn(tx.Txn, cur.ID) {
		port.IP6, port.Version = EUI64(p, port.HardwareAddr()).String(), tx.Index
		if err := tx.Insert(tPorts, &port); err != nil {
			return nil, err
		}
	}
	return &row, nil
}

// validDomain tells whether s is a DNS domain a network may hand out:
// two or more labels, no trailing dot.
func validDomain(s string) bool {
	if s == "" || len(s) > 253 || strings.HasSuffix(s, ".") {
		return false
	}
	return hostnamePattern.MatchString(s) && strings.Contains(s, ".")
}
