package netfabric

import (
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
)

// Port security, on by default as in Neutron: a guest sends only as its own
// port. Its frames enter the bridge through its tap, and a bridge-family
// table (HostConfig.PortTable) checks them there, before the bridge
// forwards them to another guest or hands them to the host:
//
//   - the source MAC is the port's;
//   - ARP speaks for the port's MAC and IPv4 address (or 0.0.0.0, a probe);
//   - IPv4 comes from the port's address, or from 0.0.0.0 to a DHCP server;
//   - no DHCP server (UDP from port 67 or 547) and no IPv6 router
//     advertisement or redirect: a guest cannot hand out addresses or
//     routes to its neighbours;
//   - IPv6 only from link-local addresses (the default network has no IPv6
//     subnet yet) or :: (duplicate address detection);
//   - nothing else: no other EtherType, so no VLAN-tagged frames either.
//
// A tap of ours with no port in the state sends nothing at all. Frames are
// dispatched to their port's chain by a verdict map on the input interface,
// one lookup however many guests the node runs.
//
// The host itself is guarded by an inet table (HostConfig.GuardTable): from
// the bridge, a guest reaches the host only for DHCP, ICMP and ICMPv6, and
// with replies to connections the host opened; the API, the S3 port, the
// cluster port and everything else listening on the host are out of reach
// from the VMs, whatever address of the host they aim at.

// ruleset is one nftables table, built whole and swapped in atomically.
type ruleset struct {
	table  *nftables.Table
	chains []*nftables.Chain
	sets   []setWithElements
	rules  []*nftables.Rule
}

type setWithElements struct {
	set      *nftables.Set
	elements []nftables.SetElement
}

const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd

	protoICMP   = 1
	protoUDP    = 17
	protoICMPv6 = 58
)

// securedPort is what the port table needs of one port on this node.
type securedPort struct {
	tap string
	mac net.HardwareAddr
	ip  netip.Addr // IPv4
}

// buildPortRuleset returns the bridge table for the given ports; pure, so
// the golden test sees exactly what is applied.
func buildPortRuleset(table, tapPrefix string, ports []securedPort) ruleset {
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: table}
	accept := nftables.ChainPolicyAccept
	// Bridge filter priority (-200), the same as nft's "filter" in the bridge family.
	pre := &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200), Policy: &accept}
	vmap := &nftables.Set{Table: t, Name: "ports", ID: 1, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
	rs := ruleset{table: t, chains: []*nftables.Chain{pre}}
	sort.Slice(ports, func(i, j int) bool { return ports[i].tap < ports[j].tap })
	var elems []nftables.SetElement
	var portRules []*nftables.Rule
	for _, p := range ports {
		ch := &nftables.Chain{Name: "port_" + p.tap, Table: t}
		rs.chains = append(rs.chains, ch)
		elems = append(elems, nftables.SetElement{Key: ifname(p.tap), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}})
		portRules = append(portRules, portChainRules(t, ch, p)...)
	}
	rs.sets = []setWithElements{{set: vmap, elements: elems}}
	rs.rules = append(rs.rules,
		newRule(t, pre, "iifname vmap @ports",
			[]expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: vmap.Name, SetID: vmap.ID, DestRegister: 0, IsDestRegSet: true}}),
		// A prefix compare: the name's first bytes, no NUL.
		newRule(t, pre, fmt.Sprintf("iifname %q drop (a tap with no port)", tapPrefix+"*"),
			[]expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(tapPrefix)}},
			verdict(expr.VerdictDrop)),
	)
	rs.rules = append(rs.rules, portRules...)
	return rs
}

// portChainRules are one port's checks; its chain ends in a drop.
func portChainRules(t *nftables.Table, ch *nftables.Chain, p securedPort) []*nftables.Rule {
	ip4 := p.ip.As4()
	zero4 := make([]byte, 4)
	mac := []byte(p.mac)
	etherType := func(et uint16) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(et)}}
	}
	field := func(base expr.PayloadBase, off, n uint32, op expr.CmpOp, data []byte) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n},
			&expr.Cmp{Op: op, Register: 1, Data: data}}
	}
	l4 := func(proto byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}}
	}
	sport := func(port uint16) []expr.Any {
		return field(expr.PayloadBaseTransportHeader, 0, 2, expr.CmpOpEq, binaryutil.BigEndian.PutUint16(port))
	}
	dport := func(port uint16) []expr.Any {
		return field(expr.PayloadBaseTransportHeader, 2, 2, expr.CmpOpEq, binaryutil.BigEndian.PutUint16(port))
	}
	const nh, ll = expr.PayloadBaseNetworkHeader, expr.PayloadBaseLLHeader
	linkLocal := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: nh, Offset: 8, Len: 2},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0xfe, 0x80}},
	}
	r := func(comment string, exprs ...[]expr.Any) *nftables.Rule { return newRule(t, ch, comment, exprs...) }
	return []*nftables.Rule{
		r(fmt.Sprintf("ether saddr != %s drop", p.mac), field(ll, 6, 6, expr.CmpOpNeq, mac), verdict(expr.VerdictDrop)),
		r(fmt.Sprintf("arp saddr ether != %s drop", p.mac), etherType(etherTypeARP), field(nh, 8, 6, expr.CmpOpNeq, mac), verdict(expr.VerdictDrop)),
		r(fmt.Sprintf("arp saddr ip %s accept", p.ip), etherType(etherTypeARP), field(nh, 14, 4, expr.CmpOpEq, ip4[:]), verdict(expr.VerdictAccept)),
		r("arp saddr ip 0.0.0.0 accept (a probe)", etherType(etherTypeARP), field(nh, 14, 4, expr.CmpOpEq, zero4), verdict(expr.VerdictAccept)),
		r("udp sport 67 drop (no DHCP server)", etherType(etherTypeIPv4), l4(protoUDP), sport(67), verdict(expr.VerdictDrop)),
		r(fmt.Sprintf("ip saddr %s accept", p.ip), etherType(etherTypeIPv4), field(nh, 12, 4, expr.CmpOpEq, ip4[:]), verdict(expr.VerdictAccept)),
		r("ip saddr 0.0.0.0 udp dport 67 accept (DHCP discover)", etherType(etherTypeIPv4), field(nh, 12, 4, expr.CmpOpEq, zero4), l4(protoUDP), dport(67), verdict(expr.VerdictAccept)),
		r("icmpv6 type nd-router-advert drop", etherType(etherTypeIPv6), l4(protoICMPv6), field(expr.PayloadBaseTransportHeader, 0, 1, expr.CmpOpEq, []byte{134}), verdict(expr.VerdictDrop)),
		r("icmpv6 type nd-redirect drop", etherType(etherTypeIPv6), l4(protoICMPv6), field(expr.PayloadBaseTransportHeader, 0, 1, expr.CmpOpEq, []byte{137}), verdict(expr.VerdictDrop)),
		r("udp sport 547 drop (no DHCPv6 server)", etherType(etherTypeIPv6), l4(protoUDP), sport(547), verdict(expr.VerdictDrop)),
		r("ip6 saddr fe80::/10 accept", etherType(etherTypeIPv6), linkLocal, verdict(expr.VerdictAccept)),
		r("ip6 saddr :: accept (duplicate address detection)", etherType(etherTypeIPv6), field(nh, 8, 16, expr.CmpOpEq, make([]byte, 16)), verdict(expr.VerdictAccept)),
		r("drop (anything else)", verdict(expr.VerdictDrop)),
	}
}

// buildGuardRuleset returns the inet table that keeps the VMs off the
// host's own ports.
func buildGuardRuleset(table, bridge string) ruleset {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	accept := nftables.ChainPolicyAccept
	in := &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	iif := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)}}
	l4 := func(proto byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}}
	}
	r := func(comment string, exprs ...[]expr.Any) *nftables.Rule { return newRule(t, in, comment, exprs...) }
	return ruleset{table: t, chains: []*nftables.Chain{in}, rules: []*nftables.Rule{
		r(fmt.Sprintf("iifname %s ct state established,related accept", bridge), iif, ctReplies(), verdict(expr.VerdictAccept)),
		r(fmt.Sprintf("iifname %s udp dport 67 accept", bridge), iif, l4(protoUDP),
			[]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(67)}}, verdict(expr.VerdictAccept)),
		r(fmt.Sprintf("iifname %s meta l4proto icmp accept", bridge), iif, l4(protoICMP), verdict(expr.VerdictAccept)),
		r(fmt.Sprintf("iifname %s meta l4proto ipv6-icmp accept", bridge), iif, l4(protoICMPv6), verdict(expr.VerdictAccept)),
		r(fmt.Sprintf("iifname %s drop", bridge), iif, verdict(expr.VerdictDrop)),
	}}
}

// securedPorts pairs this network's ports with their taps on this node
// (the links named so: the ports of VMs on other nodes have none here).
func (h *Host) securedPorts() ([]securedPort, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	here := map[string]bool{}
	for _, l := range links {
		if h.ownsTap(l.Attrs().Name) {
			here[l.Attrs().Name] = true
		}
	}
	var out []securedPort
	for _, p := range h.leases.Ports() {
		mac, ip, tap := p.HardwareAddr(), p.Addr(), h.TapName(p.ID)
		if !here[tap] || len(mac) != 6 || !ip.Is4() {
			continue // not here, or not a port we can secure: its tap sends nothing
		}
		out = append(out, securedPort{tap: tap, mac: mac, ip: ip})
	}
	return out, nil
}

// applyPortSecurity rebuilds the port and guard tables from the ports in
// the state whose taps exist.
func (h *Host) applyPortSecurity() error {
	h.psMu.Lock()
	defer h.psMu.Unlock()
	ports, err := h.securedPorts()
	if err != nil {
		return err
	}
	if err := buildPortRuleset(h.cfg.PortTable, h.cfg.TapPrefix, ports).apply(); err != nil {
		return err
	}
	return buildGuardRuleset(h.cfg.GuardTable, h.cfg.Bridge).apply()
}
