package netfabric

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// leaseTime is what guests are told; they renew at half of it, so a changed
// DNS list reaches them within about half an hour.
const leaseTime = time.Hour

// dhcpServer answers on the bridge. server4 binds its socket when it is
// created, in the caller's network namespace, so Reconcile creates it there.
type dhcpServer struct {
	srv     *server4.Server
	ifindex int
	done    chan struct{}
}

func (h *Host) startDHCP(ifindex int) error {
	srv, err := server4.NewServer(h.cfg.Bridge, &net.UDPAddr{Port: dhcpv4.ServerPort}, h.handleDHCP,
		server4.WithLogger(dhcpLogger{h.log}))
	if err != nil {
		return fmt.Errorf("start DHCP server on %s: %w", h.cfg.Bridge, err)
	}
	d := &dhcpServer{srv: srv, ifindex: ifindex, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		_ = srv.Serve() // returns when Close closes its socket
	}()
	h.dhcp = d
	h.log.Info("DHCP server started", "bridge", h.cfg.Bridge)
	return nil
}

// stopDHCP stops the server and waits for it; h.mu must be held.
func (h *Host) stopDHCP() {
	if h.dhcp == nil {
		return
	}
	_ = h.dhcp.srv.Close()
	<-h.dhcp.done
	h.dhcp = nil
}

// handleDHCP answers DISCOVER with an OFFER and REQUEST with an ACK, only for
// MACs the lease source knows and only with the address it gives them.
// Unknown MACs get no answer at all: another DHCP server on the segment (a
// guest's own, say) must not be fought over.
func (h *Host) handleDHCP(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	if m.OpCode != dhcpv4.OpcodeBootRequest {
		return
	}
	mt := m.MessageType()
	if mt != dhcpv4.MessageTypeDiscover && mt != dhcpv4.MessageTypeRequest {
		return
	}
	log := h.log.With("mac", m.ClientHWAddr.String(), "type", mt.String())
	nw, dns, ok := h.serving()
	if !ok {
		log.Debug("DHCP: no network to serve")
		return
	}
	ip, hostname, ok := h.leases.Lease(m.ClientHWAddr)
	if !ok || !nw.Prefix().Contains(ip) {
		log.Debug("DHCP: ignoring an unknown MAC")
		return
	}
	resp := buildReply(m, nw, ip, hostname, dns, 0, log)
	if resp == nil {
		return
	}
	if _, err := conn.WriteTo(resp.ToBytes(), peer); err != nil {
		log.Warn("DHCP: send reply", "to", peer, "err", err)
		return
	}
	if resp.MessageType() == dhcpv4.MessageTypeAck {
		if h.cfg.OnLease != nil {
			h.cfg.OnLease(m.ClientHWAddr, ip)
		}
	}
}

// buildReply answers a DISCOVER with an OFFER and a REQUEST with an ACK
// for the client's lease ip on nw (a NAK if it asks for another address;
// nothing if it chose another server). mtu, if set, is offered too
// (option 26). nil means no answer.
func buildReply(m *dhcpv4.DHCPv4, nw Network, ip netip.Addr, hostname string, dns []net.IP, mtu int, log *slog.Logger) *dhcpv4.DHCPv4 {
	mt := m.MessageType()
	if mt != dhcpv4.MessageTypeDiscover && mt != dhcpv4.MessageTypeRequest {
		return nil
	}
	gw := nw.GatewayAddr().AsSlice()
	reply := dhcpv4.MessageTypeOffer
	if mt == dhcpv4.MessageTypeRequest {
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(gw) {
			return nil // the client chose another server's offer
		}
		want := m.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = m.ClientIPAddr // renewing or rebinding
		}
		reply = dhcpv4.MessageTypeAck
		if !want.Equal(ip.AsSlice()) {
			reply = dhcpv4.MessageTypeNak
		}
	}
	var resp *dhcpv4.DHCPv4
	var err error
	if reply == dhcpv4.MessageTypeNak {
		log.Info("DHCP: NAK", "requested", m.RequestedIPAddress(), "leased", ip)
		resp, err = dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(reply), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)))
	} else {
		mods := []dhcpv4.Modifier{
			dhcpv4.WithMessageType(reply),
			dhcpv4.WithYourIP(ip.AsSlice()),
			dhcpv4.WithServerIP(gw),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
			dhcpv4.WithNetmask(net.CIDRMask(nw.Prefix().Bits(), 32)),
			dhcpv4.WithRouter(gw),
			dhcpv4.WithLeaseTime(uint32(leaseTime / time.Second)),
		}
		if len(dns) > 0 {
			mods = append(mods, dhcpv4.WithDNS(dns...))
		}
		if hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
		}
		if nw.Domain != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(nw.Domain)),
				dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: []string{nw.Domain}})))
		}
		if mtu > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(mtu)}))
		}
		if len(nw.Routes) > 0 {
			// A client that takes option 121 ignores option 3 (RFC 3442):
			// the default route through the gateway goes in too.
			routes := []*dhcpv4.Route{{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: gw}}
			for _, r := range nw.Routes {
				d, _ := netip.ParsePrefix(r.Destination)
				nh, _ := netip.ParseAddr(r.Nexthop)
				routes = append(routes, &dhcpv4.Route{Dest: &net.IPNet{IP: d.Addr().AsSlice(), Mask: net.CIDRMask(d.Bits(), 32)}, Router: nh.AsSlice()})
			}
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(routes...)))
		}
		resp, err = dhcpv4.NewReplyFromRequest(m, mods...)
	}
	if err != nil {
		log.Warn("DHCP: build reply", "err", err)
		return nil
	}
	if reply == dhcpv4.MessageTypeAck {
		log.Debug("DHCP: ACK", "ip", ip, "hostname", hostname)
	}
	return resp
}

// serving returns the network DHCP answers for and its DNS servers: the
// network as last reconciled (that is what the bridge carries), provided the
// lease source still agrees on its CIDR.
func (h *Host) serving() (Network, []net.IP, bool) {
	h.mu.Lock()
	nw, hostDNS := h.nw, h.hostDNS
	h.mu.Unlock()
	if nw.ID == "" {
		return Network{}, nil, false
	}
	dns := hostDNS
	if cur, ok := h.leases.Network(); ok {
		if cur.CIDR != nw.CIDR {
			return Network{}, nil, false // changed, and not reconciled yet
		}
		nw = cur
	}
	if len(nw.DNS) > 0 {
		dns = nil
		for _, s := range nw.DNS {
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
				dns = append(dns, a.AsSlice())
			}
		}
	}
	return nw, dns, true
}

// resolvers returns the IPv4 nameservers of the first file in paths that
// names any usable one. Loopback resolvers (systemd-resolved's 127.0.0.53, a
// local dnsmasq) are useless to guests, hence the second default path, where
// systemd-resolved lists its upstream servers.
func resolvers(paths []string) []net.IP {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var out []net.IP
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "nameserver" {
				continue
			}
			a, err := netip.ParseAddr(f[1])
			if err == nil && a.Is4() && !a.IsLoopback() && !a.IsUnspecified() {
				out = append(out, a.AsSlice())
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// dhcpLogger sends server4's chatter to slog at debug level.
type dhcpLogger struct{ log *slog.Logger }

func (l dhcpLogger) Printf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l dhcpLogger) PrintMessage(prefix string, m *dhcpv4.DHCPv4) {
	l.log.Debug(prefix, "msg", m.Summary())
}
