package netfabric_test

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// A guest that got its address by DHCP reaches a TCP server outside, which
// sees the host's outside address (masquerade), although the outside has no
// route back to the guest network. A new connection from outside towards
// the guest is dropped even when the outside has a route.
func TestNAT(t *testing.T) {
	f := newHostFixture(t)
	guest, outside := newNS(t), newNS(t)
	mac := net.HardwareAddr{0x02, 0xca, 0x1e, 0x00, 0x00, 0x02}
	f.leases.add(mac, "10.77.0.42", "guest")
	vethInto(t, f.ns, guest, "gv0", "eth0", mac)
	h := handle(t, f.ns)
	br, _ := h.LinkByName(f.cfg.Bridge)
	gv, _ := h.LinkByName("gv0")
	if err := h.LinkSetMaster(gv, br); err != nil {
		t.Fatal(err)
	}
	vethInto(t, f.ns, outside, "up0", "eth0", nil)
	addAddr(t, f.ns, "up0", "198.51.100.1/24")
	addAddr(t, outside, "eth0", "198.51.100.2/24")

	// The guest configures itself from its lease.
	lease, err := dhcpLease(t, guest, "eth0", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	gh := handle(t, guest)
	eth0, _ := gh.LinkByName("eth0")
	ones, _ := net.IPMask(lease.ACK.SubnetMask()).Size()
	if err := gh.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: lease.ACK.YourIPAddr, Mask: net.CIDRMask(ones, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := gh.RouteAdd(&netlink.Route{Gw: lease.ACK.Router()[0]}); err != nil {
		t.Fatal(err)
	}

	var ln net.Listener
	if err := inNS(t, outside, func() (err error) { ln, err = net.Listen("tcp4", "198.51.100.2:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	if err := inNS(t, guest, func() error {
		c, err := net.DialTimeout("tcp4", "198.51.100.2:8080", 5*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("guest to outside: %v", err)
	}
	select {
	case ip := <-seen:
		if ip != "198.51.100.1" {
			t.Fatalf("outside saw the connection from %s, want the host's 198.51.100.1", ip)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("outside accepted nothing")
	}

	// Inbound: give the outside a route to the guests; still nothing gets in.
	oh := handle(t, outside)
	_, guests, _ := net.ParseCIDR("10.77.0.0/24")
	if err := oh.RouteAdd(&netlink.Route{Dst: guests, Gw: net.ParseIP("198.51.100.1")}); err != nil {
		t.Fatal(err)
	}
	var gl net.Listener
	if err := inNS(t, guest, func() (err error) { gl, err = net.Listen("tcp4", "10.77.0.42:22"); return err }); err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	err = inNS(t, outside, func() error {
		c, err := net.DialTimeout("tcp4", "10.77.0.42:22", time.Second)
		if err == nil {
			c.Close()
			return errors.New("connected")
		}
		return nil
	})
	if err != nil {
		t.Fatal(fmt.Errorf("outside to guest: %w; want the forward chain to drop it", err))
	}
}
