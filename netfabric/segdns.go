package netfabric

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/mdlayher/packet"
	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// DNS on a project network, as Neutron's dnsmasq gives it: every node
// answers its own ports' queries to the network's gateway address (UDP
// port 53), on the segment's bridge beside DHCP, through a packet socket
// (the host has no address there). A network with no DNS servers of its
// own hands guests the gateway as their DNS server (DHCP option 6).
//
//   - The project's VMs by name: a single label ("pacs"), or a name in the
//     network's domain ("pacs.ward.example.org"), is a port's hostname in
//     the project (one that is a whole name in the domain also as itself;
//     never a name outside the domain), A and AAAA from the
//     state; the asking network's ports first, then the project's other
//     networks'. PTR for those addresses.
//   - Such names nobody has are NXDOMAIN here and never leave the box: in
//     the network's domain all of them, a single label for A and AAAA (as
//     dnsmasq's domain-needed; "com" DS still goes out), and reverse names
//     in the network's own subnets.
//   - Everything else goes to the box's own resolvers (HostConfig.ResolvConf;
//     a loopback resolver is fine, the forwarder runs on the host) only if
//     the network has a way out (a router with a gateway; Segment.Egress):
//     a network that reaches nothing outside the project gets no tunnel
//     out through DNS either, and is REFUSED. The forwarder asks with a
//     query of its own (the guest's question, nothing else of its
//     message), and the answer goes back cut to what the guest can take in
//     one datagram (its EDNS size or 512, at most the segment's MTU), TC
//     set if it did not fit. There is no DNS over TCP on the gateway: a
//     guest's connection to it is refused at once (a TCP reset to its
//     SYN), so its resolver moves on instead of waiting.
//   - At most dnsInFlight queries per segment are worked on at once, and
//     dnsPerPort of them one port's; more are dropped.
//
// A guest's other names (another project's VMs) never resolve: only the
// asking network's project is searched.

const (
	dnsPort     = 53
	dnsTTL      = 30 // seconds: a VM recreated elsewhere is found again soon
	dnsInFlight = 64 // queries a segment's server works on at once; more are dropped (the guest asks again)
	dnsPerPort  = 8  // of them, one port's at most
	dnsUpstream = 2 * time.Second
	// dnsUpstreamSize is the EDNS buffer the forwarder offers its
	// resolvers (the DNS flag day's size).
	dnsUpstreamSize = 1232
)

// dnsFilter passes unfragmented IPv4 UDP to port 53 of the gateway, and
// TCP SYNs to it (refused: see refuseTCP).
func dnsFilter(gw netip.Addr) ([]bpf.RawInstruction, error) {
	g := gw.As4()
	// Skips count to the instruction after the jump: 13 is accept, 14 drop.
	return bpf.Assemble([]bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 16, Size: 4}, // destination address
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(g[:]), SkipTrue: 12},
		/* 2 */ bpf.LoadAbsolute{Off: 6, Size: 2}, // flags and fragment offset
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 10}, // a fragment
		/* 4 */ bpf.LoadMemShift{Off: 0}, // X = the IPv4 header's length
		/* 5 */ bpf.LoadIndirect{Off: 2, Size: 2}, // UDP's or TCP's destination port
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dnsPort, SkipTrue: 7},
		/* 7 */ bpf.LoadAbsolute{Off: 9, Size: 1}, // IPv4 protocol
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipTrue: 4},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_TCP, SkipTrue: 4},
		/* 10 */ bpf.LoadIndirect{Off: 13, Size: 1}, // TCP flags
		/* 11 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: tcpFIN | tcpSYN | tcpRST | tcpACK},
		/* 12 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: tcpSYN, SkipTrue: 1}, // a SYN (ECN bits or not), no ACK
		/* 13 */ bpf.RetConstant{Val: 1 << 16},
		/* 14 */ bpf.RetConstant{Val: 0},
	})
}

// TCP header flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// listenDNS opens the DNS server's socket on the bridge.
func listenDNS(br *net.Interface, gw netip.Addr) (*packet.Conn, error) {
	f, err := dnsFilter(gw)
	if err != nil {
		return nil, fmt.Errorf("DNS filter: %w", err)
	}
	c, err := packet.Listen(br, packet.Datagram, unix.ETH_P_IP, &packet.Config{Filter: f})
	if err != nil {
		return nil, fmt.Errorf("DNS on %s: %w", br.Name, err)
	}
	return c, nil
}

// dnsFrame answers a DNS query to the gateway from one of this node's
// ports, and refuses its TCP.
func (h *Host) dnsFrame(s *segServer, b []byte, src *packet.Addr, log *slog.Logger) {
	if len(b) < 20 {
		return
	}
	p, ok := h.localPort(s.nw, src.HardwareAddr)
	if !ok || p.Addr() != netip.AddrFrom4([4]byte(b[12:16])) {
		return // another node's port, or not from the port's address
	}
	if b[9] == unix.IPPROTO_TCP {
		if sport, ack, ok := synTo(b, dnsPort); ok {
			frame := tcp4(s.nw.GatewayAddr(), p.Addr(), dnsPort, sport, 0, ack, tcpRST|tcpACK)
			if _, err := s.dns.WriteTo(frame, &packet.Addr{HardwareAddr: p.HardwareAddr()}); err != nil && !s.closed.Load() {
				log.Warn("DNS: refuse TCP", "port", p.ID, "err", err)
			}
		}
		return
	}
	payload, ok := udpPayloadTo(b, dnsPort)
	if !ok {
		return
	}
	sport := int(binary.BigEndian.Uint16(b[int(b[0]&0x0f)*4:]))
	q := new(dns.Msg)
	if err := q.Unpack(payload); err != nil || q.Response {
		return
	}
	if !s.dnsTake(p.ID) {
		return // busy: the guest's resolver asks again
	}
	s.wg.Go(func() {
		defer s.dnsDone(p.ID)
		r := h.answerDNS(s, q, log)
		r.Truncate(guestDNSSize(q, s.nw.MTU))
		out, err := r.Pack()
		if err != nil {
			log.Warn("DNS: pack answer", "name", q.Question, "err", err)
			return
		}
		frame := udp4(s.nw.GatewayAddr(), p.Addr(), dnsPort, sport, out)
		if _, err := s.dns.WriteTo(frame, &packet.Addr{HardwareAddr: p.HardwareAddr()}); err != nil && !s.closed.Load() {
			log.Warn("DNS: send answer", "port", p.ID, "err", err)
		}
	})
}

// dnsTake claims one of the segment's query slots for a port, at most
// dnsPerPort of them: one guest cannot take all.
func (s *segServer) dnsTake(port string) bool {
	s.dnsMu.Lock()
	defer s.dnsMu.Unlock()
	if s.dnsBusy == nil {
		s.dnsBusy = map[string]int{}
	}
	if s.dnsTotal >= dnsInFlight || s.dnsBusy[port] >= dnsPerPort {
		return false
	}
	s.dnsBusy[port]++
	s.dnsTotal++
	return true
}

func (s *segServer) dnsDone(port string) {
	s.dnsMu.Lock()
	defer s.dnsMu.Unlock()
	if s.dnsBusy[port]--; s.dnsBusy[port] <= 0 {
		delete(s.dnsBusy, port)
	}
	s.dnsTotal--
}

// answerDNS answers q: from the state for the project's names, else from
// the box's resolvers if the network has a way out, else REFUSED. The
// answer carries EDNS if the question did.
func (h *Host) answerDNS(s *segServer, q *dns.Msg, log *slog.Logger) *dns.Msg {
	r := new(dns.Msg)
	switch {
	case q.Opcode != dns.OpcodeQuery:
		r.SetRcode(q, dns.RcodeNotImplemented)
	case len(q.Question) != 1:
		r.SetRcode(q, dns.RcodeFormatError)
	default:
		if local := h.localDNS(s.nw, q); local != nil {
			r = local
		} else if s.forward && q.Question[0].Qclass == dns.ClassINET {
			r = h.forwardDNS(s, q, log)
		} else {
			// A network with no way out of the project (no router with
			// a gateway) gets none through DNS either.
			r.SetRcode(q, dns.RcodeRefused)
		}
	}
	if opt := q.IsEdns0(); opt != nil && r.IsEdns0() == nil {
		r.SetEdns0(uint16(guestDNSSize(q, s.nw.MTU)), opt.Do())
	}
	return r
}

// forwardDNS asks the box's resolvers (as resolv.conf names them now) in
// turn: a query of its own with the guest's question alone (its own id,
// recursion desired, EDNS with the guest's DNSSEC bit, none of the
// guest's other flags or options), over TCP when the answer did not fit.
func (h *Host) forwardDNS(s *segServer, q *dns.Msg, log *slog.Logger) *dns.Msg {
	r := new(dns.Msg)
	ups := upstreams(h.cfg.ResolvConf)
	if len(ups) == 0 {
		return r.SetRcode(q, dns.RcodeServerFailure)
	}
	fq := new(dns.Msg)
	fq.SetQuestion(q.Question[0].Name, q.Question[0].Qtype)
	fq.CheckingDisabled = q.CheckingDisabled
	do := false
	if opt := q.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	fq.SetEdns0(dnsUpstreamSize, do)
	var err error
	for _, up := range ups {
		var a *dns.Msg
		if a, err = s.exchange("udp", up, fq); err == nil && a.Truncated {
			if full, terr := s.exchange("tcp", up, fq); terr == nil {
				a = full
			}
		}
		if err == nil {
			a.Id, a.Question = q.Id, q.Question
			a.Extra = slices.DeleteFunc(a.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
			return a
		}
	}
	log.Debug("DNS: no resolver answered", "name", q.Question[0].Name, "err", err)
	return r.SetRcode(q, dns.RcodeServerFailure)
}

// exchange sends q to addr over network from the namespace the server
// was started in, and gives up when the server stops.
func (s *segServer) exchange(network, addr string, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(s.ctx, dnsUpstream)
	defer cancel()
	conn, err := s.dialer.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := &dns.Conn{Conn: conn, UDPSize: dns.MaxMsgSize}
	defer c.Close()
	// The server stopping ends the wait (the client only takes the
	// context's deadline).
	defer context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })()
	a, _, err := (&dns.Client{Net: network, UDPSize: dns.MaxMsgSize}).ExchangeWithConnContext(ctx, q, c)
	return a, err
}

// guestDNSSize is the largest answer the guest takes in one datagram on
// the segment: its EDNS buffer size or 512, and no more than the MTU.
func guestDNSSize(q *dns.Msg, mtu int) int {
	size := dns.MinMsgSize
	if opt := q.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
		size = int(opt.UDPSize())
	}
	if mtu == 0 {
		mtu = 1500
	}
	return min(size, mtu-28)
}

// localDNS answers q from the state if the name is the project's to
// answer, else returns nil.
func (h *Host) localDNS(nw Network, q *dns.Msg) *dns.Msg {
	qq := q.Question[0]
	name := strings.ToLower(dns.Fqdn(qq.Name))
	if qq.Qclass != dns.ClassINET {
		return nil
	}
	if qq.Qtype == dns.TypePTR {
		return h.reverseDNS(nw, q, name)
	}
	full := strings.TrimSuffix(name, ".")
	host, inDomain := full, false
	if d := strings.ToLower(nw.Domain); d != "" {
		host, inDomain = strings.CutSuffix(full, "."+d)
	}
	if full == "" {
		return nil // the root
	}
	// A port's hostname, in the network's domain (a hostname that is a
	// whole name in the domain, "pacs.ward.example.org", too) or as a
	// single label. Never a name outside the domain: a VM named
	// "login.example.com" does not capture its project's lookups of it.
	ports := h.projectPorts(nw, func(p Port) bool {
		switch {
		case p.Hostname == "":
			return false
		case inDomain:
			return strings.EqualFold(p.Hostname, host) || strings.EqualFold(p.Hostname, full)
		default:
			return !strings.Contains(full, ".") && strings.EqualFold(p.Hostname, full)
		}
	})
	if len(ports) == 0 {
		switch {
		case inDomain:
			return answer(q, dns.RcodeNameError) // the network's domain is the nodes'
		case !strings.Contains(full, ".") && (qq.Qtype == dns.TypeA || qq.Qtype == dns.TypeAAAA):
			return answer(q, dns.RcodeNameError) // a plain name never leaves the box
		}
		return nil // a name elsewhere, or a top-level name's other records ("com" DS): the resolvers'
	}
	r := answer(q, dns.RcodeSuccess)
	hdr := dns.RR_Header{Name: qq.Name, Class: dns.ClassINET, Ttl: dnsTTL}
	for _, p := range ports {
		switch qq.Qtype {
		case dns.TypeA:
			if a := p.Addr(); a.Is4() {
				hdr.Rrtype = dns.TypeA
				r.Answer = append(r.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			}
		case dns.TypeAAAA:
			if a, ok := p.Addr6(); ok {
				hdr.Rrtype = dns.TypeAAAA
				r.Answer = append(r.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	}
	return r // no records of the type: an empty answer (NODATA)
}

// reverseDNS answers a PTR query for a project port's address, and
// NXDOMAIN for the rest of the network's own subnets; other reverse
// names are the resolvers'.
func (h *Host) reverseDNS(nw Network, q *dns.Msg, name string) *dns.Msg {
	addr, ok := reverseAddr(name)
	if !ok {
		return nil
	}
	ports := h.projectPorts(nw, func(p Port) bool {
		a6, _ := p.Addr6()
		return p.Hostname != "" && (p.Addr() == addr || a6 == addr)
	})
	if len(ports) == 0 {
		p6, _ := nw.Prefix6()
		if nw.Prefix().Contains(addr) || (p6.IsValid() && p6.Contains(addr)) {
			return answer(q, dns.RcodeNameError)
		}
		return nil
	}
	// The hostname in the asking network's domain, unless it is a whole
	// name there already.
	hn, d := strings.ToLower(ports[0].Hostname), strings.ToLower(nw.Domain)
	target := hn + "."
	if d != "" && !strings.HasSuffix(hn, "."+d) {
		target = hn + "." + d + "."
	}
	r := answer(q, dns.RcodeSuccess)
	r.Answer = append(r.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: dnsTTL}, Ptr: target})
	return r
}

// reverseAddr parses an in-addr.arpa or ip6.arpa name of one address.
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(l[3] + "." + l[2] + "." + l[1] + "." + l[0])
		return a, err == nil
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 32 {
			return netip.Addr{}, false
		}
		var b strings.Builder
		for i := 31; i >= 0; i-- {
			if len(l[i]) != 1 {
				return netip.Addr{}, false
			}
			b.WriteString(l[i])
			if i%4 == 0 && i > 0 {
				b.WriteByte(':')
			}
		}
		a, err := netip.ParseAddr(b.String())
		return a, err == nil && a.Is6()
	}
	return netip.Addr{}, false
}

// projectPorts returns the ports of nw's project that match: those on nw
// if any do, else those on the project's other networks.
func (h *Host) projectPorts(nw Network, match func(Port) bool) []Port {
	var here, there []Port
	for _, p := range h.leases.Ports() {
		if p.Project != nw.Project || !match(p) {
			continue
		}
		if p.NetworkID == nw.ID {
			here = append(here, p)
		} else {
			there = append(there, p)
		}
	}
	if len(here) > 0 {
		return here
	}
	return there
}

// answer starts an authoritative answer to q with rcode.
func answer(q *dns.Msg, rcode int) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(q, rcode)
	r.Authoritative = true
	r.RecursionAvailable = true
	return r
}

// upstreams returns the resolvers named in the first of paths that names
// any, as host:port, loopback ones included: the forwarder asks them from
// the host.
func upstreams(paths []string) []string {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var out []string
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "nameserver" {
				continue
			}
			if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsUnspecified() {
				out = append(out, netip.AddrPortFrom(a, dnsPort).String())
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// nsDialer opens the DNS forwarder's sockets in the network namespace the
// Host's state is built in (the host's; a test's box): the queries'
// goroutines may run on any thread. UDP sockets come from one thread that
// stays in that namespace; a TCP connection (a truncated answer asked
// again) from a thread of its own, so a slow connect holds up no other
// query.
type nsDialer struct {
	ns  netns.NsHandle
	req chan dialReq
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	res           chan dialRes
}

type dialRes struct {
	conn net.Conn
	err  error
}

// nsDialer returns the Host's dialer, started in the calling thread's
// namespace on first use; h.mu must be held.
func (h *Host) nsDialer() (*nsDialer, error) {
	if h.dialer != nil {
		return h.dialer, nil
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("DNS forwarder: this namespace: %w", err)
	}
	d := &nsDialer{ns: ns, req: make(chan dialReq)}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		if err := netns.Set(ns); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for r := range d.req {
			c, err := (&net.Dialer{}).DialContext(r.ctx, r.network, r.addr)
			r.res <- dialRes{c, err}
		}
	}()
	if err := <-ready; err != nil {
		ns.Close()
		return nil, fmt.Errorf("DNS forwarder: enter namespace: %w", err)
	}
	h.dialer = d
	return d, nil
}

// closeDialer stops the Host's dialer once no segment server uses it;
// h.mu must be held.
func (h *Host) closeDialer() {
	if h.dialer != nil {
		close(h.dialer.req)
		h.dialer.ns.Close()
		h.dialer = nil
	}
}

func (d *nsDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "udp" {
		var c net.Conn
		err := inNamespace(d.ns, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	res := make(chan dialRes, 1)
	d.req <- dialReq{ctx, network, addr, res}
	r := <-res
	return r.conn, r.err
}
