package netfabric_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A router routes its networks' IPv6 subnets to each other, as they are
// (no NAT66): guests take the gateway as their default router from their
// own box's advertisements, reach a guest of the other network on the
// other box over IPv6, and know the gateway by its own MAC, the same on
// every box (the box answers neighbour solicitations for it; the router
// sends no neighbour discovery onto the network). The router takes for
// itself only ICMPv6 and replies.
func TestRouterIPv6(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	var nets []netfabric.Network
	for i, c := range []struct{ cidr, cidr6 string }{{"10.1.0.0/24", "fd00:1::/64"}, {"10.2.0.0/24", "fd00:2::/64"}} {
		nw, err := f.network(t, netfabric.Network{ID: fmt.Sprintf("ward-%d", i+1), Project: f.ward, CIDR: c.cidr})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSubnet6, netfabric.AddSubnet6Cmd{Network: nw.ID, CIDR: c.cidr6}, &nw); err != nil {
			t.Fatal(err)
		}
		nets = append(nets, nw)
	}
	a := f.port(t, netfabric.PortRequest{ID: "a", NetworkID: nets[0].ID, Owner: "vm-a", Project: f.ward, Node: "box1"})
	b := f.port(t, netfabric.PortRequest{ID: "b", NetworkID: nets[1].ID, Owner: "vm-b", Project: f.ward, Node: "box2"})
	var r netfabric.Router
	f.must(t, netfabric.MsgCreateRouter, netfabric.Router{ID: "r1", Name: "edge", Project: f.ward, CreatedAt: t0}, &r)
	for _, nw := range nets {
		f.must(t, netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: nw.ID}, &r)
	}

	boxes := newBoxes(t, f)
	for range 2 { // a second pass changes nothing
		for _, bx := range boxes {
			bx.reconcileSegments(t, f, boxes)
		}
		for _, bx := range boxes {
			bx.reconcileRouters(t, f)
		}
	}
	gA, gB := plugSegmentGuest(t, f, boxes[0], a), plugSegmentGuest(t, f, boxes[1], b)
	guestV6(t, gA)
	guestV6(t, gB)
	a, b = *netfabric.GetPort(f.node.Store().ReadTxn(), "a"), *netfabric.GetPort(f.node.Store().ReadTxn(), "b")
	for _, c := range []struct {
		g  netns.NsHandle
		p  netfabric.Port
		nw netfabric.Network
	}{{gA, a, nets[0]}, {gB, b, nets[1]}} {
		testutil.WaitFor(t, 20*time.Second, c.p.ID+"'s SLAAC address and default route", func() error {
			if as := addrs6(t, c.g); fmt.Sprint(as) != "["+c.p.IP6+"]" {
				return fmt.Errorf("global addresses %v, want %s", as, c.p.IP6)
			}
			if gw := defaultRoute6(t, handle(t, c.g)); gw != c.nw.GatewayLL().String() {
				return fmt.Errorf("default route via %q, want the gateway %s", gw, c.nw.GatewayLL())
			}
			return nil
		})
	}
	ra, err := solicit(t, gA)
	if err != nil {
		t.Fatal(err)
	}
	if ra.RouterLifetime != 3*time.Minute {
		t.Fatalf("a routed network's advertisement names a default router for %s, want 3m", ra.RouterLifetime)
	}

	// Across networks and boxes, both ways.
	echoTCP(t, gA, "tcp6", "[::]:8080")
	echoTCP(t, gB, "tcp6", "[::]:8080")
	testutil.WaitFor(t, 10*time.Second, "a reaches b over IPv6 through the router", func() error {
		if !dial6(t, gA, "", "["+b.IP6+"]:8080") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	if !dial6(t, gB, "", "["+a.IP6+"]:8080") {
		t.Fatal("b cannot reach a over IPv6 through the router")
	}
	// The gateway, by its link-local and its ::1 address, is its own MAC
	// on every box, never a box's router's.
	gw6, _ := nets[0].Gateway6()
	dial6(t, gA, "", "["+gw6.String()+"]:9") // resolves the gateway's ::1
	for _, ip := range []string{nets[0].GatewayLL().String(), gw6.String()} {
		if got, want := neighMAC(t, gA, ip), netfabric.GatewayMAC(nets[0].ID).String(); got != want {
			t.Errorf("a resolved its gateway %s to %q, want %s", ip, got, want)
		}
	}
	// Asked outright, only the gateway MAC answers: the router itself
	// never does.
	for _, target := range []netip.Addr{nets[0].GatewayLL(), gw6} {
		var answers []string
		if err := withNDP(t, gA, func(c *ndp.Conn, ifi *net.Interface) error {
			ns := &ndp.NeighborSolicitation{TargetAddress: target,
				Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
			snm, err := ndp.SolicitedNodeMulticast(target)
			if err != nil {
				return err
			}
			if err := c.WriteTo(ns, nil, snm); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				m, _, _, err := c.ReadFrom()
				if err != nil {
					return nil // the second is over
				}
				if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == target {
					for _, o := range na.Options {
						if l, ok := o.(*ndp.LinkLayerAddress); ok {
							answers = append(answers, l.Addr.String())
						}
					}
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		if want := "[" + netfabric.GatewayMAC(nets[0].ID).String() + "]"; fmt.Sprint(answers) != want {
			t.Errorf("a solicitation for %s was answered with %v, want only %s", target, answers, want)
		}
	}
	// Another pass leaves the router's IPv6 alone: no address of a leg
	// goes, even for a moment.
	var st unix.Stat_t
	if err := unix.Fstat(int(boxes[0].ns), &st); err != nil {
		t.Fatal(err)
	}
	rns, err := netns.GetFromPath(fmt.Sprintf("/run/netns/cairn-%x-r1", st.Ino))
	if err != nil {
		t.Fatal(err)
	}
	defer rns.Close()
	updates, done := make(chan netlink.AddrUpdate, 64), make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{Namespace: &rns}); err != nil {
		t.Fatal(err)
	}
	boxes[0].reconcileSegments(t, f, boxes)
	boxes[0].reconcileRouters(t, f)
	time.Sleep(100 * time.Millisecond)
	close(done)
	for u := range updates {
		if !u.NewAddr {
			t.Errorf("a reconcile took the router's address %s away", u.LinkAddress.String())
		}
	}
	// The router answers pings to its gateway address, and nothing else.
	if !ping6(t, gA, gw6.String()) {
		t.Error("the router does not answer a ping to the gateway")
	}
	if dial6(t, gA, "", "["+gw6.String()+"]:22") {
		t.Error("a guest connected to the router itself")
	}
}

// ping6 sends one ICMPv6 echo request from ns and reports whether a reply
// came within a second.
func ping6(t *testing.T, ns netns.NsHandle, ip string) bool {
	t.Helper()
	return inNS(t, ns, func() error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		defer c.Close()
		m := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: 1, Seq: 1, Data: []byte("cairn")}}
		b, err := m.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: net.ParseIP(ip)}); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return err
			}
			if r, err := icmp.ParseMessage(58, buf[:n]); err == nil && r.Type == ipv6.ICMPTypeEchoReply {
				return nil
			}
		}
	}) == nil
}

// defaultRoute6 returns the gateway of the guest's IPv6 default route.
func defaultRoute6(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	routes, err := h.RouteList(nil, unix.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "::/0") && r.Gw != nil {
			return r.Gw.String()
		}
	}
	return ""
}
