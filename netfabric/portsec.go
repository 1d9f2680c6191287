package netfabric

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Port security, on by default as in Neutron: a guest sends only as its own
// port. Its frames enter the bridge through its tap, and a bridge-family
// table (HostConfig.PortTable) checks them there, before the bridge
// forwards them to another guest or hands them to the host:
//
//   - the source MAC is the port's;
//   - ARP (Ethernet/IPv4 only) speaks for the port's MAC and IPv4 address,
//     or for 0.0.0.0 (a probe);
//   - IPv4 comes from the port's address, or from 0.0.0.0 to a DHCP server;
//   - nothing from a DHCP or DHCPv6 server port, and nothing to a DHCP or
//     DHCPv6 client port: a guest cannot hand out addresses, routes or DNS
//     servers to its neighbours, whatever source port it uses;
//   - no IPv6 router advertisement or redirect, and no IPv6 fragment (a
//     fragment can carry an RA past a check that cannot see its header);
//   - IPv6 only from the port's own addresses (its network's IPv6 subnet
//     and its MAC, subnet6.go; its MAC's link-local address, and its address
//     pairs' MACs'; its IPv6 address pairs) or :: (duplicate address
//     detection), and a neighbour advertisement only for one of its own
//     addresses;
//   - nothing else: no other EtherType, so no VLAN-tagged frames either
//     (priority-tagged ones, VLAN 0, included).
//
// A tap of ours with no port in the state sends nothing at all. The rules
// are fixed and the ports are elements of two sets keyed by the tap's name
// (iifname . ether_addr, iifname . ipv4_addr), so a node with a hundred
// VMs applies the same dozen rules as one with a single VM.
//
// The host itself is guarded by an inet table (HostConfig.GuardTable): from
// the bridge, a guest reaches the host only for DHCP, ICMP and ICMPv6, and
// with replies to connections the host opened; the API, the S3 port, the
// cluster port and everything else listening on this host are out of reach
// from its VMs, whatever address of the host they aim at. (Other machines on
// the LAN, the cluster's other boxes included, are reached through NAT as
// from any machine there; security groups come with project networks.)

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
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// securedPort is what the port table needs of one port on this node.
type securedPort struct {
	tap   string
	mac   net.HardwareAddr
	ip    netip.Addr // IPv4
	ip6   netip.Addr // IPv6 (a network with an IPv6 subnet), else invalid
	pairs []AddressPair
	// uplink is the VLAN device of the port's network here, if it is a
	// VLAN network with its segment built, and segNet that network.
	uplink  string
	segNet  Network
	guarded bool // by security groups
}

// Registers: nft's 32-bit registers start at 8 (NFT_REG32_00); a
// concatenation loads its fields one after the other from there, each
// rounded up to 4 bytes. Register 1 (NFT_REG_1) is 8-11 seen as one.
const (
	ifnameSize = 16
	regConcat  = 8
	regAfterIf = regConcat + ifnameSize/4
)

// buildPortRuleset returns the bridge table for the given ports; pure, so
// the golden test sees exactly what is applied.
func buildPortRuleset(table, tapPrefix, segPrefix string, ports []securedPort) ruleset {
	vlanPrefix := segPrefix + "v"
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: table}
	accept := nftables.ChainPolicyAccept
	// Bridge filter priority (-200), nft's "filter" in the bridge family.
	pre := &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200), Policy: &accept}
	macs := &nftables.Set{Table: t, Name: "port_macs", ID: 1, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)}
	ips := &nftables.Set{Table: t, Name: "port_ips", ID: 2, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}
	sort.Slice(ports, func(i, j int) bool { return ports[i].tap < ports[j].tap })
	own := &nftables.Set{Table: t, Name: "own_macs", ID: 4, KeyType: nftables.TypeEtherAddr}
	ip6s := &nftables.Set{Table: t, Name: "port_ip6s", ID: 5, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)}
	// What a VLAN network's uplink must not speak for, by the uplink's
	// name: this box's guests' addresses and the gateway's.
	segIPs := &nftables.Set{Table: t, Name: "seg_ips", ID: 6, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}
	segIP6s := &nftables.Set{Table: t, Name: "seg_ip6s", ID: 7, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)}
	segGW := &nftables.Set{Table: t, Name: "seg_gateway_macs", ID: 8, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)}
	var macElems, ipElems, guardedElems, ownElems, ip6Elems, segIPElems, segIP6Elems, segGWElems []nftables.SetElement
	ip6Key := func(name string, a netip.Addr) nftables.SetElement {
		b := a.As16()
		return nftables.SetElement{Key: append(ifname(name), b[:]...)}
	}
	ip4Key := func(name string, a netip.Addr) nftables.SetElement {
		b := a.As4()
		return nftables.SetElement{Key: append(ifname(name), b[:]...)}
	}
	segDone := map[string]bool{}
	for _, p := range ports {
		// IPv6 from its own address and its own link-local one (its MAC's,
		// and its pairs' MACs'), as Neutron allows.
		own6 := []netip.Addr{LinkLocal(p.mac)}
		if p.ip6.Is6() {
			own6 = append(own6, p.ip6)
		}
		for _, ap := range p.pairs {
			if m, err := net.ParseMAC(ap.MAC); err == nil && !slices.Contains(own6, LinkLocal(m)) {
				own6 = append(own6, LinkLocal(m))
			}
			if a, err := netip.ParseAddr(ap.IP); err == nil && a.Is6() && !slices.Contains(own6, a) {
				own6 = append(own6, a)
			}
		}
		for _, a := range own6 {
			ip6Elems = append(ip6Elems, ip6Key(p.tap, a))
		}
		if up := p.uplink; up != "" {
			if p.ip.Is4() {
				segIPElems = append(segIPElems, ip4Key(up, p.ip))
			}
			segIP6Elems = append(segIP6Elems, ip6Key(up, LinkLocal(p.mac)))
			if p.ip6.Is6() {
				segIP6Elems = append(segIP6Elems, ip6Key(up, p.ip6))
			}
			if !segDone[up] {
				segDone[up] = true
				// The gateway is the box's, so nothing on the site's side
				// speaks as it; unless it is the site's own router.
				if gw := p.segNet.GatewayAddr(); gw.Is4() && !p.segNet.SiteGateway {
					segIPElems = append(segIPElems, ip4Key(up, gw))
				}
				segIP6Elems = append(segIP6Elems, ip6Key(up, p.segNet.GatewayLL()))
				segGWElems = append(segGWElems, nftables.SetElement{Key: append(append(ifname(up), GatewayMAC(p.segNet.ID)...), 0, 0)})
			}
		}
		ownElems = append(ownElems, nftables.SetElement{Key: append([]byte(nil), p.mac...)})
		if p.guarded {
			guardedElems = append(guardedElems, nftables.SetElement{Key: ifname(p.tap)})
		}
		macs, ips := []string{p.mac.String()}, []netip.Addr{p.ip}
		for _, ap := range p.pairs {
			if m, err := net.ParseMAC(ap.MAC); err == nil && !containsString(macs, m.String()) {
				macs = append(macs, m.String())
			}
			if a, err := netip.ParseAddr(ap.IP); err == nil && a.Is4() && !slices.Contains(ips, a) {
				ips = append(ips, a)
			}
		}
		for _, m := range macs {
			hw, _ := net.ParseMAC(m)
			macElems = append(macElems, nftables.SetElement{Key: append(append(ifname(p.tap), hw...), 0, 0)})
		}
		for _, a := range ips {
			ip4 := a.As4()
			ipElems = append(ipElems, nftables.SetElement{Key: append(ifname(p.tap), ip4[:]...)})
		}
	}
	// The bridge's forward hook, before br_netfilter's (priority 0):
	// a frame for one of our taps carries the tap in its mark, where the
	// security groups' inet forward chain finds it (sgtable.go).
	fwd := &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-200), Policy: &accept}
	// Likewise at the way in, for the security groups' prerouting chain:
	// there the inet hooks see the bridge as the input, not the tap.
	setMark := &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}
	markTapIn := func(ch *nftables.Chain, name, num expr.MetaKey, dir string) []*nftables.Rule {
		return []*nftables.Rule{
			newRule(t, ch, "meta mark set 0", []expr.Any{&expr.Immediate{Register: 1, Data: make([]byte, 4)}, setMark}),
			newRule(t, ch, fmt.Sprintf("%sname %q meta mark set %s | 0x%x", dir, tapPrefix+"*", dir, uint32(markTap)), []expr.Any{
				&expr.Meta{Key: name, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(tapPrefix)},
				&expr.Meta{Key: num, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(^uint32(0)), Xor: binaryutil.NativeEndian.PutUint32(markTap)},
				setMark}),
		}
	}
	markRules := append(markTapIn(pre, expr.MetaKeyIIFNAME, expr.MetaKeyIIF, "iif"), markTapIn(fwd, expr.MetaKeyOIFNAME, expr.MetaKeyOIF, "oif")...)

	etherType := func(et uint16) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(et)}}
	}
	field := func(base expr.PayloadBase, off, n uint32, op expr.CmpOp, data []byte) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n},
			&expr.Cmp{Op: op, Register: 1, Data: data}}
	}
	// ifIn looks up iifname . (a field of n bytes) in set.
	ifIn := func(set *nftables.Set, base expr.PayloadBase, off, n uint32, invert bool) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: regConcat},
			&expr.Payload{DestRegister: regAfterIf, Base: base, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: regConcat, SetName: set.Name, SetID: set.ID, Invert: invert}}
	}
	l4 := func(proto byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}}
	}
	const nh, ll, th = expr.PayloadBaseNetworkHeader, expr.PayloadBaseLLHeader, expr.PayloadBaseTransportHeader
	const sport, dport = 0, 2
	port := func(off uint32, p uint16) []expr.Any {
		return field(th, off, 2, expr.CmpOpEq, binaryutil.BigEndian.PutUint16(p))
	}
	fragment := []expr.Any{
		&expr.Exthdr{Op: expr.ExthdrOpIpv6, Type: 44, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
	}
	zero4 := make([]byte, 4)
	drop, acc := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	// Security groups fail closed: the inet chains mark what they have
	// seen (markChecked), and after br_netfilter (priority 0) a guarded
	// tap's IPv4 or IPv6 frame the inet hooks did not see is dropped, as
	// when bridge-nf-call-iptables is turned off behind our back.
	guardedSet := &nftables.Set{Table: t, Name: "guarded", ID: 3, KeyType: nftables.TypeIFName}
	checkedIn := &nftables.Chain{Name: "checked_in", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(10), Policy: &accept}
	checkedOut := &nftables.Chain{Name: "checked_out", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(10), Policy: &accept}
	unchecked := []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(markTap | markChecked), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(markTap | markChecked)}}
	for _, c := range []struct {
		ch  *nftables.Chain
		key expr.MetaKey
		dir string
	}{{checkedIn, expr.MetaKeyIIFNAME, "iifname"}, {checkedOut, expr.MetaKeyOIFNAME, "oifname"}} {
		for _, et := range []uint16{etherTypeIPv4, etherTypeIPv6} {
			markRules = append(markRules, newRule(t, c.ch, fmt.Sprintf("%s @guarded ether type 0x%04x meta mark & 0x%x != 0x%[3]x drop (the security groups did not see it)", c.dir, et, uint32(markTap|markChecked)),
				[]expr.Any{&expr.Meta{Key: c.key, Register: 1}, &expr.Lookup{SourceRegister: 1, SetName: guardedSet.Name, SetID: guardedSet.ID}},
				etherType(et), unchecked, drop))
		}
	}
	r := func(comment string, exprs ...[]expr.Any) *nftables.Rule { return newRule(t, pre, comment, exprs...) }
	// A VLAN network's uplink (vlanPrefix*) is the site's network, shared
	// with machines Cairn does not control: none of them may pose as one
	// of this box's guests (their MAC would move the bridge's entry to the
	// uplink), or hand the guests addresses or routes, and the guests'
	// DHCP stays on their box, which answers it.
	vlanIn := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(vlanPrefix)}}
	vlanOut := []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(vlanPrefix)}}
	vp := vlanPrefix + "*"
	uplink := []*nftables.Rule{
		r(fmt.Sprintf("iifname %q ether saddr @own_macs drop (a neighbour posing as a guest here)", vp), vlanIn,
			[]expr.Any{&expr.Payload{DestRegister: 1, Base: ll, Offset: 6, Len: 6}, &expr.Lookup{SourceRegister: 1, SetName: own.Name, SetID: own.ID}}, drop),
		r(fmt.Sprintf("iifname %q . ether daddr @seg_gateway_macs drop (the gateway is the box's own)", vp), vlanIn, ifIn(segGW, ll, 0, 6, false), drop),
		r(fmt.Sprintf("iifname %q . arp saddr ip @seg_ips drop (speaking for a guest here or the gateway)", vp), vlanIn, etherType(etherTypeARP), ifIn(segIPs, nh, 14, 4, false), drop),
		r(fmt.Sprintf("iifname %q . ip saddr @seg_ips drop", vp), vlanIn, etherType(etherTypeIPv4), ifIn(segIPs, nh, 12, 4, false), drop),
		r(fmt.Sprintf("iifname %q icmp type redirect drop", vp), vlanIn, etherType(etherTypeIPv4), l4(protoICMP), field(th, 0, 1, expr.CmpOpEq, []byte{5}), drop),
		r(fmt.Sprintf("iifname %q . ip6 saddr @seg_ip6s drop", vp), vlanIn, etherType(etherTypeIPv6), ifIn(segIP6s, nh, 8, 16, false), drop),
		r(fmt.Sprintf("iifname %q . nd-target @seg_ip6s drop (advertising a guest here or the gateway)", vp), vlanIn, etherType(etherTypeIPv6), l4(protoICMPv6),
			field(th, 0, 1, expr.CmpOpEq, []byte{136}), ifIn(segIP6s, th, 8, 16, false), drop),
		r(fmt.Sprintf("iifname %q udp sport 67 drop (no DHCP server from the site's network)", vp), vlanIn, etherType(etherTypeIPv4), l4(protoUDP), port(sport, 67), drop),
		r(fmt.Sprintf("iifname %q udp dport 68 drop", vp), vlanIn, etherType(etherTypeIPv4), l4(protoUDP), port(dport, 68), drop),
		r(fmt.Sprintf("iifname %q icmpv6 type nd-router-advert drop", vp), vlanIn, etherType(etherTypeIPv6), l4(protoICMPv6), field(th, 0, 1, expr.CmpOpEq, []byte{134}), drop),
		r(fmt.Sprintf("iifname %q icmpv6 type nd-redirect drop", vp), vlanIn, etherType(etherTypeIPv6), l4(protoICMPv6), field(th, 0, 1, expr.CmpOpEq, []byte{137}), drop),
		r(fmt.Sprintf("iifname %q udp sport 547 drop", vp), vlanIn, etherType(etherTypeIPv6), l4(protoUDP), port(sport, 547), drop),
		r(fmt.Sprintf("iifname %q udp dport 546 drop", vp), vlanIn, etherType(etherTypeIPv6), l4(protoUDP), port(dport, 546), drop),
		newRule(t, fwd, fmt.Sprintf("oifname %q udp dport 67 drop (a guest's DHCP is its box's to answer)", vp), vlanOut, etherType(etherTypeIPv4), l4(protoUDP), port(dport, 67), drop),
		newRule(t, fwd, fmt.Sprintf("oifname %q udp dport 547 drop", vp), vlanOut, etherType(etherTypeIPv6), l4(protoUDP), port(dport, 547), drop),
	}
	// Nothing the box itself sends on a segment's bridge (DHCP and ARP
	// answers, advertisements, all from the gateway's MAC, the same on
	// every box) leaves on its uplink: they are for this box's guests.
	out := &nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(-200), Policy: &accept}
	for _, up := range []string{segPrefix + "x", vlanPrefix} {
		uplink = append(uplink, newRule(t, out, fmt.Sprintf("oifname %q drop (the box's own frames stay off the uplinks)", up+"*"),
			[]expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(up)}}, drop))
	}
	// A key twice in one set would fail the whole table.
	dedupe := func(es []nftables.SetElement) []nftables.SetElement {
		seen := map[string]bool{}
		var out []nftables.SetElement
		for _, e := range es {
			if k := string(e.Key); !seen[k] {
				seen[k] = true
				out = append(out, e)
			}
		}
		return out
	}
	ip6Elems, segIPElems, segIP6Elems, segGWElems, ownElems = dedupe(ip6Elems), dedupe(segIPElems), dedupe(segIP6Elems), dedupe(segGWElems), dedupe(ownElems)
	return ruleset{table: t, chains: []*nftables.Chain{pre, fwd, checkedIn, checkedOut, out},
		sets: []setWithElements{{set: macs, elements: macElems}, {set: ips, elements: ipElems}, {set: guardedSet, elements: guardedElems},
			{set: own, elements: ownElems}, {set: ip6s, elements: ip6Elems}, {set: segIPs, elements: segIPElems},
			{set: segIP6s, elements: segIP6Elems}, {set: segGW, elements: segGWElems}},
		rules: append(append(markRules, uplink...),
			// A prefix compare: the name's first bytes, no NUL.
			r(fmt.Sprintf("iifname != %q accept (not a guest's tap)", tapPrefix+"*"),
				[]expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(tapPrefix)}}, acc),
			r("iifname . ether saddr != @port_macs drop (so also every tap without a port)", ifIn(macs, ll, 6, 6, true), drop),
			r("arp htype != 1 or ptype != ip or hlen != 6 or plen != 4 drop", etherType(etherTypeARP), field(nh, 0, 6, expr.CmpOpNeq, []byte{0, 1, 8, 0, 6, 4}), drop),
			r("iifname . arp saddr ether != @port_macs drop", etherType(etherTypeARP), ifIn(macs, nh, 8, 6, true), drop),
			r("iifname . arp saddr ip @port_ips accept", etherType(etherTypeARP), ifIn(ips, nh, 14, 4, false), acc),
			r("arp saddr ip 0.0.0.0 accept (a probe)", etherType(etherTypeARP), field(nh, 14, 4, expr.CmpOpEq, zero4), acc),
			r("udp sport 67 drop (no DHCP server)", etherType(etherTypeIPv4), l4(protoUDP), port(sport, 67), drop),
			r("udp dport 68 drop (no DHCP answer to a client, from any port)", etherType(etherTypeIPv4), l4(protoUDP), port(dport, 68), drop),
			r("iifname . ip saddr @port_ips accept", etherType(etherTypeIPv4), ifIn(ips, nh, 12, 4, false), acc),
			r("ip saddr 0.0.0.0 udp dport 67 accept (DHCP discover)", etherType(etherTypeIPv4), field(nh, 12, 4, expr.CmpOpEq, zero4), l4(protoUDP), port(dport, 67), acc),
			r("exthdr frag exists drop (no IPv6 fragments)", etherType(etherTypeIPv6), fragment, drop),
			r("icmpv6 type nd-router-advert drop", etherType(etherTypeIPv6), l4(protoICMPv6), field(th, 0, 1, expr.CmpOpEq, []byte{134}), drop),
			r("icmpv6 type nd-redirect drop", etherType(etherTypeIPv6), l4(protoICMPv6), field(th, 0, 1, expr.CmpOpEq, []byte{137}), drop),
			r("udp sport 547 drop (no DHCPv6 server)", etherType(etherTypeIPv6), l4(protoUDP), port(sport, 547), drop),
			r("udp dport 546 drop (no DHCPv6 answer to a client, from any port)", etherType(etherTypeIPv6), l4(protoUDP), port(dport, 546), drop),
			// A neighbour advertisement speaks for its target: one of the
			// port's own addresses (its link-local one included).
			r("icmpv6 type nd-neighbor-advert iifname . nd-target != @port_ip6s drop", etherType(etherTypeIPv6), l4(protoICMPv6),
				field(th, 0, 1, expr.CmpOpEq, []byte{136}), ifIn(ip6s, th, 8, 16, true), drop),
			r("iifname . ip6 saddr @port_ip6s accept", etherType(etherTypeIPv6), ifIn(ip6s, nh, 8, 16, false), acc),
			r("ip6 saddr :: accept (duplicate address detection)", etherType(etherTypeIPv6), field(nh, 8, 16, expr.CmpOpEq, make([]byte, 16)), acc),
			r("drop (anything else a guest sends)", drop),
		)}
}

// buildGuardRuleset returns the inet table that keeps the VMs off the
// host's own ports, the host out of project networks' segments (devices
// named segPrefix+"b"/"x"/"v"...), and strangers out of the segments: VXLAN is
// taken only from peers, the nodes this one shares a segment with (a
// VXLAN device accepts a frame for its segment from any source).
func buildGuardRuleset(table, bridge, segPrefix string, peers []netip.Addr) ruleset {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	accept := nftables.ChainPolicyAccept
	in := &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	fwd := &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	vteps := &nftables.Set{Table: t, Name: "vxlan_peers", ID: 1, KeyType: nftables.TypeIPAddr}
	var vtepElems []nftables.SetElement
	sorted := append([]netip.Addr(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Less(sorted[j]) })
	for _, p := range sorted {
		if p.Is4() {
			a := p.As4()
			vtepElems = append(vtepElems, nftables.SetElement{Key: a[:]})
		}
	}
	iif := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)}}
	// A wildcard interface name ("cnb*") compares only the prefix's bytes.
	name := func(key expr.MetaKey, op expr.CmpOp, prefix string) []expr.Any {
		return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)}}
	}
	segBr, segVX, segVL := segPrefix+"b", segPrefix+"x", segPrefix+"v"
	l4 := func(proto byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}}
	}
	dport := func(p uint16) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)}}
	}
	nfproto := func(p byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
	}
	const nfprotoIPv4, nfprotoIPv6 = 2, 10
	r := func(comment string, exprs ...[]expr.Any) *nftables.Rule { return newRule(t, in, comment, exprs...) }
	f := func(comment string, exprs ...[]expr.Any) *nftables.Rule { return newRule(t, fwd, comment, exprs...) }
	drop := verdict(expr.VerdictDrop)
	return ruleset{table: t, chains: []*nftables.Chain{in, fwd},
		sets: []setWithElements{{set: vteps, elements: vtepElems}},
		rules: []*nftables.Rule{
			r(fmt.Sprintf("iifname %s ct state established,related accept", bridge), iif, ctReplies(), verdict(expr.VerdictAccept)),
			r(fmt.Sprintf("iifname %s udp dport 67 accept", bridge), iif, l4(protoUDP), dport(67), verdict(expr.VerdictAccept)),
			r(fmt.Sprintf("iifname %s meta l4proto icmp accept", bridge), iif, l4(protoICMP), verdict(expr.VerdictAccept)),
			r(fmt.Sprintf("iifname %s meta l4proto ipv6-icmp accept", bridge), iif, l4(protoICMPv6), verdict(expr.VerdictAccept)),
			r(fmt.Sprintf("iifname %s drop", bridge), iif, drop),
			// Project networks' segments have no address on the host: it
			// takes nothing from them.
			r(fmt.Sprintf(`iifname "%s*" drop`, segBr), name(expr.MetaKeyIIFNAME, expr.CmpOpEq, segBr), drop),
			r(fmt.Sprintf(`iifname "%s*" drop`, segVX), name(expr.MetaKeyIIFNAME, expr.CmpOpEq, segVX), drop),
			r(fmt.Sprintf(`iifname "%s*" drop`, segVL), name(expr.MetaKeyIIFNAME, expr.CmpOpEq, segVL), drop),
			r(fmt.Sprintf("meta nfproto ipv4 udp dport %d ip saddr != @%s drop", vxlanPort, vteps.Name), nfproto(nfprotoIPv4), l4(protoUDP), dport(vxlanPort),
				[]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
					&expr.Lookup{SourceRegister: 1, SetName: vteps.Name, SetID: vteps.ID, Invert: true}}, drop),
			r(fmt.Sprintf("meta nfproto ipv6 udp dport %d drop", vxlanPort), nfproto(nfprotoIPv6), l4(protoUDP), dport(vxlanPort), drop),
			// Nor does it route out of them or into them (with
			// br_netfilter on, frames bridged within a segment pass the
			// forward hook with the segment's bridge in and out: they stay).
			f(fmt.Sprintf(`iifname "%[1]s*" oifname != "%[1]s*" drop`, segBr),
				name(expr.MetaKeyIIFNAME, expr.CmpOpEq, segBr), name(expr.MetaKeyOIFNAME, expr.CmpOpNeq, segBr), drop),
			f(fmt.Sprintf(`oifname "%[1]s*" iifname != "%[1]s*" drop`, segBr),
				name(expr.MetaKeyOIFNAME, expr.CmpOpEq, segBr), name(expr.MetaKeyIIFNAME, expr.CmpOpNeq, segBr), drop),
			f(fmt.Sprintf(`iifname "%s*" drop`, segVX), name(expr.MetaKeyIIFNAME, expr.CmpOpEq, segVX), drop),
			f(fmt.Sprintf(`oifname "%s*" drop`, segVX), name(expr.MetaKeyOIFNAME, expr.CmpOpEq, segVX), drop),
			f(fmt.Sprintf(`iifname "%s*" drop`, segVL), name(expr.MetaKeyIIFNAME, expr.CmpOpEq, segVL), drop),
			f(fmt.Sprintf(`oifname "%s*" drop`, segVL), name(expr.MetaKeyOIFNAME, expr.CmpOpEq, segVL), drop),
			// A guest on the NAT network sends no VXLAN to other boxes: it
			// would arrive from this node's address, a peer's.
			f(fmt.Sprintf("iifname %s udp dport %d drop", bridge, vxlanPort), iif, l4(protoUDP), dport(vxlanPort), drop),
		}}
}

// tooBig reports whether the kernel refused a table for its size, which
// a smaller one may cure; any other failure fails every guarded port
// closed at once.
func tooBig(err error) bool {
	return errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.E2BIG)
}

// applyPortSecurity rebuilds the guard, security-group and port tables
// from the ports in the state whose taps exist. A port of a project
// network is let send (port table) only once its security groups are in
// place: until then, or if they cannot be, it sends nothing.
func (h *Host) applyPortSecurity() error {
	h.psMu.Lock()
	defer h.psMu.Unlock()
	// The guard first, and whatever becomes of the ports: it does not
	// depend on them.
	guard := buildGuardRuleset(h.cfg.GuardTable, h.cfg.Bridge, h.cfg.SegmentPrefix, h.segmentPeers()).apply()
	links, err := linkList()
	if err != nil {
		return errors.Join(guard, fmt.Errorf("list links: %w", err))
	}
	index := map[string]uint32{}
	for _, l := range links {
		if name := l.Attrs().Name; h.ownsTap(name) || h.ownsSegmentLink(name) {
			index[name] = uint32(l.Attrs().Index)
		}
	}
	// The filters come from the state as it is now, whatever the
	// segments' reconcile has got to: a port whose segment is not built
	// yet is filtered all the same.
	var here []string
	for _, p := range h.leases.Ports() {
		if _, ok := index[h.TapName(p.ID)]; ok {
			here = append(here, p.ID)
		}
	}
	filters := h.leases.Filters(here)
	var zones []zoneOf
	seen := map[uint32]bool{}
	for _, f := range filters {
		if ix, ok := index[h.segmentBridge(f.VNI)]; ok && !seen[ix] {
			seen[ix] = true
			zones = append(zones, zoneOf{ifindex: ix, zone: f.Zone})
		}
	}
	// Segments with no port here (carried for a router) get their zones
	// too: their traffic must not meet another project's at the same
	// addresses either.
	h.segMu.Lock()
	segs := maps.Clone(h.segs)
	for _, sg := range h.segs {
		if ix, ok := index[h.segmentBridge(sg.Network.VNI)]; ok && !seen[ix] {
			seen[ix] = true
			zones = append(zones, zoneOf{ifindex: ix, zone: sg.Network.Zone()})
		}
	}
	h.segMu.Unlock()
	sort.Slice(zones, func(i, j int) bool { return zones[i].ifindex < zones[j].ifindex })
	var brnf error
	if len(filters) > 0 {
		brnf = enableBridgeNetfilter()
	}
	nat, _ := h.leases.Network()
	var open []uint32
	var plain, guardedPorts []securedPort
	var guarded []guardedPort
	var budget []error
	for _, p := range h.leases.Ports() { // (read again: the filters are at least as new)
		mac, ip, tap := p.HardwareAddr(), p.Addr(), h.TapName(p.ID)
		ix, here := index[tap]
		if !here || len(mac) != 6 || !ip.Is4() {
			continue // not here, or not a port we can secure: its tap sends nothing
		}
		sp := securedPort{tap: tap, mac: mac, ip: ip}
		sp.ip6, _ = p.Addr6()
		if sg, ok := segs[p.NetworkID]; ok && sg.Network.IsVLAN() {
			sp.uplink, sp.segNet = h.segmentVLAN(sg.Network.VNI), sg.Network
		}
		if p.NetworkID == nat.ID && nat.ID != "" {
			open = append(open, ix)
			plain = append(plain, sp)
			continue
		}
		f, ok := filters[p.ID]
		if !ok || brnf != nil {
			continue // its security groups are not known or cannot be enforced: it sends nothing
		}
		if n := f.Elements(); n > maxPortElements {
			// One port's rules must not cost every other port its filter
			// (the table is applied whole): this one sends nothing.
			budget = append(budget, fmt.Errorf("port %s: its security groups need %d filter entries, more than %d: it sends nothing", p.ID, n, maxPortElements))
			continue
		}
		sp.pairs, sp.guarded = p.AddressPairs, true
		guarded = append(guarded, guardedPort{ifindex: ix, filter: f})
		guardedPorts = append(guardedPorts, sp)
	}
	// The node's budget: the largest filters beyond it are refused, and
	// if the table still cannot be loaded, the largest ports go one by
	// one until it can. A port refused sends nothing; the others keep
	// their filters.
	sort.SliceStable(guarded, func(i, j int) bool { return guarded[i].filter.Elements() < guarded[j].filter.Elements() })
	total := 0
	for i, g := range guarded {
		total += g.filter.Elements()
		if total > maxNodeElements {
			for _, x := range guarded[i:] {
				budget = append(budget, fmt.Errorf("port %s: the security groups of this node's ports need more than %d filter entries in all: it sends nothing", x.filter.Port.ID, maxNodeElements))
			}
			guarded = guarded[:i]
			break
		}
	}
	var sg error
	for {
		sg = buildSGRuleset(h.cfg.SGTable, h.cfg.TapPrefix, open, guarded, zones).apply()
		if sg == nil || len(guarded) == 0 || !tooBig(sg) {
			break
		}
		last := guarded[len(guarded)-1]
		budget = append(budget, fmt.Errorf("port %s: its security groups could not be loaded with the others (%v): it sends nothing", last.filter.Port.ID, sg))
		guarded = guarded[:len(guarded)-1]
	}
	ok := map[string]bool{}
	for _, g := range guarded {
		ok[h.TapName(g.filter.Port.ID)] = true
	}
	ports := plain
	if sg == nil {
		for _, sp := range guardedPorts {
			if ok[sp.tap] {
				ports = append(ports, sp)
			}
		}
	}
	err = buildPortRuleset(h.cfg.PortTable, h.cfg.TapPrefix, h.cfg.SegmentPrefix, ports).apply()
	var sweep error
	if sg == nil {
		// Connections the filters no longer allow are forgotten, whatever
		// changed them and whenever (this agent may be new): their next
		// packets are judged afresh, and TCP is not picked up mid-stream.
		sweep = sweepConnections(guarded)
	}
	var refused error
	if len(budget) > 0 {
		refused = &RefusedError{Err: errors.Join(budget...)}
	}
	return errors.Join(refused, guard, brnf, sg, err, sweep)
}

// RefusedError says which ports a node refused to filter (they send
// nothing) for the size of their rules: it lasts until the rules change,
// so retrying soon does not help.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// OnlyRefused reports whether err says nothing but that ports were
// refused for the size of their rules.
func OnlyRefused(err error) bool {
	switch e := err.(type) {
	case nil:
		return false
	case *RefusedError:
		return true
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			if !OnlyRefused(x) {
				return false
			}
		}
		return len(e.Unwrap()) > 0
	case interface{ Unwrap() error }:
		return OnlyRefused(e.Unwrap())
	}
	return false
}
