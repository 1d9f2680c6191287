package harness

import (
	"fmt"
	"net/netip"
)

// Bridge is a private L2 segment on the host for guests that are not
// harness nodes, such as QEMU VMs: a bridge holding the host's address .1,
// with TAP devices plugged in. Everything is named like the harness's own
// networks, so it is removed at the end of the test, or by CleanupStale
// after a crash. Root only.
type Bridge struct {
	Name   string
	Subnet netip.Prefix
}

// NewBridge reserves a bridge and a /24 for the rest of the test.
func NewBridge(t T) *Bridge {
	t.Helper()
	if !isRoot() {
		t.Fatalf("harness: a bridge needs root")
	}
	staleOnce.Do(func() {
		if err := CleanupStale(); err != nil {
			t.Logf("harness: %v", err)
		}
	})
	name, subnet, err := reserveNetwork()
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(func() {
		if err := removeNetwork(name); err != nil {
			t.Logf("harness: %v", err)
		}
	})
	t.Logf("harness: bridge %s with %s", name, hostAddr(subnet))
	return &Bridge{Name: name, Subnet: subnet}
}

// HostAddr is the host's address on the bridge.
func (b *Bridge) HostAddr() netip.Addr { return hostAddr(b.Subnet) }

// Addr is guest i's address (.10+i), as for harness nodes.
func (b *Bridge) Addr(i int) netip.Addr {
	a, err := nodeAddr(b.Subnet, i)
	if err != nil {
		panic(err)
	}
	return a
}

// AddTap creates guest i's TAP device on the bridge and returns its name.
func (b *Bridge) AddTap(i int) (string, error) {
	if i >= clientIndex {
		return "", fmt.Errorf("tap %d: index out of range 1..%d", i, clientIndex-1)
	}
	tap := vethName(b.Name, i)
	for _, argv := range [][]string{
		{"tuntap", "add", "dev", tap, "mode", "tap"},
		{"link", "set", tap, "master", b.Name},
		{"link", "set", tap, "up"},
	} {
		if _, err := run("ip", argv...); err != nil {
			return "", fmt.Errorf("tap of guest %d: %w", i, err)
		}
	}
	return tap, nil
}
