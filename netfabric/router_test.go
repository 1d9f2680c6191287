package netfabric_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func (f *fabric) apply(t *testing.T, mt consensus.MessageType, cmd, out any) error {
	t.Helper()
	_, err := f.node.Apply(context.Background(), mt, cmd, out)
	return err
}

func (f *fabric) must(t *testing.T, mt consensus.MessageType, cmd, out any) {
	t.Helper()
	if err := f.apply(t, mt, cmd, out); err != nil {
		t.Fatalf("command %d: %v", mt, err)
	}
}

// reconcileRouters builds the routers the state gives box b.
func (b *box) reconcileRouters(t *testing.T, f *fabric) {
	t.Helper()
	plans := netfabric.RouterPlans(f.node.Store().ReadTxn(), b.name)
	if err := b.do(t, func() error { return b.h.ReconcileRouters(plans) }); err != nil {
		t.Fatalf("%s: routers: %v", b.name, err)
	}
}

// outside is the external network: a switch (a bridge in a namespace of
// its own) that each box's ext0 is plugged into, and the upstream
// gateway, 203.0.113.1, on it.
func newOutside(t *testing.T, boxes [2]*box) netns.NsHandle {
	t.Helper()
	out := newNS(t)
	oh := handle(t, out)
	sw := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "sw"}}
	if err := oh.LinkAdd(sw); err != nil {
		t.Fatal(err)
	}
	swl, _ := oh.LinkByName("sw")
	if err := oh.LinkSetUp(swl); err != nil {
		t.Fatal(err)
	}
	for i, b := range boxes {
		port := fmt.Sprintf("sw%d", i+1)
		vethInto(t, b.ns, out, "ext0", port, nil)
		l, _ := oh.LinkByName(port)
		if err := oh.LinkSetMaster(l, swl); err != nil {
			t.Fatal(err)
		}
	}
	addAddr(t, out, "sw", "203.0.113.1/24")
	return out
}

// guestRoute gives a guest namespace its default route.
func guestRoute(t *testing.T, g netns.NsHandle, gw string) {
	t.Helper()
	h := handle(t, g)
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
		t.Fatal(err)
	}
}

// serveName answers every connection on addr in ns with name and the
// address the connection came from.
func serveName(t *testing.T, ns netns.NsHandle, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(t, ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s\n", name, host)
			c.Close()
		}
	}()
}

// ask connects from ns to addr and returns the answer ("" if none came).
func ask(t *testing.T, ns netns.NsHandle, addr string) string {
	t.Helper()
	var line string
	_ = inNS(t, ns, func() error {
		c, err := net.DialTimeout("tcp4", addr, 700*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line)
}

func neighOf(t *testing.T, ns netns.NsHandle, ip string) string {
	t.Helper()
	h := handle(t, ns)
	ns4, err := h.NeighList(0, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns4 {
		if n.IP.String() == ip && n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_PERMANENT|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0 {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

// A distributed router across two boxes: a project's guests on two
// networks reach each other, each box routes its own guests' traffic,
// and sends it out onto the external network from its own address; a
// floating IP reaches its guest from outside, follows the guest to the
// other box (announced by gratuitous ARP) and is what the outside sees
// of it. The outside reaches nothing else, and another project's guest
// at the same address is never reached.
func TestDistributedRouter(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	ext, err := f.network(t, netfabric.Network{ID: "public", External: true, Interface: "ext0", CIDR: "203.0.113.0/24",
		Gateway: "203.0.113.1", Pools: []netfabric.Pool{{Start: "203.0.113.10", End: "203.0.113.50"}}})
	if err != nil {
		t.Fatal(err)
	}
	n1, err := f.network(t, netfabric.Network{ID: "ward-a", Project: f.ward, CIDR: "10.1.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := f.network(t, netfabric.Network{ID: "ward-b", Project: f.ward, CIDR: "10.2.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	labNet, err := f.network(t, netfabric.Network{ID: "lab-b", Project: f.lab, CIDR: "10.2.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	// The ward's default group lets anyone reach port 8080.
	var g netfabric.SecurityGroup
	f.must(t, netfabric.MsgAddSecurityGroupRules, netfabric.AddRulesCmd{Group: netfabric.DefaultGroupID(f.ward), Project: f.ward,
		At: t0, Rules: []netfabric.Rule{{ID: netfabric.DefaultGroupID(f.ward) + "-open", Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: 8080, PortMax: 9090, RemoteCIDR: "0.0.0.0/0"}}}, &g)

	boxes := newBoxes(t, f)
	outside := newOutside(t, boxes)
	serveName(t, outside, "203.0.113.1:80", "outside")

	a := f.port(t, netfabric.PortRequest{ID: "a", NetworkID: n1.ID, Owner: "vm-a", Project: f.ward, Node: "box1", IP: "10.1.0.10"})
	b := f.port(t, netfabric.PortRequest{ID: "b", NetworkID: n2.ID, Owner: "vm-b", Project: f.ward, Node: "box2", IP: "10.2.0.10"})
	c := f.port(t, netfabric.PortRequest{ID: "c", NetworkID: labNet.ID, Owner: "vm-c", Project: f.lab, Node: "box1", IP: "10.2.0.10"})

	var r netfabric.Router
	f.must(t, netfabric.MsgCreateRouter, netfabric.Router{ID: "r1", Name: "edge", Project: f.ward, CreatedAt: t0}, &r)
	for _, nw := range []string{n1.ID, n2.ID} {
		f.must(t, netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: nw}, &r)
	}
	f.must(t, netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1", Network: ext.ID}, &r)
	addr := map[string]string{}
	for _, bx := range boxes {
		var p netfabric.Port
		f.must(t, netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: bx.name, CreatedAt: t0}, &p)
		addr[bx.name] = p.IP
	}
	if addr["box1"] == addr["box2"] || !strings.HasPrefix(addr["box1"], "203.0.113.") {
		t.Fatalf("router addresses %v: want one of the external pool's per box", addr)
	}
	reconcile := func() {
		t.Helper()
		for _, bx := range boxes {
			bx.reconcileSegments(t, f, boxes)
		}
		for _, bx := range boxes {
			bx.reconcileRouters(t, f)
		}
	}
	reconcile()
	// Twice: nothing changes on a second pass.
	reconcile()

	// The bridge knows each router's MAC for good: a static, sticky entry
	// on the router's port, which no frame from elsewhere moves.
	bh := handle(t, boxes[0].ns)
	leg, err := bh.LinkByName(fmt.Sprintf("cnq%06x", n1.VNI))
	if err != nil {
		t.Fatal(err)
	}
	fdb, err := bh.NeighList(leg.Attrs().Index, unix.AF_BRIDGE)
	sticky := false
	for _, e := range fdb {
		sticky = sticky || (e.Flags&netlink.NTF_STICKY != 0 && e.State&netlink.NUD_NOARP != 0)
	}
	if err != nil || !sticky {
		t.Fatalf("no static sticky entry for the router on %s: %+v %v", leg.Attrs().Name, fdb, err)
	}

	gA, gB, gC := plugSegmentGuest(t, f, boxes[0], a), plugSegmentGuest(t, f, boxes[1], b), plugSegmentGuest(t, f, boxes[0], c)
	guestRoute(t, gA, "10.1.0.1")
	guestRoute(t, gB, "10.2.0.1")
	guestRoute(t, gC, "10.2.0.1")
	serveName(t, gA, "0.0.0.0:8080", "a")
	serveName(t, gB, "0.0.0.0:8080", "b")
	serveName(t, gC, "0.0.0.0:8080", "c")

	// East-west across boxes and networks, both ways, and never the lab's
	// guest at the same address.
	testutil.WaitFor(t, 10*time.Second, "a reaches b through the router", func() error {
		if got := ask(t, gA, "10.2.0.10:8080"); got != "b 10.1.0.10" {
			return fmt.Errorf("a asked 10.2.0.10: %q", got)
		}
		return nil
	})
	if got := ask(t, gB, "10.1.0.10:8080"); got != "a 10.2.0.10" {
		t.Fatalf("b asked a: %q", got)
	}
	if got := ask(t, gC, "10.1.0.10:8080"); got != "" {
		t.Fatalf("the lab's guest reached the ward's network: %q", got)
	}
	// The guests know their gateway by its own MAC, the same on every box.
	if got, want := neighOf(t, gA, "10.1.0.1"), netfabric.GatewayMAC(n1.ID).String(); got != want {
		t.Fatalf("a's gateway is %s, want %s", got, want)
	}

	// A VRRP address with a virtual MAC (an allowed address pair) is
	// routed to: both boxes' routers know it.
	const vmac = "00:00:5e:00:01:07"
	f.must(t, netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: "b", Project: f.ward, At: t0,
		AddressPairs: &[]netfabric.AddressPair{{IP: "10.2.0.50", MAC: vmac}}}, nil)
	reconcile()
	for _, bx := range boxes {
		// Named after the box's own namespace.
		var st unix.Stat_t
		if err := unix.Fstat(int(bx.ns), &st); err != nil {
			t.Fatal(err)
		}
		path := fmt.Sprintf("/run/netns/cairn-%x-r1", st.Ino)
		rns, err := netns.GetFromPath(path)
		if err != nil {
			t.Fatal(err)
		}
		rh := handle(t, rns)
		rns.Close()
		leg, err := rh.LinkByName(fmt.Sprintf("qr-%06x", n2.VNI))
		if err != nil {
			t.Fatal(err)
		}
		nbs, err := rh.NeighList(leg.Attrs().Index, unix.AF_INET)
		found := false
		for _, n := range nbs {
			found = found || (n.IP.String() == "10.2.0.50" && n.HardwareAddr.String() == vmac && n.State&netlink.NUD_PERMANENT != 0)
		}
		if err != nil || !found {
			t.Fatalf("%s: no permanent neighbour 10.2.0.50 at %s: %+v %v", path, vmac, nbs, err)
		}
	}

	// North-south: each box's guests leave from that box's address.
	if got := ask(t, gA, "203.0.113.1:80"); got != "outside "+addr["box1"] {
		t.Fatalf("a asked outside: %q, want it seen from %s", got, addr["box1"])
	}
	if got := ask(t, gB, "203.0.113.1:80"); got != "outside "+addr["box2"] {
		t.Fatalf("b asked outside: %q, want it seen from %s", got, addr["box2"])
	}
	// The outside reaches nothing behind the router, even with a route.
	oh := handle(t, outside)
	sw, _ := oh.LinkByName("sw")
	for _, rt := range []struct{ dst, via string }{{"10.1.0.0/24", addr["box1"]}, {"10.2.0.0/24", addr["box2"]}} {
		_, dst, _ := net.ParseCIDR(rt.dst)
		if err := oh.RouteAdd(&netlink.Route{LinkIndex: sw.Attrs().Index, Dst: dst, Gw: net.ParseIP(rt.via)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := ask(t, outside, "10.1.0.10:8080"); got != "" {
		t.Fatalf("the outside reached a guest without a floating IP: %q", got)
	}

	// A floating IP for b: in from outside, and b is seen as it going out.
	var fip netfabric.FloatingIP
	f.must(t, netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: "fip-1", Project: f.ward, NetworkID: ext.ID, CreatedAt: t0}, &fip)
	f.must(t, netfabric.MsgAssociateFloatingIP, netfabric.AssociateCmd{ID: fip.ID, PortID: "b"}, &fip)
	reconcile()
	testutil.WaitFor(t, 5*time.Second, "the floating IP reaches b", func() error {
		if got := ask(t, outside, fip.IP+":8080"); got != "b 203.0.113.1" {
			return fmt.Errorf("outside asked %s: %q", fip.IP, got)
		}
		return nil
	})
	if got := ask(t, gB, "203.0.113.1:80"); got != "outside "+fip.IP {
		t.Fatalf("b asked outside: %q, want it seen from its floating IP %s", got, fip.IP)
	}
	box2MAC := neighOf(t, outside, fip.IP)
	// From a guest of the project on the other box: out of box1, in
	// through box2's floating IP.
	if got := ask(t, gA, fip.IP+":8080"); got != "b "+addr["box1"] {
		t.Fatalf("a asked b's floating IP from the other box: %q", got)
	}

	// b moves to box1 (its VM restarted there): box1 answers for the
	// floating IP now, and says so at once.
	f.must(t, netfabric.MsgBindPorts, netfabric.BindPortsCmd{Owner: "vm-b", Node: "box1"}, nil)
	if err := handle(t, boxes[1].ns).LinkDel(mustLink(t, boxes[1].ns, boxes[1].h.TapName("b"))); err != nil {
		t.Fatal(err)
	}
	reconcile()
	gB2 := plugSegmentGuest(t, f, boxes[0], *netfabric.GetPort(f.node.Store().ReadTxn(), "b"))
	guestRoute(t, gB2, "10.2.0.1")
	serveName(t, gB2, "0.0.0.0:8080", "b-moved")
	reconcile()
	// Within the announcements (one at once, two more a second apart):
	// the outside's entry would otherwise keep box2's MAC for tens of
	// seconds. The wait is for a busy machine, where the first one may
	// reach the outside after this check.
	testutil.WaitFor(t, 3*time.Second, "a gratuitous ARP for the floating IP", func() error {
		if got := neighOf(t, outside, fip.IP); got == box2MAC || got == "" {
			return fmt.Errorf("outside's ARP entry for %s is %q after the move, box2's was %s", fip.IP, got, box2MAC)
		}
		return nil
	})
	testutil.WaitFor(t, 5*time.Second, "the floating IP follows b", func() error {
		if got := ask(t, outside, fip.IP+":8080"); got != "b-moved 203.0.113.1" {
			return fmt.Errorf("outside asked %s: %q", fip.IP, got)
		}
		return nil
	})

	// From a guest on the same box (hairpin): the router answers for it.
	if got := ask(t, gA, fip.IP+":8080"); got != "b-moved 10.2.0.1" {
		t.Fatalf("a asked b's floating IP on the same box: %q", got)
	}

	// Taken back, it reaches nothing, and a connection it carried is cut
	// at once, not left to time out; the router's namespaces go when
	// their box has no port on its networks.
	echoTCP(t, gB2, "tcp4", "0.0.0.0:9090")
	var held net.Conn
	if err := inNS(t, outside, func() (err error) { held, err = net.DialTimeout("tcp4", fip.IP+":9090", time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldR := bufio.NewReader(held)
	echo := func() bool {
		held.SetDeadline(time.Now().Add(time.Second))
		if _, err := held.Write([]byte("ping\n")); err != nil {
			return false
		}
		line, err := heldR.ReadString('\n')
		return err == nil && line == "ping\n"
	}
	if !echo() {
		t.Fatal("no echo through the floating IP")
	}
	f.must(t, netfabric.MsgAssociateFloatingIP, netfabric.AssociateCmd{ID: fip.ID}, &fip)
	reconcile()
	if got := ask(t, outside, fip.IP+":8080"); got != "" {
		t.Fatalf("a floating IP taken back still reaches %q", got)
	}
	if echo() {
		t.Fatal("a connection through a floating IP taken back still flows")
	}
	for _, id := range []string{"vm-a", "vm-b", "vm-c"} {
		f.must(t, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: id}, nil)
	}
	reconcile()
	for _, bx := range boxes {
		// This test's own: other tests may run routers named r1 meanwhile.
		var st unix.Stat_t
		if err := unix.Fstat(int(bx.ns), &st); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("cairn-%x-r1", st.Ino)
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			t.Errorf("router namespace %s left after its box lost its ports", name)
		}
	}
}

func mustLink(t *testing.T, ns netns.NsHandle, name string) netlink.Link {
	t.Helper()
	l, err := handle(t, ns).LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Routers and floating IPs refuse bad input with a clear error and change
// nothing; quotas are charged with the create and given back with the
// delete; a port that goes takes its floating IP back.
func TestRouterCommands(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	// External networks: the cluster's, on an interface, pools clear of
	// the gateway.
	for _, bad := range []netfabric.Network{
		{ID: "x1", External: true, Interface: "eth1", CIDR: "203.0.113.0/24", Project: f.ward},
		{ID: "x2", External: true, Interface: "", CIDR: "203.0.113.0/24"},
		{ID: "x3", External: true, Interface: "eth1", CIDR: "203.0.113.0/24", Gateway: "198.51.100.1"},
		{ID: "x4", External: true, Interface: "eth1", CIDR: "203.0.113.0/24", Gateway: "203.0.113.5", Pools: []netfabric.Pool{{Start: "203.0.113.2", End: "203.0.113.9"}}},
		{ID: "x5", External: true, Interface: "eth1", CIDR: "203.0.113.0/24", MTU: 9000},
	} {
		if _, err := f.network(t, bad); err == nil {
			t.Fatalf("external network %+v was accepted", bad)
		}
	}
	ext, err := f.network(t, netfabric.Network{ID: "public", External: true, Interface: "eth1", CIDR: "203.0.113.0/24",
		Pools: []netfabric.Pool{{Start: "203.0.113.10", End: "203.0.113.13"}}})
	if err != nil || ext.Gateway != "203.0.113.1" {
		t.Fatalf("external network: %+v %v", ext, err)
	}
	n1, _ := f.network(t, netfabric.Network{ID: "ward-a", Project: f.ward, CIDR: "10.1.0.0/24"})
	clash, _ := f.network(t, netfabric.Network{ID: "ward-clash", Project: f.ward, CIDR: "203.0.113.0/25"})
	labNet, _ := f.network(t, netfabric.Network{ID: "lab-a", Project: f.lab, CIDR: "10.1.0.0/24"})
	if _, err := netfabric.Usable(f.node.Store().ReadTxn(), f.ward, "public"); err == nil || !strings.Contains(err.Error(), "is external") {
		t.Fatalf("a VM on the external network: %v", err)
	}

	must := func(mt consensus.MessageType, cmd, out any) { t.Helper(); f.must(t, mt, cmd, out) }
	refused := func(mt consensus.MessageType, cmd any, want string) {
		t.Helper()
		before := f.node.Store().ReadTxn()
		err := f.apply(t, mt, cmd, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("command %d %+v: %v, want an error saying %q", mt, cmd, err, want)
		}
		after := f.node.Store().ReadTxn()
		if fmt.Sprint(netfabric.ListRouters(before), netfabric.ListFloatingIPs(before), netfabric.AllPorts(before)) !=
			fmt.Sprint(netfabric.ListRouters(after), netfabric.ListFloatingIPs(after), netfabric.AllPorts(after)) {
			t.Fatalf("command %d was refused but changed the state", mt)
		}
	}
	var r netfabric.Router
	must(netfabric.MsgCreateRouter, netfabric.Router{ID: "r1", Name: "edge", Project: f.ward, Charged: true, CreatedAt: t0}, &r)
	refused(netfabric.MsgCreateRouter, netfabric.Router{ID: "r2", Name: "edge", Project: f.ward, CreatedAt: t0}, "already exists")
	refused(netfabric.MsgCreateRouter, netfabric.Router{ID: "r3", Name: "bad name!", Project: f.ward, CreatedAt: t0}, "must be")
	refused(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: labNet.ID}, "not found in the router's project")
	refused(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: "public"}, "not found in the router's project")
	refused(netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1", Network: n1.ID}, "not an external network")
	refused(netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: "box1", CreatedAt: t0}, "has no gateway")
	must(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: clash.ID}, &r)
	refused(netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1", Network: ext.ID}, "overlaps external network")
	must(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: clash.ID, Remove: true}, &r)
	must(netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1", Network: ext.ID}, &r)
	refused(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: clash.ID}, "overlaps the router's external network")
	must(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: n1.ID}, &r)
	var other netfabric.Router
	must(netfabric.MsgCreateRouter, netfabric.Router{ID: "r4", Name: "other", Project: f.ward, CreatedAt: t0}, &other)
	refused(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r4", Network: n1.ID}, "is on router edge already")

	// The node addresses: one each, the same when asked again, none for a
	// node with no port there, and none once the pool is spent.
	mine := f.port(t, netfabric.PortRequest{ID: "a", NetworkID: n1.ID, Owner: "vm-a", Project: f.ward, Node: "box1"})
	f.port(t, netfabric.PortRequest{ID: "b", NetworkID: n1.ID, Owner: "vm-b", Project: f.ward, Node: "box2"})
	refused(netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: "box3", CreatedAt: t0}, "has no port")
	var p1, p1again, p2 netfabric.Port
	must(netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: "box1", CreatedAt: t0}, &p1)
	must(netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: "box1", CreatedAt: t0}, &p1again)
	must(netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: "box2", CreatedAt: t0}, &p2)
	if p1.IP != p1again.IP || p1.IP == p2.IP {
		t.Fatalf("router addresses: box1 %s then %s, box2 %s", p1.IP, p1again.IP, p2.IP)
	}
	for _, id := range []string{"fip-x", "fip-y"} {
		must(netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: id, Project: f.ward, NetworkID: ext.ID, CreatedAt: t0}, nil)
	}
	refused(netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: "fip-z", Project: f.ward, NetworkID: ext.ID, Charged: true, CreatedAt: t0}, "no free addresses")
	for _, id := range []string{"fip-x", "fip-y"} {
		must(netfabric.MsgDeleteFloatingIP, netfabric.RouterIDCmd{ID: id}, nil)
	}
	// Taking the gateway off gives the addresses back.
	must(netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1"}, &r)
	if got := netfabric.RouterAddresses(f.node.Store().ReadTxn(), "r1"); len(got) != 0 {
		t.Fatalf("addresses after the gateway went: %v", got)
	}
	must(netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1", Network: ext.ID}, &r)
	must(netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: "box1", CreatedAt: t0}, &p1)

	// Floating IPs: from the external network's pools only.
	refused(netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: "fip-1", Project: f.ward, NetworkID: n1.ID, CreatedAt: t0}, "not an external network")
	refused(netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: "fip-1", Project: f.ward, NetworkID: ext.ID, IP: "203.0.113.1", CreatedAt: t0}, "gateway")
	refused(netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: "fip-1", Project: f.ward, NetworkID: ext.ID, IP: "203.0.113.200", CreatedAt: t0}, "not in the allocation pools")
	var fip netfabric.FloatingIP
	must(netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: "fip-1", Project: f.ward, NetworkID: ext.ID, IP: "203.0.113.12", Charged: true, CreatedAt: t0}, &fip)
	theirs := f.port(t, netfabric.PortRequest{ID: "c", NetworkID: labNet.ID, Owner: "vm-c", Project: f.lab, Node: "box1"})
	unrouted := f.port(t, netfabric.PortRequest{ID: "n", NetworkID: "default", Owner: "vm-n", Project: f.ward})
	if err := f.apply(t, netfabric.MsgCreatePort, netfabric.PortRequest{ID: "vm-on-ext", NetworkID: ext.ID, Owner: "vm-x", Project: f.ward, CreatedAt: t0}, nil); err == nil ||
		!strings.Contains(err.Error(), "only routers and floating IPs") {
		t.Fatalf("a VM's port on the external network: %v", err)
	}
	refused(netfabric.MsgAssociateFloatingIP, netfabric.AssociateCmd{ID: fip.ID, PortID: theirs.ID}, "not found in the floating IP's project")
	refused(netfabric.MsgAssociateFloatingIP, netfabric.AssociateCmd{ID: fip.ID, PortID: unrouted.ID}, "not on a project network")
	must(netfabric.MsgAssociateFloatingIP, netfabric.AssociateCmd{ID: fip.ID, PortID: mine.ID}, &fip)
	var fip2 netfabric.FloatingIP
	must(netfabric.MsgCreateFloatingIP, netfabric.FloatingIP{ID: "fip-2", Project: f.ward, NetworkID: ext.ID, CreatedAt: t0}, &fip2)
	refused(netfabric.MsgAssociateFloatingIP, netfabric.AssociateCmd{ID: fip2.ID, PortID: mine.ID}, "has floating IP 203.0.113.12 already")
	must(netfabric.MsgDeleteFloatingIP, netfabric.RouterIDCmd{ID: fip2.ID}, nil)
	refused(netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1"}, "take it back first")
	refused(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: n1.ID, Remove: true}, "take it back first")
	refused(netfabric.MsgDeleteRouter, netfabric.RouterIDCmd{ID: "r1"}, "still connects 1 networks")
	refused(netfabric.MsgDeleteNetwork, netfabric.DeleteNetworkCmd{ID: ext.ID}, "still has")

	plans := netfabric.RouterPlans(f.node.Store().ReadTxn(), "box1")
	if len(plans) != 1 || len(plans[0].Floating) != 1 || plans[0].Floating[0].Fixed != mine.Addr() || plans[0].Address.Addr().String() == "" {
		t.Fatalf("box1's router plan: %+v", plans)
	}
	if plans := netfabric.RouterPlans(f.node.Store().ReadTxn(), "box3"); len(plans) != 0 {
		t.Fatalf("box3 has no port on the router's networks, yet runs %+v", plans)
	}

	// Quotas: the routers and floating IPs made with Charged count.
	used := func() identity.Resources {
		t.Helper()
		q := consensus.First[identity.Quota](f.node.Store().ReadTxn(), "quotas", "id", f.ward)
		if q == nil {
			t.Fatal("no quota row for the ward")
		}
		return q.Usage
	}
	if u := used(); u.Routers != 1 || u.FloatingIPs != 1 {
		t.Fatalf("usage with one charged router and floating IP: %+v", u)
	}
	// The port goes: its floating IP stays the project's, unassociated,
	// and box1, with no port of the router's networks left, gives its
	// address back; so does box2 when its port moves to box3.
	f.must(t, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm-a"}, nil)
	if got := netfabric.GetFloatingIP(f.node.Store().ReadTxn(), fip.ID); got == nil || got.PortID != "" {
		t.Fatalf("floating IP after its port went: %+v", got)
	}
	must(netfabric.MsgRouterNodeAddress, netfabric.RouterNodeAddressCmd{Router: "r1", Node: "box2", CreatedAt: t0}, nil)
	if got := netfabric.RouterAddresses(f.node.Store().ReadTxn(), "r1"); got["box1"] != "" || got["box2"] == "" {
		t.Fatalf("router addresses after box1's last port went: %v", got)
	}
	f.must(t, netfabric.MsgBindPorts, netfabric.BindPortsCmd{Owner: "vm-b", Node: "box3"}, nil)
	if got := netfabric.RouterAddresses(f.node.Store().ReadTxn(), "r1"); len(got) != 0 {
		t.Fatalf("router addresses after box2's port moved: %v", got)
	}
	f.must(t, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm-b"}, nil)
	must(netfabric.MsgDeleteFloatingIP, netfabric.RouterIDCmd{ID: fip.ID}, nil)
	must(netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: n1.ID, Remove: true}, &r)
	must(netfabric.MsgDeleteRouter, netfabric.RouterIDCmd{ID: "r1"}, nil)
	if u := used(); u.Routers != 0 || u.FloatingIPs != 0 {
		t.Fatalf("usage after the deletes: %+v", u)
	}
	if got := netfabric.RouterAddresses(f.node.Store().ReadTxn(), "r1"); len(got) != 0 {
		t.Fatalf("a deleted router's addresses are kept: %v", got)
	}
}
