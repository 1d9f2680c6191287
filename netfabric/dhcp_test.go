package netfabric_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netns"
)

// dhcpLease runs a DHCP client on ifname inside ns.
func dhcpLease(t *testing.T, ns netns.NsHandle, ifname string, timeout time.Duration) (*nclient4.Lease, error) {
	t.Helper()
	var lease *nclient4.Lease
	err := inNS(t, ns, func() error {
		c, err := nclient4.New(ifname, nclient4.WithTimeout(timeout/4), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		lease, err = c.Request(ctx)
		return err
	})
	return lease, err
}

// A guest behind a veth on the bridge gets exactly its port's lease; a MAC
// the lease source does not know gets no answer.
func TestDHCP(t *testing.T) {
	f := newHostFixture(t)
	guest, stranger := newNS(t), newNS(t)
	mac := net.HardwareAddr{0x02, 0xca, 0x1e, 0x00, 0x00, 0x01}
	f.leases.add(mac, "10.77.0.23", "web-1")
	vethInto(t, f.ns, guest, "gv0", "eth0", mac)
	vethInto(t, f.ns, stranger, "gv1", "eth0", net.HardwareAddr{0x02, 0xca, 0x1e, 0x00, 0x00, 0x99})
	h := handle(t, f.ns)
	br, err := h.LinkByName(f.cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gv0", "gv1"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetMaster(l, br); err != nil {
			t.Fatal(err)
		}
	}

	lease, err := dhcpLease(t, guest, "eth0", 10*time.Second)
	if err != nil {
		t.Fatalf("guest got no lease: %v", err)
	}
	a := lease.ACK
	if got := a.YourIPAddr.String(); got != "10.77.0.23" {
		t.Errorf("address %s, want 10.77.0.23", got)
	}
	if r := a.Router(); len(r) != 1 || !r[0].Equal(net.ParseIP("10.77.0.1")) {
		t.Errorf("router %v, want 10.77.0.1", r)
	}
	if m := net.IP(a.SubnetMask()).String(); m != "255.255.255.0" {
		t.Errorf("mask %s, want 255.255.255.0", m)
	}
	// The network names no DNS servers: the host's non-loopback IPv4 ones.
	if d := a.DNS(); len(d) != 1 || !d[0].Equal(net.ParseIP("192.0.2.53")) {
		t.Errorf("DNS %v, want [192.0.2.53]", d)
	}
	if hn := a.HostName(); hn != "web-1" {
		t.Errorf("hostname %q, want web-1", hn)
	}
	if lt := a.IPAddressLeaseTime(0); lt != time.Hour {
		t.Errorf("lease time %s, want 1h", lt)
	}
	if sid := a.ServerIdentifier(); !sid.Equal(net.ParseIP("10.77.0.1")) {
		t.Errorf("server identifier %v", sid)
	}
	select {
	case got := <-f.acks:
		if got.mac != mac.String() || got.ip != netip.MustParseAddr("10.77.0.23") {
			t.Errorf("OnLease(%s, %s)", got.mac, got.ip)
		}
	case <-time.After(5 * time.Second):
		t.Error("OnLease was not called after the ACK")
	}

	// DNS servers the network names win over the host's, without a Reconcile.
	f.leases.setDNS("9.9.9.9", "149.112.112.112")
	again, err := dhcpLease(t, guest, "eth0", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d := again.ACK.DNS(); len(d) != 2 || !d[0].Equal(net.ParseIP("9.9.9.9")) {
		t.Errorf("DNS %v, want the network's [9.9.9.9 149.112.112.112]", d)
	}

	// A REQUEST for another address is refused.
	err = inNS(t, guest, func() error {
		c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
		if err != nil {
			return err
		}
		defer c.Close()
		offer := *lease.Offer
		offer.YourIPAddr = net.ParseIP("10.77.0.99").To4()
		_, err = c.RequestFromOffer(context.Background(), &offer)
		return err
	})
	if !errors.As(err, new(*nclient4.ErrNak)) {
		t.Errorf("REQUEST for a foreign address: %v, want a NAK", err)
	}

	if l, err := dhcpLease(t, stranger, "eth0", 2*time.Second); err == nil {
		t.Fatalf("an unknown MAC got a lease: %v", l.ACK.Summary())
	}
}
