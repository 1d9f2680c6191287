package netfabric_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Attacks on security groups, each found in review and each shown to get
// through before its fix.

// acceptOne listens and hands back the server side of the first connection.
func acceptOne(t *testing.T, ns netns.NsHandle, addr string) <-chan net.Conn {
	var ln net.Listener
	if err := inNS(t, ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return ch
}

func sendLine(c net.Conn, r *bufio.Reader, peer net.Conn, pr *bufio.Reader) bool {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	peer.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("x\n")); err != nil {
		return false
	}
	s, err := pr.ReadString('\n')
	return err == nil && s == "x\n"
}

func sgSetup(t *testing.T) (*fabric, [2]*box, netfabric.Network, func()) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	nw, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.60.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	boxes := newBoxes(t, f)
	reconcile := func() {
		t.Helper()
		for _, b := range boxes {
			b.reconcileSegments(t, f, boxes)
		}
	}
	return f, boxes, nw, reconcile
}

const srvG, cliG = "sg-00000000000000e1", "sg-00000000000000e2"

func sgTwoPorts(t *testing.T, f *fabric, nw netfabric.Network, boxes [2]*box, reconcile func()) (netns.NsHandle, netns.NsHandle) {
	// srv: ingress tcp 8080, egress anything (like default). cli: egress tcp, ingress anything.
	f.group(t, srvG, "srvg",
		netfabric.Rule{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: 8080},
		netfabric.Rule{Direction: "egress", EtherType: "IPv4"})
	f.group(t, cliG, "clig",
		netfabric.Rule{Direction: "egress", EtherType: "IPv4", Protocol: "tcp"},
		netfabric.Rule{Direction: "ingress", EtherType: "IPv4"})
	srv := f.port(t, netfabric.PortRequest{ID: "srv", NetworkID: nw.ID, Owner: "srv", Project: f.ward, Node: "box1", IP: "10.60.0.10", SecurityGroups: []string{srvG}})
	cli := f.port(t, netfabric.PortRequest{ID: "cli", NetworkID: nw.ID, Owner: "cli", Project: f.ward, Node: "box2", IP: "10.60.0.20", SecurityGroups: []string{cliG}})
	reconcile()
	return plugSegmentGuest(t, f, boxes[0], srv), plugSegmentGuest(t, f, boxes[1], cli)
}

// A connection whose rule is deleted is cut both ways: its tracking is
// removed and neither side's next packet starts it again (a new TCP
// connection needs a SYN), even when the server speaks next.
func TestSecurityGroupDeletedRuleCutsBothWays(t *testing.T) {
	f, boxes, nw, reconcile := sgSetup(t)
	gSrv, gCli := sgTwoPorts(t, f, nw, boxes, reconcile)
	acc := acceptOne(t, gSrv, "0.0.0.0:8080")
	var cc net.Conn
	testutil.WaitFor(t, 10*time.Second, "cli connects to srv", func() error {
		return inNS(t, gCli, func() (err error) { cc, err = net.DialTimeout("tcp4", "10.60.0.10:8080", time.Second); return err })
	})
	sc := <-acc
	cr, sr := bufio.NewReader(cc), bufio.NewReader(sc)
	if !sendLine(cc, cr, sc, sr) || !sendLine(sc, sr, cc, cr) {
		t.Fatal("no traffic before the rule was deleted")
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgDeleteSecurityGroupRule, netfabric.DeleteRuleCmd{Group: srvG, Project: f.ward, Rule: srvG + "-1"}, nil); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if dial(t, gCli, "", "10.60.0.10:8080") {
		t.Fatal("a new connection passes after its rule was deleted")
	}
	if sendLine(sc, sr, cc, cr) {
		t.Error("server to client still passes after the rule was deleted")
	}
	if sendLine(cc, cr, sc, sr) {
		t.Error("client to server still passes after the rule was deleted")
	}
}

// A rule deleted while a box's agent is down is enforced on the open
// connections by the agent that starts next.
func TestSecurityGroupRuleDeletedWhileAgentDown(t *testing.T) {
	f, boxes, nw, reconcile := sgSetup(t)
	gSrv, gCli := sgTwoPorts(t, f, nw, boxes, reconcile)
	acc := acceptOne(t, gSrv, "0.0.0.0:8080")
	var cc net.Conn
	testutil.WaitFor(t, 10*time.Second, "cli connects to srv", func() error {
		return inNS(t, gCli, func() (err error) { cc, err = net.DialTimeout("tcp4", "10.60.0.10:8080", time.Second); return err })
	})
	sc := <-acc
	cr, sr := bufio.NewReader(cc), bufio.NewReader(sc)
	if !sendLine(cc, cr, sc, sr) {
		t.Fatal("no traffic before")
	}
	if err := boxes[0].do(t, boxes[0].h.Close); err != nil {
		t.Fatal(err)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgDeleteSecurityGroupRule, netfabric.DeleteRuleCmd{Group: srvG, Project: f.ward, Rule: srvG + "-1"}, nil); err != nil {
		t.Fatal(err)
	}
	boxes[0].h = netfabric.NewHost(boxes[0].cfg, netfabric.StoreLeases(f.node.Store(), "default"))
	reconcile()
	if dial(t, gCli, "", "10.60.0.10:8080") {
		t.Fatal("a new connection passes after its rule was deleted")
	}
	if sendLine(cc, cr, sc, sr) {
		t.Error("after the agent's restart, the connection the deleted rule allowed still passes")
	}
}

// With bridged traffic's trip through the inet hooks turned off behind
// the agent's back, a guarded port's IP traffic stops instead of passing
// unfiltered; the next rebuild turns it on again.
func TestSecurityGroupsFailClosed(t *testing.T) {
	f, boxes, nw, reconcile := sgSetup(t)
	gSrv, gCli := sgTwoPorts(t, f, nw, boxes, reconcile)
	listenTCP(t, gSrv, "0.0.0.0:9999")
	listenTCP(t, gSrv, "0.0.0.0:8080")
	testutil.WaitFor(t, 10*time.Second, "cli reaches srv on 8080", func() error {
		if !dial(t, gCli, "", "10.60.0.10:8080") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	if dial(t, gCli, "", "10.60.0.10:9999") {
		t.Fatal("tcp 9999 passes with no rule")
	}
	disableBridgeNetfilter(t, boxes[0].ns)
	if dial(t, gCli, "", "10.60.0.10:9999") {
		t.Error("with bridge-nf-call-iptables off on srv's box, tcp 9999 (no rule) got through")
	}
	if dial(t, gCli, "", "10.60.0.10:8080") {
		t.Error("with bridge-nf-call-iptables off, unchecked traffic reached srv")
	}
	reconcile()
	if !dial(t, gCli, "", "10.60.0.10:8080") {
		t.Error("the rebuild did not restore filtered traffic")
	}
}

// DHCP passes whatever the egress rules, but only as DHCP: from the
// client port to the broadcast address or the gateway, not to a guest.
func TestSecurityGroupDHCPExemptionIsNarrow(t *testing.T) {
	f, boxes, nw, reconcile := sgSetup(t)
	f.group(t, "sg-00000000000000f1", "noout")
	f.group(t, "sg-00000000000000f2", "anyin", netfabric.Rule{Direction: "ingress", EtherType: "IPv4"})
	a := f.port(t, netfabric.PortRequest{ID: "a", NetworkID: nw.ID, Owner: "a", Project: f.ward, Node: "box1", IP: "10.60.0.10", SecurityGroups: []string{"sg-00000000000000f1"}})
	b := f.port(t, netfabric.PortRequest{ID: "b", NetworkID: nw.ID, Owner: "b", Project: f.ward, Node: "box2", IP: "10.60.0.20", SecurityGroups: []string{"sg-00000000000000f2"}})
	c := f.port(t, netfabric.PortRequest{ID: "c", NetworkID: nw.ID, Owner: "c", Project: f.ward, Node: "box2", IP: "10.60.0.30", SecurityGroups: []string{netfabric.DefaultGroupID(f.ward)}})
	reconcile()
	ga, gb, gc := plugSegmentGuest(t, f, boxes[0], a), plugSegmentGuest(t, f, boxes[1], b), plugSegmentGuest(t, f, boxes[1], c)
	got := listenUDP(t, gb, "0.0.0.0:67")
	// c (all egress) reaches b's port 67: the receiving side is open.
	sendFrom := func(ns netns.NsHandle, sport int) {
		_ = inNS(t, ns, func() error {
			conn, err := net.DialUDP("udp4", &net.UDPAddr{Port: sport}, &net.UDPAddr{IP: net.ParseIP("10.60.0.20"), Port: 67})
			if err != nil {
				return err
			}
			defer conn.Close()
			for range 5 {
				_, _ = conn.Write([]byte(fmt.Sprintf("from-%d", sport)))
				time.Sleep(100 * time.Millisecond)
			}
			return nil
		})
	}
	testutil.WaitFor(t, 10*time.Second, "c reaches b's udp 67", func() error {
		sendFrom(gc, 40000)
		select {
		case <-got:
			return nil
		case <-time.After(300 * time.Millisecond):
			return fmt.Errorf("nothing")
		}
	})
	time.Sleep(200 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	sendFrom(ga, 68)
	select {
	case m := <-got:
		t.Errorf("a port with no egress rule sent udp 68->67 to a guest: %q", m)
	case <-time.After(time.Second):
	}
}

// Two projects' segments on one box, the same addresses: a fragment from
// one project never completes a packet of the other's (each network's
// fragments are reassembled in its own conntrack zone).
func TestSecurityGroupsKeepFragmentsApart(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	wn, _ := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.60.0.0/24"})
	ln, _ := f.network(t, netfabric.Network{ID: "lab-net", Project: f.lab, CIDR: "10.60.0.0/24"})
	boxes := newBoxes(t, f)
	wa := f.port(t, netfabric.PortRequest{ID: "wa", NetworkID: wn.ID, Owner: "wa", Project: f.ward, Node: "box1", IP: "10.60.0.20", SecurityGroups: []string{netfabric.DefaultGroupID(f.ward)}})
	wr := f.port(t, netfabric.PortRequest{ID: "wr", NetworkID: wn.ID, Owner: "wr", Project: f.ward, Node: "box1", IP: "10.60.0.10", SecurityGroups: []string{netfabric.DefaultGroupID(f.ward)}})
	lb := f.port(t, netfabric.PortRequest{ID: "lb", NetworkID: ln.ID, Owner: "lb", Project: f.lab, Node: "box1", IP: "10.60.0.20", SecurityGroups: []string{netfabric.DefaultGroupID(f.lab)}})
	lr := f.port(t, netfabric.PortRequest{ID: "lr", NetworkID: ln.ID, Owner: "lr", Project: f.lab, Node: "box1", IP: "10.60.0.10", SecurityGroups: []string{netfabric.DefaultGroupID(f.lab)}})
	boxes[0].reconcileSegments(t, f, boxes)
	ga, gr := plugSegmentGuest(t, f, boxes[0], wa), plugSegmentGuest(t, f, boxes[0], wr)
	gb, glr := plugSegmentGuest(t, f, boxes[0], lb), plugSegmentGuest(t, f, boxes[0], lr)
	got := listenUDP(t, gr, "0.0.0.0:7777")
	gotLab := listenUDP(t, glr, "0.0.0.0:7777")
	testutil.WaitFor(t, 10*time.Second, "ward's sender reaches ward's receiver", func() error {
		_ = askUDPOnce(t, ga, gr)
		select {
		case <-got:
			return nil
		case <-time.After(300 * time.Millisecond):
			return fmt.Errorf("nothing")
		}
	})
	_ = askUDPOnce(t, gb, glr)
	time.Sleep(500 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	for len(gotLab) > 0 {
		<-gotLab
	}
	src, dst := [4]byte{10, 60, 0, 20}, [4]byte{10, 60, 0, 10}
	udp := make([]byte, 16)
	binary.BigEndian.PutUint16(udp[0:], 5555)
	binary.BigEndian.PutUint16(udp[2:], 7777)
	binary.BigEndian.PutUint16(udp[4:], 24)
	copy(udp[8:], "AAAAAAAA")
	// lab's guest sends the tail, then ward's guest the head: the same
	// addresses, protocol and IP id.
	rawSend4(t, gb, frag(src, dst, 0x4242, 16, false, []byte("LABLABLA")), dst)
	time.Sleep(100 * time.Millisecond)
	rawSend4(t, ga, frag(src, dst, 0x4242, 0, true, udp), dst)
	select {
	case m := <-got:
		t.Errorf("ward's receiver got a datagram completed by lab's fragment: %q", m)
	case m := <-gotLab:
		t.Errorf("lab's receiver got a datagram completed by ward's fragment: %q", m)
	case <-time.After(2 * time.Second):
	}
	// Whole fragmented datagrams of one project still arrive.
	rawSend4(t, ga, frag(src, dst, 0x4343, 16, false, []byte("WARDWARD")), dst)
	rawSend4(t, ga, frag(src, dst, 0x4343, 0, true, udp), dst)
	select {
	case m := <-got:
		if !strings.HasPrefix(m, "AAAAAAAAWARDWARD ") {
			t.Errorf("ward's own fragments became %q", m)
		}
	case <-time.After(2 * time.Second):
		t.Error("ward's own fragmented datagram did not arrive: the test cannot tell")
	}
}

// A group whose rules would cut each other into more set elements than a
// node loads is refused when the rules are added, and changes nothing.
func TestSecurityGroupTooManyPieces(t *testing.T) {
	f := newFabric(t)
	const big = "sg-00000000000000b9"
	var rules []netfabric.Rule
	for i := 0; i < 1000; i++ {
		rules = append(rules, netfabric.Rule{ID: fmt.Sprintf("%s-%d", big, i+1), Direction: "ingress", EtherType: "IPv4", Protocol: "tcp",
			PortMin: 1 + i, PortMax: 65535 - i, RemoteCIDR: fmt.Sprintf("10.%d.%d.0/32", i>>8, i&255)})
	}
	_, err := f.node.Apply(context.Background(), netfabric.MsgCreateSecurityGroup, netfabric.SecurityGroup{ID: big, Name: "big", Project: f.lab, Rules: rules, CreatedAt: t0}, nil)
	if consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("a group of 1,000 nested ranges: %v", err)
	}
	if netfabric.GetSecurityGroup(f.node.Store().ReadTxn(), big) != nil {
		t.Fatal("the refused group was made")
	}
	// A thousand ordinary rules are fine: single ports, none next to another.
	for i := range rules {
		rules[i].PortMin, rules[i].PortMax = 10000+2*i, 10000+2*i
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgCreateSecurityGroup, netfabric.SecurityGroup{ID: big, Name: "big", Project: f.lab, Rules: rules, CreatedAt: t0}, nil); err != nil {
		t.Fatal(err)
	}
}

func rawSend4(t *testing.T, ns netns.NsHandle, pkt []byte, dst [4]byte) {
	t.Helper()
	if err := inNS(t, ns, func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		return syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: dst})
	}); err != nil {
		t.Fatal(err)
	}
}

func frag(src, dst [4]byte, id uint16, off uint16, mf bool, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], id)
	fo := off / 8
	if mf {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:], fo)
	h[8] = 64
	h[9] = 17
	copy(h[12:], src[:])
	copy(h[16:], dst[:])
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(s))
	return append(h, payload...)
}

func askUDPOnce(t *testing.T, from, _ netns.NsHandle) bool {
	return inNS(t, from, func() error {
		c, err := net.Dial("udp4", "10.60.0.10:7777")
		if err != nil {
			return err
		}
		defer c.Close()
		c.Write([]byte("warmup"))
		return nil
	}) == nil
}

// A guest of the NAT network on a tap opens connections to the outside:
// its packets, routed by the host, meet both security-group chains, and
// are let through as the NAT network's (no groups there).
func TestNATGuestOnTapReachesOutside(t *testing.T) {
	f := newHostFixture(t)
	g := plugGuest(t, f, "port-n", 9, "10.77.0.9", false)
	f.reconcile(t, f.nw)
	outside := newNS(t)
	vethInto(t, f.ns, outside, "up0", "eth0", nil)
	addAddr(t, f.ns, "up0", "198.51.100.1/24")
	addAddr(t, outside, "eth0", "198.51.100.2/24")
	if err := handle(t, g.ns).RouteAdd(&netlink.Route{Gw: net.ParseIP("10.77.0.1")}); err != nil {
		t.Fatal(err)
	}
	listenTCP(t, outside, "198.51.100.2:8080")
	if !dial(t, g.ns, "", "198.51.100.2:8080") {
		t.Fatal("a NAT guest on a tap could not open a connection to the outside")
	}
}

// An IPv6 connection (link-local addresses, which the port's record does
// not have) is cut when the rule that allowed it is deleted: the
// connection records which ports let it in.
func TestSecurityGroupDeletedRuleCutsIPv6(t *testing.T) {
	f, boxes, nw, reconcile := sgSetup(t)
	const s6, c6 = "sg-00000000000000a6", "sg-00000000000000c6"
	f.group(t, s6, "s6",
		netfabric.Rule{Direction: "ingress", EtherType: "IPv6", Protocol: "tcp", PortMin: 8080},
		netfabric.Rule{Direction: "egress", EtherType: "IPv6"})
	f.group(t, c6, "c6",
		netfabric.Rule{Direction: "egress", EtherType: "IPv6", Protocol: "tcp"},
		netfabric.Rule{Direction: "ingress", EtherType: "IPv6"})
	srv := f.port(t, netfabric.PortRequest{ID: "srv", NetworkID: nw.ID, Owner: "srv", Project: f.ward, Node: "box1", IP: "10.60.0.10", SecurityGroups: []string{s6}})
	cli := f.port(t, netfabric.PortRequest{ID: "cli", NetworkID: nw.ID, Owner: "cli", Project: f.ward, Node: "box2", IP: "10.60.0.20", SecurityGroups: []string{c6}})
	reconcile()
	gSrv, gCli := plugSegmentGuest(t, f, boxes[0], srv), plugSegmentGuest(t, f, boxes[1], cli)
	// Their own link-local addresses (port security admits no other),
	// once duplicate address detection is done with them.
	srvLL := "[" + netfabric.LinkLocal(srv.HardwareAddr()).String() + "%eth0]:8080"
	var ln net.Listener
	testutil.WaitFor(t, 10*time.Second, "srv's link-local address", func() error {
		return inNS(t, gSrv, func() (err error) { ln, err = net.Listen("tcp6", srvLL); return err })
	})
	t.Cleanup(func() { ln.Close() })
	acc := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			acc <- c
		}
	}()
	var cc net.Conn
	testutil.WaitFor(t, 15*time.Second, "an IPv6 connection from cli to srv", func() error {
		return inNS(t, gCli, func() (err error) { cc, err = net.DialTimeout("tcp6", srvLL, time.Second); return err })
	})
	sc := <-acc
	cr, sr := bufio.NewReader(cc), bufio.NewReader(sc)
	if !sendLine(cc, cr, sc, sr) {
		t.Fatal("no traffic before the rule was deleted")
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgDeleteSecurityGroupRule, netfabric.DeleteRuleCmd{Group: s6, Project: f.ward, Rule: s6 + "-1"}, nil); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if sendLine(cc, cr, sc, sr) {
		t.Error("client to server over IPv6 still passes after the ingress rule was deleted")
	}
	if sendLine(sc, sr, cc, cr) {
		t.Error("server to client over IPv6 still passes after the ingress rule was deleted")
	}
}

// One project's port with four groups of 1,000 rules (4,000 set
// elements) on a box: it is filtered, and another project's port on the
// same box keeps its filter and its traffic.
func TestSecurityGroupsBigPortSparesOthers(t *testing.T) {
	f, boxes, nw, reconcile := sgSetup(t)
	gSrv, gCli := sgTwoPorts(t, f, nw, boxes, reconcile)
	listenTCP(t, gSrv, "0.0.0.0:8080")
	testutil.WaitFor(t, 10*time.Second, "cli reaches srv on 8080", func() error {
		if !dial(t, gCli, "", "10.60.0.10:8080") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	ln, err := f.network(t, netfabric.Network{ID: "lab-net", Project: f.lab, CIDR: "10.61.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for g := 0; g < 4; g++ {
		id := fmt.Sprintf("sg-00000000000000c%d", g)
		var rules []netfabric.Rule
		for i := 0; i < 1000; i++ {
			p := 10000 + 2*(g*1000+i)
			rules = append(rules, netfabric.Rule{ID: fmt.Sprintf("%s-%d", id, i+1), Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: p, PortMax: p})
		}
		if _, err := f.node.Apply(context.Background(), netfabric.MsgCreateSecurityGroup, netfabric.SecurityGroup{ID: id, Name: fmt.Sprintf("big%d", g), Project: f.lab, Rules: rules, CreatedAt: t0}, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	lp := f.port(t, netfabric.PortRequest{ID: "lp", NetworkID: ln.ID, Owner: "lp", Project: f.lab, Node: "box1", IP: "10.61.0.10", SecurityGroups: ids})
	reconcile()
	gLab := plugSegmentGuest(t, f, boxes[0], lp)
	reconcile()
	// (reconcile fails the test on any error: lab's port was loaded.)
	_ = gLab
	if !dial(t, gCli, "", "10.60.0.10:8080") {
		t.Error("ward's srv on box1 is cut off after lab's port with 4,000 rules arrived there")
	}
}

// A port whose filter is refused on its node (over the per-port budget)
// gets nothing, not even the packets of a connection established before;
// the node says why.
func TestSecurityGroupsRefusedPortGetsNothing(t *testing.T) {
	f, boxes, nw, reconcile := sgSetup(t)
	gSrv, gCli := sgTwoPorts(t, f, nw, boxes, reconcile)
	acc := acceptOne(t, gSrv, "0.0.0.0:8080")
	var cc net.Conn
	testutil.WaitFor(t, 10*time.Second, "cli connects to srv", func() error {
		return inNS(t, gCli, func() (err error) { cc, err = net.DialTimeout("tcp4", "10.60.0.10:8080", time.Second); return err })
	})
	sc := <-acc
	cr, sr := bufio.NewReader(cc), bufio.NewReader(sc)
	if !sendLine(cc, cr, sc, sr) {
		t.Fatal("no traffic before")
	}
	// Six groups of 1,000 single-port rules: 6,000 set elements on srv.
	groups := []string{srvG}
	for g := 0; g < 6; g++ {
		id := fmt.Sprintf("sg-0000000000000b%02d", g)
		var rules []netfabric.Rule
		for i := 0; i < 1000; i++ {
			p := 10000 + 2*(g*1000+i)
			rules = append(rules, netfabric.Rule{ID: fmt.Sprintf("%s-%d", id, i+1), Direction: "egress", EtherType: "IPv4", Protocol: "udp", PortMin: p, PortMax: p})
		}
		f.group(t, id, fmt.Sprintf("big%d", g), rules...)
		groups = append(groups, id)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: "srv", Project: f.ward, SecurityGroups: &groups}, nil); err != nil {
		t.Fatal(err)
	}
	at := func(node string) (netip.Addr, bool) {
		for _, o := range boxes {
			if o.name == node {
				return o.addr, true
			}
		}
		return netip.Addr{}, false
	}
	segs := netfabric.Segments(f.node.Store().ReadTxn(), "box1", at)
	err := boxes[0].do(t, func() error { return boxes[0].h.ReconcileSegments(context.Background(), segs) })
	if err == nil || !strings.Contains(err.Error(), "port srv: its security groups need") {
		t.Fatalf("box1's reconcile with srv over its budget: %v", err)
	}
	cc.SetDeadline(time.Now().Add(2 * time.Second))
	sc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := cc.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := sr.ReadString('\n'); err == nil {
		t.Errorf("a refused port still received %q on an established connection", line)
	}
}
