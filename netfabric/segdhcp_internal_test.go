package netfabric

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// The segment servers' socket filters pass exactly what the servers
// answer: unfragmented UDP to port 67; ARP requests for the gateway.
func TestSegmentFilters(t *testing.T) {
	gw := netip.MustParseAddr("10.50.0.1")
	dhcpOnly, arpOnly, err := segmentFilters(gw)
	if err != nil {
		t.Fatal(err)
	}
	vm := func(raw []bpf.RawInstruction) *bpf.VM {
		var ins []bpf.Instruction
		for _, r := range raw {
			ins = append(ins, r.Disassemble())
		}
		v, err := bpf.NewVM(ins)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	dv, av := vm(dhcpOnly), vm(arpOnly)
	src, dst := netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255")
	udp := func(dport int, mutate func([]byte)) []byte {
		b := udp4(src, dst, 68, dport, make([]byte, 300))
		if mutate != nil {
			mutate(b)
		}
		return b
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"DHCP request", udp(67, nil), true},
		{"DHCP request with IPv4 options", func() []byte {
			b := udp(67, nil)
			opt := append(append([]byte{}, b[:20]...), 1, 1, 1, 1) // four NOPs
			opt[0] = 0x46
			return append(opt, b[20:]...)
		}(), true},
		{"UDP to another port", udp(53, nil), false},
		{"a DHCP answer", udp(68, nil), false},
		{"TCP to port 67", udp(67, func(b []byte) { b[9] = 6 }), false},
		{"a later fragment", udp(67, func(b []byte) { binary.BigEndian.PutUint16(b[6:], 0x0010) }), false},
		{"a first fragment", udp(67, func(b []byte) { binary.BigEndian.PutUint16(b[6:], 0x2000) }), false},
	} {
		n, err := dv.Run(c.pkt)
		if err != nil || (n > 0) != c.pass {
			t.Errorf("DHCP filter, %s: %d %v, want pass=%v", c.name, n, err, c.pass)
		}
	}
	arp := func(op uint16, target [4]byte) []byte {
		b := make([]byte, 28)
		binary.BigEndian.PutUint16(b[0:], 1)
		binary.BigEndian.PutUint16(b[2:], 0x0800)
		b[4], b[5] = 6, 4
		binary.BigEndian.PutUint16(b[6:], op)
		copy(b[24:], target[:])
		return b
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"who-has the gateway", arp(1, gw.As4()), true},
		{"who-has another address", arp(1, [4]byte{10, 50, 0, 9}), false},
		{"a reply about the gateway", arp(2, gw.As4()), false},
	} {
		n, err := av.Run(c.pkt)
		if err != nil || (n > 0) != c.pass {
			t.Errorf("ARP filter, %s: %d %v, want pass=%v", c.name, n, err, c.pass)
		}
	}
}
