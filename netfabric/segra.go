package netfabric

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// IPv6 on a segment (subnet6.go): router advertisements and DHCPv6 for
// the node's own ports, on the same bridge as DHCPv4 and the same way: a
// packet socket, headers written here, from the gateway's link-local
// address and MAC (the same on every node), and to the guest's MAC only,
// so nothing floods to the peers. A guest's router solicitation is
// answered at once, and every port here gets an advertisement every
// raInterval, so a changed network reaches running guests. (None of it
// leaves on a segment's uplink: the port table's output chain.)

const (
	raInterval           = 60 * time.Second
	prefixValid          = 30 * 24 * time.Hour
	prefixPreferred      = 7 * 24 * time.Hour
	dhcp6Preferred       = 24 * time.Hour
	dhcp6Valid           = 48 * time.Hour
	icmp6RouterSolicit   = 133
	icmp6NeighborSolicit = 135
	dhcp6ServerPort      = 547
	dhcp6ClientPort      = 546
)

var allNodes = netip.MustParseAddr("ff02::1")

// v6Filter passes what the IPv6 server answers, from the IPv6 header on:
// an ICMPv6 router or neighbour solicitation, or UDP to the DHCPv6 server
// port (with no extension headers: guests send none with them).
func v6Filter() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 6, Size: 1}, // next header
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_ICMPV6, SkipFalse: 3},
		bpf.LoadAbsolute{Off: 40, Size: 1}, // ICMPv6 type
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmp6RouterSolicit, SkipTrue: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmp6NeighborSolicit, SkipTrue: 3, SkipFalse: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipFalse: 3},
		bpf.LoadAbsolute{Off: 42, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: dhcp6ServerPort, SkipFalse: 1},
		bpf.RetConstant{Val: 1 << 16},
		bpf.RetConstant{Val: 0},
	})
}

// listenV6 opens the IPv6 server's socket on the bridge.
func listenV6(br *net.Interface) (*packet.Conn, error) {
	f, err := v6Filter()
	if err != nil {
		return nil, fmt.Errorf("IPv6 filter: %w", err)
	}
	c, err := packet.Listen(br, packet.Datagram, unix.ETH_P_IPV6, &packet.Config{Filter: f})
	if err != nil {
		return nil, fmt.Errorf("IPv6 on %s: %w", br.Name, err)
	}
	return c, nil
}

// v6Frame answers router and neighbour solicitations and DHCPv6 from this
// node's ports.
func (h *Host) v6Frame(s *segServer, b []byte, src *packet.Addr, log *slog.Logger) {
	if len(b) < 48 || b[0]>>4 != 6 {
		return
	}
	p, ok := h.localPort(s.nw, src.HardwareAddr)
	if !ok {
		return // another node's port, or none: not ours to answer
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	if plen < 8 || 40+plen > len(b) {
		return // shorter than a solicitation or a UDP header: nothing to answer
	}
	body := b[40 : 40+plen]
	switch b[6] {
	case unix.IPPROTO_ICMPV6:
		// A solicitation comes from on the link: hop limit 255.
		if b[7] == 255 && body[0] == icmp6RouterSolicit && body[1] == 0 {
			h.sendRA(s, p, log)
		}
		if b[7] == 255 && body[0] == icmp6NeighborSolicit && body[1] == 0 {
			h.answerGatewayNS(s, p, netip.AddrFrom16([16]byte(b[8:24])), body, log)
		}
	case unix.IPPROTO_UDP:
		if s.nw.IPv6Mode == IPv6DHCPv6 && len(body) >= 8 && binary.BigEndian.Uint16(body[0:]) == dhcp6ClientPort {
			from6 := netip.AddrFrom16([16]byte(b[8:24]))
			h.answerDHCPv6(s, p, from6, body[8:], log)
		}
	}
}

// answerGatewayNS answers port p's neighbour solicitation from from for
// the gateway's addresses (link-local, and ::1 of the subnet) with the
// gateway MAC, the same on every node, as arpFrame does for IPv4:
// the router behind it (routerns.go) never speaks neighbour discovery on
// the network, so guests never learn a node's own MAC for their gateway.
func (h *Host) answerGatewayNS(s *segServer, p Port, from netip.Addr, body []byte, log *slog.Logger) {
	m, err := ndp.ParseMessage(body)
	ns, ok := m.(*ndp.NeighborSolicitation)
	if err != nil || !ok {
		return
	}
	gw6, _ := s.nw.Gateway6()
	if ns.TargetAddress != s.nw.GatewayLL() && ns.TargetAddress != gw6 {
		return
	}
	dst, solicited := from, true
	if from.IsUnspecified() {
		dst, solicited = allNodes, false // duplicate address detection: tell everyone
	}
	na := &ndp.NeighborAdvertisement{Router: s.routed, Solicited: solicited, Override: true, TargetAddress: ns.TargetAddress,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: GatewayMAC(s.nw.ID)}}}
	msg, err := ndp.MarshalMessageChecksum(na, ns.TargetAddress, dst)
	if err != nil {
		log.Warn("IPv6: neighbour advertisement", "err", err)
		return
	}
	if _, err := s.v6.WriteTo(ip6(ns.TargetAddress, dst, unix.IPPROTO_ICMPV6, 255, msg), &packet.Addr{HardwareAddr: p.HardwareAddr()}); err != nil && !s.closed.Load() {
		log.Warn("IPv6: send neighbour advertisement", "port", p.ID, "err", err)
	}
}

// advertise sends every port of the network on this node an
// advertisement now and every raInterval until the server stops.
func (h *Host) advertise(s *segServer, log *slog.Logger) {
	t := time.NewTicker(raInterval)
	defer t.Stop()
	for {
		for _, p := range h.leases.Ports() {
			if p.NetworkID == s.nw.ID && p.Node != "" && p.Node == h.cfg.Node {
				h.sendRA(s, p, log)
			}
		}
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
	}
}

// routerAdvertisement is what the network tells its guests: the prefix
// (for SLAAC, or on-link only under DHCPv6), the MTU, DNS servers and
// domain, and, on a network a router connects, the gateway as the default
// router (for three advertisements' time: a router taken away is
// forgotten within minutes, at once by the next advertisement).
func routerAdvertisement(nw Network, routed bool) (*ndp.RouterAdvertisement, bool) {
	p, ok := nw.Prefix6()
	if !ok {
		return nil, false
	}
	managed := nw.IPv6Mode == IPv6DHCPv6
	var lifetime time.Duration
	if routed {
		lifetime = 3 * raInterval
	}
	ra := &ndp.RouterAdvertisement{CurrentHopLimit: 64, ManagedConfiguration: managed, OtherConfiguration: managed, RouterLifetime: lifetime,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: GatewayMAC(nw.ID)},
			ndp.NewMTU(uint32(nw.MTU)),
			&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: !managed,
				ValidLifetime: prefixValid, PreferredLifetime: prefixPreferred, Prefix: p.Addr()},
		}}
	if dns := nw.DNSServers6(); len(dns) > 0 {
		ra.Options = append(ra.Options, &ndp.RecursiveDNSServer{Lifetime: 3 * raInterval, Servers: dns})
	}
	if nw.Domain != "" {
		ra.Options = append(ra.Options, &ndp.DNSSearchList{Lifetime: 3 * raInterval, DomainNames: []string{nw.Domain}})
	}
	return ra, true
}

// sendRA sends port p's guest an advertisement: to all nodes at layer 3,
// and to the guest's MAC alone at layer 2.
func (h *Host) sendRA(s *segServer, p Port, log *slog.Logger) {
	ra, ok := routerAdvertisement(s.nw, s.routed)
	if !ok {
		return
	}
	src := s.nw.GatewayLL()
	msg, err := ndp.MarshalMessageChecksum(ra, src, allNodes)
	if err != nil {
		log.Warn("IPv6: router advertisement", "err", err)
		return
	}
	if _, err := s.v6.WriteTo(ip6(src, allNodes, unix.IPPROTO_ICMPV6, 255, msg), &packet.Addr{HardwareAddr: p.HardwareAddr()}); err != nil && !s.closed.Load() {
		log.Warn("IPv6: send router advertisement", "port", p.ID, "err", err)
	}
}

// answerDHCPv6 answers port p's DHCPv6 message from the address from: its
// address is the one the state gives it.
func (h *Host) answerDHCPv6(s *segServer, p Port, from netip.Addr, payload []byte, log *slog.Logger) {
	m, err := dhcpv6.MessageFromBytes(payload)
	if err != nil || !from.IsLinkLocalUnicast() {
		return
	}
	addr, ok := p.Addr6()
	if !ok {
		return
	}
	server := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: GatewayMAC(s.nw.ID)}
	if sid := m.Options.ServerID(); sid != nil && !sid.Equal(server) {
		return // for another server
	}
	mods := []dhcpv6.Modifier{dhcpv6.WithServerID(server)}
	if dns := s.nw.DNSServers6(); len(dns) > 0 {
		ips := make([]net.IP, len(dns))
		for i, a := range dns {
			ips[i] = a.AsSlice()
		}
		mods = append(mods, dhcpv6.WithDNS(ips...))
	}
	if s.nw.Domain != "" {
		mods = append(mods, dhcpv6.WithDomainSearchList(s.nw.Domain))
	}
	if ia := m.Options.OneIANA(); ia != nil && m.Type() != dhcpv6.MessageTypeRelease && m.Type() != dhcpv6.MessageTypeDecline {
		mods = append(mods, dhcpv6.WithOption(&dhcpv6.OptIANA{IaId: ia.IaId, T1: dhcp6Preferred / 2, T2: dhcp6Preferred * 4 / 5,
			Options: dhcpv6.IdentityOptions{Options: []dhcpv6.Option{&dhcpv6.OptIAAddress{IPv6Addr: addr.AsSlice(),
				PreferredLifetime: dhcp6Preferred, ValidLifetime: dhcp6Valid}}}}))
	}
	var resp *dhcpv6.Message
	switch m.Type() {
	case dhcpv6.MessageTypeSolicit:
		if m.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			resp, err = dhcpv6.NewReplyFromMessage(m, mods...)
		} else {
			resp, err = dhcpv6.NewAdvertiseFromSolicit(m, mods...)
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeConfirm,
		dhcpv6.MessageTypeInformationRequest, dhcpv6.MessageTypeRelease:
		resp, err = dhcpv6.NewReplyFromMessage(m, mods...)
	case dhcpv6.MessageTypeDecline:
		// Acknowledged (RFC 8415 18.3.8); the address stays the port's.
		resp = &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: m.TransactionID}
		if cid := m.GetOneOption(dhcpv6.OptionClientID); cid != nil {
			resp.AddOption(cid)
		}
		resp.AddOption(dhcpv6.OptServerID(server))
	default:
		return
	}
	if err != nil {
		log.Warn("DHCPv6: reply", "port", p.ID, "err", err)
		return
	}
	src := s.nw.GatewayLL()
	frame := ip6(src, from, unix.IPPROTO_UDP, 64, udp6(src, from, dhcp6ServerPort, dhcp6ClientPort, resp.ToBytes()))
	if _, err := s.v6.WriteTo(frame, &packet.Addr{HardwareAddr: p.HardwareAddr()}); err != nil && !s.closed.Load() {
		log.Warn("DHCPv6: send reply", "port", p.ID, "err", err)
	}
}

// ip6 builds an IPv6 packet around payload.
func ip6(src, dst netip.Addr, next, hopLimit byte, payload []byte) []byte {
	b := make([]byte, 40+len(payload))
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6], b[7] = next, hopLimit
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	copy(b[40:], payload)
	return b
}

// udp6 builds a UDP datagram over IPv6, its checksum included.
func udp6(src, dst netip.Addr, sport, dport int, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], uint16(sport))
	binary.BigEndian.PutUint16(u[2:], uint16(dport))
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	var pseudo uint32
	for _, a := range []netip.Addr{src, dst} {
		b := a.As16()
		for i := 0; i < 16; i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	pseudo += uint32(len(u)) + unix.IPPROTO_UDP
	sum := ^onesSum(u, pseudo)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], sum)
	return u
}
