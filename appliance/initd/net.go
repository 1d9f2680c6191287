//go:build linux

package initd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// mgmt is the management interface as brought up.
type mgmt struct {
	link netlink.Link
	addr netip.Prefix
}

// bringUpNetwork brings up loopback and the management interface, by DHCP
// (renewing the lease in the background) or with the static address of the
// boot config, and names the box after its MAC when no name is set. It
// returns the management address.
func bringUpNetwork(ctx context.Context, log *slog.Logger, boot *Boot) (string, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	link, err := findLink(boot.Interface, 10*time.Second)
	if err != nil {
		return "", err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("%s up: %w", link.Attrs().Name, err)
	}
	if boot.Name == "" {
		mac := link.Attrs().HardwareAddr
		if len(mac) >= 3 {
			boot.Name = fmt.Sprintf("cairn-%02x%02x%02x", mac[len(mac)-3], mac[len(mac)-2], mac[len(mac)-1])
		}
	}
	_ = setHostname(boot.Name)
	var m mgmt
	if boot.IP == "" || boot.IP == "dhcp" {
		m, err = dhcp(ctx, log, link)
	} else {
		m, err = static(link, *boot)
	}
	if err != nil {
		return "", err
	}
	log.Info("management network up", "iface", link.Attrs().Name, "addr", m.addr, "name", boot.Name)
	return m.addr.Addr().String(), nil
}

// findLink waits for the named link, or the first Ethernet link, to appear
// (its driver may still be loading).
func findLink(name string, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			a := l.Attrs()
			if name != "" && a.Name == name || name == "" && l.Type() == "device" && a.Name != "lo" && len(a.HardwareAddr) == 6 {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			if name != "" {
				return nil, fmt.Errorf("no network interface %s", name)
			}
			return nil, errors.New("no Ethernet interface")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func static(link netlink.Link, boot Boot) (mgmt, error) {
	p, err := netip.ParsePrefix(boot.IP)
	if err != nil {
		return mgmt{}, fmt.Errorf("cairn.ip=%s: %w", boot.IP, err)
	}
	if err := addAddr(link, p); err != nil {
		return mgmt{}, err
	}
	if boot.Gateway != "" {
		gw := net.ParseIP(boot.Gateway)
		if gw == nil {
			return mgmt{}, fmt.Errorf("cairn.gw=%s is not an IP address", boot.Gateway)
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
			return mgmt{}, fmt.Errorf("default route: %w", err)
		}
	}
	writeResolvConf(boot.DNS)
	return mgmt{link: link, addr: p}, nil
}

// dhcp gets a lease, applies it, and keeps renewing it until ctx ends.
func dhcp(ctx context.Context, log *slog.Logger, link netlink.Link) (mgmt, error) {
	name := link.Attrs().Name
	client, err := nclient4.New(name, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return mgmt{}, fmt.Errorf("dhcp on %s: %w", name, err)
	}
	var lease *nclient4.Lease
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		lease, err = client.Request(rctx)
		cancel()
		if err == nil {
			break
		}
		log.Warn("no DHCP lease yet", "iface", name, "attempt", attempt, "err", err)
		if ctx.Err() != nil {
			client.Close()
			return mgmt{}, err
		}
		time.Sleep(time.Second)
	}
	m, err := applyLease(link, lease.ACK)
	if err != nil {
		client.Close()
		return mgmt{}, err
	}
	go renew(ctx, log, client, lease)
	return m, nil
}

func applyLease(link netlink.Link, ack *dhcpv4.DHCPv4) (mgmt, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok {
		return mgmt{}, fmt.Errorf("dhcp: lease without an IPv4 address")
	}
	ones, _ := ack.SubnetMask().Size()
	if ones == 0 {
		ones = 24
	}
	p := netip.PrefixFrom(ip, ones)
	if err := addAddr(link, p); err != nil {
		return mgmt{}, err
	}
	if gws := ack.Router(); len(gws) > 0 {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gws[0]}); err != nil {
			return mgmt{}, fmt.Errorf("default route: %w", err)
		}
	}
	var dns []string
	for _, d := range ack.DNS() {
		dns = append(dns, d.String())
	}
	writeResolvConf(dns)
	return mgmt{link: link, addr: p}, nil
}

// renew renews the lease at half its time, and starts over when that fails.
func renew(ctx context.Context, log *slog.Logger, client *nclient4.Client, lease *nclient4.Lease) {
	defer client.Close()
	for {
		t := lease.ACK.IPAddressLeaseTime(time.Hour) / 2
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(t, 30*time.Second)):
		}
		next, err := client.Renew(ctx, lease)
		if err != nil {
			log.Warn("DHCP renewal failed; keeping the address", "err", err)
			continue
		}
		lease = next
	}
}

func addAddr(link netlink.Link, p netip.Prefix) error {
	a, err := netlink.ParseAddr(p.String())
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("address %s on %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

func writeResolvConf(servers []string) {
	if len(servers) == 0 {
		return
	}
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	_ = os.MkdirAll("/etc", 0o755)
	_ = os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
}

func setHostname(name string) error {
	if name == "" {
		return nil
	}
	return os.WriteFile("/proc/sys/kernel/hostname", []byte(name), 0o644)
}
