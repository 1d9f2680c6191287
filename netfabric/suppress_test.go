package netfabric_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
)

// ARP and neighbour solicitations are answered by the guest's own box: a
// guest resolves a port on another box (IPv4, IPv6, link-local) while that
// port has no guest at all, so only its own box can have answered, and no
// question about a port the state knows crosses the underlay, while one
// about an address it does not know still floods. The answers go on with
// the agent's servers stopped (an agent restart), and follow the state: a
// port that goes takes its answers with it, and a network with an address
// pair (a VRRP address that moves by gratuitous ARP, which suppression
// would keep on its box) does not suppress.
func TestNeighbourSuppression(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	nw, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.62.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSubnet6, netfabric.AddSubnet6Cmd{Network: nw.ID, CIDR: "fd00:62::/64"}, &nw); err != nil {
		t.Fatal(err)
	}
	wa := f.port(t, netfabric.PortRequest{ID: "wa", NetworkID: nw.ID, Owner: "wa", Project: f.ward, Node: "box1"})
	wc := f.port(t, netfabric.PortRequest{ID: "wc", NetworkID: nw.ID, Owner: "wc", Project: f.ward, Node: "box1"})
	wb := f.port(t, netfabric.PortRequest{ID: "wb", NetworkID: nw.ID, Owner: "wb", Project: f.ward, Node: "box2"})

	boxes := newBoxes(t, f)
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
	}
	box1 := boxes[0]
	br, vx := fmt.Sprintf("cnb%06x", nw.VNI), fmt.Sprintf("cnx%06x", nw.VNI)

	// What box1's bridge answers for: the gateway and every bound port,
	// not the address pair.
	gwMAC := netfabric.GatewayMAC(nw.ID).String()
	gw6, _ := nw.Gateway6()
	want := []string{nw.Gateway + " " + gwMAC, nw.GatewayLL().String() + " " + gwMAC, gw6.String() + " " + gwMAC}
	for _, p := range []netfabric.Port{wa, wb, wc} {
		p = *netfabric.GetPort(f.node.Store().ReadTxn(), p.ID)
		want = append(want, p.IP+" "+p.MAC, p.IP6+" "+p.MAC, netfabric.LinkLocal(p.HardwareAddr()).String()+" "+p.MAC)
	}
	slices.Sort(want)
	if got := bridgeNeighbours(t, box1.ns, br); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("box1's bridge answers for\n%v\nwant\n%v", got, want)
	}

	// Everything box1 sends to its peer on the segment, from here on.
	crossed := captureNeighbourQuestions(t, box1.ns, vx)
	ga := plugSegmentGuest(t, f, box1, wa)
	gc := plugSegmentGuest(t, f, box1, wc)
	for _, g := range []netns.NsHandle{ga, gc} {
		guestV6(t, g)
	}
	// gc speaks first, as a booting guest does (DHCP): the bridge learns
	// its MAC on its tap, which is what keeps questions about it on box1.
	testutil.WaitFor(t, 10*time.Second, "gc resolves the gateway", func() error {
		poke(t, gc, nw.Gateway)
		if got := neighMAC(t, gc, nw.Gateway); got != gwMAC {
			return fmt.Errorf("resolved to %q, want %s", got, gwMAC)
		}
		return nil
	})
	wb = *netfabric.GetPort(f.node.Store().ReadTxn(), "wb")
	wc = *netfabric.GetPort(f.node.Store().ReadTxn(), "wc")
	wbLL := netfabric.LinkLocal(wb.HardwareAddr()).String()
	resolves := func(g netns.NsHandle, ip string, mac string) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, "the guest resolves "+ip, func() error {
			poke(t, g, ip)
			if got := neighMAC(t, g, ip); got != mac {
				return fmt.Errorf("resolved to %q, want %s", got, mac)
			}
			return nil
		})
	}
	// wb has no guest: only box1 can answer for it.
	resolves(ga, wb.IP, wb.MAC)
	resolves(ga, wb.IP6, wb.MAC)
	resolves(ga, wbLL, wb.MAC)
	resolves(ga, nw.Gateway, netfabric.GatewayMAC(nw.ID).String()) // box1's own gateway
	// wc, on box1, answers for itself; the question stays on box1.
	resolves(ga, wc.IP, wc.MAC)
	resolves(ga, wc.IP6, wc.MAC)
	// An address nobody has is asked across the underlay as before.
	testutil.WaitFor(t, 10*time.Second, "a question about an unknown address crosses the underlay", func() error {
		poke(t, ga, "10.62.0.77")
		if !slices.Contains(crossed(), "arp 10.62.0.77") {
			return fmt.Errorf("crossed: %v", crossed())
		}
		return nil
	})
	for _, q := range crossed() {
		for _, known := range []string{wb.IP, wb.IP6, wbLL, wc.IP, wc.IP6, nw.Gateway} {
			if q == "arp "+known || q == "ns "+known {
				t.Errorf("a question about %s crossed the underlay (%s)", known, q)
			}
		}
	}

	// The agent stops (its servers do, as in a restart): the kernel goes on
	// answering.
	if err := box1.do(t, box1.h.Close); err != nil {
		t.Fatal(err)
	}
	forgetNeighbours(t, ga)
	resolves(ga, wb.IP, wb.MAC)
	resolves(ga, wb.IP6, wb.MAC)

	// wb goes: box1 no longer answers for it.
	if _, err := f.node.Apply(context.Background(), netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "wb"}, nil); err != nil {
		t.Fatal(err)
	}
	box1.reconcileSegments(t, f, boxes)
	for _, n := range bridgeNeighbours(t, box1.ns, br) {
		if n == wb.IP+" "+wb.MAC || n == wb.IP6+" "+wb.MAC {
			t.Fatalf("box1 still answers for the deleted port: %s", n)
		}
	}
	if fdb := bridgeStaticFDB(t, box1.ns, vx); len(fdb) != 0 {
		t.Fatalf("box1's bridge keeps forwarding entries for the deleted port: %v", fdb)
	}

	// An address pair (a VRRP address) moves by gratuitous ARP, which a
	// suppressing bridge keeps to its node: a network with pairs does not
	// suppress, so wa's announcement of its pair reaches the other boxes.
	pairs := []netfabric.AddressPair{{IP: "10.62.0.200"}}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: "wa", Project: f.ward, AddressPairs: &pairs}, nil); err != nil {
		t.Fatal(err)
	}
	box1.reconcileSegments(t, f, boxes)
	if got := bridgeNeighbours(t, box1.ns, br); len(got) != 0 {
		t.Fatalf("a network with address pairs still answers for %v", got)
	}
	testutil.WaitFor(t, 10*time.Second, "wa's gratuitous ARP for its pair crosses the underlay", func() error {
		gratuitousARP(t, ga, wa.HardwareAddr(), "10.62.0.200")
		if !slices.Contains(crossed(), "arp 10.62.0.200") {
			return fmt.Errorf("crossed: %v", crossed())
		}
		return nil
	})
}

// gratuitousARP sends a gratuitous ARP request for ip from the guest's
// eth0, as keepalived announces a VRRP address.
func gratuitousARP(t *testing.T, g netns.NsHandle, mac net.HardwareAddr, ip string) {
	t.Helper()
	if err := inNS(t, g, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_ARP, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		a := netip.MustParseAddr(ip).As4()
		b := make([]byte, 28)
		binary.BigEndian.PutUint16(b[0:], 1)
		binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP)
		b[4], b[5] = 6, 4
		binary.BigEndian.PutUint16(b[6:], 1)
		copy(b[8:14], mac)
		copy(b[14:18], a[:])
		copy(b[24:28], a[:])
		_, err = c.WriteTo(b, &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// poke sends one UDP datagram from the guest to ip, which makes the guest
// resolve it.
func poke(t *testing.T, g netns.NsHandle, ip string) {
	t.Helper()
	_ = inNS(t, g, func() error {
		a := netip.MustParseAddr(ip)
		addr := &net.UDPAddr{IP: a.AsSlice(), Port: 9}
		if a.IsLinkLocalUnicast() {
			addr.Zone = "eth0"
		}
		c, err := net.DialUDP("udp", nil, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("who"))
		return err
	})
}

// forgetNeighbours empties the guest's neighbour cache on eth0.
func forgetNeighbours(t *testing.T, g netns.NsHandle) {
	t.Helper()
	h := handle(t, g)
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := h.NeighList(l.Attrs().Index, family)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			_ = h.NeighDel(&n)
		}
	}
}

// bridgeNeighbours lists the permanent neighbours of a bridge, "ip mac".
func bridgeNeighbours(t *testing.T, ns netns.NsHandle, bridge string) []string {
	t.Helper()
	h := handle(t, ns)
	l, err := h.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := h.NeighList(l.Attrs().Index, family)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.State == netlink.NUD_PERMANENT {
				out = append(out, n.IP.String()+" "+n.HardwareAddr.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

// bridgeStaticFDB lists the bridge's static forwarding entries on a port.
func bridgeStaticFDB(t *testing.T, ns netns.NsHandle, port string) []string {
	t.Helper()
	h := handle(t, ns)
	l, err := h.LinkByName(port)
	if err != nil {
		t.Fatal(err)
	}
	fdb, err := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range fdb {
		if n.IP == nil && n.Flags&netlink.NTF_SELF == 0 && n.State == netlink.NUD_NOARP {
			out = append(out, n.HardwareAddr.String())
		}
	}
	return out
}

// captureNeighbourQuestions records the ARP requests ("arp TARGET") and
// neighbour solicitations ("ns TARGET") that leave through dev in ns.
func captureNeighbourQuestions(t *testing.T, ns netns.NsHandle, dev string) func() []string {
	t.Helper()
	var c *packet.Conn
	if err := inNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var mu sync.Mutex
	var seen []string
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if q := neighbourQuestion(buf[:n]); q != "" {
				mu.Lock()
				seen = append(seen, q)
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// neighbourQuestion names an Ethernet frame that is an ARP request or a
// neighbour solicitation by its target, or returns "".
func neighbourQuestion(b []byte) string {
	if len(b) < 14 {
		return ""
	}
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0806:
		if len(b) >= 42 && binary.BigEndian.Uint16(b[20:]) == 1 {
			return "arp " + netip.AddrFrom4([4]byte(b[38:42])).String()
		}
	case 0x86dd:
		// No extension headers: a solicitation carries none.
		if len(b) >= 14+40+24 && b[14+6] == unix.IPPROTO_ICMPV6 && b[14+40] == 135 {
			return "ns " + netip.AddrFrom16([16]byte(b[14+40+8:14+40+24])).String()
		}
	}
	return ""
}
