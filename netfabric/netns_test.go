package netfabric_test

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/cairnhq/cairn/netfabric"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireRoot skips, saying why, when the test cannot create namespaces.
// make test runs as root, so these tests run on CI.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges, taps and nftables tables")
	}
}

// inNS runs fn on a fresh OS thread that has entered ns. The thread is never
// unlocked, so the runtime discards it afterwards instead of reusing a thread
// in the wrong namespace. Sockets fn opens stay in ns after it returns.
func inNS(t *testing.T, ns netns.NsHandle, fn func() error) error {
	t.Helper()
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

// newNS returns a new, anonymous network namespace with loopback up. It
// vanishes, with every link in it, when the test closes its handle: nothing
// is left in /run/netns even if the test binary is killed.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	type res struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		ns, err := netns.New()
		if err == nil {
			if lo, lerr := netlink.LinkByName("lo"); lerr == nil {
				err = netlink.LinkSetUp(lo)
			}
		}
		ch <- res{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

// handle returns a netlink handle whose sockets live in ns.
func handle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// vethInto creates a veth pair: hostEnd in hostNS, peer (named peerName,
// with MAC mac if given) in peerNS, both up.
func vethInto(t *testing.T, hostNS, peerNS netns.NsHandle, hostEnd, peerName string, mac net.HardwareAddr) {
	t.Helper()
	hh, ph := handle(t, hostNS), handle(t, peerNS)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostEnd}, PeerName: peerName, PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(peerNS)}
	if err := hh.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", hostEnd, peerName, err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{hh, hostEnd}, {ph, peerName}} {
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// addAddr puts cidr (an address with its prefix) on a link in ns.
func addAddr(t *testing.T, ns netns.NsHandle, link, cidr string) {
	t.Helper()
	h := handle(t, ns)
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if a.IP.To4() == nil {
		// Usable at once: a test that sends from it must not race
		// duplicate address detection.
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", cidr, link, err)
	}
}

// staticLeases is a LeaseSource over a fixed table.
type staticLeases struct {
	mu     sync.Mutex
	nw     netfabric.Network
	byMAC  map[string]netip.Addr
	byName map[string]string
	ports  []netfabric.Port
}

// addPort adds a port, as the state has one for every VM NIC: a lease, and
// a port that port security knows.
func (s *staticLeases) addPort(id string, mac net.HardwareAddr, ip string) {
	s.add(mac, ip, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ports = append(s.ports, netfabric.Port{ID: id, NetworkID: s.nw.ID, Owner: "test", MAC: mac.String(), IP: ip})
}

func (s *staticLeases) PortByMAC(mac net.HardwareAddr) (netfabric.Port, bool) {
	for _, p := range s.Ports() {
		if p.MAC == mac.String() {
			return p, true
		}
	}
	return netfabric.Port{}, false
}

func (s *staticLeases) Ports() []netfabric.Port {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netfabric.Port(nil), s.ports...)
}

// Filters: the table's ports are all on the NAT network.
func (s *staticLeases) Filters([]string) map[string]netfabric.PortFilter { return nil }

func newLeases(nw netfabric.Network) *staticLeases {
	return &staticLeases{nw: nw, byMAC: map[string]netip.Addr{}, byName: map[string]string{}}
}

func (s *staticLeases) add(mac net.HardwareAddr, ip, hostname string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byMAC[mac.String()] = netip.MustParseAddr(ip)
	s.byName[mac.String()] = hostname
}

func (s *staticLeases) Lease(mac net.HardwareAddr) (netip.Addr, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ip, ok := s.byMAC[mac.String()]
	return ip, s.byName[mac.String()], ok
}

func (s *staticLeases) Network() (netfabric.Network, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nw, true
}

func (s *staticLeases) setDNS(dns ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nw.DNS = dns
}
