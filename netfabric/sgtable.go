package netfabric

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Security groups on the host (HostConfig.SGTable, an inet table).
//
// A guest's frames are bridged, never routed, and this host kernel has no
// connection tracking in the bridge family (nf_conntrack_bridge), so the
// bridge hands IPv4 and IPv6 to the inet hooks (br_netfilter, with
// bridge-nf-call-iptables and -ip6tables on) and the rules are stateful
// there. The inet hooks see the segment's bridge as the input and output
// interface, not the guest's tap, so the port table's bridge chains write
// the tap into the packet's mark (its ifindex with the top bit set):
// prerouting the tap it came from, forward the tap it goes to, each before
// br_netfilter passes the packet on. Then:
//
//   - prerouting, before defragmentation: a segment's packets go into the
//     network's conntrack zone (Network.Zone), by the bridge they came in
//     on, so two projects' identical addresses never share a connection,
//     nor their fragments a reassembly;
//   - prerouting, after conntrack: a packet from a guarded tap that opens
//     a connection must match its port's egress rules;
//   - forward: a packet that opens a connection to a guarded tap must
//     match that port's ingress rules.
//
// Replies to allowed connections pass; DHCP, DHCPv6, neighbour discovery
// and MLD always do (as in Neutron); everything else a guarded port sends
// or is sent is dropped, and so is anything to or from one of our taps
// whose port is not known yet. The NAT network's taps are "open": no
// security groups. Each port's rules are the elements of a few sets, so
// the per-packet cost does not grow with the number of rules.

// markTap is set in the mark of a frame from (prerouting) or to (forward)
// one of our taps; the rest is the tap's ifindex. markChecked is added by
// the security groups' chains to such a frame they have seen.
const (
	markTap     = 0x80000000
	markChecked = 0x40000000
)

// maxPortElements is what one port's filter may take in set elements
// before the port is refused (it sends nothing) rather than risk the
// table, and every other port's filter with it; maxNodeElements is what
// a node's table takes in all. (A table of 20,000 interval elements takes
// about a second to load on the 2-core test machine: every change to a
// node's filters rebuilds it.)
const (
	maxPortElements = 5000
	maxNodeElements = 20000
)

// guardedPort is one port with security groups on this node.
type guardedPort struct {
	ifindex uint32
	filter  PortFilter
}

// zoneOf puts one interface's packets in a conntrack zone.
type zoneOf struct {
	ifindex uint32
	zone    uint16
}

// buildSGRuleset returns the security groups' table; pure, like the others.
func buildSGRuleset(table, tapPrefix string, open []uint32, guarded []guardedPort, zones []zoneOf) ruleset {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	accept := nftables.ChainPolicyAccept
	// Before connection tracking's defragmentation (-400), which then
	// reassembles each zone's fragments apart: a fragment from one project
	// never completes another's packet.
	zoneCh := &nftables.Chain{Name: "zone", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-450), Policy: &accept}
	egress := &nftables.Chain{Name: "egress", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept}
	ingress := &nftables.Chain{Name: "ingress", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}

	// Sorted copies: the caller's slices keep their order.
	open, guarded, zones = slices.Clone(open), slices.Clone(guarded), slices.Clone(zones)
	sort.Slice(open, func(i, j int) bool { return open[i] < open[j] })
	sort.Slice(guarded, func(i, j int) bool { return guarded[i].ifindex < guarded[j].ifindex })
	sort.Slice(zones, func(i, j int) bool { return zones[i].ifindex < zones[j].ifindex })
	ne := binaryutil.NativeEndian.PutUint32
	zoneType := nftables.TypeInteger
	zoneType.Bytes = 2
	var id uint32
	set := func(name string, key nftables.SetDatatype, interval bool) *nftables.Set {
		id++
		return &nftables.Set{Table: t, Name: name, ID: id, KeyType: key, Interval: interval, Concatenation: interval}
	}
	openSet := set("open", nftables.TypeMark, false)
	guardedSet := set("guarded", nftables.TypeMark, false)
	dhcpSet := set("dhcp", nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeIPAddr), false)
	dhcpSet.Concatenation = true
	zoneMap := set("zones", nftables.TypeIFIndex, false)
	zoneMap.IsMap, zoneMap.DataType = true, zoneType
	four := nftables.TypeIPAddr
	six := nftables.TypeIP6Addr
	out4 := set("out4", nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeInetProto, nftables.TypeInetService, four), true)
	out6 := set("out6", nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeInetProto, nftables.TypeInetService, six), true)
	in4 := set("in4", nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeInetProto, nftables.TypeInetService, four), true)
	in6 := set("in6", nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeInetProto, nftables.TypeInetService, six), true)
	out4all := set("out4_all", nftables.MustConcatSetType(nftables.TypeMark, four), true)
	out6all := set("out6_all", nftables.MustConcatSetType(nftables.TypeMark, six), true)
	in4all := set("in4_all", nftables.MustConcatSetType(nftables.TypeMark, four), true)
	in6all := set("in6_all", nftables.MustConcatSetType(nftables.TypeMark, six), true)

	// The chains look ports up by their mark once they have marked the
	// packet seen.
	var openE, guardedE, zoneE []nftables.SetElement
	for _, ix := range open {
		openE = append(openE, nftables.SetElement{Key: ne(ix | markTap | markChecked)})
	}
	for _, g := range guarded {
		guardedE = append(guardedE, nftables.SetElement{Key: ne(g.ifindex | markTap | markChecked)})
	}
	for _, z := range zones {
		zoneE = append(zoneE, nftables.SetElement{Key: ne(z.ifindex), Val: binaryutil.NativeEndian.PutUint16(z.zone)})
	}
	elems := map[*nftables.Set][]nftables.SetElement{}
	pad := func(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }
	var dhcpE []nftables.SetElement
	for _, g := range guarded {
		if gw := g.filter.Gateway; gw.Is4() {
			dhcpE = append(dhcpE, nftables.SetElement{Key: append(ne(g.ifindex|markTap|markChecked), gw.AsSlice()...)})
		}
		for _, dir := range []struct {
			port        []byte
			all, ported *nftables.Set
			boxes       Boxes
		}{
			{ne(g.ifindex | markTap | markChecked), out4all, out4, g.filter.Out4},
			{ne(g.ifindex | markTap | markChecked), out6all, out6, g.filter.Out6},
			{ne(g.ifindex | markTap | markChecked), in4all, in4, g.filter.In4},
			{ne(g.ifindex | markTap | markChecked), in6all, in6, g.filter.In6},
		} {
			for _, b := range dir.boxes.All {
				lo := append(append([]byte(nil), dir.port...), b.addr[0].AsSlice()...)
				hi := append(append([]byte(nil), dir.port...), b.addr[1].AsSlice()...)
				elems[dir.all] = append(elems[dir.all], nftables.SetElement{Key: lo, KeyEnd: hi})
			}
			for _, b := range dir.boxes.Ported {
				lo := append(append(append(append([]byte(nil), dir.port...), pad([]byte{b.proto[0]})...), pad(binaryutil.BigEndian.PutUint16(b.port[0]))...), b.addr[0].AsSlice()...)
				hi := append(append(append(append([]byte(nil), dir.port...), pad([]byte{b.proto[1]})...), pad(binaryutil.BigEndian.PutUint16(b.port[1]))...), b.addr[1].AsSlice()...)
				elems[dir.ported] = append(elems[dir.ported], nftables.SetElement{Key: lo, KeyEnd: hi})
			}
		}
	}

	const nh, th = expr.PayloadBaseNetworkHeader, expr.PayloadBaseTransportHeader
	meta := func(k expr.MetaKey, reg uint32) expr.Any { return &expr.Meta{Key: k, Register: reg} }
	cmp := func(op expr.CmpOp, data []byte) expr.Any { return &expr.Cmp{Op: op, Register: 1, Data: data} }
	nfproto := func(v6 bool) []expr.Any {
		p := byte(unix.NFPROTO_IPV4)
		if v6 {
			p = unix.NFPROTO_IPV6
		}
		return []expr.Any{meta(expr.MetaKeyNFPROTO, 1), cmp(expr.CmpOpEq, []byte{p})}
	}
	l4 := func(op expr.CmpOp, proto byte) []expr.Any {
		return []expr.Any{meta(expr.MetaKeyL4PROTO, 1), cmp(op, []byte{proto})}
	}
	ctState := func(bits uint32) []expr.Any {
		return []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne(bits), Xor: make([]byte, 4)},
			cmp(expr.CmpOpNeq, make([]byte, 4))}
	}
	// lookup builds key . [l4proto . th(off,2)] . addr into the registers
	// from 8 on, and looks it up in s.
	lookup := func(key expr.MetaKey, s *nftables.Set, thOff int, addrOff, addrLen uint32) []expr.Any {
		e := []expr.Any{meta(key, regConcat)}
		reg := uint32(regConcat + 1)
		if thOff >= 0 {
			e = append(e, meta(expr.MetaKeyL4PROTO, reg),
				&expr.Payload{DestRegister: reg + 1, Base: th, Offset: uint32(thOff), Len: 2})
			reg += 2
		}
		e = append(e, &expr.Payload{DestRegister: reg, Base: nh, Offset: addrOff, Len: addrLen},
			&expr.Lookup{SourceRegister: regConcat, SetName: s.Name, SetID: s.ID})
		return e
	}
	acc, drop := verdict(expr.VerdictAccept), verdict(expr.VerdictDrop)
	var rules []*nftables.Rule
	rule := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) {
		rules = append(rules, newRule(t, ch, comment, exprs...))
	}
	rule(zoneCh, "ct zone set iif map @zones",
		[]expr.Any{meta(expr.MetaKeyIIF, 1), &expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: zoneMap.Name, SetID: zoneMap.ID},
			&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true}})

	// The checks both directions share, after "not ours".
	common := func(ch *nftables.Chain) {
		icmp6 := []expr.Any{&expr.Payload{DestRegister: 1, Base: th, Offset: 0, Len: 1}}
		rule(ch, "icmpv6 type 130-137 accept (MLD, neighbour and router discovery)", nfproto(true), l4(expr.CmpOpEq, protoICMPv6),
			icmp6, []expr.Any{&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{130}, ToData: []byte{137}}}, acc)
		rule(ch, "icmpv6 type 143 accept (MLDv2 report)", nfproto(true), l4(expr.CmpOpEq, protoICMPv6), icmp6, []expr.Any{cmp(expr.CmpOpEq, []byte{143})}, acc)
		rule(ch, "ct state established,related accept", ctReplies(), acc)
		rule(ch, "ct state invalid drop", ctState(expr.CtStateBitINVALID), drop)
		// A new TCP connection begins with a SYN: one whose tracking was
		// removed because its rule went is not taken up again mid-stream
		// (in either direction).
		rule(ch, "tcp flags & (fin|syn|rst|ack) != syn drop (a new connection starts with a SYN)", l4(expr.CmpOpEq, protoTCP),
			[]expr.Any{&expr.Payload{DestRegister: 1, Base: th, Offset: 13, Len: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x17}, Xor: []byte{0}},
				cmp(expr.CmpOpNeq, []byte{0x02})}, drop)
	}
	// label records in the connection which guarded port let it in: the
	// sender's mark in the labels' first word (egress), the receiver's in
	// the second (ingress), so the sweep can judge it again by its ports
	// whatever their addresses (IPv6 link-local ones included).
	label := func(word int) []expr.Any {
		e := []expr.Any{}
		for i := 0; i < 4; i++ {
			if i == word {
				e = append(e, meta(expr.MetaKeyMARK, uint32(regConcat+i)))
			} else {
				e = append(e, &expr.Immediate{Register: uint32(regConcat + i), Data: make([]byte, 4)})
			}
		}
		return append(e, &expr.Ct{Key: expr.CtKeyLABELS, Register: regConcat, SourceRegister: true})
	}
	// sets checks one direction against the port's sets.
	sets := func(ch *nftables.Chain, key expr.MetaKey, all4, all6, p4, p6 *nftables.Set, dir string, off4, off6 uint32, word int) {
		for _, v := range []struct {
			v6        bool
			all, port *nftables.Set
			icmp      byte
			off, n    uint32
		}{{false, all4, p4, protoICMP, off4, 4}, {true, all6, p6, protoICMPv6, off6, 16}} {
			lbl := fmt.Sprintf(" ct label word %d set meta mark", word)
			rule(ch, fmt.Sprintf("%s . %s @%s%s accept", key2s(key), dir, v.all.Name, lbl), nfproto(v.v6), lookup(key, v.all, -1, v.off, v.n), label(word), acc)
			rule(ch, fmt.Sprintf("meta l4proto %d %s . meta l4proto . icmp type,code . %s @%s%s accept", v.icmp, key2s(key), dir, v.port.Name, lbl),
				nfproto(v.v6), l4(expr.CmpOpEq, v.icmp), lookup(key, v.port, 0, v.off, v.n), label(word), acc)
			rule(ch, fmt.Sprintf("meta l4proto != %d %s . meta l4proto . th dport . %s @%s%s accept", v.icmp, key2s(key), dir, v.port.Name, lbl),
				nfproto(v.v6), l4(expr.CmpOpNeq, v.icmp), lookup(key, v.port, 2, v.off, v.n), label(word), acc)
		}
	}

	markBit := []expr.Any{meta(expr.MetaKeyMARK, 1),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne(markTap), Xor: make([]byte, 4)},
		cmp(expr.CmpOpEq, make([]byte, 4))}
	notMarkBit := []expr.Any{meta(expr.MetaKeyMARK, 1),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne(markTap), Xor: make([]byte, 4)},
		cmp(expr.CmpOpNeq, make([]byte, 4))}
	isOpen := []expr.Any{meta(expr.MetaKeyMARK, 1), &expr.Lookup{SourceRegister: 1, SetName: openSet.Name, SetID: openSet.ID}}
	// A tap neither open nor guarded (its port unknown, or refused) gets
	// nothing through, not even an established connection's packets.
	notGuarded := []expr.Any{meta(expr.MetaKeyMARK, 1), &expr.Lookup{SourceRegister: 1, SetName: guardedSet.Name, SetID: guardedSet.ID, Invert: true}}
	// Seen: the port table's check after br_netfilter lets it on.
	// (mark & ^checked) ^ checked: an OR, whatever the bit was before (a
	// routed packet of the NAT network's guest meets both chains).
	seen := []expr.Any{meta(expr.MetaKeyMARK, 1),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne(^uint32(markChecked)), Xor: ne(markChecked)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}}
	rule(egress, fmt.Sprintf("meta mark & 0x%x != 0 meta mark set meta mark | 0x%x (seen here)", uint32(markTap), uint32(markChecked)), notMarkBit, seen)
	rule(egress, "meta mark & 0x80000000 == 0 accept (not from a guest's tap)", markBit, acc)
	rule(egress, "meta mark @open accept (the cluster's network: no security groups)", isOpen, acc)
	rule(egress, "meta mark != @guarded drop (a tap whose filter is not loaded)", notGuarded, drop)
	ports := func(sport, dport uint16) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: th, Offset: 0, Len: 4}, cmp(expr.CmpOpEq, append(binaryutil.BigEndian.PutUint16(sport), binaryutil.BigEndian.PutUint16(dport)...))}
	}
	rule(egress, "udp sport 68 udp dport 67 ip daddr 255.255.255.255 accept (DHCP)", nfproto(false), l4(expr.CmpOpEq, protoUDP), ports(68, 67),
		[]expr.Any{&expr.Payload{DestRegister: 1, Base: nh, Offset: 16, Len: 4}, cmp(expr.CmpOpEq, []byte{255, 255, 255, 255})}, acc)
	rule(egress, "udp sport 68 udp dport 67 meta mark . ip daddr @dhcp accept (DHCP to the port's gateway)", nfproto(false), l4(expr.CmpOpEq, protoUDP), ports(68, 67),
		[]expr.Any{meta(expr.MetaKeyMARK, regConcat), &expr.Payload{DestRegister: regConcat + 1, Base: nh, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: regConcat, SetName: dhcpSet.Name, SetID: dhcpSet.ID}}, acc)
	rule(egress, "udp sport 546 udp dport 547 ip6 daddr ff02::1:2 accept (DHCPv6)", nfproto(true), l4(expr.CmpOpEq, protoUDP), ports(546, 547),
		[]expr.Any{&expr.Payload{DestRegister: 1, Base: nh, Offset: 24, Len: 16}, cmp(expr.CmpOpEq, netip.MustParseAddr("ff02::1:2").AsSlice())}, acc)
	common(egress)
	sets(egress, expr.MetaKeyMARK, out4all, out6all, out4, out6, "daddr", 16, 24, 0)
	rule(egress, "drop (a guarded port's traffic no rule allows, or a tap whose port is not known yet)", drop)

	rule(ingress, fmt.Sprintf("meta mark & 0x%x != 0 meta mark set meta mark | 0x%x (seen here)", uint32(markTap), uint32(markChecked)), notMarkBit, seen)
	rule(ingress, "meta mark & 0x80000000 == 0 accept (not to a guest's tap)", markBit, acc)
	rule(ingress, "meta mark @open accept (the cluster's network: no security groups)", isOpen, acc)
	rule(ingress, "meta mark != @guarded drop (a tap whose filter is not loaded)", notGuarded, drop)
	common(ingress)
	sets(ingress, expr.MetaKeyMARK, in4all, in6all, in4, in6, "saddr", 12, 8, 1)
	rule(ingress, "drop (what no rule of the receiving port allows)", drop)

	rs := ruleset{table: t, chains: []*nftables.Chain{zoneCh, egress, ingress}, rules: rules,
		sets: []setWithElements{{set: openSet, elements: openE}, {set: guardedSet, elements: guardedE}, {set: dhcpSet, elements: dhcpE}, {set: zoneMap, elements: zoneE}}}
	for _, s := range []*nftables.Set{out4, out6, in4, in6, out4all, out6all, in4all, in6all} {
		rs.sets = append(rs.sets, setWithElements{set: s, elements: elems[s]})
	}
	return rs
}

func key2s(expr.MetaKey) string { return "meta mark" }

// enableBridgeNetfilter makes the bridge hand IPv4 and IPv6 to the inet
// hooks in this network namespace, which security groups need.
func enableBridgeNetfilter() error {
	for _, k := range []string{"iptables", "ip6tables"} {
		p := "/proc/sys/net/bridge/bridge-nf-call-" + k
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("security groups need the br_netfilter kernel module, which is not loaded")
		}
		if err == nil && len(b) > 0 && b[0] == '1' {
			continue
		}
		if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable %s: %w", p, err)
		}
	}
	return nil
}

// sweeper picks the tracked connections of guarded ports that their
// filters no longer allow, judged by their first packet: the sender's
// egress, the receiver's ingress, for the ports on this node. The ports
// are those the connection's labels name (set when the rules let it
// in); a connection without them (made before they existed) is matched
// by its addresses.
type sweeper struct {
	byMark map[uint32]*PortFilter                // ifindex|markTap|markChecked
	byAddr map[uint16]map[netip.Addr]*PortFilter // by zone
}

func newSweeper(guarded []guardedPort) sweeper {
	s := sweeper{byMark: map[uint32]*PortFilter{}, byAddr: map[uint16]map[netip.Addr]*PortFilter{}}
	for i := range guarded {
		f := &guarded[i].filter
		s.byMark[guarded[i].ifindex|markTap|markChecked] = f
		if s.byAddr[f.Zone] == nil {
			s.byAddr[f.Zone] = map[netip.Addr]*PortFilter{}
		}
		s.byAddr[f.Zone][f.Port.Addr()] = f
	}
	return s
}

func (s sweeper) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	srcIP, _ := netip.AddrFromSlice(fl.Forward.SrcIP)
	dstIP, _ := netip.AddrFromSlice(fl.Forward.DstIP)
	srcIP, dstIP = srcIP.Unmap(), dstIP.Unmap()
	var src, dst *PortFilter
	if len(fl.Labels) >= 8 {
		src, dst = s.byMark[binaryutil.NativeEndian.Uint32(fl.Labels[0:4])], s.byMark[binaryutil.NativeEndian.Uint32(fl.Labels[4:8])]
	}
	// Each side the labels do not name (none were set, or the tap is
	// new) is found by its address.
	if ports := s.byAddr[fl.Zone]; ports != nil {
		if src == nil {
			src = ports[srcIP]
		}
		if dst == nil {
			dst = ports[dstIP]
		}
	}
	if src == nil && dst == nil {
		return false
	}
	proto, port := fl.Forward.Protocol, fl.Forward.DstPort
	if !hasPorts(int(proto)) {
		port = 0
		if isICMP(int(proto)) {
			// Tracked ICMP is nearly always echo: judged as the request
			// (type 8 or 128, code 0).
			port = 8 << 8
			if proto == protoICMPv6 {
				port = 128 << 8
			}
		}
	}
	v6 := dstIP.Is6()
	if src != nil && !src.Out(v6).allow(proto, port, dstIP) {
		return true
	}
	if dst != nil && !dst.In(v6).allow(proto, port, srcIP) {
		return true
	}
	return false
}

// zoneFilter matches the connections of some conntrack zones.
type zoneFilter map[uint16]bool

func (z zoneFilter) MatchConntrackFlow(f *netlink.ConntrackFlow) bool { return z[f.Zone] }

// forgetZones removes every tracked connection of the zones.
func forgetZones(zones map[uint16]bool) error {
	delete(zones, 0) // the host's own
	if len(zones) == 0 {
		return nil
	}
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, zoneFilter(zones)); err != nil {
			errs = append(errs, fmt.Errorf("forget the connections of removed segments: %w", err))
		}
	}
	return errors.Join(errs...)
}

// zonesExcept matches the connections of every conntrack zone but some.
type zonesExcept map[uint16]bool

func (z zonesExcept) MatchConntrackFlow(f *netlink.ConntrackFlow) bool { return !z[f.Zone] }

// forgetZonesExcept removes every tracked connection outside keep (zone 0,
// the host's own, must be in it): Cairn owns the conntrack zones of the
// host's namespace.
func forgetZonesExcept(keep map[uint16]bool) error {
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, zonesExcept(keep)); err != nil {
			errs = append(errs, fmt.Errorf("forget the connections of segments removed before this start: %w", err))
		}
	}
	return errors.Join(errs...)
}

// sweepConnections removes the tracked connections of the guarded ports
// that their filters do not allow (any more).
func sweepConnections(guarded []guardedPort) error {
	if len(guarded) == 0 {
		return nil
	}
	s := newSweeper(guarded)
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, s); err != nil {
			errs = append(errs, fmt.Errorf("forget connections the security groups no longer allow: %w", err))
		}
	}
	return errors.Join(errs...)
}
