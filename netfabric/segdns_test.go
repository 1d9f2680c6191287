package netfabric_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A project network's DNS: a guest is handed its gateway as DNS server,
// and its own box answers there: the project's VMs by name (a single label
// or in the network's domain, a dotted hostname as itself; on any box; the
// asking network first, then the project's other networks), their
// addresses back to names, never another project's VMs (the same CIDR, on
// the same box), NXDOMAIN for the project's unknown names without asking
// anyone. Other names are REFUSED while the network has no way out of the
// project, and come from the box's own resolvers once a router with a
// gateway connects it, cut to what the guest takes in one datagram. Go's
// resolver (a real stub resolver) finds a VM's both addresses. With a
// router on the network, DNS to the gateway still stays on the box.
func TestSegmentDNS(t *testing.T) {
	f := newFabric(t)
	if _, err := f.network(t, netfabric.Network{ID: "default", CIDR: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	nw, err := f.network(t, netfabric.Network{ID: "ward-net", Project: f.ward, CIDR: "10.63.0.0/24", Domain: "ward.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.node.Apply(context.Background(), netfabric.MsgAddSubnet6, netfabric.AddSubnet6Cmd{Network: nw.ID, CIDR: "fd00:63::/64"}, &nw); err != nil {
		t.Fatal(err)
	}
	if _, err := f.network(t, netfabric.Network{ID: "ward-2", Project: f.ward, CIDR: "10.64.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.network(t, netfabric.Network{ID: "lab-net", Project: f.lab, CIDR: "10.63.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	wa := f.port(t, netfabric.PortRequest{ID: "wa", NetworkID: nw.ID, Owner: "wa", Project: f.ward, Node: "box1", Hostname: "pacs"})
	wb := f.port(t, netfabric.PortRequest{ID: "wb", NetworkID: nw.ID, Owner: "wb", Project: f.ward, Node: "box2", Hostname: "ris"})
	w2 := f.port(t, netfabric.PortRequest{ID: "w2", NetworkID: "ward-2", Owner: "w2", Project: f.ward, Node: "box2", Hostname: "archive"})
	lc := f.port(t, netfabric.PortRequest{ID: "lc", NetworkID: "lab-net", Owner: "lc", Project: f.lab, Node: "box1", Hostname: "lims"})
	// A hostname that is a whole name in the network's domain names itself;
	// one outside the domain captures nobody's lookups.
	wv := f.port(t, netfabric.PortRequest{ID: "wv", NetworkID: nw.ID, Owner: "wv", Project: f.ward, Node: "box2", Hostname: "viewer.ward.example.org"})
	f.port(t, netfabric.PortRequest{ID: "wx", NetworkID: nw.ID, Owner: "wx", Project: f.ward, Node: "box2", Hostname: "login.example.com"})
	// Another project's VM named like one of the ward's: never the ward's answer.
	f.port(t, netfabric.PortRequest{ID: "lx", NetworkID: "lab-net", Owner: "lx", Project: f.lab, Node: "box1", Hostname: "ris", IP: "10.63.0.9"})

	// box1's resolver, on its loopback; box2 has none.
	resolvConf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	boxes := newBoxes(t, f, func(i int, cfg *netfabric.HostConfig) {
		if i == 0 {
			cfg.ResolvConf = []string{resolvConf}
		}
	})
	upstream := serveUpstreamDNS(t, boxes[0].ns)
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
	}
	wb = *netfabric.GetPort(f.node.Store().ReadTxn(), "wb")
	ga := plugSegmentLink(t, f, boxes[0], wa)
	gb := plugSegmentGuest(t, f, boxes[1], wb)
	gl := plugSegmentGuest(t, f, boxes[0], lc)

	// The lease names the gateway as the DNS server: the network has none.
	lease, err := dhcpLease(t, ga, "eth0", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(lease.ACK.DNS()) != "[10.63.0.1]" {
		t.Fatalf("DNS servers in the lease: %v, want the gateway", lease.ACK.DNS())
	}
	addAddr(t, ga, "eth0", wa.IP+"/24")

	for _, c := range []struct {
		g     netns.NsHandle
		name  string
		qtype uint16
		want  string
	}{
		{ga, "pacs.", dns.TypeA, "NOERROR " + wa.IP},
		{ga, "RIS.ward.example.org.", dns.TypeA, "NOERROR " + wb.IP}, // on box2
		{ga, "viewer.ward.example.org.", dns.TypeA, "NOERROR " + wv.IP},
		{ga, "login.example.com.", dns.TypeA, "REFUSED"}, // not the VM's: the resolvers' (none here)
		{ga, "ris.", dns.TypeAAAA, "NOERROR " + wb.IP6},
		{ga, "ris.", dns.TypeMX, "NOERROR"},             // a name with no such records
		{ga, "archive.", dns.TypeA, "NOERROR " + w2.IP}, // the project's other network
		{ga, "lims.", dns.TypeA, "NXDOMAIN"},            // another project's, on this box
		{ga, "nosuch.ward.example.org.", dns.TypeA, "NXDOMAIN"},
		{ga, "a.b.ward.example.org.", dns.TypeA, "NXDOMAIN"},
		{ga, reverse(wb.IP), dns.TypePTR, "NOERROR ris.ward.example.org."},
		{ga, reverse(wb.IP6), dns.TypePTR, "NOERROR ris.ward.example.org."},
		{ga, reverse(wv.IP), dns.TypePTR, "NOERROR viewer.ward.example.org."},
		{ga, reverse("10.63.0.99"), dns.TypePTR, "NXDOMAIN"},
		{gb, "pacs.", dns.TypeA, "NOERROR " + wa.IP}, // box2 answers its own guest
		{gl, "ris.", dns.TypeA, "NOERROR 10.63.0.9"}, // the lab's own "ris"
		{gl, "pacs.", dns.TypeA, "NXDOMAIN"},
		// The network has no way out of the project: nor has its DNS.
		{ga, "outside.example.org.", dns.TypeA, "REFUSED"},
		{ga, "ris.", dns.TypeA, "NOERROR " + wb.IP}, // asked over EDNS below too
	} {
		if got := lookup(t, c.g, "10.63.0.1", c.name, c.qtype, false); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
	if r := exchange(t, ga, "10.63.0.1", "ris.", dns.TypeA, true); r == nil || r.IsEdns0() == nil || len(r.Answer) != 1 {
		t.Errorf("an EDNS question's answer: %v", r)
	}
	if got := upstream(); len(got) != 0 {
		t.Errorf("the resolver was asked %v from a network with no way out", got)
	}
	// DNS over TCP to the gateway is refused at once, not left to time out.
	tcpRefused(t, ga, "10.63.0.1")
	tcpRefused(t, gl, "10.63.0.1")

	// A router with a gateway gives the network a way out: now the box
	// forwards what the project has not got to its resolvers.
	if _, err := f.network(t, netfabric.Network{ID: "public", External: true, Interface: "ext0", CIDR: "203.0.113.0/24",
		Gateway: "203.0.113.1", Pools: []netfabric.Pool{{Start: "203.0.113.10", End: "203.0.113.50"}}}); err != nil {
		t.Fatal(err)
	}
	var r netfabric.Router
	f.must(t, netfabric.MsgCreateRouter, netfabric.Router{ID: "r1", Name: "edge", Project: f.ward, CreatedAt: t0}, &r)
	f.must(t, netfabric.MsgRouterInterface, netfabric.RouterInterfaceCmd{Router: "r1", Network: nw.ID}, &r)
	f.must(t, netfabric.MsgSetRouterGateway, netfabric.RouterGatewayCmd{Router: "r1", Network: "public"}, &r)
	for _, b := range boxes {
		b.reconcileSegments(t, f, boxes)
		b.reconcileRouters(t, f)
	}
	for _, c := range []struct {
		g     netns.NsHandle
		name  string
		qtype uint16
		want  string
	}{
		{ga, "outside.example.org.", dns.TypeA, "NOERROR 192.0.2.7"}, // box1's resolver
		{gb, "outside.example.org.", dns.TypeA, "SERVFAIL"},          // box2 has none
		{gl, "outside.example.org.", dns.TypeA, "REFUSED"},           // the lab's network has no way out
		{ga, "nosuch.example.org.", dns.TypeA, "NXDOMAIN"},           // the resolver's answer
		// DNS to the gateway stays with the box: the router takes the
		// gateway's other traffic.
		{ga, "ris.", dns.TypeA, "NOERROR " + wb.IP},
	} {
		testutil.WaitFor(t, 10*time.Second, c.name+" with a way out", func() error {
			if got := lookup(t, c.g, "10.63.0.1", c.name, c.qtype, false); got != c.want {
				return fmt.Errorf("%s %s: %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
			}
			return nil
		})
	}
	tcpRefused(t, ga, "10.63.0.1") // the router takes the gateway's other TCP

	// A question with EDNS options of the guest's (a cookie) is asked as
	// the box's own question: the guest's id and options stay with it.
	q := new(dns.Msg)
	q.SetQuestion("outside.example.org.", dns.TypeA)
	q.SetEdns0(4096, false)
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
	var a *dns.Msg
	if err := inNS(t, ga, func() (err error) {
		a, _, err = (&dns.Client{Timeout: 3 * time.Second}).Exchange(q, "10.63.0.1:53")
		return err
	}); err != nil || a.Id != q.Id || len(a.Answer) != 1 {
		t.Fatalf("a forwarded question with a cookie: %v %v", a, err)
	}
	// Only the forwarded questions reached the resolver, none with the
	// guest's id or options.
	if got := upstream(); fmt.Sprint(got) != "[nosuch.example.org. outside.example.org.]" {
		t.Errorf("the resolver was asked %v, want outside.example.org. and nosuch.example.org. as the box's own questions", got)
	}

	// An answer too big for a plain datagram comes cut, with TC set; with
	// EDNS it comes whole up to the segment's MTU.
	wire := func(r *dns.Msg) int {
		if r == nil {
			return -1
		}
		r.Compress = true // as it came
		return r.Len()
	}
	if r := exchange(t, ga, "10.63.0.1", "big.example.org.", dns.TypeTXT, false); r == nil || !r.Truncated || wire(r) > 512 || len(r.Answer) < 5 {
		t.Errorf("a big answer without EDNS: %d bytes, %v", wire(r), r)
	}
	if r := exchange(t, ga, "10.63.0.1", "big.example.org.", dns.TypeTXT, true); r == nil || !r.Truncated || wire(r) > 1450-28 || len(r.Answer) < 15 {
		t.Errorf("a big answer with EDNS: %d bytes, %v", wire(r), r)
	}

	// Go's stub resolver, pointed at the gateway, finds both addresses.
	var addrs []string
	if err := inNS(t, ga, func() (err error) {
		// Its queries' goroutines run on any thread: their sockets are
		// opened in the guest's namespace.
		res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (c net.Conn, err error) {
			err = inNS(t, ga, func() (err error) { c, err = (&net.Dialer{}).DialContext(ctx, "udp", "10.63.0.1:53"); return err })
			return c, err
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err = res.LookupHost(ctx, "ris.ward.example.org.")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(addrs)
	if want := []string{wb.IP, wb.IP6}; fmt.Sprint(addrs) != fmt.Sprint(want) {
		t.Fatalf("Go's resolver found %v, want %v", addrs, want)
	}

	// The resolver a Debian guest has, glibc's, with the lease's DNS
	// server and domain in its resolv.conf: "ris" by its short name
	// through the search domain, both addresses.
	resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver 10.63.0.1\nsearch ward.example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := inGuest(t, ga, "unshare", "--mount", "sh", "-c", "mount --bind "+resolvConf+" /etc/resolv.conf && getent ahosts ris")
	for _, want := range []string{wb.IP, wb.IP6, "ris.ward.example.org"} {
		if !strings.Contains(out, want) {
			t.Fatalf("glibc's getent ahosts ris: no %s in\n%s", want, out)
		}
	}
	// And busybox's nslookup, another client's code.
	if out := inGuest(t, ga, "busybox", "nslookup", "pacs.ward.example.org", "10.63.0.1"); !strings.Contains(out, wa.IP) {
		t.Fatalf("busybox nslookup pacs: no %s in\n%s", wa.IP, out)
	}
}

// tcpRefused checks that a TCP connection from the guest to the DNS port
// of server is refused (a reset) at once.
func tcpRefused(t *testing.T, g netns.NsHandle, server string) {
	t.Helper()
	start := time.Now()
	err := inNS(t, g, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(server, "53"), 3*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Errorf("DNS over TCP to %s: %v after %v, want refused at once", server, err, time.Since(start).Round(time.Millisecond))
	}
}

// inGuest runs a command in the guest's network namespace and returns
// its output.
func inGuest(t *testing.T, g netns.NsHandle, argv ...string) string {
	t.Helper()
	args := append([]string{fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), int(g)), "--"}, argv...)
	out, err := exec.Command("nsenter", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out)
	}
	return string(out)
}

// reverse returns the reverse-lookup name of an address.
func reverse(ip string) string {
	name, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return name
}

// exchange asks server (port 53) from ns, with an EDNS buffer of 4096
// bytes if edns; nil if no answer came.
func exchange(t *testing.T, ns netns.NsHandle, server, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	if edns {
		q.SetEdns0(4096, false)
	}
	var r *dns.Msg
	_ = inNS(t, ns, func() (err error) {
		r, _, err = (&dns.Client{Timeout: 3 * time.Second, UDPSize: 4096}).Exchange(q, server+":53")
		return err
	})
	return r
}

// lookup returns the answer's code and records' data, "" if none came.
func lookup(t *testing.T, ns netns.NsHandle, server, name string, qtype uint16, edns bool) string {
	t.Helper()
	r := exchange(t, ns, server, name, qtype, edns)
	if r == nil {
		return ""
	}
	out := []string{dns.RcodeToString[r.Rcode]}
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		case *dns.PTR:
			out = append(out, rr.Ptr)
		default:
			out = append(out, rr.String())
		}
	}
	return strings.Join(out, " ")
}

// serveUpstreamDNS runs a resolver on 127.0.0.1:53 in ns: outside.example.org
// is 192.0.2.7, big.example.org has forty TXT records, the rest is
// NXDOMAIN. It returns the names it was asked (but big.example.org), each
// once, marked if a question came with EDNS options.
func serveUpstreamDNS(t *testing.T, ns netns.NsHandle) func() []string {
	t.Helper()
	asked := make(chan string, 64)
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		name := strings.ToLower(q.Question[0].Name)
		if opt := q.IsEdns0(); opt != nil && len(opt.Option) > 0 {
			name += " with the guest's options"
		}
		if name != "big.example.org." {
			select {
			case asked <- name:
			default:
			}
		}
		switch name {
		case "outside.example.org.":
			rr, _ := dns.NewRR("outside.example.org. 60 IN A 192.0.2.7")
			r.Answer = append(r.Answer, rr)
		case "big.example.org.":
			for i := range 40 {
				rr, _ := dns.NewRR(fmt.Sprintf("big.example.org. 60 IN TXT \"record %02d %s\"", i, strings.Repeat("x", 40)))
				r.Answer = append(r.Answer, rr)
			}
		default:
			r.Rcode = dns.RcodeNameError
		}
		if w.LocalAddr().Network() == "udp" {
			size := dns.MinMsgSize
			if opt := q.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			r.Truncate(size)
		}
		_ = w.WriteMsg(r)
	})
	var pc net.PacketConn
	var ln net.Listener
	if err := inNS(t, ns, func() (err error) {
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "127.0.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: mux}
	tcp := &dns.Server{Listener: ln, Handler: mux}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() { _ = udp.Shutdown(); _ = tcp.Shutdown() })
	seen := map[string]bool{}
	return func() []string { // every name asked so far, once, sorted
		for {
			select {
			case n := <-asked:
				seen[n] = true
			default:
				out := slices.Sorted(maps.Keys(seen))
				return out
			}
		}
	}
}
