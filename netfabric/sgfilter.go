package netfabric

import (
	"net/netip"
	"sort"

	"github.com/hashicorp/go-memdb"
)

// How security groups become what a node's nftables matches: each rule
// of a port's groups becomes one or more boxes (a protocol range × a port
// range × a remote address range); the boxes of a port, one direction and
// one IP version are made disjoint and become the elements of one set.
// A packet is looked up once, whether its port has ten rules or a
// thousand.

// box is one kind of traffic a rule allows. For ICMP the "port" is the
// type and code (type<<8 | code), which is where they are in the header.
type box struct {
	proto [2]uint8
	port  [2]uint16
	addr  [2]netip.Addr
}

// PortFilter is what a node needs to filter one of its ports: the allowed
// traffic each way, by IP version.
type PortFilter struct {
	Port    Port
	VNI     uint32     // its network's segment
	Zone    uint16     // its network's conntrack zone
	Gateway netip.Addr // its network's gateway, a DHCP server
	// In4 and In6 are what may reach the port, by sender; Out4 and Out6
	// what it may send, by receiver.
	In4, Out4, In6, Out6 Boxes
}

// Boxes are the traffic one direction allows: All from some addresses
// whatever the protocol and port (a remote group's usual rule), Ported
// the rest. Each list is disjoint, and becomes one set's elements.
type Boxes struct {
	All, Ported []box
}

func splitBoxes(bs []box) Boxes {
	var all, rest []box
	for _, b := range bs {
		if b.proto == [2]uint8{0, 255} && b.port == [2]uint16{0, 65535} {
			all = append(all, b)
		} else {
			rest = append(rest, b)
		}
	}
	return Boxes{All: disjoint(all), Ported: disjoint(rest)}
}

var (
	anyIPv4 = [2]netip.Addr{netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})}
	anyIPv6 = [2]netip.Addr{netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})}
)

// groupMembers returns the addresses of each group's ports: their IPv4
// and IPv6 addresses and allowed address pairs.
func groupMembers(txn *memdb.Txn) map[string][]netip.Addr {
	nets := map[string]*Network{}
	for _, nw := range ListNetworks(txn) {
		nets[nw.ID] = &nw
	}
	out := map[string][]netip.Addr{}
	for _, p := range AllPorts(txn) {
		for _, g := range p.EffectiveGroups(nets[p.NetworkID]) {
			out[g] = append(out[g], p.Addr())
			if a, ok := p.Addr6(); ok {
				out[g] = append(out[g], a)
			}
			for _, ap := range p.AddressPairs {
				if a, err := netip.ParseAddr(ap.IP); err == nil {
					out[g] = append(out[g], a)
				}
			}
		}
	}
	return out
}

// Filters returns the filters of those of the ports (by id) that are on
// project networks.
func Filters(txn *memdb.Txn, ports []string) map[string]PortFilter {
	out := map[string]PortFilter{}
	var members map[string][]netip.Addr
	for _, id := range ports {
		p := GetPort(txn, id)
		if p == nil {
			continue
		}
		nw := GetNetwork(txn, p.NetworkID)
		if nw == nil || !nw.IsOverlay() {
			continue
		}
		if members == nil {
			members = groupMembers(txn)
		}
		out[id] = filterFor(txn, *p, nw, members)
	}
	return out
}

// filterFor computes a port's filter from its groups' rules in the state.
func filterFor(txn *memdb.Txn, p Port, nw *Network, members map[string][]netip.Addr) PortFilter {
	var groups []SecurityGroup
	for _, gid := range p.EffectiveGroups(nw) {
		g := GetSecurityGroup(txn, gid)
		if g == nil {
			if gid != DefaultGroupID(p.Project) {
				continue // gone: allows nothing
			}
			d := defaultGroup(p.Project, p.CreatedAt)
			g = &d
		}
		groups = append(groups, *g)
	}
	return NewPortFilter(p, nw, groups, members)
}

// NewPortFilter returns what groups allow port p on network nw; members
// are each group's ports' addresses, for rules with a remote group.
func NewPortFilter(p Port, nw *Network, groups []SecurityGroup, members map[string][]netip.Addr) PortFilter {
	f := PortFilter{Port: p, VNI: nw.VNI, Zone: nw.Zone(), Gateway: nw.GatewayAddr()}
	var in4, out4, in6, out6 []box
	for _, g := range groups {
		for _, r := range g.Rules {
			bs := ruleBoxes(r, members[r.RemoteGroup])
			switch {
			case r.Direction == "ingress" && r.EtherType == "IPv4":
				in4 = append(in4, bs...)
			case r.Direction == "egress" && r.EtherType == "IPv4":
				out4 = append(out4, bs...)
			case r.Direction == "ingress":
				in6 = append(in6, bs...)
			default:
				out6 = append(out6, bs...)
			}
		}
	}
	f.In4, f.Out4, f.In6, f.Out6 = splitBoxes(in4), splitBoxes(out4), splitBoxes(in6), splitBoxes(out6)
	return f
}

// In and Out are what may reach the port and what it may send, for IPv6
// or IPv4.
func (f *PortFilter) In(v6 bool) Boxes {
	if v6 {
		return f.In6
	}
	return f.In4
}

func (f *PortFilter) Out(v6 bool) Boxes {
	if v6 {
		return f.Out6
	}
	return f.Out4
}

func (b Boxes) allow(proto uint8, port uint16, addr netip.Addr) bool {
	return matches(b.All, proto, port, addr) || matches(b.Ported, proto, port, addr)
}

// Elements is how many set elements the filter takes.
func (f PortFilter) Elements() int {
	n := 0
	for _, b := range []Boxes{f.In4, f.Out4, f.In6, f.Out6} {
		n += len(b.All) + len(b.Ported)
	}
	return n
}

// ruleBoxes returns what one rule allows; members are its remote group's
// addresses.
func ruleBoxes(r Rule, members []netip.Addr) []box {
	v6 := r.EtherType == "IPv6"
	b := box{proto: [2]uint8{0, 255}, port: [2]uint16{0, 65535}, addr: anyIPv4}
	if v6 {
		b.addr = anyIPv6
	}
	if n, err := protocolNumber(r.Protocol); err == nil && n >= 0 {
		b.proto = [2]uint8{uint8(n), uint8(n)}
		switch {
		case hasPorts(n) && r.PortMin > 0:
			b.port = [2]uint16{uint16(r.PortMin), uint16(r.PortMax)}
		case isICMP(n) && r.ICMPType != nil:
			t := uint16(*r.ICMPType) << 8
			b.port = [2]uint16{t, t | 0xff}
			if r.ICMPCode != nil {
				b.port = [2]uint16{t | uint16(*r.ICMPCode), t | uint16(*r.ICMPCode)}
			}
		}
	}
	switch {
	case r.RemoteCIDR != "":
		p, err := netip.ParsePrefix(r.RemoteCIDR)
		if err != nil {
			return nil
		}
		b.addr = [2]netip.Addr{p.Masked().Addr(), lastAddrOf(p)}
	case r.RemoteGroup != "":
		var out []box
		for _, a := range members {
			if a.Is4() != v6 {
				m := b
				m.addr = [2]netip.Addr{a, a}
				out = append(out, m)
			}
		}
		return out
	}
	return []box{b}
}

// lastAddrOf returns the last address of a prefix, IPv4 or IPv6.
func lastAddrOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// disjoint returns boxes that cover exactly what bs cover and do not
// overlap (nftables refuses overlapping elements in a set): the protocol
// and port axes are cut where any box begins or ends; in each cell the
// address ranges of the boxes covering it are merged; then neighbouring
// cells that came out the same are joined again.
func disjoint(bs []box) []box {
	if len(bs) == 0 {
		return nil
	}
	// cuts returns the elementary intervals of [0,max] that the ranges
	// begin and end on.
	cuts := func(ranges [][2]uint32, max uint32) [][2]uint32 {
		pts := map[uint32]bool{0: true}
		for _, r := range ranges {
			pts[r[0]] = true
			if r[1] < max {
				pts[r[1]+1] = true
			}
		}
		var s []uint32
		for p := range pts {
			s = append(s, p)
		}
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		var out [][2]uint32
		for i, p := range s {
			end := max
			if i+1 < len(s) {
				end = s[i+1] - 1
			}
			out = append(out, [2]uint32{p, end})
		}
		return out
	}
	var protoRanges [][2]uint32
	for _, b := range bs {
		protoRanges = append(protoRanges, [2]uint32{uint32(b.proto[0]), uint32(b.proto[1])})
	}
	type protoCell struct {
		lo, hi uint32
		ports  []portCell
	}
	var protos []protoCell
	for _, pc := range cuts(protoRanges, 255) {
		var in []box
		var portRanges [][2]uint32
		for _, b := range bs {
			if uint32(b.proto[0]) <= pc[0] && pc[1] <= uint32(b.proto[1]) {
				in = append(in, b)
				portRanges = append(portRanges, [2]uint32{uint32(b.port[0]), uint32(b.port[1])})
			}
		}
		var ports []portCell
		if len(in) > 0 {
			for _, c := range cuts(portRanges, 65535) {
				var addrs [][2]netip.Addr
				for _, b := range in {
					if uint32(b.port[0]) <= c[0] && c[1] <= uint32(b.port[1]) {
						addrs = append(addrs, b.addr)
					}
				}
				addrs = mergeRanges(addrs)
				if len(addrs) == 0 {
					continue
				}
				if n := len(ports); n > 0 && ports[n-1].hi+1 == c[0] && sameAddrs(ports[n-1].addrs, addrs) {
					ports[n-1].hi = c[1]
					continue
				}
				ports = append(ports, portCell{lo: c[0], hi: c[1], addrs: addrs})
			}
		}
		if len(ports) == 0 {
			continue
		}
		if n := len(protos); n > 0 && protos[n-1].hi+1 == pc[0] && sameCells(protos[n-1].ports, ports) {
			protos[n-1].hi = pc[1]
			continue
		}
		protos = append(protos, protoCell{lo: pc[0], hi: pc[1], ports: ports})
	}
	var out []box
	for _, pc := range protos {
		for _, c := range pc.ports {
			for _, a := range c.addrs {
				out = append(out, box{proto: [2]uint8{uint8(pc.lo), uint8(pc.hi)}, port: [2]uint16{uint16(c.lo), uint16(c.hi)}, addr: a})
			}
		}
	}
	return out
}

// portCell is a port range and the merged address ranges allowed in it.
type portCell struct {
	lo, hi uint32
	addrs  [][2]netip.Addr
}

func sameAddrs(a, b [][2]netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sameCells(a, b []portCell) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].lo != b[i].lo || a[i].hi != b[i].hi || !sameAddrs(a[i].addrs, b[i].addrs) {
			return false
		}
	}
	return true
}

// mergeRanges sorts address ranges and joins those that overlap or touch.
func mergeRanges(rs [][2]netip.Addr) [][2]netip.Addr {
	if len(rs) == 0 {
		return nil
	}
	s := append([][2]netip.Addr(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i][0].Less(s[j][0]) })
	out := [][2]netip.Addr{s[0]}
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		next := last[1].Next()
		if !next.IsValid() || !next.Less(r[0]) { // overlaps or touches (or last ends the space)
			if last[1].Less(r[1]) {
				last[1] = r[1]
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// matches reports whether the boxes allow a packet: for tests, and the
// meaning the nftables sets must have.
func matches(bs []box, proto uint8, port uint16, addr netip.Addr) bool {
	for _, b := range bs {
		if b.proto[0] <= proto && proto <= b.proto[1] && b.port[0] <= port && port <= b.port[1] &&
			!addr.Less(b.addr[0]) && !b.addr[1].Less(addr) {
			return true
		}
	}
	return false
}
