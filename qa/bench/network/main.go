// Command network is make bench-network: TCP throughput and round-trip
// latency between two guests of one project network on two boxes, over
// the VXLAN segment netfabric builds (port security and security groups
// on: 10 rules, then 1,000), beside the same two guests joined by a plain
// bridge on the same machine (the limit: no encapsulation, no filtering);
// and how long a rule change takes to apply. Each box and guest is a
// network namespace; the boxes share a veth underlay. Run as root.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/netfabric"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func main() {
	runtime.LockOSThread() // namespaces are per thread: the main one stays in the host's
	dur := flag.Duration("time", 5*time.Second, "length of each throughput run")
	rounds := flag.Int("rtt", 5000, "round trips for the latency measurement")
	out := flag.String("out", "", "also write the markdown report to this file")
	repeat := flag.Int("repeat", 6, "runs of every path, interleaved (an even number balances the security-group paths' places); the report gives the medians")
	flag.BoolVar(&unfiltered, "unfiltered", false, "also run the overlay with port security and the host guard removed, to see what they cost")
	only := flag.String("only", "", "run only this path, for a profiler: plain, overlay (10 rules) or bare (the overlay unfiltered); no report")
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("bench-network needs root: it makes network namespaces, bridges, VXLAN devices and nftables tables")
	}
	var results []result
	paths := []func() (*testbed, error){plainPath, func() (*testbed, error) { return overlay(true, 10) }, func() (*testbed, error) { return overlay(true, 1000) }}
	if unfiltered {
		paths = append(paths, func() (*testbed, error) { return overlay(false, 0) })
	}
	if *only != "" {
		path, ok := map[string]func() (*testbed, error){"plain": paths[0], "overlay": paths[1],
			"bare": func() (*testbed, error) { return overlay(false, 0) }}[*only]
		if !ok {
			log.Fatalf("-only %q: plain, overlay or bare", *only)
		}
		tb, err := path()
		if err == nil {
			var r result
			if r, err = tb.measure(*dur, *rounds); err == nil {
				fmt.Printf("%s: %.2f Gbit/s, RTT p50 %v\n", tb.name, r.gbps, r.p50)
			}
		}
		tb.close()
		if err != nil {
			log.Fatal(err)
		}
		return
	}
	var changes []time.Duration
	runs := make([][]result, len(paths))
	for round := range *repeat {
		// The two security-group paths swap places every other round:
		// whichever runs later in a round is slower on this machine, and
		// their ratio is the figure that matters.
		order := []int{0, 1, 2, 3}[:len(paths)]
		if round%2 == 1 {
			order[1], order[2] = order[2], order[1]
		}
		for _, i := range order {
			path := paths[i]
			tb, err := path()
			if err != nil {
				log.Fatal(err)
			}
			r, err := tb.measure(*dur, *rounds)
			if err == nil && i == 2 && round == 0 {
				changes, err = tb.ruleChanges(5)
			}
			tb.close()
			if err != nil {
				log.Fatalf("%s: %v", tb.name, err)
			}
			runs[i] = append(runs[i], r)
		}
	}
	for _, rs := range runs {
		results = append(results, median(rs))
	}
	report := render(results, *dur, *rounds, *repeat, changes)
	fmt.Print(report)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// testbed is two guests (namespaces with eth0 at ip) and what joins them.
type testbed struct {
	name    string
	guests  [2]netns.NsHandle
	ips     [2]string
	cleanup []func()
	// The overlay's boxes, their hosts and segments, and the ports' group.
	boxes  [2]netns.NsHandle
	hosts  [2]*netfabric.Host
	segs   [2]netfabric.Segment
	leases *staticPorts
}

// ruleChanges adds rules allowing one more port, n times, and returns how
// long each took from the change to the first connection through it: the
// receiving box's rebuild of its tables (what the agent does when the
// state changes; Raft's commit and the watch add a few milliseconds) and
// a dial.
func (tb *testbed) ruleChanges(n int) ([]time.Duration, error) {
	var out []time.Duration
	for i := range n {
		port := 6000 + i
		var ln net.Listener
		if err := in(tb.guests[1], func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", tb.ips[1], port)); return err }); err != nil {
			return nil, err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		dial := func(timeout time.Duration) bool {
			return in(tb.guests[0], func() error {
				c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", tb.ips[1], port), timeout)
				if err == nil {
					c.Close()
				}
				return err
			}) == nil
		}
		if dial(300 * time.Millisecond) {
			ln.Close()
			return nil, fmt.Errorf("port %d reachable before its rule", port)
		}
		tb.leases.mu.Lock()
		tb.leases.group.Rules = append(tb.leases.group.Rules, netfabric.Rule{ID: fmt.Sprintf("sg-00000000000be9c0-c%d", i), Direction: "ingress",
			EtherType: "IPv4", Protocol: "tcp", PortMin: port, PortMax: port})
		tb.leases.mu.Unlock()
		start := time.Now()
		seg := tb.segs[1]
		if err := in(tb.boxes[1], func() error { return tb.hosts[1].ReconcileSegments(context.Background(), []netfabric.Segment{seg}) }); err != nil {
			ln.Close()
			return nil, err
		}
		for !dial(time.Second) {
			if time.Since(start) > 10*time.Second {
				ln.Close()
				return nil, fmt.Errorf("port %d still closed 10 s after its rule", port)
			}
		}
		out = append(out, time.Since(start))
		ln.Close()
	}
	return out, nil
}

func (tb *testbed) close() {
	for i := len(tb.cleanup) - 1; i >= 0; i-- {
		tb.cleanup[i]()
	}
}

func newNS(tb *testbed) (netns.NsHandle, error) {
	host, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer host.Close()
	ns, err := netns.New() // enters it
	if err != nil {
		return 0, err
	}
	if err := netns.Set(host); err != nil {
		return 0, err
	}
	tb.cleanup = append(tb.cleanup, func() { ns.Close() })
	if h, err := netlink.NewHandleAt(ns); err == nil {
		if lo, err := h.LinkByName("lo"); err == nil {
			_ = h.LinkSetUp(lo)
		}
		h.Close()
	}
	return ns, nil
}

// in runs fn on a new thread inside ns; the thread is not reused.
func in(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// veth makes a pair with one end (name) in a and the other (peer) in b,
// both up; mac, if set, is the peer's.
func veth(a, b netns.NsHandle, name, peer string, mac net.HardwareAddr, mtu int) error {
	ha, err := netlink.NewHandleAt(a)
	if err != nil {
		return err
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(b)
	if err != nil {
		return err
	}
	defer hb.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: peer, PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(b)}
	if err := ha.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s: %w", name, err)
	}
	for _, x := range []struct {
		h *netlink.Handle
		n string
	}{{ha, name}, {hb, peer}} {
		l, err := x.h.LinkByName(x.n)
		if err != nil {
			return err
		}
		if err := x.h.LinkSetMTU(l, mtu); err != nil {
			return err
		}
		if err := x.h.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

func addr(ns netns.NsHandle, link, cidr string) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	return h.AddrAdd(l, a)
}

func master(ns netns.NsHandle, link, bridge string) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return err
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		return err
	}
	return h.LinkSetMaster(l, br)
}

// plainPath: one host namespace with a bridge, each guest on it by a veth.
func plainPath() (*testbed, error) {
	tb := &testbed{name: "plain bridge (the limit)", ips: [2]string{"10.77.0.2", "10.77.0.3"}}
	host, err := newNS(tb)
	if err != nil {
		return tb, err
	}
	if err := in(host, func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
			return err
		}
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	}); err != nil {
		return tb, err
	}
	for i := range tb.guests {
		if tb.guests[i], err = newNS(tb); err != nil {
			return tb, err
		}
		if err := veth(host, tb.guests[i], fmt.Sprintf("g%d", i), "eth0", nil, 1500); err != nil {
			return tb, err
		}
		if err := master(host, fmt.Sprintf("g%d", i), "br0"); err != nil {
			return tb, err
		}
		if err := addr(tb.guests[i], "eth0", tb.ips[i]+"/24"); err != nil {
			return tb, err
		}
	}
	return tb, nil
}

// overlay: two boxes on a veth underlay, each with a netfabric Host
// carrying one project network's segment, a guest on each box's segment
// bridge through a link named as its port's tap (so port security
// guards it).
// unfiltered: -unfiltered was given.
var unfiltered bool

// benchGroup is the guests' security group with n rules: all egress, the
// bench's port from the network, and n-2 more ingress rules of the kind
// a hospital's firewall has (single ports from single subnets), none of
// which the bench's traffic matches.
func benchGroup(n int) netfabric.SecurityGroup {
	g := netfabric.SecurityGroup{ID: "sg-00000000000be9c0", Name: "bench", Project: "bench", Rules: []netfabric.Rule{
		{ID: "sg-00000000000be9c0-e", Direction: "egress", EtherType: "IPv4"},
		{ID: "sg-00000000000be9c0-i", Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: 5001, PortMax: 5001, RemoteCIDR: "10.50.0.0/24"},
	}}
	for i := 0; i < n-2; i++ {
		g.Rules = append(g.Rules, netfabric.Rule{ID: fmt.Sprintf("sg-00000000000be9c0-%d", i), Direction: "ingress", EtherType: "IPv4",
			Protocol: []string{"tcp", "udp"}[i%2], PortMin: 10000 + i, PortMax: 10000 + i, RemoteCIDR: fmt.Sprintf("172.%d.%d.0/24", 16+i/256%16, i%256)})
	}
	return g
}

func overlay(filtered bool, rules int) (*testbed, error) {
	tb := &testbed{name: fmt.Sprintf("project network across two boxes (VXLAN, port security, security groups: %d rules)", rules), ips: [2]string{"10.50.0.2", "10.50.0.3"}}
	if !filtered {
		tb.name = "the same without port security, security groups and the host guard"
	}
	nw := netfabric.Network{ID: "bench-net", Name: "bench", Project: "bench", CIDR: "10.50.0.0/24", Gateway: "10.50.0.1", VNI: 4242, MTU: netfabric.DefaultMTU}
	ports := []netfabric.Port{
		{ID: "bench-a", NetworkID: nw.ID, MAC: netfabric.MACFor("bench-a").String(), IP: tb.ips[0], Project: "bench", Node: "box0"},
		{ID: "bench-b", NetworkID: nw.ID, MAC: netfabric.MACFor("bench-b").String(), IP: tb.ips[1], Project: "bench", Node: "box1"},
	}
	leases := &staticPorts{nat: netfabric.Network{ID: "default", CIDR: "10.213.0.0/24", Gateway: "10.213.0.1"}, ports: ports, nw: nw, group: benchGroup(max(rules, 2))}
	tb.leases = leases
	var boxes [2]netns.NsHandle
	underlay := [2]netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	var err error
	for i := range boxes {
		if boxes[i], err = newNS(tb); err != nil {
			return tb, err
		}
	}
	if err := veth(boxes[0], boxes[1], "uplink", "uplink", nil, 1500); err != nil {
		return tb, err
	}
	for i, b := range boxes {
		if err := addr(b, "uplink", underlay[i].String()+"/24"); err != nil {
			return tb, err
		}
		cfg := netfabric.DefaultHostConfig()
		cfg.ResolvConf, cfg.Underlay, cfg.Node = nil, underlay[i], fmt.Sprintf("box%d", i)
		cfg.Logger = slog.New(slog.DiscardHandler)
		h := netfabric.NewHost(cfg, leases)
		other := ports[1-i]
		seg := netfabric.Segment{Network: nw, Peers: []netip.Addr{underlay[1-i]},
			Remote: []netfabric.RemotePort{{MAC: other.HardwareAddr(), Node: underlay[1-i]}}}
		if err := in(b, func() error {
			if err := h.Reconcile(context.Background(), leases.nat); err != nil {
				return err
			}
			return h.ReconcileSegments(context.Background(), []netfabric.Segment{seg})
		}); err != nil {
			return tb, fmt.Errorf("box %d: %w", i, err)
		}
		tb.cleanup = append(tb.cleanup, func() { _ = in(b, h.Teardown) })
		tb.boxes[i], tb.hosts[i], tb.segs[i] = b, h, seg
		if tb.guests[i], err = newNS(tb); err != nil {
			return tb, err
		}
		tap := h.TapName(ports[i].ID)
		if err := veth(b, tb.guests[i], tap, "eth0", ports[i].HardwareAddr(), nw.MTU); err != nil {
			return tb, err
		}
		if err := master(b, tap, fmt.Sprintf("cnb%06x", nw.VNI)); err != nil {
			return tb, err
		}
		// Port security learns of the tap.
		if err := in(b, func() error { return h.Reconcile(context.Background(), leases.nat) }); err != nil {
			return tb, err
		}
		if err := addr(tb.guests[i], "eth0", tb.ips[i]+"/24"); err != nil {
			return tb, err
		}
		if !filtered {
			if err := in(b, func() error {
				c, err := nftables.New()
				if err != nil {
					return err
				}
				c.DelTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: cfg.PortTable})
				c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: cfg.GuardTable})
				c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: cfg.SGTable})
				return c.Flush()
			}); err != nil {
				return tb, err
			}
		}
	}
	return tb, nil
}

// staticPorts is the lease source of the overlay's boxes: two ports of one
// network, both in one security group.
type staticPorts struct {
	nat   netfabric.Network
	nw    netfabric.Network
	ports []netfabric.Port
	mu    sync.Mutex
	group netfabric.SecurityGroup
}

func (s *staticPorts) Lease(net.HardwareAddr) (netip.Addr, string, bool) {
	return netip.Addr{}, "", false
}
func (s *staticPorts) Network() (netfabric.Network, bool) { return s.nat, true }
func (s *staticPorts) Ports() []netfabric.Port            { return s.ports }
func (s *staticPorts) Filters(ids []string) map[string]netfabric.PortFilter {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]netfabric.PortFilter{}
	for _, p := range s.ports {
		for _, id := range ids {
			if id == p.ID {
				out[id] = netfabric.NewPortFilter(p, &s.nw, []netfabric.SecurityGroup{s.group}, nil)
			}
		}
	}
	return out
}
func (s *staticPorts) PortByMAC(mac net.HardwareAddr) (netfabric.Port, bool) {
	for _, p := range s.ports {
		if p.MAC == mac.String() {
			return p, true
		}
	}
	return netfabric.Port{}, false
}

type result struct {
	name     string
	gbps     float64
	p50, p99 time.Duration
	spread   string // the throughputs' range over the runs
}

// measure runs a bulk TCP stream from guest 0 to guest 1 for dur, then
// rounds of 64-byte request and response.
func (tb *testbed) measure(dur time.Duration, rounds int) (result, error) {
	r := result{name: tb.name}
	var ln net.Listener
	if err := in(tb.guests[1], func() (err error) { ln, err = net.Listen("tcp4", tb.ips[1]+":5001"); return err }); err != nil {
		return r, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	var conn net.Conn
	dial := func() error {
		return in(tb.guests[0], func() (err error) {
			conn, err = net.DialTimeout("tcp4", tb.ips[1]+":5001", 5*time.Second)
			return err
		})
	}
	// Throughput: mode byte 's', then stream.
	if err := dial(); err != nil {
		return r, err
	}
	buf := make([]byte, 256<<10)
	if _, err := conn.Write([]byte{'s'}); err != nil {
		return r, err
	}
	var n int64
	start := time.Now()
	for time.Since(start) < dur {
		m, err := conn.Write(buf)
		n += int64(m)
		if err != nil {
			return r, err
		}
	}
	r.gbps = float64(n) * 8 / time.Since(start).Seconds() / 1e9
	conn.Close()
	// Latency: mode byte 'e', then echo 64 bytes per round.
	if err := dial(); err != nil {
		return r, err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{'e'}); err != nil {
		return r, err
	}
	msg := make([]byte, 64)
	lat := make([]time.Duration, 0, rounds)
	for i := range rounds {
		binary.BigEndian.PutUint64(msg, uint64(i))
		t0 := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return r, err
		}
		if _, err := io.ReadFull(conn, msg); err != nil {
			return r, err
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return r, nil
}

func serve(c net.Conn) {
	defer c.Close()
	mode := make([]byte, 1)
	if _, err := io.ReadFull(c, mode); err != nil {
		return
	}
	switch mode[0] {
	case 's':
		_, _ = io.Copy(io.Discard, c)
	case 'e':
		msg := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, msg); err != nil {
				return
			}
			if _, err := c.Write(msg); err != nil {
				return
			}
		}
	}
}

// median takes each figure's median over runs of one path.
func median(rs []result) result {
	out := result{name: rs[0].name}
	g := make([]float64, len(rs))
	p50 := make([]time.Duration, len(rs))
	p99 := make([]time.Duration, len(rs))
	for i, r := range rs {
		g[i], p50[i], p99[i] = r.gbps, r.p50, r.p99
	}
	sort.Float64s(g)
	sort.Slice(p50, func(i, j int) bool { return p50[i] < p50[j] })
	sort.Slice(p99, func(i, j int) bool { return p99[i] < p99[j] })
	out.gbps, out.p50, out.p99 = g[len(g)/2], p50[len(rs)/2], p99[len(rs)/2]
	out.spread = fmt.Sprintf("%.1f-%.1f", g[0], g[len(g)-1])
	return out
}

func render(rs []result, dur time.Duration, rounds, repeat int, changes []time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## bench-network (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "TCP from one guest to another: a %s bulk stream, then %d round trips of 64 bytes; every path %d times, interleaved (the two security-group paths swapping places every other round), medians shown. Same machine, same run.\n\n", dur, rounds, repeat)
	fmt.Fprintf(&b, "| path | throughput (range) | RTT p50 | RTT p99 |\n|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.2f Gbit/s (%s) | %s | %s |\n", r.name, r.gbps, r.spread, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
	}
	if len(rs) >= 2 && rs[0].gbps > 0 {
		fmt.Fprintf(&b, "\nOverlay throughput: %.0f%% of the plain path (target ≥ 70%%); RTT p50 ×%.2f.\n",
			100*rs[1].gbps/rs[0].gbps, float64(rs[1].p50)/float64(rs[0].p50))
	}
	if len(rs) >= 3 && rs[1].gbps > 0 {
		fmt.Fprintf(&b, "1,000 security-group rules beside 10: throughput %+.0f%%, RTT p50 %+.0f%% (target: within 10%%).\n",
			100*(rs[2].gbps/rs[1].gbps-1), 100*(float64(rs[2].p50)/float64(rs[1].p50)-1))
	}
	if len(changes) > 0 {
		s := append([]time.Duration(nil), changes...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		fmt.Fprintf(&b, "A rule change, from the state to the first connection through it (1,000 rules on the port, %d changes): median %s, worst %s (target < 1 s).\n",
			len(s), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
	}
	return b.String()
}
