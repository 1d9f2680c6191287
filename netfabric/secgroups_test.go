package netfabric_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

func (f *fabric) group(t *testing.T, id, name string, rules ...netfabric.Rule) netfabric.SecurityGroup {
	t.Helper()
	for i := range rules {
		rules[i].ID = fmt.Sprintf("%s-%d", id, i+1)
	}
	var out netfabric.SecurityGroup
	if _, err := f.node.Apply(context.Background(), netfabric.MsgCreateSecurityGroup,
		netfabric.SecurityGroup{ID: id, Name: name, Project: f.ward, Rules: rules, CreatedAt: t0}, &out); err != nil {
		t.Fatalf("group %s: %v", name, err)
	}
	return out
}

func intp(v int) *int { return &v }

// echoTCP answers each line on addr in ns with the same line.
func echoTCP(t *testing.T, ns netns.NsHandle, network, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(t, ns, func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// echoUDP answers every datagram on addr in ns with itself.
func echoUDP(t *testing.T, ns netns.NsHandle, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := inNS(t, ns, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// askUDP reports whether a datagram from ns to addr comes back.
func askUDP(t *testing.T, ns netns.NsHandle, addr string) bool {
	t.Helper()
	err := inNS(t, ns, func() error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 64)
		for range 3 {
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
			if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping" {
				return nil
			}
		}
		return fmt.Errorf("no answer")
	})
	return err == nil
}

// ping reports whether an ICMP echo from ns to dst is answered.
func ping(t *testing.T, ns netns.NsHandle, dst string) bool {
	t.Helper()
	err := inNS(t, ns, func() error {
		c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		for seq := 1; seq <= 3; seq++ {
			m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: seq, Data: []byte("cairn")}}
			wire, _ := m.Marshal(nil)
			if _, err := c.WriteTo(wire, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
				return err
			}
			buf := make([]byte, 1500)
			c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					break
				}
				if r, err := icmp.ParseMessage(1, buf[:n]); err == nil && r.Type == ipv4.ICMPTypeEchoReply && from.String() == dst {
					return nil
				}
			}
		}
		return fmt.Errorf("no echo reply")
	})
	return err == nil
}

// A matrix of security-group rules, checked with real traffic on two
// boxes and on one: ports by protocol and range, a remote CIDR, a remote
// group, ICMP by type, IPv6, stateful replies, a rule added and one
// removed on running guests (an open connection included), conntrack
// zones per network, and allowed address pairs.
func TestSecurityGroups(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	nw, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.60.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	const clientID, webID = "sg-00000000000000c1", "sg-00000000000000a1"
	f.group(t, clientID, "client",
		netfabric.Rule{Direction: "egress", EtherType: "IPv4", Protocol: "tcp"},
		netfabric.Rule{Direction: "egress", EtherType: "IPv4", Protocol: "udp"},
		netfabric.Rule{Direction: "egress", EtherType: "IPv4", Protocol: "icmp"},
		netfabric.Rule{Direction: "egress", EtherType: "IPv6", Protocol: "tcp"},
	)
	web := f.group(t, webID, "web",
		netfabric.Rule{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: 8080, PortMax: 8080},
		netfabric.Rule{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: 9000, PortMax: 9009, RemoteCIDR: "10.60.0.20/32"},
		netfabric.Rule{Direction: "ingress", EtherType: "IPv4", Protocol: "udp", PortMin: 5353, RemoteGroup: clientID},
		netfabric.Rule{Direction: "ingress", EtherType: "IPv4", Protocol: "icmp", ICMPType: intp(8)},
		netfabric.Rule{Direction: "ingress", EtherType: "IPv6", Protocol: "tcp", PortMin: 8443, RemoteCIDR: "fe80::/10"},
	)
	// The clients take anything in, so what srv may send is its own rules'.
	const anyInID = "sg-00000000000000d1"
	f.group(t, anyInID, "any-in", netfabric.Rule{Direction: "ingress", EtherType: "IPv4"})
	// srv and cli2 share box1; cli and other are on box2.
	srv := f.port(t, netfabric.PortRequest{ID: "srv", NetworkID: nw.ID, Owner: "srv", Project: f.ward, Node: "box1", IP: "10.60.0.10", SecurityGroups: []string{webID}})
	cli2 := f.port(t, netfabric.PortRequest{ID: "cli2", NetworkID: nw.ID, Owner: "cli2", Project: f.ward, Node: "box1", IP: "10.60.0.21", SecurityGroups: []string{clientID, anyInID}})
	cli := f.port(t, netfabric.PortRequest{ID: "cli", NetworkID: nw.ID, Owner: "cli", Project: f.ward, Node: "box2", IP: "10.60.0.20", SecurityGroups: []string{clientID, anyInID}})
	// A port recorded with no groups is in the project's default group.
	other := f.port(t, netfabric.PortRequest{ID: "other", NetworkID: nw.ID, Owner: "other", Project: f.ward, Node: "box2", IP: "10.60.0.30"})

	boxes := newBoxes(t, f)
	reconcile := func() {
		t.Helper()
		for _, b := range boxes {
			b.reconcileSegments(t, f, boxes)
		}
	}
	reconcile()
	gSrv := plugSegmentGuest(t, f, boxes[0], srv)
	gCli2 := plugSegmentGuest(t, f, boxes[0], cli2)
	gCli := plugSegmentGuest(t, f, boxes[1], cli)
	gOther := plugSegmentGuest(t, f, boxes[1], other)
	for _, port := range []string{":8080", ":8081", ":9005", ":9010"} {
		echoTCP(t, gSrv, "tcp4", "0.0.0.0"+port)
	}
	echoUDP(t, gSrv, "0.0.0.0:5353")
	listenTCP(t, gCli, "0.0.0.0:7000")
	listenTCP(t, gCli2, "0.0.0.0:7000")
	listenTCP(t, gOther, "0.0.0.0:7000")

	testutil.WaitFor(t, 10*time.Second, "cli (box2) reaches srv (box1) on tcp 8080", func() error {
		if !dial(t, gCli, "", "10.60.0.10:8080") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	cases := []struct {
		what string
		ok   bool
		try  func() bool
	}{
		{"cli -> srv tcp 8080 (web allows 8080 from anywhere; client may send tcp), across boxes", true, func() bool { return dial(t, gCli, "", "10.60.0.10:8080") }},
		{"cli2 -> srv tcp 8080, on one box", true, func() bool { return dial(t, gCli2, "", "10.60.0.10:8080") }},
		{"cli -> srv tcp 8081 (no rule)", false, func() bool { return dial(t, gCli, "", "10.60.0.10:8081") }},
		{"cli2 -> srv tcp 8081 (no rule), on one box", false, func() bool { return dial(t, gCli2, "", "10.60.0.10:8081") }},
		{"cli -> srv tcp 9005 (9000-9009 from 10.60.0.20/32)", true, func() bool { return dial(t, gCli, "", "10.60.0.10:9005") }},
		{"cli2 -> srv tcp 9005 (not from 10.60.0.20)", false, func() bool { return dial(t, gCli2, "", "10.60.0.10:9005") }},
		{"cli -> srv tcp 9010 (past the range)", false, func() bool { return dial(t, gCli, "", "10.60.0.10:9010") }},
		{"other -> srv tcp 8080 (default group: all egress)", true, func() bool { return dial(t, gOther, "", "10.60.0.10:8080") }},
		{"cli -> srv udp 5353 (from remote group client), and the reply", true, func() bool { return askUDP(t, gCli, "10.60.0.10:5353") }},
		{"other -> srv udp 5353 (not in group client)", false, func() bool { return askUDP(t, gOther, "10.60.0.10:5353") }},
		{"cli pings srv (icmp type 8 allowed)", true, func() bool { return ping(t, gCli, "10.60.0.10") }},
		{"srv -> cli tcp 7000 (web has no egress rule)", false, func() bool { return dial(t, gSrv, "", "10.60.0.20:7000") }},
		{"srv -> cli2 tcp 7000 (no egress rule), on one box", false, func() bool { return dial(t, gSrv, "", "10.60.0.21:7000") }},
		{"cli -> cli2 tcp 7000 (client may send tcp; any-in takes it)", true, func() bool { return dial(t, gCli, "", "10.60.0.21:7000") }},
		{"srv pings cli (no egress)", false, func() bool { return ping(t, gSrv, "10.60.0.20") }},
		{"cli -> other tcp 7000 (default: ingress only from members)", false, func() bool { return dial(t, gCli, "", "10.60.0.30:7000") }},
	}
	for _, c := range cases {
		if got := c.try(); got != c.ok {
			t.Errorf("%s: got through %v, want %v", c.what, got, c.ok)
		}
	}

	// IPv6, between the guests' own link-local addresses (this network
	// has no IPv6 subnet).
	echoTCP(t, gSrv, "tcp6", "[::]:8443")
	echoTCP(t, gSrv, "tcp6", "[::]:8444")
	dial6 := func(port string) bool {
		return inNS(t, gCli, func() error {
			c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp6", "["+netfabric.LinkLocal(srv.HardwareAddr()).String()+"%eth0]:"+port)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}
	testutil.WaitFor(t, 10*time.Second, "IPv6 tcp 8443 from fe80::/10 is allowed", func() error {
		if !dial6("8443") {
			return fmt.Errorf("no connection")
		}
		return nil
	})
	if dial6("8444") {
		t.Error("IPv6 tcp 8444 got through with no rule")
	}

	// Conntrack zones: the segment's connections are in its network's zone.
	var zones []uint16
	if err := boxes[0].do(t, func() error {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		for _, fl := range flows {
			if fl.Forward.DstIP.Equal(net.ParseIP("10.60.0.10")) {
				zones = append(zones, fl.Zone)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(zones) == 0 {
		t.Fatal("no tracked connection to srv on box1")
	}
	for _, z := range zones {
		if z != nw.Zone() {
			t.Fatalf("srv's connections are in conntrack zones %v, want %d", zones, nw.Zone())
		}
	}

	// A rule change applies to running guests, open connections included.
	conn := openLine(t, gCli, "10.60.0.10:8080")
	if !conn.roundTrip() {
		t.Fatal("the open connection does not echo")
	}
	var out netfabric.SecurityGroup
	if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSecurityGroupRules, netfabric.AddRulesCmd{Group: webID, Project: f.ward,
		Rules: []netfabric.Rule{{ID: webID + "-x", Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: 8081}}}, &out); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	reconcile()
	t.Logf("rule added and applied on both boxes in %v", time.Since(start))
	if !dial(t, gCli, "", "10.60.0.10:8081") {
		t.Error("tcp 8081 still refused after its rule was added")
	}
	if !conn.roundTrip() {
		t.Error("an allowed open connection stopped when another rule was added")
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgDeleteSecurityGroupRule, netfabric.DeleteRuleCmd{Group: webID, Project: f.ward, Rule: web.Rules[0].ID}, &out); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if dial(t, gCli, "", "10.60.0.10:8080") {
		t.Error("tcp 8080 still open after its rule was deleted")
	}
	if conn.roundTrip() {
		t.Error("an open connection on tcp 8080 still passes after its rule was deleted")
	}

	// Allowed address pairs: srv may send as 10.60.0.100 only once its port says so.
	addAddr(t, gSrv, "eth0", "10.60.0.100/24")
	// (srv may send nothing on its own: let it reach cli with a rule.)
	if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSecurityGroupRules, netfabric.AddRulesCmd{Group: webID, Project: f.ward,
		Rules: []netfabric.Rule{{ID: webID + "-y", Direction: "egress", EtherType: "IPv4", Protocol: "tcp", PortMin: 7000}}}, &out); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if !dial(t, gSrv, "10.60.0.10", "10.60.0.20:7000") {
		t.Fatal("srv cannot reach cli on tcp 7000 after its egress rule was added")
	}
	if dial(t, gSrv, "10.60.0.100", "10.60.0.20:7000") {
		t.Fatal("srv sent as 10.60.0.100 with no address pair")
	}
	for _, bad := range []string{"10.60.0.1", "10.61.0.100", "10.60.0.0/24", "fd00:60::100"} { // the gateway; another subnet; a range; IPv6 on a network without it
		if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: "srv", Project: f.ward,
			AddressPairs: &[]netfabric.AddressPair{{IP: bad}}, PairRules: netfabric.PairRulesV6}, nil); consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Errorf("address pair %s: %v, want invalid", bad, err)
		}
	}
	pairs := []netfabric.AddressPair{{IP: "10.60.0.100"}}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgUpdatePort, netfabric.UpdatePortCmd{Port: "srv", Project: f.ward, AddressPairs: &pairs}, nil); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if !dial(t, gSrv, "10.60.0.100", "10.60.0.20:7000") {
		t.Fatal("srv cannot send as its allowed address pair 10.60.0.100")
	}
}

// line is an open TCP connection that echoes lines.
type line struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func openLine(t *testing.T, ns netns.NsHandle, addr string) *line {
	t.Helper()
	var c net.Conn
	if err := inNS(t, ns, func() (err error) { c, err = net.DialTimeout("tcp4", addr, time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &line{t: t, c: c, r: bufio.NewReader(c)}
}

func (l *line) roundTrip() bool {
	l.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := l.c.Write([]byte("hello\n")); err != nil {
		return false
	}
	s, err := l.r.ReadString('\n')
	return err == nil && s == "hello\n"
}

// Security groups' commands: what they refuse, each change nothing.
func TestSecurityGroupCommands(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.60.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.network(t, netfabric.Network{ID: "lab-net", Project: f.lab, CIDR: "10.60.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	const a = "sg-00000000000000aa"
	f.group(t, a, "a")
	apply := func(mt consensus.MessageType, cmd any) error {
		_, err := f.node.Apply(context.Background(), mt, cmd, nil)
		return err
	}
	rule := func(r netfabric.Rule) netfabric.AddRulesCmd {
		r.ID = a + "-r"
		return netfabric.AddRulesCmd{Group: a, Project: f.ward, Rules: []netfabric.Rule{r}}
	}
	bad := []struct {
		what string
		code string
		mt   consensus.MessageType
		cmd  any
	}{
		{"port range 100-50", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", Protocol: "tcp", PortMin: 100, PortMax: 50})},
		{"port 70000", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", Protocol: "tcp", PortMin: 70000})},
		{"ports on icmp", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", Protocol: "icmp", PortMin: 80})},
		{"icmp for IPv6", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", EtherType: "IPv6", Protocol: "icmp"})},
		{"protocol 300", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", Protocol: "300"})},
		{"direction sideways", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "sideways"})},
		{"IPv6 CIDR on an IPv4 rule", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", RemoteCIDR: "fd00::/8"})},
		{"CIDR with host bits", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", RemoteCIDR: "10.0.0.1/8"})},
		{"CIDR and group", consensus.CodeInvalid, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", RemoteCIDR: "10.0.0.0/8", RemoteGroup: a})},
		{"another project's group as remote", consensus.CodeNotFound, netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", RemoteGroup: netfabric.DefaultGroupID(f.lab)})},
		{"a rule in another project's group", consensus.CodeNotFound, netfabric.MsgAddSecurityGroupRules, netfabric.AddRulesCmd{Group: a, Project: f.lab, Rules: []netfabric.Rule{{ID: a + "-q", Direction: "ingress"}}}},
		{"group named default", consensus.CodeInvalid, netfabric.MsgCreateSecurityGroup, netfabric.SecurityGroup{ID: "sg-00000000000000bb", Name: "default", Project: f.ward}},
		{"group name taken", consensus.CodeAlreadyExists, netfabric.MsgCreateSecurityGroup, netfabric.SecurityGroup{ID: "sg-00000000000000bb", Name: "a", Project: f.ward}},
		{"delete the default group", consensus.CodeConflict, netfabric.MsgDeleteSecurityGroup, netfabric.DeleteSecurityGroupCmd{ID: netfabric.DefaultGroupID(f.ward), Project: f.ward}},
		{"port in another project's group", consensus.CodeNotFound, netfabric.MsgCreatePort, netfabric.PortRequest{ID: "p1", NetworkID: "lab-net", Owner: "x", Project: f.lab, SecurityGroups: []string{a}, CreatedAt: t0}},
	}
	before := netfabric.SecurityGroupsOf(f.node.Store().ReadTxn(), f.ward)
	for _, b := range bad {
		if err := apply(b.mt, b.cmd); consensus.ErrorCode(err) != b.code {
			t.Errorf("%s: got %v, want %s", b.what, err, b.code)
		}
	}
	if after := netfabric.SecurityGroupsOf(f.node.Store().ReadTxn(), f.ward); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("refused commands changed the groups:\n%v\n%v", before, after)
	}
	if netfabric.GetPort(f.node.Store().ReadTxn(), "p1") != nil {
		t.Fatal("a refused port was made")
	}
	// A duplicate rule is refused; a group in use is not deleted.
	if err := apply(netfabric.MsgAddSecurityGroupRules, rule(netfabric.Rule{Direction: "ingress", Protocol: "tcp", PortMin: 22})); err != nil {
		t.Fatal(err)
	}
	dup := rule(netfabric.Rule{Direction: "ingress", Protocol: "TCP", PortMin: 22, PortMax: 22})
	dup.Rules[0].ID = a + "-s"
	if err := apply(netfabric.MsgAddSecurityGroupRules, dup); consensus.ErrorCode(err) != consensus.CodeAlreadyExists {
		t.Fatalf("duplicate rule: %v", err)
	}
	f.port(t, netfabric.PortRequest{ID: "p2", NetworkID: "ward-net", Owner: "y", Project: f.ward, SecurityGroups: []string{a}})
	if err := apply(netfabric.MsgDeleteSecurityGroup, netfabric.DeleteSecurityGroupCmd{ID: a, Project: f.ward}); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("delete a group in use: %v", err)
	}
	// The default group is made when first named, the same on every replica.
	d := netfabric.GetSecurityGroup(f.node.Store().ReadTxn(), netfabric.DefaultGroupID(f.ward))
	if d != nil {
		t.Fatalf("default group made before use: %+v", d)
	}
	f.port(t, netfabric.PortRequest{ID: "p3", NetworkID: "ward-net", Owner: "z", Project: f.ward, SecurityGroups: []string{netfabric.DefaultGroupID(f.ward)}})
	d = netfabric.GetSecurityGroup(f.node.Store().ReadTxn(), netfabric.DefaultGroupID(f.ward))
	if d == nil || d.Name != "default" || len(d.Rules) != 4 {
		t.Fatalf("default group after first use: %+v", d)
	}
}
