package netfabric_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
)

// guestV6 readies a guest namespace's eth0 for IPv6 as a stock guest has
// it (router advertisements accepted, SLAAC, EUI-64 addresses), without
// the second of duplicate address detection, and brings the link up
// again so the guest solicits a router now.
func guestV6(t *testing.T, g netns.NsHandle) {
	t.Helper()
	if err := inNS(t, g, func() error {
		for k, v := range map[string]string{"accept_ra": "1", "autoconf": "1", "addr_gen_mode": "0", "accept_dad": "0", "use_tempaddr": "0"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/eth0/"+k, []byte(v), 0); err != nil {
				return err
			}
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetDown(l); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatal(err)
	}
}

// addrs6 returns the guest's global IPv6 addresses on eth0.
func addrs6(t *testing.T, g netns.NsHandle) []string {
	t.Helper()
	var out []string
	_ = inNS(t, g, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_V6)
		for _, a := range as {
			if a.IP.IsGlobalUnicast() {
				out = append(out, a.IP.String())
			}
		}
		return err
	})
	return out
}

// solicit sends a router solicitation from the guest and returns the
// advertisement it gets, if any.
func solicit(t *testing.T, g netns.NsHandle) (*ndp.RouterAdvertisement, error) {
	t.Helper()
	var ra *ndp.RouterAdvertisement
	var err error
	// The link-local address comes a moment after the link.
	for range 20 {
		if ra, err = solicitOnce(t, g); err == nil {
			return ra, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil, err
}

// withNDP runs fn with a neighbour discovery socket on the guest's eth0,
// from its link-local address.
func withNDP(t *testing.T, g netns.NsHandle, fn func(c *ndp.Conn, ifi *net.Interface) error) error {
	t.Helper()
	return inNS(t, g, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(c, ifi)
	})
}

func solicitOnce(t *testing.T, g netns.NsHandle) (*ndp.RouterAdvertisement, error) {
	t.Helper()
	var ra *ndp.RouterAdvertisement
	err := withNDP(t, g, func(c *ndp.Conn, ifi *net.Interface) error {
		rs := &ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
		if err := c.WriteTo(rs, nil, netip.MustParseAddr("ff02::2")); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			m, _, _, err := c.ReadFrom()
			if err != nil {
				return err
			}
			if r, ok := m.(*ndp.RouterAdvertisement); ok {
				ra = r
				return nil
			}
		}
	})
	return ra, err
}

func dial6(t *testing.T, ns netns.NsHandle, from, addr string) bool {
	t.Helper()
	err := inNS(t, ns, func() error {
		d := net.Dialer{Timeout: time.Second}
		if from != "" {
			ip, zone, _ := strings.Cut(from, "%")
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip), Zone: zone}
		}
		c, err := d.Dial("tcp6", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		// The guest could not even send: a refusal seen this way would
		// prove nothing about the filter.
		t.Fatalf("dial %s from %q: %v", addr, from, err)
	}
	return err == nil
}

// IPv6 on a project network: the subnet is added to a running network
// and its ports get their addresses in the same command; a guest takes
// its address from the router advertisements of its own box (SLAAC), with
// the MTU, DNS servers and domain in them; guests on two boxes talk IPv6
// within their security groups; a guest cannot send from an address that
// is not its own or speak for another's in neighbour discovery; a DHCPv6
// network hands out the same address by DHCPv6. Bad subnets change
// nothing.
func TestIPv6Subnets(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	nw, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.60.0.0/24",
		DNS: []string{"10.60.0.53"}, DNS6: []string{"fd00:53::53"}, Domain: "ward.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	wa := f.port(t, netfabric.PortRequest{ID: "wa", NetworkID: nw.ID, Owner: "wa", Project: f.ward, Node: "box1"})
	var got netfabric.Network
	if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSubnet6, netfabric.AddSubnet6Cmd{Network: nw.ID, CIDR: "fd00:60::/64"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.CIDR6 != "fd00:60::/64" || got.IPv6Mode != netfabric.IPv6SLAAC {
		t.Fatalf("network after the subnet: %+v", got)
	}
	wa = *netfabric.GetPort(f.node.Store().ReadTxn(), "wa")
	want := netfabric.EUI64(netip.MustParsePrefix("fd00:60::/64"), wa.HardwareAddr()).String()
	if wa.IP6 != want {
		t.Fatalf("the port there before the subnet has IPv6 %q, want %s", wa.IP6, want)
	}
	// wb takes any IPv6 in: only port security stands between it and a
	// forged source.
	const any6ID = "sg-00000000000000e6"
	f.group(t, any6ID, "any6-in", netfabric.Rule{Direction: "ingress", EtherType: "IPv6"})
	wb := f.port(t, netfabric.PortRequest{ID: "wb", NetworkID: nw.ID, Owner: "wb", Project: f.ward, Node: "box2",
		SecurityGroups: []string{netfabric.DefaultGroupID(f.ward), any6ID}})
	wc := f.port(t, netfabric.PortRequest{ID: "wc", NetworkID: nw.ID, Owner: "wc", Project: f.ward, Node: "box1"})
	if wb.IP6 == "" || wb.IP6 == wa.IP6 {
		t.Fatalf("a new port's IPv6: %+v", wb)
	}
	for _, c := range []netfabric.AddSubnet6Cmd{
		{Network: nw.ID, CIDR: "fd00:61::/64"},            // it has one
		{Network: "default", CIDR: "fd00:62::/64"},        // the cluster's
		{Network: "nosuch", CIDR: "fd00:62::/64"},         // no such network
		{Network: nw.ID, CIDR: "fd00:60::/64", Mode: "x"}, // no such mode
	} {
		if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSubnet6, c, nil); err == nil {
			t.Errorf("add subnet %+v: accepted", c)
		}
	}
	other, err := f.network(t, netfabric.Network{ID: "ward-2", Project: f.ward, CIDR: "10.61.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cidr, code string
	}{
		{"fd00:60::/64", consensus.CodeConflict}, // the project's other network's
		{"fd00:63::/48", consensus.CodeInvalid},
		{"fd00:63::1/64", consensus.CodeInvalid},
		{"fe80::/64", consensus.CodeInvalid},
		{"ff02::/64", consensus.CodeInvalid},
		{"::ffff:10.0.0.0/120", consensus.CodeInvalid},
		{"10.62.0.0/24", consensus.CodeInvalid},
	} {
		if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSubnet6, netfabric.AddSubnet6Cmd{Network: other.ID, CIDR: c.cidr}, nil); consensus.ErrorCode(err) != c.code {
			t.Errorf("subnet %s: %v, want %s", c.cidr, err, c.code)
		}
	}
	if n := netfabric.GetNetwork(f.node.Store().ReadTxn(), other.ID); n.CIDR6 != "" {
		t.Fatalf("a refused subnet was added: %+v", n)
	}

	boxes := newBoxes(t, f)
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
	}
	ga := plugSegmentGuest(t, f, boxes[0], wa)
	gb := plugSegmentGuest(t, f, boxes[1], wb)
	gc := plugSegmentGuest(t, f, boxes[0], wc)
	for _, g := range []netns.NsHandle{ga, gb, gc} {
		guestV6(t, g)
	}
	for _, c := range []struct {
		g netns.NsHandle
		p netfabric.Port
	}{{ga, wa}, {gb, wb}, {gc, wc}} {
		testutil.WaitFor(t, 20*time.Second, c.p.ID+"'s SLAAC address", func() error {
			if as := addrs6(t, c.g); fmt.Sprint(as) != "["+c.p.IP6+"]" {
				return fmt.Errorf("global addresses %v, want %s", as, c.p.IP6)
			}
			return nil
		})
	}
	ra, err := solicit(t, ga)
	if err != nil {
		t.Fatal(err)
	}
	var opts []string
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.MTU:
			opts = append(opts, fmt.Sprintf("mtu %d", o.MTU))
		case *ndp.PrefixInformation:
			opts = append(opts, fmt.Sprintf("prefix %s/%d onlink=%v auto=%v", o.Prefix, o.PrefixLength, o.OnLink, o.AutonomousAddressConfiguration))
		case *ndp.RecursiveDNSServer:
			opts = append(opts, fmt.Sprintf("rdnss %v", o.Servers))
		case *ndp.DNSSearchList:
			opts = append(opts, fmt.Sprintf("dnssl %v", o.DomainNames))
		case *ndp.LinkLayerAddress:
			opts = append(opts, "lla "+o.Addr.String())
		}
	}
	wantOpts := fmt.Sprintf("[lla %s mtu 1450 prefix fd00:60::/64 onlink=true auto=true rdnss [fd00:53::53] dnssl [ward.example.org]]", netfabric.GatewayMAC(nw.ID))
	if fmt.Sprint(opts) != wantOpts || ra.RouterLifetime != 0 || ra.ManagedConfiguration {
		t.Fatalf("the advertisement: %v lifetime %s managed %v, want %s and no default router", opts, ra.RouterLifetime, ra.ManagedConfiguration, wantOpts)
	}

	// IPv6 across the boxes, within the default group (members reach
	// each other, by their IPv6 addresses too).
	echoTCP(t, gb, "tcp6", "[::]:8080")
	echoTCP(t, gc, "tcp6", "[::]:8080")
	testutil.WaitFor(t, 10*time.Second, "wa reaches wb over IPv6 across the boxes", func() error {
		if !dial6(t, ga, "", "["+wb.IP6+"]:8080") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	// A forged source address is dropped.
	forged := netfabric.EUI64(netip.MustParsePrefix("fd00:60::/64"), net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}).String()
	addAddr(t, ga, "eth0", forged+"/128")
	if dial6(t, ga, forged, "["+wb.IP6+"]:8080") {
		t.Fatal("a guest sent from an IPv6 address not its own")
	}
	// Unless it is an allowed address pair of the port's (a VRRP
	// address): then it sends from it, and speaks for it in neighbour
	// discovery, as the VRRP master does when it takes the address.
	pairs := []netfabric.AddressPair{{IP: forged}}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: wa.ID, Project: f.ward, AddressPairs: &pairs, PairRules: netfabric.PairRulesV6}, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
	}
	if !dial6(t, ga, forged, "["+wb.IP6+"]:8080") {
		t.Fatal("a guest cannot send from its IPv6 address pair")
	}
	echoTCP(t, ga, "tcp6", "[::]:8080")
	if !dial6(t, gc, "", "["+forged+"]:8080") {
		t.Fatal("wc cannot reach wa at its IPv6 address pair")
	}
	if mac := neighMAC(t, gc, forged); mac != wa.MAC {
		t.Fatalf("wc has %q for wa's pair address %s, want %s", mac, forged, wa.MAC)
	}
	// Pairs that are not one address of the network's own are refused,
	// and change nothing.
	for _, bad := range []string{"fd00:61::5", "fe80::5", "fe80::5%eth0", "fd00:60::1", "fd00:60::/64", "::ffff:10.60.0.9"} {
		if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: wa.ID, Project: f.ward,
			AddressPairs: &[]netfabric.AddressPair{{IP: bad}}, PairRules: netfabric.PairRulesV6}, nil); consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Errorf("address pair %s: %v, want invalid", bad, err)
		}
	}
	// A command written before IPv6 pairs replays as it applied then:
	// its IPv6 pair refused (and its groups with it), its pair that is the
	// gateway taken (the service refused those then, the FSM did not).
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: wa.ID, Project: f.ward,
		AddressPairs: &[]netfabric.AddressPair{{IP: forged}}}, nil); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Errorf("an old command's IPv6 pair: %v, want invalid as it was", err)
	}
	if p := netfabric.GetPort(f.node.Store().ReadTxn(), wa.ID); fmt.Sprint(p.AddressPairs) != fmt.Sprint(pairs) {
		t.Fatalf("refused pairs changed the port's: %v", p.AddressPairs)
	}
	old := []netfabric.AddressPair{{IP: "10.60.0.1"}}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: wc.ID, Project: f.ward, AddressPairs: &old}, nil); err != nil {
		t.Errorf("an old command's pair that is the gateway: %v, want taken as it was", err)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: wc.ID, Project: f.ward, AddressPairs: &[]netfabric.AddressPair{}}, nil); err != nil {
		t.Fatal(err)
	}
	// Taken away again, the address is wa's no more.
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: wa.ID, Project: f.ward, AddressPairs: &[]netfabric.AddressPair{}, PairRules: netfabric.PairRulesV6}, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
	}
	if dial6(t, ga, forged, "["+wb.IP6+"]:8080") {
		t.Fatal("a guest sent from an IPv6 address pair it no longer has")
	}
	// So is a forged link-local source.
	forgedLL := netfabric.LinkLocal(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x98}).String()
	addAddr(t, ga, "eth0", forgedLL+"/64")
	if dial6(t, ga, forgedLL+"%eth0", "["+netfabric.LinkLocal(wb.HardwareAddr()).String()+"%eth0]:8080") {
		t.Fatal("a guest sent from a link-local address not its own")
	}
	// A neighbour advertisement for another guest's address, global or
	// link-local, is dropped: gc keeps wb's MAC for them.
	wbLL := netfabric.LinkLocal(wb.HardwareAddr()).String()
	if !dial6(t, gc, "", "["+wb.IP6+"]:8080") || !dial6(t, gc, "", "["+wbLL+"%eth0]:8080") {
		t.Fatal("wc cannot reach wb")
	}
	if err := withNDP(t, ga, func(c *ndp.Conn, ifi *net.Interface) error {
		for _, target := range []string{wb.IP6, wbLL} {
			na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: netip.MustParseAddr(target),
				Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr}}}
			for range 3 {
				if err := c.WriteTo(na, nil, netip.MustParseAddr("ff02::1")); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, a := range []string{wb.IP6, wbLL} {
		if mac := neighMAC(t, gc, a); mac != wb.MAC {
			t.Fatalf("wc has %q for wb's address %s after wa spoke for it, want %s", mac, a, wb.MAC)
		}
	}

	// DHCPv6: a network in that mode advertises its prefix as managed,
	// and DHCPv6 hands out the port's address with the DNS servers.
	dnw, err := f.network(t, netfabric.Network{ID: "ward-3", Project: f.ward, CIDR: "10.63.0.0/24", DNS6: []string{"fd00:53::53"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSubnet6, netfabric.AddSubnet6Cmd{Network: dnw.ID, CIDR: "fd00:63::/64", Mode: netfabric.IPv6DHCPv6}, nil); err != nil {
		t.Fatal(err)
	}
	wd := f.port(t, netfabric.PortRequest{ID: "wd", NetworkID: dnw.ID, Owner: "wd", Project: f.ward, Node: "box2"})
	boxes[1].reconcileSegments(t, f, boxes)
	gd := plugSegmentGuest(t, f, boxes[1], wd)
	guestV6(t, gd)
	if ra, err := solicit(t, gd); err != nil || !ra.ManagedConfiguration {
		t.Fatalf("the DHCPv6 network's advertisement: %+v %v", ra, err)
	}
	var lease *dhcpv6.Message
	testutil.WaitFor(t, 10*time.Second, "a DHCPv6 lease", func() error {
		return inNS(t, gd, func() error {
			c, err := nclient6.New("eth0", nclient6.WithTimeout(time.Second), nclient6.WithRetry(1))
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			adv, err := c.Solicit(ctx)
			if err != nil {
				return err
			}
			lease, err = c.Request(ctx, adv)
			return err
		})
	})
	ia := lease.Options.OneIANA()
	if ia == nil || ia.Options.OneAddress() == nil || ia.Options.OneAddress().IPv6Addr.String() != wd.IP6 || fmt.Sprint(lease.Options.DNS()) != "[fd00:53::53]" {
		t.Fatalf("DHCPv6 reply %s, want address %s and DNS fd00:53::53", lease.Summary(), wd.IP6)
	}
	// And ISC's dhclient, as a Debian guest with ifupdown runs it, gets
	// the same lease.
	dir := t.TempDir()
	lf, pf := filepath.Join(dir, "dhclient6.leases"), filepath.Join(dir, "dhclient6.pid")
	if err := inNS(t, gd, func() error {
		out, err := exec.Command("dhclient", "-6", "-1", "-v", "-lf", lf, "-pf", pf, "-sf", "/bin/true", "eth0").CombinedOutput()
		if err != nil {
			return fmt.Errorf("dhclient -6: %v\n%s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(pf); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})
	leases, _ := os.ReadFile(lf)
	if !strings.Contains(string(leases), "iaaddr "+wd.IP6+" ") || !strings.Contains(string(leases), "fd00:53::53") {
		t.Fatalf("dhclient's lease, want %s and DNS fd00:53::53:\n%s", wd.IP6, leases)
	}
}
