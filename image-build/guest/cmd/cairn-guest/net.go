//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// bringUpNetwork brings up loopback and the first Ethernet interface, and
// gets it an IPv4 address by DHCP, trying until it succeeds. It returns the
// address. (A trimmed copy of appliance/initd's: the guest must not depend
// on the appliance.)
func bringUpNetwork(con *console) netip.Addr {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	for {
		link, err := firstEthernet(10 * time.Second)
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		if err == nil {
			var addr netip.Addr
			if addr, err = dhcp(link); err == nil {
				return addr
			}
		}
		con.Printf("dhcp: %v", err)
		time.Sleep(time.Second)
	}
}

// firstEthernet waits for an Ethernet link to appear (virtio_net may still
// be probing).
func firstEthernet(wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if a := l.Attrs(); l.Type() == "device" && a.Name != "lo" && len(a.HardwareAddr) == 6 {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.New("no Ethernet interface")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dhcp gets a lease on link and applies it. The guest lives minutes, far
// less than any lease, so it does not renew.
func dhcp(link netlink.Link) (netip.Addr, error) {
	name := link.Attrs().Name
	client, err := nclient4.New(name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %w", name, err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := client.Request(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %w", name, err)
	}
	return applyLease(link, lease.ACK)
}

func applyLease(link netlink.Link, ack *dhcpv4.DHCPv4) (netip.Addr, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok {
		return netip.Addr{}, errors.New("lease without an IPv4 address")
	}
	ones, _ := ack.SubnetMask().Size()
	if ones == 0 {
		ones = 24
	}
	a, err := netlink.ParseAddr(netip.PrefixFrom(ip, ones).String())
	if err != nil {
		return netip.Addr{}, err
	}
	if err := netlink.AddrReplace(link, a); err != nil {
		return netip.Addr{}, fmt.Errorf("address %s on %s: %w", a, link.Attrs().Name, err)
	}
	// A network narrower than Ethernet (a VXLAN segment) says so in option
	// 26; virtio-net has usually set it already from the host's host_mtu.
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, ack.Options); err == nil && mtu >= 576 && int(mtu) < link.Attrs().MTU {
		if err := netlink.LinkSetMTU(link, int(mtu)); err != nil {
			return netip.Addr{}, fmt.Errorf("MTU %d on %s: %w", mtu, link.Attrs().Name, err)
		}
	}
	if gws := ack.Router(); len(gws) > 0 {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gws[0]}); err != nil {
			return netip.Addr{}, fmt.Errorf("default route: %w", err)
		}
	}
	// Probes by name need it; the lease stands without it.
	_ = writeResolvConf(ack)
	return ip, nil
}

// writeResolvConf writes the lease's DNS servers and domain to
// /etc/resolv.conf, as a distribution's DHCP client does, so probes may
// name their targets.
func writeResolvConf(ack *dhcpv4.DHCPv4) error {
	var b strings.Builder
	if d := ack.DomainName(); d != "" {
		fmt.Fprintf(&b, "search %s\n", d)
	}
	for _, s := range ack.DNS() {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}
