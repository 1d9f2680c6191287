package netfabric_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// secGuest is a guest namespace on the fixture's bridge, through a link
// named as its port's tap.
type secGuest struct {
	ns  netns.NsHandle
	mac net.HardwareAddr
	ip  string
}

// plugGuest makes a guest on the bridge with address ip; with a port in
// the state unless noPort.
func plugGuest(t *testing.T, f *hostFixture, id string, last byte, ip string, noPort bool) secGuest {
	t.Helper()
	g := secGuest{ns: newNS(t), mac: net.HardwareAddr{0x02, 0xca, 0x1e, 0x00, 0x00, last}, ip: ip}
	if !noPort {
		f.leases.addPort(id, g.mac, ip)
	}
	tap := f.h.TapName(id)
	vethInto(t, f.ns, g.ns, tap, "eth0", g.mac)
	h := handle(t, f.ns)
	br, _ := h.LinkByName(f.cfg.Bridge)
	l, err := h.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMaster(l, br); err != nil {
		t.Fatal(err)
	}
	addAddr(t, g.ns, "eth0", ip+"/24")
	return g
}

// dial reports whether a TCP connection from the guest (from local
// address from, if set) to addr is accepted within a second.
func dial(t *testing.T, ns netns.NsHandle, from, addr string) bool {
	t.Helper()
	err := inNS(t, ns, func() error {
		d := net.Dialer{Timeout: time.Second}
		if from != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return err == nil
}

// listenTCP accepts (and closes) connections on addr in ns until the test ends.
func listenTCP(t *testing.T, ns netns.NsHandle, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(t, ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// A guest sends only as its own port: its MAC, its address, no DHCP server
// and no router advertisements; a tap with no port sends nothing; and no
// guest reaches the host's own ports, while DHCP, replies to the host and
// guest-to-guest traffic go through.
func TestPortSecurity(t *testing.T) {
	f := newHostFixture(t)
	a := plugGuest(t, f, "port-a", 2, "10.77.0.2", false)
	b := plugGuest(t, f, "port-b", 3, "10.77.0.3", false)
	c := plugGuest(t, f, "port-c", 4, "10.77.0.4", true)
	f.reconcile(t, f.nw)
	listenTCP(t, b.ns, "0.0.0.0:7000")
	listenTCP(t, f.ns, "0.0.0.0:7001") // a service on the host, as the API is
	listenTCP(t, a.ns, "10.77.0.2:7002")

	if !dial(t, a.ns, "", "10.77.0.3:7000") {
		t.Fatal("a guest cannot reach another guest on its network")
	}
	if !dial(t, f.ns, "", "10.77.0.2:7002") {
		t.Fatal("the host cannot reach a guest (its replies were dropped)")
	}
	if dial(t, c.ns, "", "10.77.0.3:7000") {
		t.Fatal("a tap with no port reached a guest")
	}
	// The host's other addresses are as far out of reach as the gateway's.
	addAddr(t, f.ns, "lo", "192.0.2.1/32") // as the node's LAN address
	ah0 := handle(t, a.ns)
	if err := ah0.RouteAdd(&netlink.Route{Gw: net.ParseIP("10.77.0.1")}); err != nil {
		t.Fatal(err)
	}
	for _, hostAddr := range []string{"10.77.0.1:7001", "192.0.2.1:7001"} {
		if dial(t, a.ns, "", hostAddr) {
			t.Fatalf("a guest reached the host's own port at %s", hostAddr)
		}
	}

	// One-way datagrams to b, with b's MAC pinned in a's neighbour table, so
	// no ARP decides the outcome: only the frame's own source MAC and
	// address do.
	listeners := map[int]*net.UDPConn{}
	for _, port := range []int{68, 5000} {
		var c *net.UDPConn
		if err := inNS(t, b.ns, func() (err error) { c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port}); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		listeners[port] = c
	}
	ah := handle(t, a.ns)
	eth0, _ := ah.LinkByName("eth0")
	if err := ah.NeighSet(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP(b.ip), HardwareAddr: b.mac, State: netlink.NUD_PERMANENT}); err != nil {
		t.Fatal(err)
	}
	arrives := func(fromIP string, fromPort, toPort int) bool {
		t.Helper()
		if err := inNS(t, a.ns, func() error {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(fromIP), Port: fromPort}, &net.UDPAddr{IP: net.ParseIP(b.ip), Port: toPort})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("offer"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		got := listeners[toPort]
		got.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		_, from, err := got.ReadFromUDP(buf)
		return err == nil && from.Port == fromPort && from.IP.String() == fromIP
	}
	if !arrives(a.ip, 1067, 5000) {
		t.Fatal("a datagram from the guest's own address did not arrive (the checks below prove nothing)")
	}

	// A rogue DHCP server: nothing from port 67, nor to a client's port 68
	// from any port (clients check only the port they listen on).
	if arrives(a.ip, 67, 5000) {
		t.Fatal("a datagram from a guest's DHCP server port reached another guest")
	}
	if arrives(a.ip, 1067, 68) {
		t.Fatal("a guest's DHCP answer from another port reached another guest's client port")
	}

	// Another guest's address, or one nobody has, as the source.
	addAddr(t, a.ns, "eth0", "10.77.0.9/24")
	if arrives("10.77.0.9", 1068, 5000) {
		t.Fatal("a guest sending from an address not its port's reached another guest")
	}

	// ARP for an address not the port's: b asks who has 10.77.0.9 (b's
	// cache is flushed), a answers; b must not learn it.
	bh := handle(t, b.ns)
	beth0, _ := bh.LinkByName("eth0")
	if err := inNS(t, b.ns, func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("10.77.0.9"), Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("who"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	neighs, _ := bh.NeighList(beth0.Attrs().Index, netlink.FAMILY_V4)
	for _, n := range neighs {
		if n.IP.String() == "10.77.0.9" && n.HardwareAddr.String() == a.mac.String() {
			t.Fatalf("a guest's ARP answer for an address not its port's was learnt: %+v", n)
		}
	}

	// An ARP reply whose frame is a's but whose sender hardware address is
	// another: b, which knows a, must not move a's address to it.
	forged := net.HardwareAddr{0x02, 0xca, 0x1e, 0x00, 0x00, 0x66}
	if !dial(t, b.ns, "", a.ip+":7002") { // b knows a's MAC
		t.Fatal("b cannot reach a")
	}
	time.Sleep(1200 * time.Millisecond) // past the kernel's ARP locktime (1 s), so a reply may replace it
	sendARP(t, a.ns, "eth0", a.mac, forged, net.ParseIP(a.ip).To4(), b.mac, net.ParseIP(b.ip).To4())
	time.Sleep(200 * time.Millisecond)
	neighs, _ = bh.NeighList(beth0.Attrs().Index, netlink.FAMILY_V4)
	for _, n := range neighs {
		if n.IP.String() == a.ip && n.HardwareAddr.String() == forged.String() {
			t.Fatalf("an ARP reply naming another MAC than its port's was learnt: %+v", n)
		}
	}

	// A forged MAC (not b's own: the bridge would not send b a frame from
	// b's address): the address is right, the frames are not.
	if err := ah.LinkSetHardwareAddr(eth0, net.HardwareAddr{0x02, 0xca, 0x1e, 0x00, 0x00, 0x77}); err != nil {
		t.Fatal(err)
	}
	if arrives(a.ip, 1069, 5000) {
		t.Fatal("a frame with another guest's MAC reached a guest")
	}
	if err := ah.LinkSetHardwareAddr(eth0, a.mac); err != nil {
		t.Fatal(err)
	}
	if !arrives(a.ip, 1070, 5000) || !dial(t, a.ns, a.ip, "10.77.0.3:7000") {
		t.Fatal("the guest's own MAC and address stopped working")
	}

	// A router advertisement never reaches a neighbour; an echo request
	// sent the same way does.
	ra := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: make([]byte, 12)}}
	echo := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: 7, Seq: 1, Data: []byte("cairn")}}
	if sixSees(t, a, b, ra) {
		t.Fatal("a guest's router advertisement reached another guest")
	}
	if !sixSees(t, a, b, echo) {
		t.Fatal("an ICMPv6 echo request did not arrive (the check above proves nothing)")
	}
	redirect := icmp.Message{Type: ipv6.ICMPTypeRedirect, Body: &icmp.RawBody{Data: make([]byte, 36)}}
	if sixSees(t, a, b, redirect) {
		t.Fatal("a guest's ICMPv6 redirect reached another guest")
	}
	// A DHCPv6 server's answer never reaches a neighbour: nothing from port
	// 547, nothing to a client's port 546.
	six := map[int]*net.UDPConn{}
	for _, port := range []int{546, 5546} {
		var c *net.UDPConn
		if err := inNS(t, b.ns, func() (err error) { c, err = net.ListenUDP("udp6", &net.UDPAddr{Port: port}); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		six[port] = c
	}
	sixArrives := func(fromPort, toPort int) bool {
		t.Helper()
		if err := inNS(t, a.ns, func() error {
			c, err := net.DialUDP("udp6", &net.UDPAddr{Port: fromPort}, &net.UDPAddr{IP: net.ParseIP("ff02::1"), Port: toPort, Zone: "eth0"})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("advertise"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		six[toPort].SetReadDeadline(time.Now().Add(time.Second))
		_, from, err := six[toPort].ReadFromUDP(make([]byte, 64))
		return err == nil && from.Port == fromPort
	}
	if sixArrives(547, 5546) {
		t.Fatal("a datagram from a guest's DHCPv6 server port reached another guest")
	}
	if sixArrives(1547, 546) {
		t.Fatal("a guest's DHCPv6 answer from another port reached another guest's client port")
	}
	if !sixArrives(1547, 5546) {
		t.Fatal("a UDP datagram over IPv6 did not arrive (the check above proves nothing)")
	}

	// A guest with a port still gets its address by DHCP.
	d := secGuest{ns: newNS(t), mac: net.HardwareAddr{0x02, 0xca, 0x1e, 0x00, 0x00, 5}}
	f.leases.addPort("port-d", d.mac, "10.77.0.5")
	tap := f.h.TapName("port-d")
	vethInto(t, f.ns, d.ns, tap, "eth0", d.mac)
	h := handle(t, f.ns)
	br, _ := h.LinkByName(f.cfg.Bridge)
	l, _ := h.LinkByName(tap)
	if err := h.LinkSetMaster(l, br); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, f.nw)
	lease, err := dhcpLease(t, d.ns, "eth0", 10*time.Second)
	if err != nil {
		t.Fatalf("a secured guest's DHCP: %v", err)
	}
	if ip := lease.ACK.YourIPAddr.String(); ip != "10.77.0.5" {
		t.Fatalf("DHCP gave %s", ip)
	}
}

// sixSees sends m from guest a to all nodes on the link and reports whether
// guest b received a message of m's type.
func sixSees(t *testing.T, a, b secGuest, m icmp.Message) bool {
	t.Helper()
	var rc *icmp.PacketConn
	if err := inNS(t, b.ns, func() (err error) { rc, err = icmp.ListenPacket("ip6:ipv6-icmp", "::"); return err }); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	wire, err := m.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The link-local address is usable once duplicate address detection
	// is over; until then the send fails.
	err = inNS(t, a.ns, func() error {
		deadline := time.Now().Add(5 * time.Second)
		for {
			sc, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
			if err != nil {
				return err
			}
			sc.IPv6PacketConn().SetMulticastHopLimit(255)
			_, err = sc.WriteTo(wire, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: "eth0"})
			sc.Close()
			if err == nil || time.Now().After(deadline) {
				return err
			}
			if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENETUNREACH) {
				return fmt.Errorf("send: %w", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(time.Second)
	for {
		rc.SetReadDeadline(deadline)
		n, _, err := rc.ReadFrom(buf)
		if err != nil {
			return false
		}
		if got, err := icmp.ParseMessage(58, buf[:n]); err == nil && got.Type == m.Type {
			return true
		}
	}
}

// sendARP sends one ARP reply on link in ns, from frame source src, saying
// that spa is at sha, to tha/tpa.
func sendARP(t *testing.T, ns netns.NsHandle, link string, src, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) {
	t.Helper()
	arp := []byte{0, 1, 0x08, 0x00, 6, 4, 0, 2} // Ethernet, IPv4, reply
	arp = append(append(arp, sha...), spa...)
	arp = append(append(arp, tha...), tpa...)
	rawSend(t, ns, link, ethFrame(tha, src, 0, 0x0806, arp))
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Frames no socket API would send: a VLAN tag, an IPv6 fragment carrying a
// router advertisement, 802.3/LLC, and as a control the same kind of raw
// frame from the guest's own MAC and address, which does arrive.
func TestPortSecurityRawFrames(t *testing.T) {
	f := newHostFixture(t)
	a := plugGuest(t, f, "port-a", 2, "10.77.0.2", false)
	b := plugGuest(t, f, "port-b", 3, "10.77.0.3", false)
	f.reconcile(t, f.nw)
	sees := sniffer(t, b.ns, "eth0")
	aIP, bIP := net.ParseIP(a.ip), net.ParseIP(b.ip)
	send := func(frame []byte) { rawSend(t, a.ns, "eth0", frame) }

	send(ethFrame(b.mac, a.mac, 0, 0x0800, ipv4UDP(aIP, bIP, 1000, 2000, []byte("CONTROL-OWN"))))
	if !sees([]byte("CONTROL-OWN")) {
		t.Fatal("a raw frame from the guest's own MAC and address did not arrive (the checks below prove nothing)")
	}
	send(ethFrame(b.mac, a.mac, 100, 0x0800, ipv4UDP(aIP, bIP, 1000, 2000, []byte("VLAN-TAGGED"))))
	if sees([]byte("VLAN-TAGGED")) {
		t.Fatal("a VLAN-tagged frame reached another guest")
	}
	// An ARP packet of another shape (8-byte hardware addresses) whose
	// bytes sit where an Ethernet/IPv4 ARP's sender fields would be.
	odd := append([]byte{0, 1, 8, 0, 8, 4, 0, 2}, a.mac...)
	odd = append(append(odd, aIP.To4()...), []byte("ODD-ARP-SHAPE-PADDING-PADDING")...)
	send(ethFrame(b.mac, a.mac, 0, 0x0806, odd))
	if sees([]byte("ODD-ARP-SHAPE")) {
		t.Fatal("an ARP packet of another shape reached another guest")
	}
	llc := append([]byte{0x42, 0x42, 0x03}, []byte("LLC-FRAME-PADDING-PADDING-PADDING-PADDING")...)
	send(ethFrame(b.mac, a.mac, 0, uint16(len(llc)), llc))
	if sees([]byte("LLC-FRAME")) {
		t.Fatal("an 802.3/LLC frame reached another guest")
	}

	// IPv6 from a's link-local address to all nodes: a plain UDP datagram
	// arrives; an RA whose ICMPv6 header sits in a second fragment does not.
	ll := net.ParseIP("fe80::ca:1eff:fe00:2")
	allNodes := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	ip6 := func(next byte, payload []byte) []byte {
		h := []byte{0x60, 0, 0, 0, byte(len(payload) >> 8), byte(len(payload)), next, 255}
		h = append(h, ll...)
		h = append(h, net.ParseIP("ff02::1")...)
		return append(h, payload...)
	}
	send(ethFrame(allNodes, a.mac, 0, 0x86dd, ip6(17, append([]byte{0x30, 0x39, 0x30, 0x39, 0, 24, 0, 0}, []byte("UDP6-CONTROL-XXX")...))))
	if !sees([]byte("UDP6-CONTROL")) {
		t.Fatal("a raw IPv6 datagram from the guest's link-local address did not arrive")
	}
	ra := append([]byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, []byte("RA-IN-FRAGMENT")...)
	opts := make([]byte, 64) // destination options: next header ICMPv6, PadN
	opts[0], opts[1], opts[2], opts[3] = 58, 7, 1, 60
	whole := append(opts, ra...)
	first := ip6(44, append([]byte{60, 0, 0, 1, 0, 0, 0x12, 0x34}, whole[:32]...))
	second := ip6(44, append([]byte{60, 0, 0, 32, 0, 0, 0x12, 0x34}, whole[32:]...))
	send(ethFrame(allNodes, a.mac, 0, 0x86dd, first))
	send(ethFrame(allNodes, a.mac, 0, 0x86dd, second))
	if sees([]byte("RA-IN-FRAGMENT")) {
		t.Fatal("a router advertisement in an IPv6 fragment reached another guest")
	}
}

// Port security holds for many guests on a node: one set element per port,
// the same rules, and every guest still reaches its neighbour.
func TestPortSecurityManyPorts(t *testing.T) {
	f := newHostFixture(t)
	const n = 40
	// Taps of guests that send nothing here, made as the hypervisor makes
	// them (inside the fixture's namespace: a tap is made in the calling
	// thread's), each EnsureTap rebuilding port security.
	if err := f.do(t, func() error {
		for i := range n {
			id := fmt.Sprintf("many-%d", i)
			f.leases.addPort(id, net.HardwareAddr{0x02, 0xcb, 0, 0, 0, byte(i)}, fmt.Sprintf("10.77.0.%d", 100+i))
			if err := f.h.EnsureTap(f.h.TapName(id)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a := plugGuest(t, f, "port-a", 2, "10.77.0.2", false)
	b := plugGuest(t, f, "port-b", 3, "10.77.0.3", false)
	f.reconcile(t, f.nw)
	if got := f.setKeys(t, "port_macs"); len(got) != n+2 {
		t.Fatalf("%d ports in the MAC set, want %d", len(got), n+2)
	}
	listenTCP(t, b.ns, "0.0.0.0:7000")
	if !dial(t, a.ns, "", "10.77.0.3:7000") {
		t.Fatal("a guest cannot reach another among many")
	}
}

func rawSend(t *testing.T, ns netns.NsHandle, link string, frame []byte) {
	t.Helper()
	if err := inNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		var dst [8]byte
		copy(dst[:], frame[:6])
		return syscall.Sendto(fd, frame, 0, &syscall.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: dst})
	}); err != nil {
		t.Fatal(err)
	}
}

// sniffer returns a func that reports whether a frame containing marker
// shows up on link in ns within a second.
func sniffer(t *testing.T, ns netns.NsHandle, link string) func(marker []byte) bool {
	t.Helper()
	var fd int
	if err := inNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
		if err != nil {
			return err
		}
		tv := syscall.Timeval{Usec: 200000}
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return func(marker []byte) bool {
		buf := make([]byte, 4096)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err == nil && bytes.Contains(buf[:n], marker) {
				return true
			}
		}
		return false
	}
}

// ethFrame builds an Ethernet frame, with an 802.1Q tag if vlan > 0.
func ethFrame(dst, src net.HardwareAddr, vlan uint16, etherType uint16, payload []byte) []byte {
	f := append(append([]byte{}, dst...), src...)
	if vlan > 0 {
		f = binary.BigEndian.AppendUint16(f, 0x8100)
		f = binary.BigEndian.AppendUint16(f, vlan)
	}
	f = binary.BigEndian.AppendUint16(f, etherType)
	return append(f, payload...)
}

func ipv4UDP(src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, dport)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(append(udp, 0, 0), payload...) // no UDP checksum
	ip := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip = append(append(ip, src.To4()...), dst.To4()...)
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	return append(ip, udp...)
}
