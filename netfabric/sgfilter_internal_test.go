package netfabric

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestDisjointBoxes checks, for random rule sets, that the disjoint boxes
// allow exactly what the rules allow, and that no two of them overlap
// (nftables refuses overlapping set elements).
func TestDisjointBoxes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func(n uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{10, 0, byte(n >> 8), byte(n)})
	}
	pick := func(vals ...uint32) uint32 { return vals[rng.IntN(len(vals))] }
	for round := 0; round < 300; round++ {
		var bs []box
		for i := rng.IntN(12) + 1; i > 0; i-- {
			b := box{proto: [2]uint8{0, 255}, port: [2]uint16{0, 65535}, addr: [2]netip.Addr{addr(0), addr(1023)}}
			if rng.IntN(3) > 0 {
				p := uint8(pick(1, 6, 17, 47, 58))
				b.proto = [2]uint8{p, p}
			}
			if rng.IntN(3) > 0 {
				lo := uint16(pick(20, 22, 80, 443, 1000, 8080))
				b.port = [2]uint16{lo, lo + uint16(pick(0, 0, 5, 100))}
			}
			if rng.IntN(3) > 0 {
				lo := pick(0, 3, 16, 100, 256, 512)
				b.addr = [2]netip.Addr{addr(lo), addr(lo + pick(0, 0, 3, 15, 255))}
			}
			bs = append(bs, b)
		}
		d := disjoint(bs)
		for i := range d {
			for j := i + 1; j < len(d); j++ {
				a, b := d[i], d[j]
				if a.proto[0] <= b.proto[1] && b.proto[0] <= a.proto[1] && a.port[0] <= b.port[1] && b.port[0] <= a.port[1] &&
					!b.addr[1].Less(a.addr[0]) && !a.addr[1].Less(b.addr[0]) {
					t.Fatalf("round %d: boxes %v and %v overlap (from %v)", round, a, b, bs)
				}
			}
		}
		for k := 0; k < 400; k++ {
			proto := uint8(pick(0, 1, 6, 17, 47, 58, 200, 255))
			port := uint16(pick(0, 19, 20, 21, 22, 23, 79, 80, 81, 85, 443, 444, 1000, 1105, 8080, 8180, 65535))
			a := addr(pick(0, 1, 2, 3, 4, 15, 16, 31, 99, 100, 101, 255, 256, 300, 511, 512, 767, 768, 1023))
			if got, want := matches(d, proto, port, a), matches(bs, proto, port, a); got != want {
				t.Fatalf("round %d: proto %d port %d from %s: disjoint says %v, the rules %v (rules %v, boxes %v)", round, proto, port, a, got, want, bs, d)
			}
		}
	}
}

// TestDisjointBoxesStaySmall: a thousand single-port rules from one
// network, beside a group allowing all from its members, stay about a
// thousand elements rather than their product.
func TestDisjointBoxesStaySmall(t *testing.T) {
	var bs []box
	for i := 0; i < 1000; i++ {
		p := uint16(10000 + 2*i)
		bs = append(bs, box{proto: [2]uint8{6, 6}, port: [2]uint16{p, p}, addr: [2]netip.Addr{netip.MustParseAddr("192.0.2.0"), netip.MustParseAddr("192.0.2.255")}})
	}
	for i := 0; i < 20; i++ {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)})
		bs = append(bs, box{proto: [2]uint8{0, 255}, port: [2]uint16{0, 65535}, addr: [2]netip.Addr{a, a}})
	}
	d := disjoint(bs)
	if len(d) > 25*1000 {
		t.Fatalf("%d boxes from %d", len(d), len(bs))
	}
	t.Logf("%d rules became %d set elements", len(bs), len(d))
}

func TestOnlyRefused(t *testing.T) {
	refused := &RefusedError{Err: errors.New("port p: too big")}
	other := errors.New("netlink: busy")
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{other, false},
		{refused, true},
		{fmt.Errorf("reconcile segments: %w", errors.Join(refused)), true},
		{fmt.Errorf("reconcile segments: %w", errors.Join(refused, other)), false},
		{fmt.Errorf("reconcile segments: %w", errors.Join(other)), false},
	} {
		if got := OnlyRefused(c.err); got != c.want {
			t.Errorf("OnlyRefused(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
