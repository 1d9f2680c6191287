package netfabric_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The cluster address on one node: Release removes any copy (one an older
// agent added with its subnet's length included), Hold takes it as a /32
// with a short lifetime it keeps renewing, and gives it up when its
// context ends.
func TestVIPHoldAndRelease(t *testing.T) {
	requireRoot(t)
	ns, peer := newNS(t), newNS(t)
	vethInto(t, ns, peer, "mgmt0", "eth0", nil)
	addAddr(t, ns, "mgmt0", "192.0.2.5/24")
	addAddr(t, ns, "mgmt0", "192.0.2.10/24") // left by a killed agent of an older version
	v := &netfabric.VIP{Prefix: netip.MustParsePrefix("192.0.2.10/24"), Iface: "mgmt0",
		Log: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))}
	copies := func() []netlink.Addr { t.Helper(); return addrCopies(t, ns, "mgmt0", "192.0.2.10") }
	if err := inNS(t, ns, v.Release); err != nil {
		t.Fatal(err)
	}
	if c := copies(); len(c) != 0 {
		t.Fatalf("Release left %v", c)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = inNS(t, ns, func() error { v.Hold(ctx); return nil })
	}()
	testutil.WaitFor(t, 5*time.Second, "the address held", func() error {
		c := copies()
		if len(c) != 1 {
			return fmt.Errorf("copies %v", c)
		}
		if ones, _ := c[0].Mask.Size(); ones != 32 || c[0].ValidLft <= 0 || c[0].ValidLft > 3 {
			return fmt.Errorf("held as %s with lifetime %d", c[0].IPNet, c[0].ValidLft)
		}
		return nil
	})
	// Renewed: still there after more than one lifetime.
	time.Sleep(4 * time.Second)
	if c := copies(); len(c) != 1 {
		t.Fatalf("the held address lapsed: %v", c)
	}
	cancel()
	<-done
	if c := copies(); len(c) != 0 {
		t.Fatalf("given up, the address is still there: %v", c)
	}
}

// The cluster address's IPv6 twin: held with its prefix, deprecated (never
// a source address of the node's own), answering at once (no duplicate
// address detection), announced to the link by an
// unsolicited neighbour advertisement with the override flag, and given up
// with the holder's context.
func TestVIP6HoldAnnouncesAndReleases(t *testing.T) {
	requireRoot(t)
	ns, peer := newNS(t), newNS(t)
	vethInto(t, ns, peer, "mgmt0", "eth0", nil)
	vip6, err := netfabric.ParseVIP6("fd12:3456:789a::10/64")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"192.0.2.10/24", "fe80::10/64", "fd12::/64", "ff02::1/64", "fd12::10"} {
		if _, err := netfabric.ParseVIP6(bad); err == nil {
			t.Errorf("--vip6 %s was accepted", bad)
		}
	}
	v := &netfabric.VIP{Prefix: vip6, Iface: "mgmt0", Log: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))}

	// The peer listens for neighbour advertisements once its link-local
	// address has passed duplicate address detection.
	var c *ndp.Conn
	testutil.WaitFor(t, 10*time.Second, "the peer's link-local address", func() error {
		return inNS(t, peer, func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
			return err
		})
	})
	defer c.Close()
	heard := make(chan *ndp.NeighborAdvertisement, 8)
	go func() {
		for {
			m, _, _, err := c.ReadFrom()
			if err != nil {
				return
			}
			if na, ok := m.(*ndp.NeighborAdvertisement); ok {
				heard <- na
			}
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = inNS(t, ns, func() error { v.Hold(ctx); return nil })
	}()
	copies := func() []netlink.Addr { t.Helper(); return addrCopies(t, ns, "mgmt0", "fd12:3456:789a::10") }
	testutil.WaitFor(t, 5*time.Second, "the IPv6 address held", func() error {
		c := copies()
		if len(c) != 1 {
			return fmt.Errorf("copies %v", c)
		}
		if ones, _ := c[0].Mask.Size(); ones != 64 || c[0].ValidLft <= 0 || c[0].ValidLft > 3 || c[0].PreferedLft != 0 || c[0].Flags&unix.IFA_F_TENTATIVE != 0 {
			return fmt.Errorf("held as %s, lifetimes %d/%d, flags %#x", c[0].IPNet, c[0].ValidLft, c[0].PreferedLft, c[0].Flags)
		}
		return nil
	})
	select {
	case na := <-heard:
		mac := ""
		for _, o := range na.Options {
			if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target {
				mac = l.Addr.String()
			}
		}
		h := handle(t, ns)
		l, _ := h.LinkByName("mgmt0")
		if na.TargetAddress.String() != "fd12:3456:789a::10" || !na.Override || mac != l.Attrs().HardwareAddr.String() {
			t.Fatalf("advertisement: target %s override %v MAC %s", na.TargetAddress, na.Override, mac)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no neighbour advertisement for the address")
	}
	cancel()
	<-done
	if c := copies(); len(c) != 0 {
		t.Fatalf("given up, the IPv6 address is still there: %v", c)
	}
}

// addrCopies returns the copies of address ip on link in ns.
func addrCopies(t *testing.T, ns netns.NsHandle, link, ip string) []netlink.Addr {
	t.Helper()
	h := handle(t, ns)
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Addr
	for _, a := range as {
		if a.IP.String() == ip {
			out = append(out, a)
		}
	}
	return out
}
