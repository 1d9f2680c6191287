package netfabric

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A project network reaches the nodes that have its ports as one VXLAN
// segment, as Neutron's Linux bridge agent builds it, with the forwarding
// table filled from the replicated state (its l2population) instead of
// multicast or learning:
//
//   - a bridge per segment (segmentBridge), with no address: the host takes
//     no part in the network, whose CIDR may be another project's too;
//   - a VXLAN device on it (segmentVXLAN), learning off, sending from this
//     node's underlay address to UDP port 4789;
//   - static forwarding entries: every remote port's MAC to the node it is
//     on, and the all-zero MAC to every peer node, so broadcast and unknown
//     unicast (DHCP, ARP for an address the state does not know) are copied
//     to each peer (head-end replication);
//   - ARP and IPv6 neighbour solicitations answered by the bridge itself
//     (neigh_suppress on the VXLAN port, as in EVPN): the bridge device
//     holds a permanent neighbour entry for every bound port's addresses
//     (IPv4, IPv6, link-local) and the gateway's, and the bridge's
//     forwarding table a static entry for every remote port's MAC on the
//     VXLAN port. A guest asking for a remote port's address gets the answer
//     from its own node's kernel; a question about a local port is flooded
//     on the node only once the bridge has learned the port's MAC (the
//     guest's first frame, its DHCP request; a guest silent for longer than
//     the bridge's ageing time is asked about across the underlay once
//     more); neither crosses the underlay. It is kernel state, so
//     it keeps answering while the agent restarts. The kernel also keeps
//     gratuitous ARP and unsolicited neighbour advertisements off a
//     suppressing port, which would stop a VRRP address (an allowed address
//     pair) from moving between guests on different nodes: a network with
//     address pairs does not suppress, and its ARP floods as before.
//
// The guests' taps join their network's bridge (bridgeFor); port security
// (portsec.go) guards them whatever bridge they are on.

// vxlanPort is the IANA port for VXLAN.
const vxlanPort = 4789

// Segment is what this node needs to carry one project network.
type Segment struct {
	Network Network
	// Peers are the underlay addresses of the other nodes with ports on
	// the network: broadcast goes to each.
	Peers []netip.Addr
	// Remote are the ports on those nodes.
	Remote []RemotePort
	// Suppress: the segment's bridge answers ARP and neighbour
	// solicitations for Neighbours itself (a VXLAN segment none of whose
	// ports has allowed address pairs); Neighbours are the bound ports'
	// addresses and the gateway's.
	Suppress   bool
	Neighbours []Neighbour
	// Routed: a router connects the network, so its advertisements name
	// the gateway as the default IPv6 router. Egress: that router has a
	// gateway, a way out of the project, so the DNS server forwards what
	// the project has not got (segdns.go).
	Routed, Egress bool
}

// Neighbour is an address and the MAC that has it.
type Neighbour struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// RemotePort is a port on another node: frames for its MAC go there.
type RemotePort struct {
	MAC  net.HardwareAddr
	Node netip.Addr
}

// Segments returns the segments node must carry, from the replicated state:
// one for each project network with a port bound to node, and every
// network of a router that has one (the node routes into them). underlay gives a
// node's underlay address; ports on nodes it does not know are left out (a
// node that has not said where it is cannot be reached yet). arriving are
// owners (VMs) moving live to node: their ports are still bound where they
// come from, but node carries their networks already, so that the taps of
// the QEMU receiving them have a bridge to be on.
func Segments(txn *memdb.Txn, node string, underlay func(node string) (netip.Addr, bool), arriving ...string) []Segment {
	byNet := map[string][]Port{}
	nodesOf := map[string]map[string]bool{} // network -> the nodes with its ports
	var incoming []string                   // networks of the ports arriving at node
	for _, p := range AllPorts(txn) {
		byNet[p.NetworkID] = append(byNet[p.NetworkID], p)
		if p.Node != "" {
			if nodesOf[p.NetworkID] == nil {
				nodesOf[p.NetworkID] = map[string]bool{}
			}
			nodesOf[p.NetworkID][p.Node] = true
		}
		if slices.Contains(arriving, p.Owner) {
			incoming = append(incoming, p.NetworkID)
		}
	}
	// A node that runs a router (one of its networks has a port there)
	// carries all the router's networks: it routes into each.
	carriers := map[string]map[string]bool{}
	for id, nodes := range nodesOf {
		carriers[id] = maps.Clone(nodes)
	}
	routed, egress := map[string]bool{}, map[string]bool{}
	for _, r := range ListRouters(txn) {
		for _, id := range r.Networks {
			routed[id] = true
			egress[id] = egress[id] || r.External != ""
		}
		all := map[string]bool{}
		for _, id := range r.Networks {
			maps.Copy(all, nodesOf[id])
		}
		for _, id := range r.Networks {
			if carriers[id] == nil {
				carriers[id] = map[string]bool{}
			}
			maps.Copy(carriers[id], all)
		}
	}
	// Arriving ports make node carry their own networks only: it runs no
	// router for them before the switchover binds them here.
	for _, id := range incoming {
		if carriers[id] == nil {
			carriers[id] = map[string]bool{}
		}
		carriers[id][node] = true
	}
	var out []Segment
	for _, nw := range ListNetworks(txn) {
		if !nw.IsOverlay() || !carriers[nw.ID][node] {
			continue
		}
		s := Segment{Network: nw, Routed: routed[nw.ID], Egress: egress[nw.ID]}
		if nw.IsVLAN() {
			out = append(out, s) // the switch carries it between the boxes
			continue
		}
		peers := map[netip.Addr]bool{}
		for other := range carriers[nw.ID] {
			if other == node {
				continue
			}
			if addr, ok := underlay(other); ok {
				peers[addr.Unmap()] = true
			}
		}
		if !slices.ContainsFunc(byNet[nw.ID], func(p Port) bool { return len(p.AddressPairs) > 0 }) {
			s.Suppress, s.Neighbours = true, neighbours(nw, byNet[nw.ID])
		}
		for _, p := range byNet[nw.ID] {
			if p.Node == "" || p.Node == node {
				continue
			}
			if addr, ok := underlay(p.Node); ok {
				s.Remote = append(s.Remote, RemotePort{MAC: p.HardwareAddr(), Node: addr.Unmap()})
			}
		}
		for a := range peers {
			s.Peers = append(s.Peers, a)
		}
		sort.Slice(s.Peers, func(i, j int) bool { return s.Peers[i].Less(s.Peers[j]) })
		out = append(out, s)
	}
	return out
}

// neighbours returns the addresses a segment's bridge answers for: each
// bound port's IPv4, IPv6 and link-local address (guests use their EUI-64
// link-local address: port security), and the gateway's.
func neighbours(nw Network, ports []Port) []Neighbour {
	gw := GatewayMAC(nw.ID)
	var out []Neighbour
	if a := nw.GatewayAddr(); a.IsValid() {
		out = append(out, Neighbour{a, gw})
	}
	out = append(out, Neighbour{nw.GatewayLL(), gw})
	if a, ok := nw.Gateway6(); ok {
		out = append(out, Neighbour{a, gw})
	}
	for _, p := range ports {
		mac := p.HardwareAddr()
		if p.Node == "" || len(mac) != 6 {
			continue
		}
		if a := p.Addr(); a.Is4() {
			out = append(out, Neighbour{a, mac})
		}
		if a, ok := p.Addr6(); ok {
			out = append(out, Neighbour{a, mac})
		}
		out = append(out, Neighbour{LinkLocal(mac), mac})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// segmentBridge and segmentVXLAN name a segment's devices by its VNI (six
// hex digits fit IFNAMSIZ beside the prefix).
func (h *Host) segmentBridge(vni uint32) string {
	return fmt.Sprintf("%s%06x", h.cfg.SegmentPrefix+"b", vni)
}

func (h *Host) segmentVXLAN(vni uint32) string {
	return fmt.Sprintf("%s%06x", h.cfg.SegmentPrefix+"x", vni)
}

// segmentVLAN names a VLAN network's 802.1Q device, its bridge's uplink.
func (h *Host) segmentVLAN(vni uint32) string {
	return fmt.Sprintf("%s%06x", h.cfg.SegmentPrefix+"v", vni)
}

// segmentUplink names the device that carries a segment off this node.
func (h *Host) segmentUplink(nw Network) string {
	if nw.IsVLAN() {
		return h.segmentVLAN(nw.VNI)
	}
	return h.segmentVXLAN(nw.VNI)
}

// ReconcileSegments makes this node carry exactly segs: each segment's
// bridge and VXLAN device, its forwarding entries, and its local taps on
// its bridge. Segments no longer wanted are removed. It is idempotent,
// repairs drift, and leaves running guests' frames flowing: nothing that
// is already right is touched.
func (h *Host) ReconcileSegments(ctx context.Context, segs []Segment) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(segs) > 0 && !h.cfg.Underlay.IsValid() {
		return fmt.Errorf("reconcile segments: this node has no underlay address")
	}
	keep := map[string]bool{}
	want := map[string]Segment{}
	peers := map[netip.Addr]bool{}
	for _, s := range segs {
		want[s.Network.ID] = s
		if !s.Network.IsOverlay() || s.Network.VNI < minVNI || s.Network.VNI > maxVNI {
			return fmt.Errorf("reconcile segments: network %s is not a project network with a segment id", s.Network.ID)
		}
		keep[h.segmentBridge(s.Network.VNI)] = true
		keep[h.segmentUplink(s.Network)] = true
		for _, p := range s.Peers {
			peers[p] = true
		}
	}
	// The guard takes VXLAN from the new peers before any segment does.
	h.segMu.Lock()
	h.peers = h.peers[:0]
	for p := range peers {
		h.peers = append(h.peers, p)
	}
	h.segMu.Unlock()
	if err := h.applyPortSecurity(); err != nil {
		return fmt.Errorf("reconcile segments: %w", err)
	}

	var errs []error
	built := map[string]Segment{}
	for _, s := range segs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := h.ensureSegment(s); err != nil {
			errs = append(errs, fmt.Errorf("segment of network %s: %w", s.Network.ID, err))
			continue
		}
		built[s.Network.ID] = s
	}
	// The taps find their bridge from here from now on: only segments
	// that are really there.
	h.segMu.Lock()
	gone := map[uint16]bool{}
	for id, s := range h.segs {
		if _, ok := want[id]; !ok {
			gone[s.Network.Zone()] = true
		}
	}
	for _, s := range want {
		delete(gone, s.Network.Zone()) // still in use here
	}
	h.segs = built
	h.segMu.Unlock()
	h.stopSegmentServers(want)

	// Uplinks first: one left without its bridge would be up on its own.
	links, err := linkList()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, kind := range []string{"x", "v", "b"} {
		for _, l := range links {
			name := l.Attrs().Name
			if h.ownsSegmentLink(name) && name[len(h.cfg.SegmentPrefix):][:1] == kind && !keep[name] {
				h.log.Info("removing segment device", "link", name)
				if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
				}
			}
		}
	}
	// A segment that left this node (its devices gone now) leaves no
	// connections behind for a network that may get its zone later. After a
	// start, this node does not know which segments went while the agent
	// was down: every zone but those of the segments here now is forgotten.
	if !h.zonesSwept {
		keepZones := map[uint16]bool{0: true} // the host's own
		for _, s := range want {
			keepZones[s.Network.Zone()] = true
		}
		if err := forgetZonesExcept(keepZones); err != nil {
			errs = append(errs, err)
		} else {
			h.zonesSwept = true
		}
	} else if err := forgetZones(gone); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, h.attachTaps())
	// The segments' bridges are in place now: their conntrack zones.
	errs = append(errs, h.applyPortSecurity())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reconcile segments: %w", err)
	}
	return nil
}

// segmentPeers returns the nodes this one may take VXLAN from.
func (h *Host) segmentPeers() []netip.Addr {
	h.segMu.Lock()
	defer h.segMu.Unlock()
	return append([]netip.Addr(nil), h.peers...)
}

func (h *Host) ownsSegmentLink(name string) bool {
	p := h.cfg.SegmentPrefix
	return p != "" && len(name) == len(p)+7 && (strings.HasPrefix(name, p+"b") || strings.HasPrefix(name, p+"x") || strings.HasPrefix(name, p+"v"))
}

// ensureSegment builds one segment's bridge and its uplink: a VXLAN device
// and its forwarding entries, or a VLAN network's 802.1Q device.
func (h *Host) ensureSegment(s Segment) error {
	nw := s.Network
	brName, vxName := h.segmentBridge(nw.VNI), h.segmentUplink(nw)
	br, err := netlink.LinkByName(brName)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		// The gateway's MAC, the same on every node: frames to the
		// gateway stay on the guest's own node (segdhcp.go).
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: brName, MTU: nw.MTU,
			HardwareAddr: GatewayMAC(nw.ID)}})
		if err == nil {
			h.log.Info("created segment bridge", "bridge", brName, "network", nw.ID, "vni", nw.VNI)
			br, err = netlink.LinkByName(brName)
		}
	}
	if err != nil {
		return fmt.Errorf("bridge %s: %w", brName, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("bridge %s: a %s link has that name", brName, br.Type())
	}
	// The host takes no part in a project network: no IPv6 address of its
	// own on it (so no link-local, no SLAAC from a guest's RA), and no ARP
	// answers for the host's addresses, which would invite guests to it.
	if br.Attrs().HardwareAddr.String() != GatewayMAC(nw.ID).String() {
		if err := netlink.LinkSetHardwareAddr(br, GatewayMAC(nw.ID)); err != nil {
			return fmt.Errorf("bridge %s: set MAC: %w", brName, err)
		}
	}
	// A VXLAN segment's bridge keeps IPv6 neighbour entries (for the
	// answers it gives), which a device with IPv6 off cannot hold: IPv6 is
	// on there, with no address, no SLAAC and no forwarding.
	if err := segmentSysctls(brName, true, !nw.IsVLAN()); err != nil {
		return err
	}
	if err := setMTU(br, nw.MTU); err != nil {
		return err
	}

	if nw.IsVLAN() {
		up, err := h.ensureVLAN(nw, vxName)
		if err != nil {
			return err
		}
		if up.Attrs().MasterIndex != br.Attrs().Index {
			if err := netlink.LinkSetMaster(up, br); err != nil {
				return fmt.Errorf("VLAN device %s: attach to %s: %w", vxName, brName, err)
			}
		}
		for _, l := range []netlink.Link{up, br} {
			if err := netlink.LinkSetUp(l); err != nil {
				return fmt.Errorf("%s: up: %w", l.Attrs().Name, err)
			}
		}
		return h.ensureSegmentServer(s, br)
	}

	vx, err := netlink.LinkByName(vxName)
	if err == nil {
		cur, ok := vx.(*netlink.Vxlan)
		if !ok || cur.VxlanId != int(nw.VNI) || !cur.SrcAddr.Equal(h.cfg.Underlay.AsSlice()) || cur.Port != vxlanPort || cur.Learning {
			// Not the device we want (the node's underlay address changed,
			// say): VXLAN devices cannot be changed in place.
			h.log.Info("recreating VXLAN device", "link", vxName)
			if err := netlink.LinkDel(vx); err != nil {
				return fmt.Errorf("VXLAN %s: %w", vxName, err)
			}
			err = netlink.LinkNotFoundError{}
		}
	}
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		dev := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: vxName, MTU: nw.MTU}, VxlanId: int(nw.VNI),
			SrcAddr: h.cfg.Underlay.AsSlice(), Port: vxlanPort, Learning: false}
		if err = netlink.LinkAdd(dev); err == nil {
			h.log.Info("created VXLAN device", "link", vxName, "vni", nw.VNI)
			vx, err = netlink.LinkByName(vxName)
		}
	}
	if err != nil {
		return fmt.Errorf("VXLAN %s: %w", vxName, err)
	}
	if err := setMTU(vx, nw.MTU); err != nil {
		return err
	}
	if err := segmentSysctls(vxName, false, false); err != nil {
		return err
	}
	if vx.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(vx, br); err != nil {
			return fmt.Errorf("VXLAN %s: attach to %s: %w", vxName, brName, err)
		}
	}
	if err := h.syncFDB(vx, s); err != nil {
		return err
	}
	if err := suppressNeighbours(br, vx, s); err != nil {
		return err
	}
	for _, l := range []netlink.Link{vx, br} {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s: up: %w", l.Attrs().Name, err)
		}
	}
	return h.ensureSegmentServer(s, br)
}

// ensureVLAN makes a VLAN network's 802.1Q device on its interface, named
// name, and brings the interface up (as Neutron's Linux bridge agent does).
// The interface is the site's: a box without it, or with an MTU too small
// for the network, carries no ports of the network and says why.
func (h *Host) ensureVLAN(nw Network, name string) (netlink.Link, error) {
	parent, err := netlink.LinkByName(nw.Interface)
	if err != nil {
		return nil, fmt.Errorf("VLAN %d: interface %s: %w", nw.VLAN, nw.Interface, err)
	}
	if parent.Attrs().MTU < nw.MTU {
		return nil, fmt.Errorf("VLAN %d: interface %s has MTU %d, less than the network's %d", nw.VLAN, nw.Interface, parent.Attrs().MTU, nw.MTU)
	}
	if err := netlink.LinkSetUp(parent); err != nil {
		return nil, fmt.Errorf("VLAN %d: interface %s: up: %w", nw.VLAN, nw.Interface, err)
	}
	l, err := netlink.LinkByName(name)
	if err == nil {
		if cur, ok := l.(*netlink.Vlan); !ok || cur.VlanId != nw.VLAN || cur.ParentIndex != parent.Attrs().Index ||
			cur.VlanProtocol != netlink.VLAN_PROTOCOL_8021Q {
			h.log.Info("recreating VLAN device", "link", name)
			if err := netlink.LinkDel(l); err != nil {
				return nil, fmt.Errorf("VLAN device %s: %w", name, err)
			}
			err = netlink.LinkNotFoundError{}
		}
	}
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		dev := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: parent.Attrs().Index, MTU: nw.MTU},
			VlanId: nw.VLAN, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
		if err = netlink.LinkAdd(dev); err == nil {
			h.log.Info("created VLAN device", "link", name, "interface", nw.Interface, "vlan", nw.VLAN)
			l, err = netlink.LinkByName(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("VLAN device %s (VLAN %d on %s): %w", name, nw.VLAN, nw.Interface, err)
	}
	if err := setMTU(l, nw.MTU); err != nil {
		return nil, err
	}
	if err := segmentSysctls(name, false, false); err != nil {
		return nil, err
	}
	return l, nil
}

// ensureSegmentServer runs the segment's DHCP and gateway ARP on its
// bridge, restarting them if the bridge was recreated or the network
// changed; h.mu must be held.
func (h *Host) ensureSegmentServer(seg Segment, br netlink.Link) error {
	nw := seg.Network
	if cur := h.segSrv[nw.ID]; cur != nil {
		if cur.ifindex == br.Attrs().Index && cur.routed == seg.Routed && cur.forward == seg.Egress && cur.nw.CIDR == nw.CIDR && cur.nw.MTU == nw.MTU &&
			fmt.Sprint(cur.nw.DNS) == fmt.Sprint(nw.DNS) && cur.nw.CIDR6 == nw.CIDR6 && cur.nw.IPv6Mode == nw.IPv6Mode &&
			cur.nw.Domain == nw.Domain && cur.nw.Gateway == nw.Gateway && cur.nw.SiteGateway == nw.SiteGateway {
			return nil
		}
		cur.stop()
		delete(h.segSrv, nw.ID)
	}
	ifi, err := net.InterfaceByIndex(br.Attrs().Index)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", br.Attrs().Name, err)
	}
	srv, err := h.startSegmentServer(seg, ifi)
	if err != nil {
		return err
	}
	if h.segSrv == nil {
		h.segSrv = map[string]*segServer{}
	}
	h.segSrv[nw.ID] = srv
	return nil
}

// stopSegmentServers stops the servers of segments keep does not hold
// (all, for nil); h.mu must be held.
func (h *Host) stopSegmentServers(keep map[string]Segment) {
	for id, srv := range h.segSrv {
		if _, ok := keep[id]; !ok {
			srv.stop()
			delete(h.segSrv, id)
		}
	}
}

// segmentSysctls keeps the host out of a segment's device: no IPv6 of its
// own on it (no link-local, no neighbour discovery or SLAAC from a guest's
// RA) and, on the bridge, no ARP answers for the host's addresses, which
// would invite guests to it. With neighbours (a bridge that answers for
// the guests), IPv6 stays on so the device holds IPv6 neighbour entries,
// but with no address of any kind (addr_gen_mode none, set before IPv6
// comes on), no router advertisements taken, no forwarding; the guard
// drops whatever reaches the host from it either way. A kernel without IPv6
// has nothing to turn off.
func segmentSysctls(dev string, bridge, neighbours bool) error {
	kvs := [][2]string{{"ipv6/conf/" + dev + "/disable_ipv6", "1"}}
	if neighbours {
		kvs = [][2]string{}
		for _, kv := range [][2]string{{"addr_gen_mode", "1"}, {"accept_ra", "0"}, {"autoconf", "0"},
			{"forwarding", "0"}, {"router_solicitations", "0"}, {"disable_ipv6", "0"}} {
			kvs = append(kvs, [2]string{"ipv6/conf/" + dev + "/" + kv[0], kv[1]})
		}
	}
	if bridge {
		kvs = append(kvs, [2]string{"ipv4/conf/" + dev + "/arp_ignore", "8"})
	}
	for _, kv := range kvs {
		path := filepath.Join("/proc/sys/net", kv[0])
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == kv[1] {
			continue
		}
		err := os.WriteFile(path, []byte(kv[1]), 0o644)
		if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(kv[0], "ipv6/") {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
	}
	if neighbours {
		// An address made before addr_gen_mode was none (an older
		// version's bridge brought up with IPv6 on) goes.
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("%s: list addresses: %w", dev, err)
		}
		for _, a := range addrs {
			if err := netlink.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("%s: remove %s: %w", dev, a.IPNet, err)
			}
		}
	}
	return nil
}

// ipv6Kernel reports whether the kernel has IPv6.
func ipv6Kernel() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

// suppressNeighbours makes a VXLAN segment's bridge answer ARP and
// neighbour solicitations for s.Neighbours itself (see the top of this
// file): neigh_suppress on the VXLAN port, a static entry in the bridge's
// forwarding table for each remote port's MAC on that port, and exactly
// s.Neighbours as permanent neighbours of the bridge device. Entries are
// changed one by one, never flushed, so answers do not stop.
func suppressNeighbours(br, vx netlink.Link, s Segment) error {
	if pi, err := netlink.LinkGetProtinfo(vx); err != nil || pi.NeighSuppress != s.Suppress {
		if err := netlink.LinkSetBrNeighSuppress(vx, s.Suppress); err != nil {
			return fmt.Errorf("VXLAN %s: neigh_suppress: %w", vx.Attrs().Name, err)
		}
	}
	// The bridge's own entries on the VXLAN port: static ones are ours.
	wantFDB := map[string]bool{}
	for _, r := range s.Remote {
		if s.Suppress {
			wantFDB[r.MAC.String()] = true
		}
	}
	fdb, err := retryDump(func() ([]netlink.Neigh, error) { return netlink.NeighList(vx.Attrs().Index, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("VXLAN %s: list forwarding entries: %w", vx.Attrs().Name, err)
	}
	master := func(mac net.HardwareAddr) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP,
			Flags: netlink.NTF_MASTER, HardwareAddr: mac}
	}
	var errs []error
	for _, n := range fdb {
		if n.IP != nil || n.Flags&netlink.NTF_SELF != 0 || n.State&netlink.NUD_NOARP == 0 || n.State&netlink.NUD_PERMANENT != 0 {
			continue // the tunnel's entries, learned ones, the device's own MAC
		}
		if wantFDB[n.HardwareAddr.String()] {
			delete(wantFDB, n.HardwareAddr.String())
			continue
		}
		if err := netlink.NeighDel(master(n.HardwareAddr)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove bridge entry %s: %w", n.HardwareAddr, err))
		}
	}
	for m := range wantFDB {
		mac, _ := net.ParseMAC(m)
		if err := netlink.NeighSet(master(mac)); err != nil {
			errs = append(errs, fmt.Errorf("add bridge entry %s: %w", m, err))
		}
	}
	// The bridge device's neighbours: exactly the segment's.
	want := map[netip.Addr]string{}
	for _, n := range s.Neighbours {
		want[n.IP] = n.MAC.String()
	}
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		have, err := retryDump(func() ([]netlink.Neigh, error) { return netlink.NeighList(br.Attrs().Index, family) })
		if err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: list neighbours: %w", br.Attrs().Name, err))
			continue
		}
		for _, n := range have {
			ip, _ := netip.AddrFromSlice(n.IP)
			ip = ip.Unmap()
			if mac, ok := want[ip]; ok && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == mac {
				delete(want, ip)
				continue
			}
			if _, ok := want[ip]; ok {
				continue // replaced below
			}
			if err := netlink.NeighDel(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: family, IP: n.IP}); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("bridge %s: remove neighbour %s: %w", br.Attrs().Name, n.IP, err))
			}
		}
	}
	ipv6 := ipv6Kernel()
	for ip, m := range want {
		family := unix.AF_INET
		if ip.Is6() {
			if !ipv6 {
				continue // a kernel without IPv6: nothing to answer
			}
			family = unix.AF_INET6
		}
		mac, _ := net.ParseMAC(m)
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: mac}); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: neighbour %s: %w", br.Attrs().Name, ip, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("segment %s: %w", br.Attrs().Name, err)
	}
	return nil
}

func setMTU(l netlink.Link, mtu int) error {
	if l.Attrs().MTU == mtu {
		return nil
	}
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("%s: MTU %d: %w", l.Attrs().Name, mtu, err)
	}
	return nil
}

// fdbKey is one forwarding entry of a VXLAN device: a MAC behind a node.
type fdbKey struct {
	mac  string
	node netip.Addr
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// syncFDB makes the VXLAN device's own forwarding table (the "self"
// entries: which node a MAC is behind) exactly what the segment says.
func (h *Host) syncFDB(vx netlink.Link, s Segment) error {
	want := map[fdbKey]bool{}
	for _, p := range s.Peers {
		want[fdbKey{zeroMAC.String(), p}] = true
	}
	for _, r := range s.Remote {
		want[fdbKey{r.MAC.String(), r.Node}] = true
	}
	have, err := retryDump(func() ([]netlink.Neigh, error) { return netlink.NeighList(vx.Attrs().Index, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("VXLAN %s: list forwarding entries: %w", vx.Attrs().Name, err)
	}
	entry := func(mac net.HardwareAddr, node net.IP) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP | netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, HardwareAddr: mac, IP: node}
	}
	var errs []error
	for _, n := range have {
		if n.IP == nil {
			continue // the bridge's own entries for the device, not the tunnel's
		}
		node, ok := netip.AddrFromSlice(n.IP)
		if k := (fdbKey{n.HardwareAddr.String(), node.Unmap()}); ok && want[k] {
			delete(want, k)
			continue
		}
		if err := netlink.NeighDel(entry(n.HardwareAddr, n.IP)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove forwarding entry %s via %s: %w", n.HardwareAddr, n.IP, err))
		}
	}
	for k := range want {
		mac, _ := net.ParseMAC(k.mac)
		// Append, not set: the all-zero MAC has one entry per peer.
		if err := netlink.NeighAppend(entry(mac, k.node.AsSlice())); err != nil {
			errs = append(errs, fmt.Errorf("add forwarding entry %s via %s: %w", k.mac, k.node, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("VXLAN %s: %w", vx.Attrs().Name, err)
	}
	return nil
}

// ErrSegmentMissing: the tap's project network has no segment on this
// node yet (ReconcileSegments attaches it once it has).
var ErrSegmentMissing = errors.New("the segment of its project network is not on this node yet")

// bridgeFor returns the bridge a tap belongs on: its port's segment bridge
// for a project network, else the NAT network's bridge (where a tap with
// no port is also kept, and port security drops all it sends).
func (h *Host) bridgeFor(tap string) (name string, mtu int, err error) {
	for _, p := range h.leases.Ports() {
		if h.TapName(p.ID) != tap {
			continue
		}
		h.segMu.Lock()
		s, ok := h.segs[p.NetworkID]
		h.segMu.Unlock()
		if ok {
			return h.segmentBridge(s.Network.VNI), s.Network.MTU, nil
		}
		if nw, known := h.leases.Network(); known && nw.ID == p.NetworkID {
			return h.cfg.Bridge, 0, nil
		}
		return "", 0, fmt.Errorf("tap %s: %w: network %s", tap, ErrSegmentMissing, p.NetworkID)
	}
	return h.cfg.Bridge, 0, nil
}

// removeSegments deletes every segment device this Host owns.
func (h *Host) removeSegments() error {
	h.segMu.Lock()
	h.segs, h.peers = nil, nil
	h.segMu.Unlock()
	links, err := linkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if h.ownsSegmentLink(l.Attrs().Name) {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", l.Attrs().Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// WatchSegments adds to ws what Segments reads (the networks and the
// ports), and the security groups, so a caller can wait for a change that
// may move a segment or change a port's filter.
func WatchSegments(txn *memdb.Txn, ws memdb.WatchSet) {
	for _, table := range []string{tNetworks, tPorts, tSecGroups, tRouters, tFloatingIPs} {
		if it, err := txn.Get(table, "id"); err == nil {
			ws.Add(it.WatchCh())
		}
	}
}
