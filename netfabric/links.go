package netfabric

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cairnhq/cairn/consensus"
)

// ensureBridge makes the bridge exist, up, with a fixed MAC and exactly one
// IPv4 address: the gateway. It returns the bridge's interface index.
func (h *Host) ensureBridge(gw netip.Prefix) (netlink.Link, error) {
	name := h.cfg.Bridge
	// A fixed MAC: otherwise a Linux bridge takes the lowest MAC of its
	// ports, and the gateway's MAC changes under the guests as taps come and go.
	mac := MACFor("bridge:" + name)
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}}
		if err := netlink.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		h.log.Info("created bridge", "bridge", name)
		link, err = netlink.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("bridge %s: a %s link has that name; it is not ours to change", name, link.Type())
	}
	if link.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return nil, fmt.Errorf("bridge %s: set MAC: %w", name, err)
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("bridge %s: list addresses: %w", name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() != gw.String() {
			if err := netlink.AddrDel(link, &a); err != nil {
				return nil, fmt.Errorf("bridge %s: remove stale address %s: %w", name, a.IPNet, err)
			}
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("bridge %s: add %s: %w", name, gw, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bridge %s: up: %w", name, err)
	}
	return link, nil
}

// ReasonShadowing is the Reason of a VM network refused because it would
// take over addresses this node must reach (refuseShadowing): the refusal
// stands until the network or the node's links change, where other
// reconcile errors pass. Its words are a format, so a page in another
// language says it in that language.
const ReasonShadowing = "vm_network_shadowing"

// IsShadowing reports whether err is such a refusal.
func IsShadowing(err error) bool { return consensus.ErrorReason(err) == ReasonShadowing }

// refuseShadowing refuses a VM network that would take over addresses this
// node must reach over its other links: the bridge holds the network's
// gateway and a route over all of it, more specific than a wider LAN's.
// That is the case when it holds
//   - an IPv4 address of another link of this host, the node's own address
//     on its LAN above all (the node would also drop ARP from any address
//     it holds as a martian source);
//   - the gateway of a route over another link, the LAN's router above all;
//   - the address of another node of the cluster (HostConfig.Peers): this
//     node would lose it.
//
// A VM network merely inside a wider LAN (10.213.0.0/16 in a 10.0.0.0/8
// the node is at 10.1.1.1 in) is otherwise left alone: only the LAN's
// other hosts in that range are shadowed, and refusing would take the VMs'
// network away. Nothing is changed.
func (h *Host) refuseShadowing(pfx netip.Prefix) error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	own := -1
	br, err := netlink.LinkByName(h.cfg.Bridge)
	switch {
	case err == nil:
		own = br.Attrs().Index
	case !errors.As(err, new(netlink.LinkNotFoundError)):
		return fmt.Errorf("bridge %s: %w", h.cfg.Bridge, err)
	}
	linkName := func(index int) string {
		if l, err := netlink.LinkByIndex(index); err == nil {
			return l.Attrs().Name
		}
		return fmt.Sprintf("link %d", index)
	}
	for _, a := range addrs {
		if a.LinkIndex == own || a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP)
		if !ok || !pfx.Contains(ip.Unmap()) {
			continue
		}
		return consensus.Reasonf(consensus.CodeConflict, ReasonShadowing, "the VM network %s holds %s on %s, this node's own network: choose another range (--vm-network for the default network, before the cluster creates it)", pfx, a.IPNet, linkName(a.LinkIndex))
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.LinkIndex == own {
			continue
		}
		gws := []net.IP{r.Gw}
		for _, nh := range r.MultiPath { // a route over several gateways
			gws = append(gws, nh.Gw)
		}
		for _, g := range gws {
			gw, ok := netip.AddrFromSlice(g)
			// A gateway reached by a route more specific than the VM
			// network (a host route to it) stays reached.
			if !ok || !pfx.Contains(gw.Unmap()) || bestRouteBits(routes, own, gw.Unmap()) > pfx.Bits() {
				continue
			}
			to := "default"
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones > 0 {
					to = r.Dst.String()
				}
			}
			return consensus.Reasonf(consensus.CodeConflict, ReasonShadowing, "the VM network %s holds %s, the gateway of this node's route to %s on %s: choose another range (--vm-network for the default network, before the cluster creates it)", pfx, gw.Unmap(), to, linkName(r.LinkIndex))
		}
	}
	if h.cfg.Peers != nil {
		for _, p := range h.cfg.Peers() {
			p = p.Unmap()
			// A peer reached by a route more specific than the VM
			// network (another subnet, through a router) stays reached.
			if pfx.Contains(p) && bestRouteBits(routes, own, p) <= pfx.Bits() {
				return consensus.Reasonf(consensus.CodeConflict, ReasonShadowing, "the VM network %s holds %s, the address of another node of this cluster: choose another range (--vm-network for the default network, before the cluster creates it)", pfx, p)
			}
		}
	}
	return nil
}

// bestRouteBits is the prefix length of the most specific route that
// delivers to a over links other than skip: 0 for the default route, -1
// for none. Blackhole, unreachable and the like deliver nothing.
func bestRouteBits(routes []netlink.Route, skip int, a netip.Addr) int {
	best := -1
	for _, r := range routes {
		if r.LinkIndex == skip && skip >= 0 || r.Type != 0 && r.Type != unix.RTN_UNICAST {
			continue
		}
		bits := 0
		if r.Dst != nil {
			dst, ok := netipx(r.Dst)
			if !ok || !dst.Contains(a) {
				continue
			}
			bits = dst.Bits()
		}
		best = max(best, bits)
	}
	return best
}

// netipx converts an IPv4 *net.IPNet.
func netipx(n *net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// TapName is the tap device of a VM NIC with the given id: the prefix and a
// hash of the id, so it is the same after a restart and fits IFNAMSIZ (15).
func (h *Host) TapName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return h.cfg.TapPrefix + hex.EncodeToString(sum[:])[:max(15-len(h.cfg.TapPrefix), 4)]
}

func (h *Host) ownsTap(name string) bool {
	return strings.HasPrefix(name, h.cfg.TapPrefix) && len(name) <= 15
}

// EnsureTap creates a persistent tap device for QEMU (IFF_TAP, no packet
// info, a virtio-net header, one queue), attaches it to the bridge and sets
// it up. It is idempotent. Reconcile must have created the bridge. Port
// security is rebuilt once the tap exists and before it joins the bridge,
// from the ports in the state, so the tap's port (allocated with its VM)
// is secured before the guest can send a frame.
func (h *Host) EnsureTap(name string) error { return h.ensureTap(name, true) }

// ensureTap is EnsureTap; without secure it leaves port security as it is
// (Reconcile rebuilds it once, before it attaches every tap).
func (h *Host) ensureTap(name string, secure bool) error {
	if !h.ownsTap(name) {
		return fmt.Errorf("ensure tap %s: not a %s* name of at most 15 characters", name, h.cfg.TapPrefix)
	}
	brName, mtu, err := h.bridgeFor(name)
	if err != nil {
		return fmt.Errorf("ensure tap %s: %w", name, err)
	}
	br, err := netlink.LinkByName(brName)
	if err != nil {
		return fmt.Errorf("ensure tap %s: bridge %s: %w", name, brName, err)
	}
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP,
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
		if err := netlink.LinkAdd(tap); err != nil {
			return fmt.Errorf("ensure tap %s: create: %w", name, err)
		}
		link, err = netlink.LinkByName(name)
	}
	if err != nil {
		return fmt.Errorf("ensure tap %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Tuntap); !ok {
		return fmt.Errorf("ensure tap %s: a %s link has that name", name, link.Type())
	}
	if secure {
		if err := h.applyPortSecurity(); err != nil {
			return fmt.Errorf("ensure tap %s: port security: %w", name, err)
		}
	}
	if mtu != 0 {
		if err := setMTU(link, mtu); err != nil {
			return fmt.Errorf("ensure tap: %w", err)
		}
	}
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("ensure tap %s: attach to %s: %w", name, brName, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("ensure tap %s: up: %w", name, err)
	}
	return nil
}

// RemoveTap deletes one of our taps; a tap that is gone already is fine.
func (h *Host) RemoveTap(name string) error {
	if !h.ownsTap(name) {
		return fmt.Errorf("remove tap %s: not ours", name)
	}
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove tap %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove tap %s: %w", name, err)
	}
	return nil
}

// Taps lists our tap devices (tuntap links with our prefix), by name.
func (h *Host) Taps() ([]string, error) {
	links, err := linkList()
	if err != nil {
		return nil, fmt.Errorf("list taps: %w", err)
	}
	var out []string
	for _, l := range links {
		if _, ok := l.(*netlink.Tuntap); ok && h.ownsTap(l.Attrs().Name) {
			out = append(out, l.Attrs().Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// PruneTaps removes our taps that keep does not want: the hypervisor calls it
// at start-up with its running VMs' taps, to clear what a crash left behind.
func (h *Host) PruneTaps(keep func(name string) bool) error {
	taps, err := h.Taps()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range taps {
		if !keep(t) {
			h.log.Info("removing tap", "tap", t)
			errs = append(errs, h.RemoveTap(t))
		}
	}
	return errors.Join(errs...)
}

// attachTaps re-attaches our taps to the bridge, for when the bridge was
// recreated under running VMs.
func (h *Host) attachTaps() error {
	taps, err := h.Taps()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range taps {
		err := h.ensureTap(t, false)
		if errors.Is(err, ErrSegmentMissing) {
			// Left where it is: at an agent's start the segments are not
			// known yet, and the guest's traffic must not stop.
			// ReconcileSegments puts it on its bridge. (A tap whose port
			// is gone is moved to the NAT bridge, where it sends nothing.)
			err = nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (h *Host) removeBridge() error {
	link, err := netlink.LinkByName(h.cfg.Bridge)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove bridge %s: %w", h.cfg.Bridge, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("remove bridge %s: a %s link has that name; not ours", h.cfg.Bridge, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("remove bridge %s: %w", h.cfg.Bridge, err)
	}
	return nil
}

// enableForwarding turns on IPv4 forwarding in this network namespace.
func enableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

// A netlink dump that the kernel's tables changed under (a VM's tap came
// or went) ends with "results may be incomplete or inconsistent": it is
// asked again, as iproute2 does.
func retryDump[T any](dump func() (T, error)) (T, error) {
	var out T
	var err error
	for range 5 {
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

func linkList() ([]netlink.Link, error) { return retryDump(netlink.LinkList) }
