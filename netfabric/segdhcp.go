package netfabric

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// A project network's DHCP is served on every node, on the segment's
// bridge, for the ports bound to that node only: a guest's DISCOVER reaches
// every peer (broadcast is replicated to them), and only its own node
// answers. The host has no address on a segment, so the server speaks
// through a packet socket and writes its own IPv4 and UDP headers, from the
// network's gateway address and MAC, the same on every node. The bridge
// carries that MAC, so a guest's unicast renewal to the gateway stays on
// its own node; the server answers ARP for the gateway address too, so the
// guest finds it. (A distributed router will own the address later; the
// host's own IP stack never answers it: arp_ignore, and the guard.)

// GatewayMAC is a project network's gateway MAC: the same on every node.
func GatewayMAC(networkID string) net.HardwareAddr { return MACFor("gateway:" + networkID) }

// segServer answers DHCP and gateway ARP on one segment's bridge, and,
// on a network with an IPv6 subnet, router solicitations and DHCPv6
// (segra.go).
type segServer struct {
	nw      Network
	routed  bool // a router connects the network (segra.go)
	ifindex int
	dhcp    *packet.Conn
	arp     *packet.Conn
	v6      *packet.Conn // nil without an IPv6 subnet
	dns     *packet.Conn
	// DNS (segdns.go): forward names the project does not have to the
	// box's resolvers; the queries in flight, by port; dialer opens the
	// forwarder's sockets; ctx ends with stop.
	forward  bool
	dnsMu    sync.Mutex
	dnsBusy  map[string]int
	dnsTotal int
	dialer   *nsDialer // the Host's
	ctx      context.Context
	cancel   context.CancelFunc
	closed   atomic.Bool
	quit     chan struct{}
	wg       sync.WaitGroup
}

// startSegmentServer opens the sockets on the bridge (in the caller's
// network namespace) and serves until stop.
func (h *Host) startSegmentServer(seg Segment, br *net.Interface) (srv *segServer, err error) {
	nw := seg.Network
	s := &segServer{nw: nw, routed: seg.Routed, forward: seg.Egress, ifindex: br.Index, quit: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.closeSockets()
		}
	}()
	// The kernel hands over only what the servers answer: a guest's other
	// traffic to the gateway's MAC never costs a system call here.
	dhcpOnly, arpOnly, err := segmentFilters(nw.GatewayAddr())
	if err != nil {
		return nil, err
	}
	if s.dhcp, err = packet.Listen(br, packet.Datagram, unix.ETH_P_IP, &packet.Config{Filter: dhcpOnly}); err != nil {
		return nil, fmt.Errorf("DHCP on %s: %w", br.Name, err)
	}
	// The gateway is the nodes' to answer for (ARP, DNS); a site's router
	// on a VLAN answers for itself.
	if !nw.SiteGateway {
		if s.arp, err = packet.Listen(br, packet.Datagram, unix.ETH_P_ARP, &packet.Config{Filter: arpOnly}); err != nil {
			return nil, fmt.Errorf("ARP on %s: %w", br.Name, err)
		}
		if s.dns, err = listenDNS(br, nw.GatewayAddr()); err != nil {
			return nil, err
		}
		if s.dialer, err = h.nsDialer(); err != nil {
			return nil, err
		}
	}
	if _, ok := nw.Prefix6(); ok {
		if s.v6, err = listenV6(br); err != nil {
			return nil, err
		}
	}
	log := h.log.With("network", nw.ID, "bridge", br.Name)
	s.wg.Go(func() { s.serve(s.dhcp, "DHCP", log, h.dhcpFrame) })
	if s.arp != nil {
		s.wg.Go(func() { s.serve(s.arp, "ARP", log, h.arpFrame) })
		s.wg.Go(func() { s.serve(s.dns, "DNS", log, h.dnsFrame) })
	}
	if s.v6 != nil {
		s.wg.Go(func() { s.serve(s.v6, "IPv6", log, h.v6Frame) })
		s.wg.Go(func() { h.advertise(s, log) })
	}
	log.Info("DHCP started on segment", "ipv6", nw.CIDR6)
	return s, nil
}

// closeSockets closes what the server opened.
func (s *segServer) closeSockets() {
	s.cancel() // the forwarder's queries give up
	for _, c := range []*packet.Conn{s.dhcp, s.arp, s.dns, s.v6} {
		if c != nil {
			c.Close()
		}
	}
}

func (s *segServer) stop() {
	s.closed.Store(true)
	close(s.quit)
	s.closeSockets()
	s.wg.Wait() // the queries in flight too
}

// segmentFilters are the sockets' classic BPF programs. A SOCK_DGRAM
// packet socket's filter sees the packet from its network header: for
// DHCP an unfragmented IPv4 UDP datagram to port 67, for ARP a request
// (operation 1) for the gateway's address.
func segmentFilters(gw netip.Addr) (dhcpOnly, arpOnly []bpf.RawInstruction, err error) {
	dhcpOnly, err = bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1}, // IPv4 protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},
		bpf.LoadAbsolute{Off: 6, Size: 2},                           // flags and fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 4}, // more fragments, or not the first
		bpf.LoadMemShift{Off: 0},                                    // X = the IPv4 header's length
		bpf.LoadIndirect{Off: 2, Size: 2},                           // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dhcpv4.ServerPort, SkipTrue: 1},
		bpf.RetConstant{Val: 1 << 16},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("DHCP filter: %w", err)
	}
	g := gw.As4()
	arpOnly, err = bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 6, Size: 2}, // operation
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 1, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 24, Size: 4}, // target protocol address
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(g[:]), SkipTrue: 1},
		bpf.RetConstant{Val: 1 << 16},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("ARP filter: %w", err)
	}
	return dhcpOnly, arpOnly, nil
}

// localPort returns the port with this MAC on the segment's network if it
// is bound to this node.
func (h *Host) localPort(nw Network, mac net.HardwareAddr) (Port, bool) {
	p, ok := h.leases.PortByMAC(mac)
	if !ok || p.NetworkID != nw.ID {
		return Port{}, false
	}
	return p, p.Node != "" && p.Node == h.cfg.Node
}

// serve reads what c's filter lets through until the server stops, and
// hands each packet (c is a datagram socket: from the network header on,
// the link layer's in the sender's address) to handle with its sender. A failed read is logged and retried after a pause.
func (s *segServer) serve(c *packet.Conn, what string, log *slog.Logger, handle func(s *segServer, b []byte, src *packet.Addr, log *slog.Logger)) {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := c.ReadFrom(buf)
		if s.closed.Load() {
			return
		}
		if err != nil {
			log.Warn(what+": read", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if src, _ := from.(*packet.Addr); src != nil {
			handle(s, buf[:n], src, log)
		}
	}
}

// dhcpFrame answers a DHCP request from one of this node's ports.
func (h *Host) dhcpFrame(s *segServer, b []byte, src *packet.Addr, log *slog.Logger) {
	payload, ok := udpPayloadTo(b, dhcpv4.ServerPort)
	if !ok {
		return
	}
	m, err := dhcpv4.FromBytes(payload)
	if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest {
		return
	}
	// The frame's source is the guest's port (port security saw to
	// that); the request's own hardware address must be the same.
	if src.HardwareAddr.String() != m.ClientHWAddr.String() {
		return
	}
	p, ok := h.localPort(s.nw, m.ClientHWAddr)
	if !ok {
		return // another node's port, or none: not ours to answer
	}
	resp := buildReply(m, s.nw, p.Addr(), p.Hostname, dnsOf(s.nw), s.nw.MTU, log)
	if resp == nil {
		return
	}
	dst := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if resp.MessageType() != dhcpv4.MessageTypeNak && !m.IsBroadcast() {
		dst = p.Addr()
	}
	frame := udp4(s.nw.GatewayAddr(), dst, dhcpv4.ServerPort, dhcpv4.ClientPort, resp.ToBytes())
	// To the guest's MAC, not broadcast: nothing to flood to the peers.
	if _, err := s.dhcp.WriteTo(frame, &packet.Addr{HardwareAddr: m.ClientHWAddr}); err != nil {
		log.Warn("DHCP: send reply", "err", err)
		return
	}
	if resp.MessageType() == dhcpv4.MessageTypeAck && h.cfg.OnLease != nil {
		h.cfg.OnLease(m.ClientHWAddr, p.Addr())
	}
}

// arpFrame answers who-has for the gateway address from this node's
// ports.
func (h *Host) arpFrame(s *segServer, b []byte, _ *packet.Addr, log *slog.Logger) {
	gw := s.nw.GatewayAddr().As4()
	// Ethernet/IPv4 request for the gateway: htype 1, ptype 0x0800,
	// hlen 6, plen 4, oper 1.
	if len(b) < 28 || binary.BigEndian.Uint16(b[0:]) != 1 || binary.BigEndian.Uint16(b[2:]) != unix.ETH_P_IP ||
		b[4] != 6 || b[5] != 4 || binary.BigEndian.Uint16(b[6:]) != 1 || [4]byte(b[24:28]) != gw {
		return
	}
	sha := net.HardwareAddr(append([]byte(nil), b[8:14]...))
	if _, ok := h.localPort(s.nw, sha); !ok {
		return
	}
	reply := make([]byte, 28)
	copy(reply, b[:6])
	binary.BigEndian.PutUint16(reply[6:], 2)
	copy(reply[8:14], GatewayMAC(s.nw.ID))
	copy(reply[14:18], gw[:])
	copy(reply[18:24], sha)
	copy(reply[24:28], b[14:18])
	if _, err := s.arp.WriteTo(reply, &packet.Addr{HardwareAddr: sha}); err != nil {
		log.Warn("ARP: send reply", "err", err)
	}
}

// udpPayloadTo returns the UDP payload of an IPv4 packet for port dport.
func udpPayloadTo(b []byte, dport int) ([]byte, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_UDP {
		return nil, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total > len(b) || total < ihl+8 || binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return nil, false // short, or a fragment
	}
	u := b[ihl:total]
	if int(binary.BigEndian.Uint16(u[2:])) != dport {
		return nil, false
	}
	ulen := int(binary.BigEndian.Uint16(u[4:]))
	if ulen < 8 || ulen > len(u) {
		return nil, false
	}
	return u[8:ulen], true
}

// udp4 builds an IPv4 packet carrying a UDP datagram, checksums included.
func udp4(src, dst netip.Addr, sport, dport int, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	// Don't fragment, so an ID of 0 is fine (RFC 6864).
	b[0], b[6], b[8], b[9] = 0x45, 0x40, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], ^onesSum(b[:20], 0))
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], uint16(sport))
	binary.BigEndian.PutUint16(u[2:], uint16(dport))
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	sum := ^onesSum(u, pseudoSum(s4, d4, unix.IPPROTO_UDP, len(u)))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], sum)
	return b
}

// synTo returns the source port of an IPv4 TCP SYN (no ACK) to port dport
// and the acknowledgment number a reset to it carries (RFC 9293 3.10.7.1:
// its sequence number plus its length, the SYN counted).
func synTo(b []byte, dport int) (sport int, ack uint32, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return 0, 0, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total > len(b) || total < ihl+20 || binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return 0, 0, false // short, or a fragment
	}
	t := b[ihl:total]
	off := int(t[12]>>4) * 4
	if int(binary.BigEndian.Uint16(t[2:])) != dport || off < 20 || off > len(t) || t[13]&(tcpSYN|tcpACK|tcpRST|tcpFIN) != tcpSYN {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint16(t[0:])), binary.BigEndian.Uint32(t[4:]) + uint32(len(t)-off) + 1, true
}

// tcp4 builds an IPv4 packet carrying a TCP segment with no options and no
// data, checksums included.
func tcp4(src, dst netip.Addr, sport, dport int, seq, ack uint32, flags byte) []byte {
	b := make([]byte, 40)
	b[0], b[6], b[8], b[9] = 0x45, 0x40, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], ^onesSum(b[:20], 0))
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], uint16(sport))
	binary.BigEndian.PutUint16(t[2:], uint16(dport))
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12], t[13] = 5<<4, flags
	binary.BigEndian.PutUint16(t[16:], ^onesSum(t, pseudoSum(s4, d4, unix.IPPROTO_TCP, len(t))))
	return b
}

// pseudoSum is the sum of UDP's and TCP's IPv4 pseudo-header: addresses,
// protocol, length.
func pseudoSum(s4, d4 [4]byte, proto byte, n int) uint32 {
	return uint32(binary.BigEndian.Uint16(s4[0:])) + uint32(binary.BigEndian.Uint16(s4[2:])) +
		uint32(binary.BigEndian.Uint16(d4[0:])) + uint32(binary.BigEndian.Uint16(d4[2:])) + uint32(proto) + uint32(n)
}

// onesSum is the Internet checksum's folded one's-complement sum of b,
// starting from initial.
func onesSum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// dnsOf returns the DNS servers a guest on the network is given: the
// network's own, else the gateway, where its node answers (segdns.go),
// unless the gateway is a site's router.
func dnsOf(nw Network) []net.IP {
	var out []net.IP
	for _, s := range nw.DNS {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			out = append(out, a.AsSlice())
		}
	}
	if len(out) == 0 && nw.GatewayAddr().Is4() && !nw.SiteGateway {
		out = append(out, nw.GatewayAddr().AsSlice())
	}
	return out
}
