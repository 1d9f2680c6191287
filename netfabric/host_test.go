package netfabric_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

type ack struct {
	mac string
	ip  netip.Addr
}

type hostFixture struct {
	ns     netns.NsHandle
	cfg    netfabric.HostConfig
	h      *netfabric.Host
	nw     netfabric.Network
	leases *staticLeases
	acks   chan ack
	peers  []netip.Addr // the cluster's other nodes, as HostConfig.Peers gives them
}

// newHostFixture reconciles a Host for 10.77.0.0/24 inside a fresh "host"
// namespace and tears it down when the test ends.
func newHostFixture(t *testing.T) *hostFixture {
	requireRoot(t)
	f := &hostFixture{ns: newNS(t), acks: make(chan ack, 16)}
	f.nw = netfabric.Network{ID: "default", CIDR: "10.77.0.0/24", Gateway: "10.77.0.1"}
	f.leases = newLeases(f.nw)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("# test\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.cfg = netfabric.DefaultHostConfig()
	f.cfg.ResolvConf = []string{resolv}
	f.cfg.Logger = slog.New(slog.NewTextHandler(testutil.LogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.cfg.OnLease = func(mac net.HardwareAddr, ip netip.Addr) {
		select {
		case f.acks <- ack{mac.String(), ip}:
		default:
		}
	}
	f.cfg.Peers = func() []netip.Addr { return f.peers }
	disableBridgeNetfilter(t, f.ns)
	f.h = netfabric.NewHost(f.cfg, f.leases)
	f.reconcile(t, f.nw)
	t.Cleanup(func() {
		if err := f.do(t, f.h.Teardown); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return f
}

func (f *hostFixture) do(t *testing.T, fn func() error) error { return inNS(t, f.ns, fn) }

func (f *hostFixture) reconcile(t *testing.T, nw netfabric.Network) {
	t.Helper()
	if err := f.do(t, func() error { return f.h.Reconcile(context.Background(), nw) }); err != nil {
		t.Fatal(err)
	}
}

// tableRules counts the rules per chain of our table, or returns nil if
// there is no such table.
func (f *hostFixture) tableRules(t *testing.T) map[string]int {
	t.Helper()
	return f.rulesOf(t, nftables.TableFamilyIPv4, f.cfg.NFTable)
}

// setKeys lists the keys of a set of the port-security table.
func (f *hostFixture) setKeys(t *testing.T, name string) []string {
	t.Helper()
	var out []string
	err := f.do(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tbl := &nftables.Table{Family: nftables.TableFamilyBridge, Name: f.cfg.PortTable}
		set, err := c.GetSetByName(tbl, name)
		if err != nil {
			return err
		}
		elems, err := c.GetSetElements(set)
		if err != nil {
			return err
		}
		for _, e := range elems {
			out = append(out, string(e.Key))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rulesOf counts the rules per chain of a table, or returns nil if there
// is no such table.
func (f *hostFixture) rulesOf(t *testing.T, family nftables.TableFamily, name string) map[string]int {
	t.Helper()
	var out map[string]int
	err := f.do(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tbl, err := c.ListTableOfFamily(name, family)
		if err != nil {
			return nil // no table
		}
		chains, err := c.ListChains()
		if err != nil {
			return err
		}
		out = map[string]int{}
		for _, ch := range chains {
			if ch.Table.Name != tbl.Name || ch.Table.Family != tbl.Family {
				continue
			}
			rules, err := c.GetRules(tbl, ch)
			if err != nil {
				return err
			}
			out[ch.Name] = len(rules)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *hostFixture) bridgeAddrs(t *testing.T) []string {
	t.Helper()
	h := handle(t, f.ns)
	br, err := h.LinkByName(f.cfg.Bridge)
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("bridge %s is down", f.cfg.Bridge)
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}

func TestReconcileIsIdempotentAndTeardownCleansUp(t *testing.T) {
	f := newHostFixture(t)
	want := map[string]int{"postrouting": 1, "forward": 3}
	if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.77.0.1/24" {
		t.Fatalf("bridge addresses %v", got)
	}
	if got := f.tableRules(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("nftables rules per chain %v, want %v", got, want)
	}
	var fwd []byte
	if err := f.do(t, func() (err error) { fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); return err }); err != nil || strings.TrimSpace(string(fwd)) != "1" {
		t.Fatalf("ip_forward %q, %v", fwd, err)
	}

	f.reconcile(t, f.nw)
	if got := f.tableRules(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after a second Reconcile: rules %v, want %v", got, want)
	}

	// A new CIDR replaces the address instead of adding one.
	moved := netfabric.Network{ID: "default", CIDR: "10.78.0.0/24"}
	f.reconcile(t, moved)
	if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.78.0.1/24" {
		t.Fatalf("bridge addresses after the CIDR changed: %v", got)
	}

	// Someone deletes the bridge: the next Reconcile brings it back.
	h := handle(t, f.ns)
	br, _ := h.LinkByName(f.cfg.Bridge)
	if err := h.LinkDel(br); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, f.nw)
	if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.77.0.1/24" {
		t.Fatalf("bridge addresses after it was recreated: %v", got)
	}

	tap := f.h.TapName("vm1-nic0")
	f.leases.addPort("vm1-nic0", net.HardwareAddr{0x02, 0, 0, 0, 0, 9}, "10.77.0.9")
	if err := f.do(t, func() error { return f.h.EnsureTap(tap) }); err != nil {
		t.Fatal(err)
	}
	// EnsureTap secures the tap's port; a port of a VM on another node (no
	// tap here) is left out.
	f.leases.addPort("vm2-nic0", net.HardwareAddr{0x02, 0, 0, 0, 0, 10}, "10.77.0.10")
	if err := f.do(t, func() error { return f.h.EnsureTap(tap) }); err != nil {
		t.Fatal(err)
	}
	if got, want := f.rulesOf(t, nftables.TableFamilyBridge, f.cfg.PortTable), map[string]int{"checked_in": 2, "checked_out": 2, "forward": 4, "output": 2, "prerouting": 34}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("port security after EnsureTap: %v, want %v", got, want)
	}
	if got := f.setKeys(t, "port_ips"); len(got) != 1 || !strings.HasPrefix(got[0], tap+"\x00") {
		t.Fatalf("port security's addresses after EnsureTap: %q, want only %s's", got, tap)
	}
	if got, want := f.rulesOf(t, nftables.TableFamilyINet, f.cfg.GuardTable), map[string]int{"forward": 7, "input": 10}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("host guard: %v, want %v", got, want)
	}
	if err := f.do(t, f.h.Teardown); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{f.cfg.Bridge, tap} {
		if _, err := h.LinkByName(name); err == nil {
			t.Errorf("%s survived Teardown", name)
		}
	}
	if got := f.tableRules(t); got != nil {
		t.Errorf("table %s survived Teardown: %v", f.cfg.NFTable, got)
	}
	if got := f.rulesOf(t, nftables.TableFamilyBridge, f.cfg.PortTable); got != nil {
		t.Errorf("table %s survived Teardown: %v", f.cfg.PortTable, got)
	}
	if got := f.rulesOf(t, nftables.TableFamilyINet, f.cfg.GuardTable); got != nil {
		t.Errorf("table %s survived Teardown: %v", f.cfg.GuardTable, got)
	}
	if err := f.do(t, f.h.Teardown); err != nil {
		t.Fatalf("a second Teardown: %v", err)
	}
}

func TestTaps(t *testing.T) {
	f := newHostFixture(t)
	name := f.h.TapName("vm1-nic0")
	if len(name) > 15 || !strings.HasPrefix(name, "cvm") || name != f.h.TapName("vm1-nic0") || name == f.h.TapName("vm1-nic1") {
		t.Fatalf("TapName %q: want a stable, distinct cvm* name of at most 15 characters", name)
	}
	for range 2 {
		if err := f.do(t, func() error { return f.h.EnsureTap(name) }); err != nil {
			t.Fatal(err)
		}
	}
	h := handle(t, f.ns)
	checkTap := func() {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		br, err := h.LinkByName(f.cfg.Bridge)
		if err != nil {
			t.Fatal(err)
		}
		tap, ok := l.(*netlink.Tuntap)
		if !ok || tap.Mode != netlink.TUNTAP_MODE_TAP {
			t.Fatalf("%s is %T %+v, want a tap", name, l, l)
		}
		if tap.Flags&netlink.TUNTAP_VNET_HDR == 0 || tap.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
			t.Errorf("%s flags %#x: want vnet_hdr, no multi_queue", name, tap.Flags)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("%s: master %d (bridge is %d), flags %v", name, l.Attrs().MasterIndex, br.Attrs().Index, l.Attrs().Flags)
		}
	}
	checkTap()
	var taps []string
	if err := f.do(t, func() (err error) { taps, err = f.h.Taps(); return err }); err != nil || strings.Join(taps, ",") != name {
		t.Fatalf("Taps() = %v, %v; want [%s]", taps, err, name)
	}
	if err := f.do(t, func() error { return f.h.EnsureTap("eth0") }); err == nil {
		t.Fatal("EnsureTap accepted a name without our prefix")
	}

	// The bridge is recreated under a running VM: Reconcile re-attaches its tap.
	br, _ := h.LinkByName(f.cfg.Bridge)
	if err := h.LinkDel(br); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, f.nw)
	checkTap()

	// Close leaves the tap for the VM; RemoveTap removes it, twice is fine.
	if err := f.h.Close(); err != nil {
		t.Fatal(err)
	}
	checkTap()
	for range 2 {
		if err := f.do(t, func() error { return f.h.RemoveTap(name) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.do(t, func() (err error) { taps, err = f.h.Taps(); return err }); err != nil || len(taps) != 0 {
		t.Fatalf("Taps() after RemoveTap = %v, %v", taps, err)
	}
}

// Teardown and Reconcile take the same locks in the same order: running
// together they finish (a reversed order hung both).
func TestTeardownDuringReconcile(t *testing.T) {
	f := newHostFixture(t)
	done := make(chan error, 2)
	go func() {
		var err error
		for range 20 {
			if err = f.do(t, func() error { return f.h.Reconcile(context.Background(), f.nw) }); err != nil {
				break
			}
		}
		done <- err
	}()
	go func() {
		var err error
		for range 20 {
			if err = f.do(t, f.h.Teardown); err != nil {
				break
			}
		}
		done <- err
	}()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Teardown and Reconcile deadlocked")
		}
	}
}

// disableBridgeNetfilter turns bridged traffic's trips through the IP hooks
// off in ns. The appliance does not load br_netfilter; a test kernel that
// has it built in would also pass bridged traffic through the IP hooks (and
// reassemble IPv6 fragments there), which would hide what our bridge table
// alone lets through.
func disableBridgeNetfilter(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	if err := inNS(t, ns, func() error {
		for _, k := range []string{"iptables", "ip6tables", "arptables"} {
			err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-"+k, []byte("0"), 0)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A VM network holding the node's own address is refused, and nothing
// changes: its bridge would hold the network's gateway and shadow the LAN
// (the node would drop ARP from the LAN's gateway as a martian source).
func TestVMNetworkOverTheLANIsRefused(t *testing.T) {
	f := newHostFixture(t)
	h := handle(t, f.ns)
	lan := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "lan1"} // (no dummy links in this kernel)
	if err := h.LinkAdd(lan); err != nil {
		t.Fatal(err)
	}
	addAddr(t, f.ns, "lan0", "10.213.0.11/24")
	for _, cidr := range []string{"10.213.0.0/16", "10.213.0.0/24", "10.213.0.0/28"} {
		err := f.do(t, func() error { return f.h.Reconcile(context.Background(), netfabric.Network{ID: "default", CIDR: cidr}) })
		if !netfabric.IsShadowing(err) || !strings.Contains(err.Error(), "holds 10.213.0.11/24 on lan0") {
			t.Fatalf("a VM network %s over the LAN: %v", cidr, err)
		}
		// In its own words, not wrapped in others: the host record says
		// it from its format in the reader's language.
		if e, ok := err.(*consensus.Error); !ok || e.Format == "" {
			t.Fatalf("the refusal of %s is %T %+v, want a *consensus.Error made from a format", cidr, err, err)
		}
		if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.77.0.1/24" {
			t.Fatalf("bridge addresses after the refusal of %s: %v", cidr, got)
		}
	}
	// Its own bridge's address is no overlap: reconciling again is fine,
	// and so is a range beside the LAN, or inside a wider LAN that does
	// not put the node's address in it.
	f.reconcile(t, f.nw)
	f.reconcile(t, netfabric.Network{ID: "default", CIDR: "10.214.0.0/16"})
	if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.214.0.1/16" {
		t.Fatalf("bridge addresses beside the LAN: %v", got)
	}
	addAddr(t, f.ns, "lan1", "10.1.1.1/8")
	f.reconcile(t, netfabric.Network{ID: "default", CIDR: "10.215.0.0/16"})
	if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.215.0.1/16" {
		t.Fatalf("bridge addresses inside a wider LAN: %v", got)
	}

	// Inside the wider LAN, a range that holds the LAN's router, or
	// another node of the cluster, is refused too: the bridge's route
	// would take this node's traffic for them. A node reached through a
	// more specific route (another subnet, behind a router) is not.
	route := func(dst, via string) {
		t.Helper()
		l, err := h.LinkByName("lan1")
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err == nil {
			err = h.LinkSetUp(lan)
		}
		r := &netlink.Route{Gw: net.ParseIP(via), Flags: int(netlink.FLAG_ONLINK)}
		if via == "" { // a route to a host on the link
			r = &netlink.Route{Scope: netlink.SCOPE_LINK}
		}
		if err == nil {
			r.LinkIndex = l.Attrs().Index
			if dst != "" {
				_, r.Dst, err = net.ParseCIDR(dst)
			}
		}
		if err == nil {
			err = h.RouteAdd(r)
		}
		if err != nil {
			t.Fatalf("route to %q via %s: %v", dst, via, err)
		}
	}
	route("", "10.216.0.254")
	refused := func(cidr, want string) {
		t.Helper()
		err := f.do(t, func() error { return f.h.Reconcile(context.Background(), netfabric.Network{ID: "default", CIDR: cidr}) })
		if !netfabric.IsShadowing(err) || !strings.Contains(err.Error(), want) {
			t.Fatalf("a VM network %s: %v, want an error saying %q", cidr, err, want)
		}
		if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.215.0.1/16" {
			t.Fatalf("bridge addresses after the refusal of %s: %v", cidr, got)
		}
	}
	refused("10.216.0.0/16", "holds 10.216.0.254, the gateway of this node's route to default on lan1")
	f.peers = []netip.Addr{netip.MustParseAddr("10.217.3.13")}
	refused("10.217.0.0/16", "holds 10.217.3.13, the address of another node of this cluster")
	route("10.217.3.0/24", "10.1.1.254")
	f.reconcile(t, netfabric.Network{ID: "default", CIDR: "10.217.0.0/16"})
	if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.217.0.1/16" {
		t.Fatalf("bridge addresses with the peer behind a router: %v", got)
	}
	// So is a gateway with a host route of its own (as some clouds give
	// their machines): the route to it is more specific than the bridge's.
	route("10.216.0.254/32", "")
	f.reconcile(t, netfabric.Network{ID: "default", CIDR: "10.216.0.0/16"})
	if got := f.bridgeAddrs(t); strings.Join(got, ",") != "10.216.0.1/16" {
		t.Fatalf("bridge addresses with a host route to the gateway: %v", got)
	}
}
