package netfabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VIP is the cluster's own address: the one staff bookmark for the UI, the
// API and S3, as keepalived keeps one in front of an OpenStack control
// plane. Exactly the Raft leader holds it (Hold runs as a leader
// controller): when the leader dies or loses its quorum, Raft elects
// another within seconds and that one takes the address and announces it
// by gratuitous ARP, so the switch and the clients' ARP caches follow at
// once. Every node listens on the address already (IP_FREEBIND), so the
// new holder answers as soon as the address is its own.
type VIP struct {
	Prefix netip.Prefix // the address and its subnet's length, e.g. 192.168.1.10/24
	Iface  string       // the interface it is added to
	Log    *slog.Logger
}

// ParseVIP6 parses --vip6, the cluster address's IPv6 twin: a global or
// unique-local IPv6 address with its prefix length.
func ParseVIP6(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() < 8 || (p.Bits() < 128 && p.Addr() == p.Masked().Addr()) ||
		p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() || p.Addr().IsLoopback() {
		return netip.Prefix{}, fmt.Errorf("--vip6 %q: give a global or unique-local IPv6 address of the management network with its prefix length, like fd12:3456:789a::10/64", s)
	}
	return p, nil
}

// ParseVIP parses --vip: an IPv4 address with its prefix length.
func ParseVIP(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 32 || p.Addr() == p.Masked().Addr() {
		return netip.Prefix{}, fmt.Errorf("--vip %q: give an IPv4 address of the management network with its prefix length, like 192.168.1.10/24", s)
	}
	return p, nil
}

// The address is added as a /32 (as keepalived does): no route of its
// own, so the node's traffic keeps its own source address. It lives
// vipLifetime seconds unless renewed: the holder renews it every second, so
// a holder killed while its box runs on loses it within seconds.
const vipLifetime = 3

// addr is the address as the holder adds it. The IPv6 twin is added with its prefix (so the holder reaches the
// clients on its link even with no IPv6 address of its own there) but
// deprecated (preferred lifetime 0: never a source address when the node
// has its own), and without duplicate address detection (nodad), so it
// answers at once: exactly one node holds it, as the IPv4 address.
func (v *VIP) addr(lifetime int) *netlink.Addr {
	if v.Prefix.Addr().Is6() {
		return &netlink.Addr{IPNet: &net.IPNet{IP: v.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(v.Prefix.Bits(), 128)},
			ValidLft: lifetime, PreferedLft: 0, Flags: unix.IFA_F_NODAD}
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: v.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)},
		ValidLft: lifetime, PreferedLft: lifetime}
}

// Hold takes the address until ctx ends (leadership is lost or the agent
// stops), then gives it up. It keeps renewing the address, retrying what
// fails, and announces it at once and then every ten seconds.
func (v *VIP) Hold(ctx context.Context) {
	held, failing := false, false
	defer func() {
		if !held {
			return
		}
		if err := v.Release(); err != nil {
			v.Log.Error("give up the cluster address", "vip", v.Prefix, "err", err)
		} else {
			v.Log.Info("gave up the cluster address", "vip", v.Prefix)
		}
	}()
	for tick := 0; ctx.Err() == nil; tick++ {
		link, err := netlink.LinkByName(v.Iface)
		if err == nil {
			err = netlink.AddrReplace(link, v.addr(vipLifetime))
		}
		switch {
		case err != nil && !failing:
			v.Log.Error("cannot take the cluster address; retrying", "vip", v.Prefix, "interface", v.Iface, "err", err)
			failing = true
		case err == nil:
			if !held || failing {
				// Taken, or taken back after renewals failed (it may have
				// lapsed meanwhile): announce it afresh.
				v.Log.Info("holding the cluster address", "vip", v.Prefix, "interface", v.Iface)
				held, tick = true, 0
			}
			failing = false
			// Three announcements at once (one may be lost, a switch may
			// still be learning the port), then now and then, so caches
			// that a killed holder's kernel confused come back.
			if tick < 3 || tick%10 == 0 {
				if err := v.announce(link); err != nil {
					v.Log.Warn("announce the cluster address", "vip", v.Prefix, "err", err)
				}
			}
		}
		wait := time.Second
		if held && tick < 3 {
			wait = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// Release removes the address if this node has it: at start, since a
// killed agent leaves it behind, and when leadership ends.
func (v *VIP) Release() error {
	link, err := netlink.LinkByName(v.Iface)
	if err != nil {
		return err
	}
	// Every copy, whatever its prefix length (an address is deleted only
	// with the one it was added with).
	family := netlink.FAMILY_V4
	if v.Prefix.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); !ok || ip.Unmap() != v.Prefix.Addr() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// announce sends a gratuitous ARP announcement of the address, or for the
// IPv6 twin an unsolicited neighbour advertisement (RFC 4861 7.2.6).
func (v *VIP) announce(link netlink.Link) error {
	ifi, err := net.InterfaceByIndex(link.Attrs().Index)
	if err != nil {
		return err
	}
	if v.Prefix.Addr().Is6() {
		return announceNA(ifi, v.Prefix.Addr())
	}
	return announceARP(ifi, v.Prefix.Addr())
}

// announceNA sends an unsolicited neighbour advertisement for ip from
// ifi's MAC to all nodes, with the override flag, so neighbours' caches
// take the new MAC at once.
func announceNA(ifi *net.Interface, ip netip.Addr) error {
	c, _, err := ndp.Listen(ifi, ndp.Addr(ip.String()))
	if err != nil {
		return err
	}
	defer c.Close()
	na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: ip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr}}}
	return c.WriteTo(na, nil, netip.IPv6LinkLocalAllNodes())
}

// InterfaceOf returns the name of the interface that has addr.
func InterfaceOf(addr netip.Addr) (string, error) {
	links, err := linkList()
	if err != nil {
		return "", err
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", fmt.Errorf("no interface has %s", addr)
}
