package netfabric_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// fabric is a replicated state with two projects, for project networks.
type fabric struct {
	node      *consensus.Node
	ward, lab string // project ids
}

func newFabric(t *testing.T) *fabric {
	t.Helper()
	n := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		netfabric.Register(r)
	}).Nodes[0]
	ctx := context.Background()
	id := identity.NewService(n, identity.DefaultConfig())
	if _, err := id.CreateFirstAdmin(ctx, "admin", "cluster-root-6161"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := id.Login(ctx, "admin", "cluster-root-6161")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := id.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	f := &fabric{node: n}
	for _, p := range []*string{&f.ward, &f.lab} {
		name := map[*string]string{&f.ward: "ward", &f.lab: "lab"}[p]
		pr, err := id.CreateProject(ctx, admin, identity.ProjectSpec{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		*p = pr.ID
	}
	return f
}

func (f *fabric) network(t *testing.T, nw netfabric.Network) (netfabric.Network, error) {
	t.Helper()
	var out netfabric.Network
	nw.CreatedAt = t0
	if nw.Name == "" {
		nw.Name = nw.ID
	}
	_, err := f.node.Apply(context.Background(), netfabric.MsgCreateNetwork, nw, &out)
	return out, err
}

func (f *fabric) port(t *testing.T, req netfabric.PortRequest) netfabric.Port {
	t.Helper()
	var out netfabric.Port
	req.CreatedAt = t0
	if _, err := f.node.Apply(context.Background(), netfabric.MsgCreatePort, req, &out); err != nil {
		t.Fatalf("port %s: %v", req.ID, err)
	}
	return out
}

// Project networks: overlapping CIDRs across projects but not within one,
// a segment id each, the MTU for a 1500-byte underlay, and ports only for
// the network's own project. Refusals change nothing.
func TestProjectNetworks(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.50.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	ward, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.50.0.0/24"})
	if err != nil {
		t.Fatalf("a project network may overlap the NAT network: %v", err)
	}
	lab, err := f.network(t, netfabric.Network{ID: "lab-net", Project: f.lab, CIDR: "10.50.0.0/24", MTU: 8950})
	if err != nil {
		t.Fatalf("another project's network may have the same CIDR: %v", err)
	}
	if ward.VNI < 4096 || lab.VNI < 4096 || ward.VNI == lab.VNI || ward.MTU != 1450 || lab.MTU != 8950 || ward.Gateway != "10.50.0.1" {
		t.Fatalf("networks: %+v %+v", ward, lab)
	}
	before := f.node.Store().ReadTxn()
	for _, c := range []struct {
		nw   netfabric.Network
		code string
	}{
		{netfabric.Network{ID: "ward-2", Project: f.ward, CIDR: "10.50.0.128/25"}, consensus.CodeConflict}, // overlaps ward-net
		{netfabric.Network{ID: "ward-3", Project: "nosuch", CIDR: "10.60.0.0/24"}, consensus.CodeNotFound},
		{netfabric.Network{ID: "ward-4", Project: f.ward, CIDR: "10.60.0.0/24", MTU: 9000}, consensus.CodeInvalid},
		{netfabric.Network{ID: "ward-5", Project: f.ward, CIDR: "10.60.0.0/24", VNI: lab.VNI}, consensus.CodeConflict},
		{netfabric.Network{ID: "ward-6", Project: f.ward, CIDR: "10.60.0.0/24", VNI: 100}, consensus.CodeInvalid},
		{netfabric.Network{ID: "nat-2", CIDR: "10.61.0.0/24", MTU: 1400}, consensus.CodeInvalid}, // NAT networks have no MTU of their own
		{netfabric.Network{ID: "nat-3", CIDR: "10.50.0.0/25"}, consensus.CodeConflict},           // NAT networks never overlap
		{netfabric.Network{ID: "lab-net", Project: f.ward, CIDR: "10.50.0.0/24"}, consensus.CodeConflict},
	} {
		if _, err := f.network(t, c.nw); consensus.ErrorCode(err) != c.code {
			t.Errorf("create %+v: %v, want %s", c.nw, err, c.code)
		}
	}
	if got := netfabric.ListNetworks(f.node.Store().ReadTxn()); len(got) != len(netfabric.ListNetworks(before)) {
		t.Fatalf("refused creates left networks behind: %+v", got)
	}
	w := f.port(t, netfabric.PortRequest{ID: "w1", NetworkID: "ward-net", Owner: "vm-w", Project: f.ward, Node: "box1"})
	l := f.port(t, netfabric.PortRequest{ID: "l1", NetworkID: "lab-net", Owner: "vm-l", Project: f.lab})
	if w.IP != "10.50.0.2" || l.IP != "10.50.0.2" || w.Node != "box1" {
		t.Fatalf("overlapping networks allocate independently: %+v %+v", w, l)
	}
	var out netfabric.Port
	_, err = f.node.Apply(context.Background(), netfabric.MsgCreatePort, netfabric.PortRequest{ID: "x1", NetworkID: "ward-net", Owner: "vm-x", Project: f.lab, CreatedAt: t0}, &out)
	if consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("a port on another project's network: %v, want not_found", err)
	}
	if netfabric.GetPort(f.node.Store().ReadTxn(), "x1") != nil {
		t.Fatal("the refused port exists")
	}
	// The NAT network takes any project's ports.
	f.port(t, netfabric.PortRequest{ID: "d1", NetworkID: "default", Owner: "vm-d", Project: f.lab})

	if _, err := f.node.Apply(context.Background(), netfabric.MsgBindPorts, netfabric.BindPortsCmd{Owner: "vm-l", Node: "box2"}, nil); err != nil {
		t.Fatal(err)
	}
	if p := netfabric.GetPort(f.node.Store().ReadTxn(), "l1"); p.Node != "box2" {
		t.Fatalf("bound port: %+v", p)
	}

	// Allocation pools: ports take addresses from them, in order, until
	// they run out; a fixed address outside them is still the owner's to
	// ask for. Bad pools and routes are refused and change nothing.
	pooled, err := f.network(t, netfabric.Network{ID: "pooled", Project: f.ward, CIDR: "10.80.0.0/24",
		Pools:  []netfabric.Pool{{Start: "10.80.0.100", End: "10.80.0.101"}, {Start: "10.80.0.50", End: "10.80.0.50"}},
		Routes: []netfabric.Route{{Destination: "10.90.0.0/16", Nexthop: "10.80.0.254"}}})
	if err != nil || len(pooled.Pools) != 2 || len(pooled.Routes) != 1 {
		t.Fatalf("a network with pools and routes: %+v %v", pooled, err)
	}
	var got []string
	for i := range 3 {
		got = append(got, f.port(t, netfabric.PortRequest{ID: fmt.Sprintf("pp%d", i), NetworkID: "pooled", Owner: "vm-p", Project: f.ward}).IP)
	}
	if fmt.Sprint(got) != "[10.80.0.100 10.80.0.101 10.80.0.50]" {
		t.Fatalf("addresses from the pools: %v", got)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgCreatePort, netfabric.PortRequest{ID: "pp9", NetworkID: "pooled", Owner: "vm-p", Project: f.ward, CreatedAt: t0}, &out); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("a port past the pools: %v", err)
	}
	if p := f.port(t, netfabric.PortRequest{ID: "pfix", NetworkID: "pooled", Owner: "vm-p", Project: f.ward, IP: "10.80.0.7"}); p.IP != "10.80.0.7" {
		t.Fatalf("a fixed address outside the pools: %+v", p)
	}
	n0 := len(netfabric.ListNetworks(f.node.Store().ReadTxn()))
	for _, c := range []netfabric.Network{
		{ID: "bp1", Project: f.ward, CIDR: "10.81.0.0/24", Pools: []netfabric.Pool{{Start: "10.81.0.1", End: "10.81.0.9"}}},   // the gateway
		{ID: "bp2", Project: f.ward, CIDR: "10.81.0.0/24", Pools: []netfabric.Pool{{Start: "10.81.0.9", End: "10.81.0.255"}}}, // the broadcast
		{ID: "bp3", Project: f.ward, CIDR: "10.81.0.0/24", Pools: []netfabric.Pool{{Start: "10.81.0.20", End: "10.81.0.10"}}}, // backwards
		{ID: "bp4", Project: f.ward, CIDR: "10.81.0.0/24", Pools: []netfabric.Pool{{Start: "10.81.0.10", End: "10.81.0.20"}, {Start: "10.81.0.20", End: "10.81.0.30"}}},
		{ID: "bp5", Project: f.ward, CIDR: "10.81.0.0/24", Pools: []netfabric.Pool{{Start: "10.82.0.10", End: "10.82.0.20"}}},
		{ID: "bp6", Project: f.ward, CIDR: "10.81.0.0/24", Routes: []netfabric.Route{{Destination: "10.90.0.0/16", Nexthop: "10.91.0.1"}}},
		{ID: "bp7", Project: f.ward, CIDR: "10.81.0.0/24", Routes: []netfabric.Route{{Destination: "0.0.0.0/0", Nexthop: "10.81.0.9"}}},
		{ID: "bp8", Project: f.ward, CIDR: "10.81.0.0/24", Routes: []netfabric.Route{{Destination: "10.90.0.1/16", Nexthop: "10.81.0.9"}}},
		{ID: "bp9", CIDR: "10.81.0.0/24", Pools: []netfabric.Pool{{Start: "10.81.0.10", End: "10.81.0.20"}}}, // the NAT network has none
		{ID: "bpa", Project: f.ward, CIDR: "10.81.0.0/24", Routes: []netfabric.Route{{Destination: "10.81.0.0/25", Nexthop: "10.81.0.9"}}},
		{ID: "bpb", Project: f.ward, CIDR: "10.81.0.0/24", Routes: []netfabric.Route{{Destination: "224.0.0.0/4", Nexthop: "10.81.0.9"}}},
		{ID: "bpc", Project: f.ward, CIDR: "10.81.0.0/24", Routes: []netfabric.Route{{Destination: "10.90.0.0/16", Nexthop: "10.81.0.9"}, {Destination: "10.90.0.0/16", Nexthop: "10.81.0.8"}}},
	} {
		if _, err := f.network(t, c); consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Errorf("network %s with pools %v and routes %v: %v, want invalid", c.ID, c.Pools, c.Routes, err)
		}
	}
	if len(netfabric.ListNetworks(f.node.Store().ReadTxn())) != n0 {
		t.Fatal("a refused network was created")
	}

	// A deleted network's segment id is not handed out again at once: a
	// tap of its last VM, still being stopped, must never meet another
	// network's traffic.
	gone, err := f.network(t, netfabric.Network{ID: "tmp-1", Project: f.ward, CIDR: "10.70.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgDeleteNetwork, netfabric.DeleteNetworkCmd{ID: "tmp-1"}, nil); err != nil {
		t.Fatal(err)
	}
	next, err := f.network(t, netfabric.Network{ID: "tmp-2", Project: f.ward, CIDR: "10.70.0.0/24"})
	if err != nil || next.VNI == gone.VNI {
		t.Fatalf("segment id %d of a deleted network handed out again at once (%v)", gone.VNI, err)
	}
}

// Segments derives each node's segments from the state: only networks
// with a port on the node, peers and remote ports from the others, and
// nothing for ports on nodes without an underlay address or on no node.
func TestSegmentsFromState(t *testing.T) {
	f := newFabric(t)
	for _, nw := range []netfabric.Network{
		{ID: "ward-net", Project: f.ward, CIDR: "10.50.0.0/24"},
		{ID: "lab-net", Project: f.lab, CIDR: "10.50.0.0/24"},
	} {
		if _, err := f.network(t, nw); err != nil {
			t.Fatal(err)
		}
	}
	a := f.port(t, netfabric.PortRequest{ID: "wa", NetworkID: "ward-net", Owner: "a", Project: f.ward, Node: "box1"})
	b := f.port(t, netfabric.PortRequest{ID: "wb", NetworkID: "ward-net", Owner: "b", Project: f.ward, Node: "box2"})
	f.port(t, netfabric.PortRequest{ID: "wc", NetworkID: "ward-net", Owner: "c", Project: f.ward, Node: "box3"}) // no underlay known
	f.port(t, netfabric.PortRequest{ID: "wd", NetworkID: "ward-net", Owner: "d", Project: f.ward})               // stopped
	f.port(t, netfabric.PortRequest{ID: "lc", NetworkID: "lab-net", Owner: "e", Project: f.lab, Node: "box2"})
	underlay := map[string]netip.Addr{"box1": netip.MustParseAddr("198.18.0.1"), "box2": netip.MustParseAddr("198.18.0.2")}
	at := func(node string) (netip.Addr, bool) { a, ok := underlay[node]; return a, ok }
	txn := f.node.Store().ReadTxn()

	s1 := netfabric.Segments(txn, "box1", at)
	if len(s1) != 1 || s1[0].Network.ID != "ward-net" || fmt.Sprint(s1[0].Peers) != "[198.18.0.2]" ||
		len(s1[0].Remote) != 1 || s1[0].Remote[0].MAC.String() != b.MAC || s1[0].Remote[0].Node != underlay["box2"] {
		t.Fatalf("box1's segments: %+v", s1)
	}
	s2 := netfabric.Segments(txn, "box2", at)
	var ids []string
	for _, s := range s2 {
		ids = append(ids, s.Network.ID)
	}
	sort.Strings(ids)
	if fmt.Sprint(ids) != "[lab-net ward-net]" {
		t.Fatalf("box2's segments: %v", ids)
	}
	for _, s := range s2 {
		if s.Network.ID == "lab-net" && (len(s.Peers) != 0 || len(s.Remote) != 0) {
			t.Fatalf("lab-net has no port elsewhere: %+v", s)
		}
		if s.Network.ID == "ward-net" && (fmt.Sprint(s.Peers) != "[198.18.0.1]" || len(s.Remote) != 1 || s.Remote[0].MAC.String() != a.MAC) {
			t.Fatalf("box2's ward-net: %+v", s)
		}
	}
	if s := netfabric.Segments(txn, "box4", at); len(s) != 0 {
		t.Fatalf("a node without ports carries %+v", s)
	}
	// A VM moving live to box4 (owner a): box4 carries its network
	// before the port is bound there, and the frames for its MAC still go
	// to box1 (box4 has an underlay address now).
	underlay["box4"] = netip.MustParseAddr("198.18.0.4")
	s4 := netfabric.Segments(txn, "box4", at, "a", "nobody")
	if len(s4) != 1 || s4[0].Network.ID != "ward-net" || fmt.Sprint(s4[0].Peers) != "[198.18.0.1 198.18.0.2]" ||
		!slices.ContainsFunc(s4[0].Remote, func(r netfabric.RemotePort) bool { return r.MAC.String() == a.MAC && r.Node == underlay["box1"] }) {
		t.Fatalf("box4's segments with a VM arriving: %+v", s4)
	}
	// On a routed network the arriving port makes box4 carry its own
	// network only; box1, which routes, carries both of the router's.
	if _, err := f.network(t, netfabric.Network{ID: "ward-net2", Project: f.ward, CIDR: "10.51.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	var r netfabric.Router
	f.must(t, netfabric.MsgCreateRouter, netfabric.Router{ID: "r1", Name: "edge", Project: f.ward, CreatedAt: time.Now()}, &r)
	for _, nw := range []string{"ward-net", "ward-net2"} {
		f.must(t, netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: nw}, &r)
	}
	txn = f.node.Store().ReadTxn()
	carried := func(node string, arriving ...string) string {
		var ids []string
		for _, s := range netfabric.Segments(txn, node, at, arriving...) {
			ids = append(ids, s.Network.ID)
		}
		sort.Strings(ids)
		return fmt.Sprint(ids)
	}
	if box1, box4 := carried("box1"), carried("box4", "a"); box1 != "[ward-net ward-net2]" || box4 != "[ward-net]" {
		t.Fatalf("with a router: box1 carries %s, box4 with a VM arriving %s", box1, box4)
	}
}

// box is one node's network namespace with its Host, on an underlay
// shared with the other boxes.
type box struct {
	acks chan string // MACs this box's DHCP acknowledged
	name string
	ns   netns.NsHandle
	h    *netfabric.Host
	cfg  netfabric.HostConfig
	addr netip.Addr
}

func (b *box) do(t *testing.T, fn func() error) error { return inNS(t, b.ns, fn) }

// newBoxes makes two boxes joined by a veth underlay (198.18.0.1 and .2),
// each with a Host over the state's ports (its configuration changed by
// opts), the NAT network reconciled.
func newBoxes(t *testing.T, f *fabric, opts ...func(box int, cfg *netfabric.HostConfig)) [2]*box {
	t.Helper()
	requireRoot(t)
	var boxes [2]*box
	for i := range boxes {
		b := &box{name: fmt.Sprintf("box%d", i+1), ns: newNS(t), addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)})}
		disableBridgeNetfilter(t, b.ns)
		cfg := netfabric.DefaultHostConfig()
		cfg.ResolvConf = nil
		cfg.Underlay = b.addr
		cfg.Node = b.name
		cfg.Logger = slog.New(slog.NewTextHandler(testutil.LogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})).With("box", b.name)
		b.acks = make(chan string, 16)
		cfg.OnLease = func(mac net.HardwareAddr, _ netip.Addr) {
			select {
			case b.acks <- mac.String():
			default:
			}
		}
		for _, o := range opts {
			o(i, &cfg)
		}
		b.cfg = cfg
		b.h = netfabric.NewHost(cfg, netfabric.StoreLeases(f.node.Store(), "default"))
		boxes[i] = b
		t.Cleanup(func() {
			if err := b.do(t, b.h.Teardown); err != nil {
				t.Errorf("%s teardown: %v", b.name, err)
			}
		})
	}
	vethInto(t, boxes[0].ns, boxes[1].ns, "uplink", "uplink", nil)
	for _, b := range boxes {
		addAddr(t, b.ns, "uplink", b.addr.String()+"/24")
		if err := b.do(t, func() error {
			nw := netfabric.GetNetwork(f.node.Store().ReadTxn(), "default")
			// Packets from a guest to a host address arrive with a source
			// the host has no route back to: reverse-path filtering would
			// hide whether the guard dropped them.
			for _, k := range []string{"all", "default", "uplink"} {
				if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+k+"/rp_filter", []byte("0"), 0); err != nil {
					return err
				}
			}
			return b.h.Reconcile(context.Background(), *nw)
		}); err != nil {
			t.Fatal(err)
		}
	}
	return boxes
}

func (b *box) reconcileSegments(t *testing.T, f *fabric, boxes [2]*box) {
	t.Helper()
	at := func(node string) (netip.Addr, bool) {
		for _, o := range boxes {
			if o.name == node {
				return o.addr, true
			}
		}
		return netip.Addr{}, false
	}
	segs := netfabric.Segments(f.node.Store().ReadTxn(), b.name, at)
	if err := b.do(t, func() error { return b.h.ReconcileSegments(context.Background(), segs) }); err != nil {
		t.Fatalf("%s: %v", b.name, err)
	}
}

// plugSegmentGuest makes a guest namespace for port p (on box b), its link
// named as the port's tap, on the segment's bridge.
func plugSegmentGuest(t *testing.T, f *fabric, b *box, p netfabric.Port) netns.NsHandle {
	t.Helper()
	g := plugSegmentLink(t, f, b, p)
	addAddr(t, g, "eth0", p.IP+"/24")
	return g
}

// plugSegmentLink is plugSegmentGuest with no address on the guest's link.
func plugSegmentLink(t *testing.T, f *fabric, b *box, p netfabric.Port) netns.NsHandle {
	t.Helper()
	g := newNS(t)
	mac, _ := net.ParseMAC(p.MAC)
	tap := b.h.TapName(p.ID)
	vethInto(t, b.ns, g, tap, "eth0", mac)
	nw := netfabric.GetNetwork(f.node.Store().ReadTxn(), p.NetworkID)
	h := handle(t, b.ns)
	br, err := h.LinkByName(fmt.Sprintf("cnb%06x", nw.VNI))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := h.LinkByName(tap)
	if err := h.LinkSetMaster(l, br); err != nil {
		t.Fatal(err)
	}
	// Port security knows the tap once it exists.
	if err := b.do(t, func() error {
		return b.h.Reconcile(context.Background(), *netfabric.GetNetwork(f.node.Store().ReadTxn(), "default"))
	}); err != nil {
		t.Fatal(err)
	}
	return g
}

// Two boxes, two projects with the same CIDR: a project's guests reach
// each other across the boxes over their segment, and never the other
// project's guests, even at the same address on the same box. A guest
// that forges its address is dropped, the host takes nothing from a
// segment and routes nothing out of one, and a segment whose last local
// port goes is removed with its forwarding entries.
func TestOverlayTwoBoxes(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	for _, nw := range []netfabric.Network{
		{ID: "ward-net", Project: f.ward, CIDR: "10.50.0.0/24"},
		{ID: "lab-net", Project: f.lab, CIDR: "10.50.0.0/24"},
	} {
		if _, err := f.network(t, nw); err != nil {
			t.Fatal(err)
		}
	}
	wa := f.port(t, netfabric.PortRequest{ID: "ward-a", NetworkID: "ward-net", Owner: "wa", Project: f.ward, Node: "box1", IP: "10.50.0.10"})
	wb := f.port(t, netfabric.PortRequest{ID: "ward-b", NetworkID: "ward-net", Owner: "wb", Project: f.ward, Node: "box2", IP: "10.50.0.11"})
	lc := f.port(t, netfabric.PortRequest{ID: "lab-c", NetworkID: "lab-net", Owner: "lc", Project: f.lab, Node: "box2", IP: "10.50.0.10"})
	ld := f.port(t, netfabric.PortRequest{ID: "lab-d", NetworkID: "lab-net", Owner: "ld", Project: f.lab, Node: "box1", IP: "10.50.0.11"})

	boxes := newBoxes(t, f)
	ifindex := func(b *box) map[string]int {
		links, err := handle(t, b.ns).LinkList()
		for i := 0; i < 5 && errors.Is(err, netlink.ErrDumpInterrupted); i++ {
			links, err = handle(t, b.ns).LinkList()
		}
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, l := range links {
			out[l.Attrs().Name] = l.Attrs().Index
		}
		return out
	}
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
		before := ifindex(b)
		b.reconcileSegments(t, f, boxes) // idempotent: nothing that is right is rebuilt
		if after := ifindex(b); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("%s: a second reconcile rebuilt devices: %v, then %v", b.name, before, after)
		}
	}
	gwa := plugSegmentGuest(t, f, boxes[0], wa)
	gld := plugSegmentGuest(t, f, boxes[0], ld)
	gwb := plugSegmentGuest(t, f, boxes[1], wb)
	glc := plugSegmentGuest(t, f, boxes[1], lc)
	listenTCP(t, gwb, "0.0.0.0:7000")
	listenTCP(t, gld, "0.0.0.0:7001")

	// The first connection also waits for ARP across the underlay: give
	// a busy machine a few tries.
	testutil.WaitFor(t, 10*time.Second, "ward-a (box1) reaches ward-b (box2) over their segment", func() error {
		if !dial(t, gwa, "", "10.50.0.11:7000") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	if dial(t, gwa, "", "10.50.0.11:7001") {
		t.Fatal("ward-a reached lab-d: the same address on its own box, in another project")
	}
	testutil.WaitFor(t, 10*time.Second, "lab-c (box2) reaches lab-d (box1) over their segment", func() error {
		if !dial(t, glc, "", "10.50.0.11:7001") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	if dial(t, glc, "", "10.50.0.11:7000") {
		t.Fatal("lab-c reached ward-b, on its own box, in another project")
	}
	// ward-b resolved ward-a's address to its MAC (box2 answered: suppress_test.go).
	if mac := neighMAC(t, gwb, "10.50.0.10"); mac != wa.MAC {
		t.Fatalf("ward-b resolved 10.50.0.10 to %q, want ward-a's %s", mac, wa.MAC)
	}

	// The segment's devices and forwarding entries.
	ward := netfabric.GetNetwork(f.node.Store().ReadTxn(), "ward-net")
	checkSegment(t, boxes[0], ward.VNI, 1450, map[string]string{"00:00:00:00:00:00": "198.18.0.2", wb.MAC: "198.18.0.2"})

	// A stranger on the underlay who knows (or guesses) the segment id
	// sends VXLAN to box1: nothing reaches the segment. (A VXLAN device
	// takes a frame for its segment from any source; the guard takes it
	// from peers only.)
	got := listenUDP(t, gwa, "0.0.0.0:7003")
	stranger := newNS(t)
	vethInto(t, boxes[0].ns, stranger, "stranger", "uplink", nil)
	addAddr(t, boxes[0].ns, "stranger", "198.18.1.1/24")
	addAddr(t, stranger, "uplink", "198.18.1.3/24")
	sh := handle(t, stranger)
	evil := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "evil", MTU: 1450}, VxlanId: int(ward.VNI), SrcAddr: net.IP{198, 18, 1, 3}, Port: 4789}
	if err := sh.LinkAdd(evil); err != nil {
		t.Fatal(err)
	}
	el, _ := sh.LinkByName("evil")
	if err := sh.LinkSetUp(el); err != nil {
		t.Fatal(err)
	}
	if err := sh.NeighAppend(&netlink.Neigh{LinkIndex: el.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP | netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}, IP: net.IP{198, 18, 1, 1}}); err != nil {
		t.Fatal(err)
	}
	// As ward-b, whom ward-a's security group lets in: only the VXLAN
	// guard can stop it.
	addAddr(t, stranger, "evil", "10.50.0.11/24")
	waMAC, _ := net.ParseMAC(wa.MAC)
	if err := sh.NeighAdd(&netlink.Neigh{LinkIndex: el.Attrs().Index, State: netlink.NUD_PERMANENT, IP: net.IP{10, 50, 0, 10}, HardwareAddr: waMAC, Family: unix.AF_INET}); err != nil {
		t.Fatal(err)
	}
	sendUDP := func(ns netns.NsHandle, dst string) {
		t.Helper()
		if err := inNS(t, ns, func() error {
			c, err := net.Dial("udp4", dst)
			if err != nil {
				return err
			}
			defer c.Close()
			for range 3 {
				if _, err := c.Write([]byte("hello")); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	sendUDP(stranger, "10.50.0.10:7003")
	select {
	case m := <-got:
		t.Fatalf("a stranger's VXLAN reached a guest on the segment: %s", m)
	case <-time.After(time.Second):
	}
	// The same frames from a peer's address do arrive: the test can fail.
	addAddr(t, stranger, "uplink", "198.18.0.2/32")
	if err := sh.LinkDel(el); err != nil {
		t.Fatal(err)
	}
	evil.SrcAddr = net.IP{198, 18, 0, 2}
	if err := sh.LinkAdd(evil); err != nil {
		t.Fatal(err)
	}
	el, _ = sh.LinkByName("evil")
	_ = sh.LinkSetUp(el)
	_ = sh.NeighAppend(&netlink.Neigh{LinkIndex: el.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP | netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}, IP: net.IP{198, 18, 1, 1}})
	addAddr(t, stranger, "evil", "10.50.0.11/24")
	_ = sh.NeighAdd(&netlink.Neigh{LinkIndex: el.Attrs().Index, State: netlink.NUD_PERMANENT, IP: net.IP{10, 50, 0, 10}, HardwareAddr: waMAC, Family: unix.AF_INET})
	sendUDP(stranger, "10.50.0.10:7003")
	select {
	case <-got:
	case <-time.After(3 * time.Second):
		t.Fatal("VXLAN from a peer's address did not reach the segment: the stranger check proves nothing")
	}

	// A forged source address is dropped on the overlay too.
	addAddr(t, gwa, "eth0", "10.50.0.99/24")
	if dial(t, gwa, "10.50.0.99", "10.50.0.11:7000") {
		t.Fatal("a guest with a forged address reached another guest")
	}

	// The host takes nothing from a segment, and routes nothing out of it.
	got1, got2 := listenUDP(t, boxes[0].ns, "0.0.0.0:7002"), listenUDP(t, boxes[1].ns, "0.0.0.0:7002")
	brMAC := netfabric.GatewayMAC("ward-net")
	ga := handle(t, gwa)
	eth0, _ := ga.LinkByName("eth0")
	if err := ga.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IP{198, 18, 0, 0}, Mask: net.CIDRMask(24, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []net.IP{{198, 18, 0, 1}, {198, 18, 0, 2}} {
		if err := ga.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, State: netlink.NUD_PERMANENT, IP: ip, HardwareAddr: brMAC, Family: unix.AF_INET}); err != nil {
			t.Fatal(err)
		}
	}
	for _, dst := range []string{"198.18.0.1:7002", "198.18.0.2:7002"} {
		if err := inNS(t, gwa, func() error {
			c, err := net.Dial("udp4", dst)
			if err != nil {
				return err
			}
			defer c.Close()
			for range 3 {
				if _, err := c.Write([]byte("hello host")); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-got1:
		t.Fatal("box1 took a datagram from a guest on a segment")
	case <-got2:
		t.Fatal("box1 routed a guest's datagram out of its segment to box2")
	case <-time.After(time.Second):
	}

	// lab-d leaves box1: box1 no longer carries lab-net, and box2 no longer
	// sends lab-net's broadcast there.
	if _, err := f.node.Apply(context.Background(), netfabric.MsgBindPorts, netfabric.BindPortsCmd{Owner: "ld"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
	}
	lab := netfabric.GetNetwork(f.node.Store().ReadTxn(), "lab-net")
	h1 := handle(t, boxes[0].ns)
	for _, n := range []string{fmt.Sprintf("cnb%06x", lab.VNI), fmt.Sprintf("cnx%06x", lab.VNI)} {
		if _, err := h1.LinkByName(n); err == nil {
			t.Errorf("box1 still has %s", n)
		}
	}
	checkSegment(t, boxes[1], lab.VNI, 1450, map[string]string{})
	checkSegment(t, boxes[0], ward.VNI, 1450, map[string]string{"00:00:00:00:00:00": "198.18.0.2", wb.MAC: "198.18.0.2"})
	if !dial(t, gwa, "", "10.50.0.11:7000") {
		t.Fatal("ward's traffic stopped when lab-net's segment went")
	}

	// A VM's tap joins its network's segment bridge, at the segment's MTU;
	// one whose segment this node does not carry yet is refused, and no
	// tap is left behind.
	we := f.port(t, netfabric.PortRequest{ID: "ward-e", NetworkID: "ward-net", Owner: "we", Project: f.ward, Node: "box1"})
	lf := f.port(t, netfabric.PortRequest{ID: "lab-f", NetworkID: "lab-net", Owner: "lf", Project: f.lab, Node: "box1"})
	if err := boxes[0].do(t, func() error { return boxes[0].h.EnsureTap(boxes[0].h.TapName(we.ID)) }); err != nil {
		t.Fatal(err)
	}
	tap, err := h1.LinkByName(boxes[0].h.TapName(we.ID))
	if err != nil {
		t.Fatal(err)
	}
	br, _ := h1.LinkByName(fmt.Sprintf("cnb%06x", ward.VNI))
	if tap.Attrs().MasterIndex != br.Attrs().Index || tap.Attrs().MTU != 1450 {
		t.Fatalf("tap of ward-e: master %d (want %d), MTU %d", tap.Attrs().MasterIndex, br.Attrs().Index, tap.Attrs().MTU)
	}
	// The agent restarts: its new Host reconciles the NAT network before
	// it knows the segments. The tap stays on its segment's bridge.
	restarted := netfabric.NewHost(boxes[0].cfg, netfabric.StoreLeases(f.node.Store(), "default"))
	if err := boxes[0].do(t, func() error {
		return restarted.Reconcile(context.Background(), *netfabric.GetNetwork(f.node.Store().ReadTxn(), "default"))
	}); err != nil {
		t.Fatal(err)
	}
	if tap, err := h1.LinkByName(boxes[0].h.TapName(we.ID)); err != nil || tap.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatalf("a restarted agent's first reconcile took ward-e's tap off its segment (%v)", err)
	}
	if err := boxes[0].do(t, restarted.Close); err != nil {
		t.Fatal(err)
	}
	err = boxes[0].do(t, func() error { return boxes[0].h.EnsureTap(boxes[0].h.TapName(lf.ID)) })
	if err == nil {
		t.Fatal("a tap joined a segment this node does not carry")
	}
	if _, lerr := h1.LinkByName(boxes[0].h.TapName(lf.ID)); lerr == nil {
		t.Fatalf("the refused tap was left behind (%v)", err)
	}
}

// checkSegment checks a segment's VXLAN device on box b: its id, MTU,
// learning off, on its bridge, and exactly the forwarding entries want
// (MAC to underlay address).
func checkSegment(t *testing.T, b *box, vni uint32, mtu int, want map[string]string) {
	t.Helper()
	h := handle(t, b.ns)
	l, err := h.LinkByName(fmt.Sprintf("cnx%06x", vni))
	if err != nil {
		t.Fatalf("%s: %v", b.name, err)
	}
	vx, ok := l.(*netlink.Vxlan)
	br, err := h.LinkByName(fmt.Sprintf("cnb%06x", vni))
	if !ok || err != nil || vx.VxlanId != int(vni) || vx.Learning || vx.MTU != mtu || br.Attrs().MTU != mtu || vx.MasterIndex != br.Attrs().Index {
		t.Fatalf("%s: segment %d: %+v (bridge %v)", b.name, vni, l, err)
	}
	neighs, err := h.NeighList(vx.Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range neighs {
		if n.IP != nil {
			got[n.HardwareAddr.String()] = n.IP.String()
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: segment %d forwarding entries %v, want %v", b.name, vni, got, want)
	}
}

// neighMAC returns the MAC ns resolved ip to, or "".
func neighMAC(t *testing.T, ns netns.NsHandle, ip string) string {
	t.Helper()
	family := unix.AF_INET
	if netip.MustParseAddr(ip).Is6() {
		family = unix.AF_INET6
	}
	neighs, err := handle(t, ns).NeighList(0, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.String() == ip && n.HardwareAddr != nil {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

// listenUDP receives datagrams on addr in ns until the test ends.
func listenUDP(t *testing.T, ns netns.NsHandle, addr string) <-chan string {
	t.Helper()
	var c net.PacketConn
	if err := inNS(t, ns, func() (err error) { c, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	out := make(chan string, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case out <- fmt.Sprintf("%s from %s", buf[:n], from):
			default:
			}
		}
	}()
	return out
}

// A project network's DHCP: each node answers its own ports only (a
// DISCOVER reaches every peer), from the gateway, with the segment's MTU
// and the network's DNS servers; the gateway's address resolves to its
// MAC, the same on every node.
func TestSegmentDHCP(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.50.0.0/24", DNS: []string{"10.50.0.53"},
		Routes: []netfabric.Route{{Destination: "10.90.0.0/16", Nexthop: "10.50.0.254"}}}); err != nil {
		t.Fatal(err)
	}
	wa := f.port(t, netfabric.PortRequest{ID: "ward-a", NetworkID: "ward-net", Owner: "wa", Project: f.ward, Node: "box1", Hostname: "ward-a"})
	wb := f.port(t, netfabric.PortRequest{ID: "ward-b", NetworkID: "ward-net", Owner: "wb", Project: f.ward, Node: "box2"})
	// Bound to a node that is not here: its guest, plugged in on box2,
	// gets no answer from either box.
	wx := f.port(t, netfabric.PortRequest{ID: "ward-x", NetworkID: "ward-net", Owner: "wx", Project: f.ward, Node: "box3"})
	boxes := newBoxes(t, f)
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
	}
	ga := plugSegmentLink(t, f, boxes[0], wa)
	gb := plugSegmentLink(t, f, boxes[1], wb)
	gx := plugSegmentLink(t, f, boxes[1], wx)

	for _, c := range []struct {
		ns netns.NsHandle
		p  netfabric.Port
	}{{ga, wa}, {gb, wb}} {
		lease, err := dhcpLease(t, c.ns, "eth0", 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", c.p.ID, err)
		}
		ack := lease.ACK
		mtu, _ := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, ack.Options)
		if ack.YourIPAddr.String() != c.p.IP || ack.ServerIdentifier().String() != "10.50.0.1" || fmt.Sprint(ack.Router()) != "[10.50.0.1]" ||
			mtu != 1450 || fmt.Sprint(ack.DNS()) != "[10.50.0.53]" || ack.SubnetMask().String() != "ffffff00" || ack.HostName() != c.p.Hostname {
			t.Fatalf("%s: lease %s", c.p.ID, ack.Summary())
		}
		// The static route, and the default route beside it (a client
		// that takes option 121 ignores option 3).
		var routes dhcpv4.Routes
		if err := routes.FromBytes(ack.Options.Get(dhcpv4.OptionClasslessStaticRoute)); err != nil || routes.String() != "route to 0.0.0.0/0 via 10.50.0.1; route to 10.90.0.0/16 via 10.50.0.254" {
			t.Fatalf("%s: classless static routes %v (%v)", c.p.ID, routes, err)
		}
	}
	// Each lease came from its port's own node alone (the DISCOVER
	// reached both).
	for i, want := range []string{wa.MAC, wb.MAC} {
		var got []string
		for len(boxes[i].acks) > 0 {
			got = append(got, <-boxes[i].acks)
		}
		if fmt.Sprint(got) != "["+want+"]" {
			t.Fatalf("%s acknowledged %v, want only %s", boxes[i].name, got, want)
		}
	}
	if lease, err := dhcpLease(t, gx, "eth0", 3*time.Second); err == nil {
		t.Fatalf("a port bound to another node got a lease here: %s", lease.ACK.Summary())
	}

	// The gateway resolves to its MAC.
	addAddr(t, ga, "eth0", wa.IP+"/24")
	dial(t, ga, "", "10.50.0.1:80") // fails: nothing listens; it resolves the gateway first
	if mac := neighMAC(t, ga, "10.50.0.1"); mac != netfabric.GatewayMAC("ward-net").String() {
		t.Fatalf("the gateway resolved to %q, want %s", mac, netfabric.GatewayMAC("ward-net"))
	}
}

// An agent restarted while its box cannot read the cluster's state serves
// DHCP for the segments already built here (ServeExisting), and touches
// nothing else: the links are the same before and after.
func TestServeExistingAfterRestart(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.50.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	wa := f.port(t, netfabric.PortRequest{ID: "ward-a", NetworkID: "ward-net", Owner: "wa", Project: f.ward, Node: "box1"})
	boxes := newBoxes(t, f)
	b := boxes[0]
	b.reconcileSegments(t, f, boxes)
	ga := plugSegmentLink(t, f, b, wa)
	// The agent stops (its servers with it) and a new one starts.
	if err := b.do(t, b.h.Close); err != nil {
		t.Fatal(err)
	}
	links := func() string {
		t.Helper()
		ls, err := handle(t, b.ns).LinkList()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range ls {
			names = append(names, l.Attrs().Name)
		}
		return strings.Join(names, ",")
	}
	before := links()
	h2 := netfabric.NewHost(b.cfg, netfabric.StoreLeases(f.node.Store(), "default"))
	t.Cleanup(func() { _ = b.do(t, h2.Close) })
	segs := netfabric.Segments(f.node.Store().ReadTxn(), b.name, func(string) (netip.Addr, bool) { return netip.Addr{}, false })
	if err := b.do(t, func() error {
		return h2.ServeExisting(netfabric.GetNetwork(f.node.Store().ReadTxn(), "default"), segs)
	}); err != nil {
		t.Fatal(err)
	}
	lease, err := dhcpLease(t, ga, "eth0", 10*time.Second)
	if err != nil || lease.ACK.YourIPAddr.String() != wa.IP {
		t.Fatalf("a lease from the servers of what was built: %v %v", lease, err)
	}
	if after := links(); after != before {
		t.Fatalf("ServeExisting changed the links:\n%s\n%s", before, after)
	}
}

// A segment removed while the agent was down leaves no tracked connections
// behind: the first reconcile after the start forgets every zone no segment
// here uses (a network given that zone later must not inherit them), and
// keeps the connections of the segments still here.
func TestRestartForgetsRemovedSegmentsConnections(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	ward, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.50.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	lab, err := f.network(t, netfabric.Network{ID: "lab-net", Project: f.lab, CIDR: "10.50.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	var ports []netfabric.Port
	for _, c := range []struct{ id, nw, project string }{{"wa", ward.ID, f.ward}, {"wb", ward.ID, f.ward}, {"la", lab.ID, f.lab}, {"lb", lab.ID, f.lab}} {
		ports = append(ports, f.port(t, netfabric.PortRequest{ID: c.id, NetworkID: c.nw, Owner: c.id, Project: c.project, Node: "box1"}))
	}
	boxes := newBoxes(t, f)
	b := boxes[0]
	b.reconcileSegments(t, f, boxes)
	var guests []netns.NsHandle
	for _, p := range ports {
		guests = append(guests, plugSegmentGuest(t, f, b, p))
	}
	// An open connection in each network (the default group lets members in).
	echoTCP(t, guests[1], "tcp4", "0.0.0.0:8080")
	echoTCP(t, guests[3], "tcp4", "0.0.0.0:8080")
	for _, c := range []struct {
		g  netns.NsHandle
		to string
	}{{guests[0], ports[1].IP}, {guests[2], ports[3].IP}} {
		testutil.WaitFor(t, 10*time.Second, "an open connection to "+c.to, func() error {
			if conn := openLine(t, c.g, c.to+":8080"); !conn.roundTrip() {
				return fmt.Errorf("no echo")
			}
			return nil
		})
	}
	zones := func() map[uint16]int {
		t.Helper()
		out := map[uint16]int{}
		if err := b.do(t, func() error {
			flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
			for _, fl := range flows {
				out[fl.Zone]++
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if z := zones(); z[ward.Zone()] == 0 || z[lab.Zone()] == 0 {
		t.Fatalf("tracked connections by zone %v: want some in %d and %d", z, ward.Zone(), lab.Zone())
	}

	// The agent stops; meanwhile the ward's ports go; a new agent starts.
	if err := b.do(t, b.h.Close); err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{"wa", "wb"} {
		f.must(t, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: owner}, nil)
	}
	b.h = netfabric.NewHost(b.cfg, netfabric.StoreLeases(f.node.Store(), "default"))
	b.reconcileSegments(t, f, boxes)
	if z := zones(); z[ward.Zone()] != 0 || z[lab.Zone()] == 0 {
		t.Fatalf("tracked connections by zone after the restart %v: want none in the removed segment's %d, the lab's in %d still", z, ward.Zone(), lab.Zone())
	}
}
