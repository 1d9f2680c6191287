package netfabric

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A router on a node is a network namespace of its own (Neutron's qrouter
// namespace), so projects' overlapping addresses never meet in one
// routing table or connection tracker:
//
//   - one veth per connected network: the node's end (prefix+"q"+VNI) on
//     the segment's bridge, the router's end (qr-VNI) with the network's
//     gateway address and a MAC of this node's own (routerMAC);
//   - on the segment's bridge, frames from a guest to the gateway's MAC,
//     which is the same on every node, go to the local router: a bridge
//     table (HostConfig.RouteTable) rewrites their destination to the local
//     router's MAC. DHCP to the gateway stays with the node's DHCP server,
//     and the node still answers ARP for the gateway itself (segdhcp.go).
//     The router neither answers nor asks ARP on its networks: it knows
//     their ports' MACs from the state (permanent neighbours), so guests
//     never learn a node's own MAC for their gateway, and a guest that
//     moves keeps its gateway;
//   - with a gateway, a macvlan (qg) on the external network's interface,
//     with this node's address of the router and its floating IPs, a
//     default route to the external network's gateway, and an nftables
//     table: floating IPs 1:1, everything else out from the node's
//     address, nothing in but replies and floating IPs.
//
// Namespaces are named RouterNSPrefix+router id; ReconcileRouters removes
// those of routers this node no longer runs, leftovers of a crash included.

// routerMAC is a router's MAC on a network on one node.
func routerMAC(networkID, node string) net.HardwareAddr {
	return MACFor("router:" + networkID + ":" + node)
}

const (
	ctStatusDNAT = 1 << 5 // IPS_DST_NAT: the connection's destination was translated

	routerTable = "cairn_router" // in each router's namespace
	routerExt   = "qg"           // the router's link on the external network
)

func routerIfname(vni uint32) string { return fmt.Sprintf("qr-%06x", vni) }

func (h *Host) routerVeth(vni uint32) string {
	return fmt.Sprintf("%s%06x", h.cfg.SegmentPrefix+"q", vni)
}

func (h *Host) ownsRouterVeth(name string) bool {
	p := h.cfg.SegmentPrefix
	return p != "" && len(name) == len(p)+7 && strings.HasPrefix(name, p+"q")
}

// routerNSPrefix names this node's router namespaces: the configured
// prefix, else one made from the node's own namespace, which no other
// node on the host shares.
func (h *Host) routerNSPrefix() (string, error) {
	if h.cfg.RouterNSPrefix != "" {
		return h.cfg.RouterNSPrefix, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &st); err != nil {
		return "", fmt.Errorf("router namespaces: %w", err)
	}
	return fmt.Sprintf("cairn-%x-", st.Ino), nil
}

// ReconcileRouters makes this node run exactly plans, after
// ReconcileSegments has built their segments. Idempotent; what is already
// right is not touched, so traffic through a router flows on.
func (h *Host) ReconcileRouters(plans []RouterPlan) error {
	h.rtMu.Lock()
	defer h.rtMu.Unlock()
	prefix, err := h.routerNSPrefix()
	if err != nil {
		return err
	}
	var errs []error
	want := map[string]bool{}
	veths := map[string]bool{}
	var routed []RouterPlan
	for _, pl := range plans {
		name := prefix + pl.Router.ID
		want[name] = true
		for _, nw := range pl.Networks {
			veths[h.routerVeth(nw.VNI)] = true
		}
		ok, err := h.ensureRouter(name, pl)
		if err != nil {
			errs = append(errs, fmt.Errorf("router %s: %w", pl.Router.ID, err))
		}
		if ok {
			routed = append(routed, pl)
		}
	}
	// Guests reach the routers that are in place.
	errs = append(errs, h.applyRouteTable(routed))
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && !want[e.Name()] {
			h.log.Info("removing router namespace", "netns", e.Name())
			if err := deleteRouterNS(e.Name()); err != nil {
				errs = append(errs, fmt.Errorf("remove router namespace %s: %w", e.Name(), err))
			}
			h.natMu.Lock()
			delete(h.natSeen, e.Name())
			h.natMu.Unlock()
		}
	}
	links, err := linkList()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range links {
		if n := l.Attrs().Name; h.ownsRouterVeth(n) && !veths[n] {
			// (Gone already if its namespace went just now.)
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("remove %s: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

const netnsDir = "/run/netns"

// openRouterNS returns the router's namespace, made if missing. A new
// namespace is made from a thread in the node's own namespace.
func openRouterNS(name string) (ns netns.NsHandle, created bool, err error) {
	if ns, err := netns.GetFromName(name); err == nil {
		var st unix.Statfs_t
		if unix.Fstatfs(int(ns), &st) == nil && st.Type == unix.NSFS_MAGIC {
			return ns, false, nil
		}
		// A file whose namespace is gone (its mount went with a mount
		// namespace, say): made again below.
		ns.Close()
	}
	origin, err := netns.Get()
	if err != nil {
		return 0, false, err
	}
	defer origin.Close()
	type res struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		if err := netns.Set(origin); err != nil {
			ch <- res{err: err}
			return
		}
		_ = os.Remove(netnsDir + "/" + name) // a file left without its mount
		ns, err := netns.NewNamed(name)
		if err == nil {
			if lo, lerr := netlink.LinkByName("lo"); lerr == nil {
				err = netlink.LinkSetUp(lo)
			}
			if err != nil {
				ns.Close()
			}
		}
		ch <- res{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		return 0, false, fmt.Errorf("create namespace %s: %w", name, r.err)
	}
	return r.ns, true, nil
}

// deleteRouterNS removes a router's namespace: its links first, so that
// whatever still holds the namespace (it lives on while anything does)
// has no interface left on the external network or a segment, then its
// name. A file left without its mount is just removed.
func deleteRouterNS(name string) error {
	path := netnsDir + "/" + name
	if ns, err := netns.GetFromName(name); err == nil {
		var st unix.Statfs_t
		if unix.Fstatfs(int(ns), &st) == nil && st.Type == unix.NSFS_MAGIC {
			if rh, err := netlink.NewHandleAt(ns); err == nil {
				if links, err := rh.LinkList(); err == nil {
					for _, l := range links {
						if l.Attrs().Name != "lo" {
							_ = rh.LinkDel(l)
						}
					}
				}
				rh.Close()
			}
		}
		ns.Close()
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// inNamespace runs fn on a new OS thread in ns; the thread is never
// unlocked, so the runtime retires it instead of reusing it elsewhere.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// ensureRouter builds one router in its namespace. Its table comes first
// and forwarding only after it, so a router half built by an error lets
// nothing through unfiltered. routed says whether its networks' legs are
// in place, so guests may be sent to it: a failure on the external side
// alone leaves routing between its networks working.
func (h *Host) ensureRouter(name string, pl RouterPlan) (routed bool, err error) {
	ns, created, err := openRouterNS(name)
	if err != nil {
		return false, err
	}
	defer ns.Close()
	if created {
		h.log.Info("created router namespace", "netns", name, "router", pl.Router.ID)
	}
	rh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return false, err
	}
	defer rh.Close()
	if err := buildRouterRuleset(pl).apply(nftables.WithNetNSFd(int(ns))); err != nil {
		return false, err
	}
	if err := buildRouter6Ruleset().apply(nftables.WithNetNSFd(int(ns))); err != nil {
		return false, err
	}
	// Connections the table no longer allows (a floating IP taken back
	// or moved, a gateway gone) are cut, not left to time out: whenever
	// the router's address translation changes, and once after a start.
	if sig := natSignature(pl); h.natChanged(name, sig) {
		if err := sweepRouterFlows(rh, pl); err != nil {
			h.log.Warn("cut a router's stale connections", "router", pl.Router.ID, "err", err)
		} else {
			h.natMu.Lock()
			h.natSeen[name] = sig
			h.natMu.Unlock()
		}
	}
	if err := inNamespace(ns, routerSysctls); err != nil {
		return false, err
	}
	wantIf := map[string]bool{}
	for _, nw := range pl.Networks {
		wantIf[routerIfname(nw.VNI)] = true
		if err := h.ensureRouterLeg(ns, rh, nw); err != nil {
			return false, fmt.Errorf("network %s: %w", nw.ID, err)
		}
	}
	if err := syncNeighbours(rh, pl); err != nil {
		return false, err
	}
	links, err := rh.LinkList()
	if err != nil {
		return false, err
	}
	for _, l := range links {
		if n := l.Attrs().Name; strings.HasPrefix(n, "qr-") && !wantIf[n] {
			if err := rh.LinkDel(l); err != nil {
				return false, fmt.Errorf("remove %s: %w", n, err)
			}
		}
	}
	announce, err := h.ensureRouterGateway(ns, rh, pl)
	if err != nil {
		return true, err
	}
	if len(announce) > 0 {
		h.announce(ns, pl.Router.ID, announce)
	}
	return true, nil
}

// announce sends gratuitous ARP for addresses the router has started to
// answer for on the external network: one at once, two more a second
// apart, as keepalived does, in case the first is lost.
func (h *Host) announce(ns netns.NsHandle, router string, addrs []netip.Addr) {
	send := func() error {
		ifi, err := net.InterfaceByName(routerExt)
		if err != nil {
			return err
		}
		have, err := ifi.Addrs()
		if err != nil {
			return err
		}
		var errs []error
		for _, a := range addrs {
			// Only what the router still answers for (a floating IP may
			// have moved on since).
			if slices.ContainsFunc(have, func(h net.Addr) bool {
				n, ok := h.(*net.IPNet)
				return ok && n.IP.Equal(a.AsSlice())
			}) {
				errs = append(errs, announceARP(ifi, a))
			}
		}
		return errors.Join(errs...)
	}
	if err := inNamespace(ns, send); err != nil {
		h.log.Warn("announce router addresses", "router", router, "err", err)
	}
	// Close-on-exec: a QEMU started meanwhile must not inherit it (and
	// with it keep a deleted router's namespace alive).
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	again := netns.NsHandle(fd)
	go func() {
		defer again.Close()
		for range 2 {
			time.Sleep(time.Second)
			_ = inNamespace(again, send)
		}
	}()
}

// staleRouterFlows matches a router's tracked connections whose address
// translation the router no longer makes: a destination translated other
// than from a floating IP to its port, a source translated to anything
// but this node's address, a floating IP of its port, or one of the
// router's gateway addresses (hairpin).
type staleRouterFlows struct {
	fips map[netip.Addr]netip.Addr // floating IP -> the port's address
	own  map[netip.Addr]bool
}

func (s staleRouterFlows) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	ip := func(b net.IP) netip.Addr { a, _ := netip.AddrFromSlice(b); return a.Unmap() }
	osrc, odst := ip(f.Forward.SrcIP), ip(f.Forward.DstIP)
	rsrc, rdst := ip(f.Reverse.SrcIP), ip(f.Reverse.DstIP)
	if odst != rsrc {
		if fixed, ok := s.fips[odst]; !ok || fixed != rsrc {
			return true
		}
	}
	if osrc != rdst && !s.own[rdst] {
		if fixed, ok := s.fips[rdst]; !ok || fixed != osrc {
			return true
		}
	}
	return false
}

// natSignature sums up a router's address translation on this node.
func natSignature(pl RouterPlan) string {
	parts := []string{pl.Address.String()}
	for _, f := range pl.Floating {
		parts = append(parts, f.Floating.String()+">"+f.Fixed.String())
	}
	for _, nw := range pl.Networks {
		parts = append(parts, nw.Gateway)
	}
	slices.Sort(parts[1:])
	return strings.Join(parts, ",")
}

func (h *Host) natChanged(name, sig string) bool {
	h.natMu.Lock()
	defer h.natMu.Unlock()
	if h.natSeen == nil {
		h.natSeen = map[string]string{}
	}
	return h.natSeen[name] != sig
}

func sweepRouterFlows(rh *netlink.Handle, pl RouterPlan) error {
	s := staleRouterFlows{fips: map[netip.Addr]netip.Addr{}, own: map[netip.Addr]bool{}}
	for _, f := range pl.Floating {
		s.fips[f.Floating] = f.Fixed
	}
	if pl.Address.IsValid() {
		s.own[pl.Address.Addr()] = true
	}
	for _, nw := range pl.Networks {
		s.own[nw.GatewayAddr()] = true
	}
	_, err := rh.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, s)
	return err
}

// routerSysctls, in the router's namespace: it forwards; IPv6 is off but
// on the legs of networks with an IPv6 subnet (routerLeg6Sysctls); it
// answers no ARP on its networks (arp_ignore 8 there) and, on the external
// network, only for the addresses it has there.
func routerSysctls() error {
	for _, kv := range [][2]string{
		{"ipv6/conf/all/disable_ipv6", "1"},
		{"ipv6/conf/default/disable_ipv6", "1"},
		{"ipv6/conf/default/addr_gen_mode", "1"},
		{"ipv4/conf/all/arp_ignore", "0"},
		{"ipv4/conf/default/arp_ignore", "8"},
		{"ipv4/conf/all/arp_announce", "2"},
		{"ipv4/conf/all/rp_filter", "0"},
		{"ipv4/conf/default/rp_filter", "0"},
		{"ipv4/ip_forward", "1"}, // last: the tables are in place
		{"ipv6/conf/all/forwarding", "1"},
	} {
		// Only what differs: a write to conf/all reaches every device, and
		// disable_ipv6 there would take the legs' IPv6 (addresses,
		// neighbours) down with it on every pass.
		if cur, err := os.ReadFile("/proc/sys/net/" + kv[0]); err == nil && strings.TrimSpace(string(cur)) == kv[1] {
			continue
		}
		err := os.WriteFile("/proc/sys/net/"+kv[0], []byte(kv[1]), 0o644)
		if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(kv[0], "ipv6/") {
			continue
		}
		if err != nil {
			return fmt.Errorf("router namespace: %s: %w", kv[0], err)
		}
	}
	return nil
}

// routerLeg6Sysctls turns IPv6 on or off on a router's leg, in its
// namespace: on, with no address of its own making (the gateway's are
// added), no router advertisements taken and no duplicate address
// detection (the gateway's addresses are the same on every node, and the
// router sends no neighbour discovery onto the network: applyRouteTable).
func routerLeg6Sysctls(link string, on bool) func() error {
	return func() error {
		kvs := [][2]string{{"disable_ipv6", "1"}}
		if on {
			kvs = [][2]string{{"addr_gen_mode", "1"}, {"accept_ra", "0"}, {"accept_dad", "0"}, {"disable_ipv6", "0"}}
		}
		for _, kv := range kvs {
			path := "/proc/sys/net/ipv6/conf/" + link + "/" + kv[0]
			if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == kv[1] {
				continue
			}
			err := os.WriteFile(path, []byte(kv[1]), 0o644)
			if errors.Is(err, os.ErrNotExist) && !on {
				return nil // no IPv6 in this kernel
			}
			if err != nil {
				return fmt.Errorf("router namespace: %s: %w", path, err)
			}
		}
		return nil
	}
}

// ensureRouterLeg connects the router to one network: a veth from the
// segment's bridge into the namespace, with the gateway address inside
// (and the IPv6 gateway's, link-local and ::1, on a network with an IPv6
// subnet).
func (h *Host) ensureRouterLeg(ns netns.NsHandle, rh *netlink.Handle, nw Network) error {
	hostEnd, rEnd := h.routerVeth(nw.VNI), routerIfname(nw.VNI)
	br, err := netlink.LinkByName(h.segmentBridge(nw.VNI))
	if err != nil {
		return fmt.Errorf("segment bridge: %w", err)
	}
	mac := routerMAC(nw.ID, h.cfg.Node)
	inner, ierr := rh.LinkByName(rEnd)
	outer, oerr := netlink.LinkByName(hostEnd)
	if oerr == nil && (ierr != nil || inner.Attrs().HardwareAddr.String() != mac.String()) {
		// Half of a pair (the namespace was made again, say): start over.
		if err := netlink.LinkDel(outer); err != nil {
			return fmt.Errorf("remove %s: %w", hostEnd, err)
		}
		oerr = netlink.LinkNotFoundError{}
	}
	if ierr == nil && oerr != nil {
		if err := rh.LinkDel(inner); err != nil {
			return fmt.Errorf("remove %s: %w", rEnd, err)
		}
	}
	if oerr != nil {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostEnd, MTU: nw.MTU}, PeerName: rEnd,
			PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(ns)}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("veth %s: %w", hostEnd, err)
		}
		h.log.Info("connected router to network", "link", hostEnd, "network", nw.ID)
		if outer, err = netlink.LinkByName(hostEnd); err != nil {
			return err
		}
		if inner, err = rh.LinkByName(rEnd); err != nil {
			return err
		}
	}
	if err := segmentSysctls(hostEnd, false, false); err != nil {
		return err
	}
	if err := setMTU(outer, nw.MTU); err != nil {
		return err
	}
	if outer.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(outer, br); err != nil {
			return fmt.Errorf("%s: attach to %s: %w", hostEnd, br.Attrs().Name, err)
		}
	}
	// The bridge knows where the router is from the start and for good:
	// no flooding before it has learned the MAC, and a guest (or a frame
	// from another box) that sends from it cannot move it (sticky).
	if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: outer.Attrs().Index, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_MASTER | netlink.NTF_STICKY, State: netlink.NUD_NOARP, HardwareAddr: mac}); err != nil {
		return fmt.Errorf("%s: forwarding entry for the router: %w", hostEnd, err)
	}
	if inner.Attrs().MTU != nw.MTU {
		if err := rh.LinkSetMTU(inner, nw.MTU); err != nil {
			return err
		}
	}
	gw := netip.PrefixFrom(nw.GatewayAddr(), nw.Prefix().Bits())
	if err := syncAddrs(rh, inner, []netip.Prefix{gw}); err != nil {
		return err
	}
	var gw6 []netip.Prefix
	if a, ok := nw.Gateway6(); ok && ipv6Kernel() {
		gw6 = []netip.Prefix{netip.PrefixFrom(nw.GatewayLL(), 64), netip.PrefixFrom(a, 64)}
	}
	if err := inNamespace(ns, routerLeg6Sysctls(rEnd, len(gw6) > 0)); err != nil {
		return err
	}
	if len(gw6) > 0 {
		if err := syncAddrs6(rh, inner, gw6); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(outer); err != nil {
		return err
	}
	return rh.LinkSetUp(inner)
}

// syncAddrs makes a link's IPv4 addresses exactly want and returns those
// it added.
func syncAddrs(rh *netlink.Handle, l netlink.Link, want []netip.Prefix) error {
	_, err := syncAddrsAdded(rh, l, want)
	return err
}

func syncAddrsAdded(rh *netlink.Handle, l netlink.Link, want []netip.Prefix) ([]netip.Addr, error) {
	return syncFamilyAddrs(rh, l, unix.AF_INET, want, 0)
}

// syncAddrs6 makes a link's IPv6 addresses exactly want, with no
// duplicate address detection.
func syncAddrs6(rh *netlink.Handle, l netlink.Link, want []netip.Prefix) error {
	_, err := syncFamilyAddrs(rh, l, unix.AF_INET6, want, unix.IFA_F_NODAD)
	return err
}

// syncFamilyAddrs makes a link's addresses of one family exactly want,
// adding the missing ones with flags, and returns those it added.
func syncFamilyAddrs(rh *netlink.Handle, l netlink.Link, family int, want []netip.Prefix, flags int) ([]netip.Addr, error) {
	have, err := rh.AddrList(l, family)
	if err != nil {
		return nil, err
	}
	missing := map[netip.Prefix]bool{}
	for _, p := range want {
		missing[p] = true
	}
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), ones)
		if missing[p] {
			delete(missing, p)
			continue
		}
		if err := rh.AddrDel(l, &a); err != nil {
			return nil, fmt.Errorf("%s: remove %s: %w", l.Attrs().Name, p, err)
		}
	}
	var added []netip.Addr
	for _, p := range want { // in order: the first is the primary address
		if !missing[p] {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: flags}
		if err := rh.AddrAdd(l, a); err != nil {
			return nil, fmt.Errorf("%s: add %s: %w", l.Attrs().Name, p, err)
		}
		added = append(added, p.Addr())
	}
	return added, nil
}

// routerNeighbours maps the addresses a network's router reaches to their
// MACs: every port's own address, and an allowed address pair's when all
// ports that claim it agree on its MAC (a VRRP address with a virtual MAC,
// keepalived's use_vmac). A pair address that ports claim with their own
// different MACs moves by gratuitous ARP, which the router does not hear:
// it is not routed to.
func routerNeighbours(ports []Port) map[string]string {
	want := map[string]string{}
	for _, p := range ports {
		want[p.IP] = p.MAC
		if a, ok := p.Addr6(); ok {
			want[a.String()] = p.MAC
			want[LinkLocal(p.HardwareAddr()).String()] = p.MAC
		}
	}
	claims := map[string]map[string]bool{}
	for _, p := range ports {
		for _, ap := range p.AddressPairs {
			mac := strings.ToLower(ap.MAC)
			if mac == "" {
				mac = p.MAC
			}
			if claims[ap.IP] == nil {
				claims[ap.IP] = map[string]bool{}
			}
			claims[ap.IP][mac] = true
		}
	}
	for ip, macs := range claims {
		if _, own := want[ip]; own || len(macs) != 1 {
			continue
		}
		for mac := range macs {
			want[ip] = mac
		}
	}
	return want
}

// syncNeighbours makes each network's ports (and the allowed address pairs
// routerNeighbours takes) the router's permanent neighbours, and nothing
// else.
func syncNeighbours(rh *netlink.Handle, pl RouterPlan) error {
	byNet := map[string][]Port{}
	for _, p := range pl.Neighbours {
		byNet[p.NetworkID] = append(byNet[p.NetworkID], p)
	}
	var errs []error
	for _, nw := range pl.Networks {
		l, err := rh.LinkByName(routerIfname(nw.VNI))
		if err != nil {
			return err
		}
		want := routerNeighbours(byNet[nw.ID])
		have, err := rh.NeighList(l.Attrs().Index, unix.AF_INET)
		if err != nil {
			return err
		}
		if _, ok := nw.Prefix6(); ok && ipv6Kernel() {
			have6, err := rh.NeighList(l.Attrs().Index, unix.AF_INET6)
			if err != nil {
				return err
			}
			have = append(have, have6...)
		}
		for _, n := range have {
			ip := n.IP.String()
			if mac, ok := want[ip]; ok && n.HardwareAddr.String() == mac && n.State&netlink.NUD_PERMANENT != 0 {
				delete(want, ip)
				continue
			}
			if err := rh.NeighDel(&n); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		for ip, mac := range want {
			hw, _ := net.ParseMAC(mac)
			family := unix.AF_INET
			if strings.Contains(ip, ":") {
				if !ipv6Kernel() {
					continue
				}
				family = unix.AF_INET6
			}
			if err := rh.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
				IP: net.ParseIP(ip), HardwareAddr: hw}); err != nil {
				errs = append(errs, fmt.Errorf("neighbour %s: %w", ip, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ensureRouterGateway builds or removes the router's external link and
// returns the addresses it started to answer for, to be announced.
func (h *Host) ensureRouterGateway(ns netns.NsHandle, rh *netlink.Handle, pl RouterPlan) ([]netip.Addr, error) {
	cur, err := rh.LinkByName(routerExt)
	if pl.External == nil || !pl.Address.IsValid() {
		if err == nil {
			return nil, rh.LinkDel(cur)
		}
		return nil, nil
	}
	parent, perr := netlink.LinkByName(pl.External.Interface)
	if perr != nil {
		return nil, fmt.Errorf("external network %s: interface %s: %w", pl.External.ID, pl.External.Interface, perr)
	}
	if err == nil {
		if mv, ok := cur.(*netlink.Macvlan); !ok || cur.Attrs().HardwareAddr.String() != pl.MAC.String() || mv.Attrs().ParentIndex != parent.Attrs().Index {
			if err := rh.LinkDel(cur); err != nil {
				return nil, err
			}
			err = netlink.LinkNotFoundError{}
		}
	}
	if err != nil {
		mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: routerExt, ParentIndex: parent.Attrs().Index,
			HardwareAddr: pl.MAC, Namespace: netlink.NsFd(ns)}, Mode: netlink.MACVLAN_MODE_BRIDGE}
		if err := netlink.LinkAdd(mv); err != nil {
			return nil, fmt.Errorf("macvlan on %s: %w", pl.External.Interface, err)
		}
		h.log.Info("router gateway up", "router", pl.Router.ID, "address", pl.Address, "interface", pl.External.Interface)
		if cur, err = rh.LinkByName(routerExt); err != nil {
			return nil, err
		}
	}
	// Made under the namespace's default of answering no ARP: this link
	// answers for its own addresses.
	if err := inNamespace(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/"+routerExt+"/arp_ignore", []byte("1"), 0o644)
	}); err != nil {
		return nil, err
	}
	want := []netip.Prefix{pl.Address}
	for _, f := range pl.Floating {
		want = append(want, netip.PrefixFrom(f.Floating, 32))
	}
	added, err := syncAddrsAdded(rh, cur, want)
	if err != nil {
		return nil, err
	}
	if err := rh.LinkSetUp(cur); err != nil {
		return nil, err
	}
	gw := pl.External.GatewayAddr()
	route := &netlink.Route{LinkIndex: cur.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw: gw.AsSlice(), Src: pl.Address.Addr().AsSlice()}
	if err := rh.RouteReplace(route); err != nil {
		return nil, fmt.Errorf("default route via %s: %w", gw, err)
	}
	return added, nil
}

// buildRouterRuleset is a router's own table, in its namespace: floating
// IPs 1:1, the rest out from this node's address; from the external
// network only replies and floating IPs in; to the router itself only
// replies and pings.
func buildRouterRuleset(pl RouterPlan) ruleset {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: routerTable}
	accept, drop := nftables.ChainPolicyAccept, nftables.ChainPolicyDrop
	pre := &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept}
	post := &nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept}
	fw := &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	in := &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop}
	rule := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) *nftables.Rule {
		return newRule(t, ch, comment, exprs...)
	}
	iifExt := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(routerExt)}}
	oifExt := []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(routerExt)}}
	addr := func(offset uint32, a netip.Addr) []expr.Any {
		b := a.As4()
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]}}
	}
	nat := func(kind expr.NATType, to netip.Addr) []expr.Any {
		b := to.As4()
		return []expr.Any{&expr.Immediate{Register: 1, Data: b[:]},
			&expr.NAT{Type: kind, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1}}
	}
	const saddr, daddr = 12, 16
	var rules []*nftables.Rule
	for _, f := range pl.Floating {
		rules = append(rules,
			rule(pre, fmt.Sprintf("ip daddr %s dnat to %s", f.Floating, f.Fixed), addr(daddr, f.Floating), nat(expr.NATTypeDestNAT, f.Fixed)),
			rule(post, fmt.Sprintf("oifname %s ip saddr %s snat to %s", routerExt, f.Fixed, f.Floating), oifExt, addr(saddr, f.Fixed), nat(expr.NATTypeSourceNAT, f.Floating)))
	}
	if pl.Address.IsValid() {
		rules = append(rules, rule(post, fmt.Sprintf("oifname %s snat to %s", routerExt, pl.Address.Addr()), oifExt, nat(expr.NATTypeSourceNAT, pl.Address.Addr())))
	}
	// A guest that reaches a floating IP of its own project on this node
	// (hairpin) is seen coming from the router, so the answer comes back
	// through it to be translated.
	iifNotExt := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(routerExt)}}
	oifNotExt := []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(routerExt)}}
	dnatted := []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(ctStatusDNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)}}
	icmpEcho := []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8}}}
	iifLo := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")}}
	if len(pl.Floating) > 0 {
		rules = append(rules, rule(post, "iifname != qg oifname != qg ct status dnat masquerade", iifNotExt, oifNotExt, dnatted, []expr.Any{&expr.Masq{}}))
	}
	rules = append(rules,
		rule(fw, "iifname qg ct status dnat accept", iifExt, dnatted, verdict(expr.VerdictAccept)),
		rule(fw, "iifname qg ct state established,related accept", iifExt, ctReplies(), verdict(expr.VerdictAccept)),
		rule(fw, "iifname qg drop", iifExt, verdict(expr.VerdictDrop)),
		rule(in, "iifname lo accept", iifLo, verdict(expr.VerdictAccept)),
		rule(in, "ct state established,related accept", ctReplies(), verdict(expr.VerdictAccept)),
		rule(in, "icmp type echo-request accept", icmpEcho, verdict(expr.VerdictAccept)),
	)
	return ruleset{table: t, chains: []*nftables.Chain{pre, post, fw, in}, rules: rules}
}

// buildRouter6Ruleset is a router's IPv6 table: it routes its networks'
// IPv6 subnets to each other as they are (no NAT66; the external network
// has no IPv6 here), and takes for itself only replies and ICMPv6.
func buildRouter6Ruleset() ruleset {
	t := &nftables.Table{Family: nftables.TableFamilyIPv6, Name: routerTable + "6"}
	drop := nftables.ChainPolicyDrop
	in := &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop}
	iifLo := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")}}
	icmp6 := []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}}}
	return ruleset{table: t, chains: []*nftables.Chain{in}, rules: []*nftables.Rule{
		newRule(t, in, "iifname lo accept", iifLo, verdict(expr.VerdictAccept)),
		newRule(t, in, "ct state established,related accept", ctReplies(), verdict(expr.VerdictAccept)),
		newRule(t, in, "meta l4proto ipv6-icmp accept", icmp6, verdict(expr.VerdictAccept)),
	}}
}

// applyRouteTable sends guests' frames for their gateway to the local
// router of their network (the bridge table HostConfig.RouteTable), and
// keeps the routers' own ARP off the segments.
func (h *Host) applyRouteTable(plans []RouterPlan) error {
	if h.cfg.RouteTable == "" {
		return nil
	}
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: h.cfg.RouteTable}
	accept := nftables.ChainPolicyAccept
	prio := nftables.ChainPriority(-300) // before the bridge decides where a frame goes
	pre := &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio, Policy: &accept}
	m := &nftables.Set{Table: t, Name: "gateway_router", IsMap: true, KeyType: nftables.TypeEtherAddr, DataType: nftables.TypeEtherAddr}
	// The gateway's own address (its MAC with it: CIDRs overlap), where
	// the node answers DNS.
	gwAddrs := &nftables.Set{Table: t, Name: "gateway_addrs", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeEtherAddr, nftables.TypeIPAddr)}
	var elems, gwElems []nftables.SetElement
	for _, pl := range plans {
		for _, nw := range pl.Networks {
			elems = append(elems, nftables.SetElement{Key: GatewayMAC(nw.ID), Val: routerMAC(nw.ID, h.cfg.Node)})
			if gw := nw.GatewayAddr(); gw.Is4() {
				a := gw.As4()
				gwElems = append(gwElems, nftables.SetElement{Key: append(append(slices.Clone([]byte(GatewayMAC(nw.ID))), 0, 0), a[:]...)})
			}
		}
	}
	slices.SortFunc(elems, func(a, b nftables.SetElement) int { return strings.Compare(string(a.Key), string(b.Key)) })
	slices.SortFunc(gwElems, func(a, b nftables.SetElement) int { return strings.Compare(string(a.Key), string(b.Key)) })
	gwElems = slices.CompactFunc(gwElems, func(a, b nftables.SetElement) bool { return string(a.Key) == string(b.Key) })
	rule := func(comment string, exprs ...[]expr.Any) *nftables.Rule { return newRule(t, pre, comment, exprs...) }
	iifRouter := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(h.cfg.SegmentPrefix + "q")}}
	etherType := func(et uint16) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(et)}}
	}
	dhcpToServer := []expr.Any{etherType(etherTypeIPv4)[0], etherType(etherTypeIPv4)[1],
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(67)}}
	dnsToGateway := func(proto byte) []expr.Any {
		return []expr.Any{etherType(etherTypeIPv4)[0], etherType(etherTypeIPv4)[1],
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(dnsPort)},
			&expr.Payload{DestRegister: regConcat, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 6},
			&expr.Payload{DestRegister: regConcat + 2, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: regConcat, SetName: gwAddrs.Name}}
	}
	icmp6Type := func(op expr.CmpOp, typ byte) []expr.Any {
		return []expr.Any{etherType(etherTypeIPv6)[0], etherType(etherTypeIPv6)[1],
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: op, Register: 1, Data: []byte{typ}}}
	}
	rs := ruleset{table: t, chains: []*nftables.Chain{pre}, sets: []setWithElements{{m, elems}, {gwAddrs, gwElems}}, rules: []*nftables.Rule{
		rule("iifname cnq* ether type arp drop", iifRouter, etherType(etherTypeARP), verdict(expr.VerdictDrop)),
		// Nor IPv6 neighbour discovery, router discovery, redirects or
		// MLD: the node answers for the gateway (segra.go).
		rule("iifname cnq* icmpv6 type >= 130 drop", iifRouter, icmp6Type(expr.CmpOpGte, 130), verdict(expr.VerdictDrop)),
		rule("icmpv6 type nd-neighbor-solicit accept (the node answers for the gateway)", icmp6Type(expr.CmpOpEq, icmp6NeighborSolicit), verdict(expr.VerdictAccept)),
		rule("udp dport 67 accept (DHCP stays with the node's server)", dhcpToServer, verdict(expr.VerdictAccept)),
		rule("ether daddr . ip daddr @gateway_addrs udp dport 53 accept (DNS to the gateway stays with the node's server)", dnsToGateway(unix.IPPROTO_UDP), verdict(expr.VerdictAccept)),
		rule("ether daddr . ip daddr @gateway_addrs tcp dport 53 accept (the node's server refuses DNS over TCP)", dnsToGateway(unix.IPPROTO_TCP), verdict(expr.VerdictAccept)),
		rule("ether daddr set ether daddr map @gateway_router", []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 6},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name},
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 6},
		}),
	}}
	return rs.apply()
}

// announceARP sends a gratuitous ARP request for ip from ifi (sender and
// target both ip, from the interface's MAC, to everyone: RFC 5227's
// announcement), so the switch and the neighbours' ARP caches follow.
func announceARP(ifi *net.Interface, ip netip.Addr) error {
	c, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_ARP, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	a := ip.As4()
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1) // Ethernet
	binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], ifi.HardwareAddr)
	copy(b[14:18], a[:])
	copy(b[24:28], a[:])
	_, err = c.WriteTo(b, &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
	return err
}
