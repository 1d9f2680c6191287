package netfabric

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
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
//     the project, A and AAAA from the state; the asking network's ports
//     first, then the project's other networks'. PTR for those addresses.
//   - Such names nobody has are NXDOMAIN here and never leave the box: in
//     the network's domain all of them, a single label for A and AAAA (as
//     dnsmasq's domain-needed; "com" DS still goes out), and reverse names
//     in the network's own subnets.
//   - Everything else goes to the box's own resolvers (HostConfig.ResolvConf;
//     a loopback resolver is fine, the forwarder runs on the host), and the
//     answer back, cut to what the guest can take in one datagram (its
//     EDNS size or 512, at most the segment's MTU) with TC set if it did
//     not fit. There is no DNS over TCP on the gateway.
//
// A guest's other names (another project's VMs) never resolve: only the
// asking network's project is searched.

const (
	dnsPort     = 53
	dnsTTL      = 30 // seconds: a VM recreated elsewhere is found again soon
	dnsInFlight = 64 // queries a segment's forwarder works on at once; more are dropped (the guest asks again)
	dnsUpstream = 2 * time.Second
)

// dnsFilter passes unfragmented IPv4 UDP to port 53 of the gateway.
func dnsFilter(gw netip.Addr) ([]bpf.RawInstruction, error) {
	g := gw.As4()
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1}, // IPv4 protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 8},
		bpf.LoadAbsolute{Off: 16, Size: 4}, // destination address
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(g[:]), SkipTrue: 6},
		bpf.LoadAbsolute{Off: 6, Size: 2},                           // flags and fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 4}, // a fragment
		bpf.LoadMemShift{Off: 0},                                    // X = the IPv4 header's length
		bpf.LoadIndirect{Off: 2, Size: 2},                           // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dnsPort, SkipTrue: 1},
		bpf.RetConstant{Val: 1 << 16},
		bpf.RetConstant{Val: 0},
	})
}

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

// serveDNS answers this node's ports' DNS queries to the gateway.
func (h *Host) serveDNS(s *segServer, log *slog.Logger) {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := s.dns.ReadFrom(buf)
		if s.closed.Load() {
			return
		}
		if err != nil {
			log.Warn("DNS: read", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		b := buf[:n]
		payload, ok := udpPayloadTo(b, dnsPort)
		src, _ := from.(*packet.Addr)
		if !ok || src == nil {
			continue
		}
		p, ok := h.localPort(s.nw, src.HardwareAddr)
		if !ok || p.Addr() != netip.AddrFrom4([4]byte(b[12:16])) {
			continue // another node's port, or not from the port's address
		}
		sport := int(binary.BigEndian.Uint16(b[int(b[0]&0x0f)*4:]))
		q := new(dns.Msg)
		if err := q.Unpack(payload); err != nil || q.Response {
			continue
		}
		select {
		case s.dnsSlots <- struct{}{}:
		default:
			continue // busy: the guest's resolver asks again
		}
		s.wg.Go(func() {
			defer func() { <-s.dnsSlots }()
			r := h.answerDNS(s, p, q, log)
			if r == nil {
				return
			}
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
}

// answerDNS answers q from port p: from the state for the project's
// names, else from the box's resolvers.
func (h *Host) answerDNS(s *segServer, p Port, q *dns.Msg, log *slog.Logger) *dns.Msg {
	r := new(dns.Msg)
	if q.Opcode != dns.OpcodeQuery {
		return r.SetRcode(q, dns.RcodeNotImplemented)
	}
	if len(q.Question) != 1 {
		return r.SetRcode(q, dns.RcodeFormatError)
	}
	if local := h.localDNS(s.nw, q); local != nil {
		return local
	}
	// The guest's message as it sent it (its id, flags, EDNS), to each of
	// the box's resolvers in turn (as resolv.conf names them now); over TCP
	// when the answer did not fit.
	ups := upstreams(h.cfg.ResolvConf)
	if len(ups) == 0 {
		return r.SetRcode(q, dns.RcodeServerFailure)
	}
	var err error
	for _, up := range ups {
		var a *dns.Msg
		a, err = s.dialer.exchange("udp", up, q)
		if err == nil && a.Truncated {
			a, err = s.dialer.exchange("tcp", up, q)
		}
		if err == nil {
			a.Id = q.Id
			a.Truncate(guestDNSSize(q, s.nw.MTU))
			return a
		}
	}
	log.Debug("DNS: no resolver answered", "name", q.Question[0].Name, "err", err)
	return r.SetRcode(q, dns.RcodeServerFailure)
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
	host := strings.TrimSuffix(name, ".")
	inDomain := false
	if d := strings.ToLower(nw.Domain); d != "" {
		host, inDomain = strings.CutSuffix(host, "."+d)
	}
	switch {
	case host == "":
		return nil // the root
	case strings.Contains(host, ".") && !inDomain:
		return nil // a name elsewhere: the resolvers'
	case strings.Contains(host, "."):
		return answer(q, dns.RcodeNameError) // no VM has a dotted name
	}
	ports := h.projectPorts(nw, func(p Port) bool { return strings.EqualFold(p.Hostname, host) })
	if len(ports) == 0 {
		if !inDomain && qq.Qtype != dns.TypeA && qq.Qtype != dns.TypeAAAA {
			return nil // a top-level name's other records ("com" DS): the resolvers'
		}
		return answer(q, dns.RcodeNameError)
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
	target := strings.ToLower(ports[0].Hostname) + "."
	if nw.Domain != "" {
		target = strings.ToLower(ports[0].Hostname) + "." + strings.ToLower(nw.Domain) + "."
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

// nsDialer opens the forwarder's sockets in the network namespace its
// server was started in (the host's; a test's box), from one thread that
// stays there: the queries' own goroutines may run on any thread.
type nsDialer struct {
	req chan dialReq
}

type dialReq struct {
	network, addr string
	res           chan dialRes
}

type dialRes struct {
	conn net.Conn
	err  error
}

// newNSDialer returns a dialer for the calling thread's namespace.
func newNSDialer() (*nsDialer, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("DNS forwarder: this namespace: %w", err)
	}
	d := &nsDialer{req: make(chan dialReq)}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		err := netns.Set(ns)
		ns.Close()
		ready <- err
		if err != nil {
			return
		}
		for r := range d.req {
			c, err := net.DialTimeout(r.network, r.addr, dnsUpstream)
			r.res <- dialRes{c, err}
		}
	}()
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("DNS forwarder: enter namespace: %w", err)
	}
	return d, nil
}

func (d *nsDialer) close() { close(d.req) }

// exchange sends q to addr over network and returns the answer.
func (d *nsDialer) exchange(network, addr string, q *dns.Msg) (*dns.Msg, error) {
	res := make(chan dialRes, 1)
	d.req <- dialReq{network, addr, res}
	r := <-res
	if r.err != nil {
		return nil, r.err
	}
	c := &dns.Conn{Conn: r.conn, UDPSize: dns.MaxMsgSize}
	defer c.Close()
	a, _, err := (&dns.Client{Net: network, Timeout: dnsUpstream, UDPSize: dns.MaxMsgSize}).ExchangeWithConn(q, c)
	return a, err
}
