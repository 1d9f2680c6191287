package netfabric_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/vishvananda/netlink"
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
	copies := func() []netlink.Addr {
		t.Helper()
		h := handle(t, ns)
		l, err := h.LinkByName("mgmt0")
		if err != nil {
			t.Fatal(err)
		}
		as, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var out []netlink.Addr
		for _, a := range as {
			if a.IP.String() == "192.0.2.10" {
				out = append(out, a)
			}
		}
		return out
	}
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
