package netfabric_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/netfabric"
)

// msgTestCreateVM stands in for the hypervisor's "create VM" command: it
// allocates NICs inside its own transaction and may then fail, to show the
// ports go with it. The number is far outside every domain's range.
const msgTestCreateVM consensus.MessageType = 0x3ff0

type testVMCmd struct {
	ID   string `json:"id"`
	NICs int    `json:"nics"`
	Fail bool   `json:"fail"`
}

func register(reg *consensus.Registry) {
	netfabric.Register(reg)
	consensus.Handle(reg, msgTestCreateVM, "TestCreateVM", func(tx *consensus.Tx, c *testVMCmd) (any, error) {
		var ports []*netfabric.Port
		for i := range c.NICs {
			p, err := netfabric.AllocatePort(tx, netfabric.PortRequest{
				ID: fmt.Sprintf("%s-nic%d", c.ID, i), NetworkID: "default", Owner: c.ID, Hostname: c.ID,
			})
			if err != nil {
				return nil, fmt.Errorf("create vm %s: %w", c.ID, err)
			}
			ports = append(ports, p)
		}
		if c.Fail {
			return nil, consensus.Errorf(consensus.CodeQuotaExceeded, "create vm %s: over quota", c.ID)
		}
		return ports, nil
	})
}

func startNode(t *testing.T) *consensus.Node {
	t.Helper()
	return consensustest.Start(t, 1, register).Nodes[0]
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func createNetwork(t *testing.T, n *consensus.Node, id, cidr string) netfabric.Network {
	t.Helper()
	var out netfabric.Network
	if _, err := n.Apply(context.Background(), netfabric.MsgCreateNetwork, netfabric.Network{ID: id, Name: id, CIDR: cidr, CreatedAt: t0}, &out); err != nil {
		t.Fatalf("create network %s %s: %v", id, cidr, err)
	}
	return out
}

func createPort(n *consensus.Node, req netfabric.PortRequest) (netfabric.Port, error) {
	var out netfabric.Port
	_, err := n.Apply(context.Background(), netfabric.MsgCreatePort, req, &out)
	return out, err
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := consensus.ErrorCode(err); got != code {
		t.Fatalf("error %v (code %q), want code %q", err, got, code)
	}
}

func TestCreateNetwork(t *testing.T) {
	n := startNode(t)
	nw := createNetwork(t, n, "default", "10.42.0.0/24")
	if nw.Gateway != "10.42.0.1" || nw.CIDR != "10.42.0.0/24" || nw.Version == 0 || !nw.CreatedAt.Equal(t0) {
		t.Fatalf("created %+v", nw)
	}
	// Same CIDR again: a no-op that returns what is there.
	again := createNetwork(t, n, "default", "10.42.0.0/24")
	if again.Version != nw.Version {
		t.Fatalf("re-create changed the network: %+v", again)
	}
	ctx := context.Background()
	_, err := n.Apply(ctx, netfabric.MsgCreateNetwork, netfabric.Network{ID: "default", CIDR: "10.43.0.0/24"}, nil)
	wantCode(t, err, consensus.CodeConflict)
	_, err = n.Apply(ctx, netfabric.MsgCreateNetwork, netfabric.Network{ID: "other", CIDR: "10.42.0.128/25"}, nil)
	wantCode(t, err, consensus.CodeConflict) // overlaps default

	for _, bad := range []string{
		"", "10.0.0.0", "fd00::/64", "::ffff:10.0.0.0/120", "10.0.0.0/8", "10.0.0.0/30", "10.0.0.1/24",
		"127.1.0.0/24", "169.254.10.0/24", "224.1.0.0/24", "239.0.0.0/16", "0.1.0.0/24", "255.255.255.0/24",
	} {
		_, err := n.Apply(ctx, netfabric.MsgCreateNetwork, netfabric.Network{ID: "bad", CIDR: bad}, nil)
		if consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Errorf("CIDR %q: error %v, want invalid", bad, err)
		}
	}
	_, err = n.Apply(ctx, netfabric.MsgCreateNetwork, netfabric.Network{ID: "dns", CIDR: "10.50.0.0/24", DNS: []string{"not-an-ip"}}, nil)
	wantCode(t, err, consensus.CodeInvalid)
	_, err = n.Apply(ctx, netfabric.MsgCreateNetwork, netfabric.Network{ID: "Bad ID", CIDR: "10.50.0.0/24"}, nil)
	wantCode(t, err, consensus.CodeInvalid)

	if got := netfabric.ListNetworks(n.Store().ReadTxn()); len(got) != 1 || got[0].ID != "default" {
		t.Fatalf("rejected commands left networks behind: %+v", got)
	}
}

func TestAllocationOrderExhaustionAndReuse(t *testing.T) {
	n := startNode(t)
	createNetwork(t, n, "default", "10.42.0.0/29") // hosts .1 (gateway) to .6; .7 broadcast
	var got []string
	for i := range 5 {
		p, err := createPort(n, netfabric.PortRequest{ID: fmt.Sprintf("p%d", i), NetworkID: "default", Owner: fmt.Sprintf("vm%d", i%2)})
		if err != nil {
			t.Fatal(err)
		}
		if p.MAC != netfabric.MACFor(p.ID).String() {
			t.Errorf("port %s: MAC %s, want MACFor(id) %s", p.ID, p.MAC, netfabric.MACFor(p.ID))
		}
		got = append(got, p.IP)
	}
	if want := []string{"10.42.0.2", "10.42.0.3", "10.42.0.4", "10.42.0.5", "10.42.0.6"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	_, err := createPort(n, netfabric.PortRequest{ID: "p5", NetworkID: "default", Owner: "vm9"})
	wantCode(t, err, consensus.CodeConflict)

	// vm1 owns p1 (.3) and p3 (.5): releasing frees both, and the lowest comes back first.
	if _, err := n.Apply(context.Background(), netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm1"}, nil); err != nil {
		t.Fatal(err)
	}
	if ps := netfabric.PortsOf(n.Store().ReadTxn(), "vm1"); len(ps) != 0 {
		t.Fatalf("vm1 still has ports %+v", ps)
	}
	p, err := createPort(n, netfabric.PortRequest{ID: "p6", NetworkID: "default", Owner: "vm9"})
	if err != nil || p.IP != "10.42.0.3" {
		t.Fatalf("after release got %+v, %v; want 10.42.0.3", p, err)
	}
	// Releasing again, or an owner with nothing, is fine.
	if _, err := n.Apply(context.Background(), netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm1"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = n.Apply(context.Background(), netfabric.MsgDeleteNetwork, netfabric.DeleteNetworkCmd{ID: "default"}, nil)
	wantCode(t, err, consensus.CodeConflict) // still has ports
}

func TestPortConflictsAndValidation(t *testing.T) {
	n := startNode(t)
	createNetwork(t, n, "default", "10.42.0.0/24")
	p, err := createPort(n, netfabric.PortRequest{ID: "a", NetworkID: "default", Owner: "vm-a", MAC: "02:00:00:00:00:0A", IP: "10.42.0.200", Hostname: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if p.MAC != "02:00:00:00:00:0a" || p.IP != "10.42.0.200" || p.Hostname != "web-1" {
		t.Fatalf("port %+v", p)
	}
	txn := n.Store().ReadTxn()
	if got := netfabric.PortByMAC(txn, net.HardwareAddr{2, 0, 0, 0, 0, 0xa}); got == nil || got.ID != "a" {
		t.Fatalf("PortByMAC: %+v", got)
	}
	cases := []struct {
		req  netfabric.PortRequest
		code string
	}{
		{netfabric.PortRequest{ID: "b", NetworkID: "default", Owner: "vm-b", MAC: "02:00:00:00:00:0a"}, consensus.CodeConflict}, // MAC taken
		{netfabric.PortRequest{ID: "b", NetworkID: "default", Owner: "vm-b", IP: "10.42.0.200"}, consensus.CodeConflict},        // IP taken
		{netfabric.PortRequest{ID: "a", NetworkID: "default", Owner: "vm-b"}, consensus.CodeAlreadyExists},
		{netfabric.PortRequest{ID: "b", NetworkID: "nope", Owner: "vm-b"}, consensus.CodeNotFound},
		{netfabric.PortRequest{ID: "b", NetworkID: "default", Owner: "vm-b", IP: "10.42.0.1"}, consensus.CodeInvalid},   // gateway
		{netfabric.PortRequest{ID: "b", NetworkID: "default", Owner: "vm-b", IP: "10.42.0.255"}, consensus.CodeInvalid}, // broadcast
		{netfabric.PortRequest{ID: "b", NetworkID: "default", Owner: "vm-b", IP: "10.43.0.5"}, consensus.CodeInvalid},   // outside
		{netfabric.PortRequest{ID: "b", NetworkID: "default", Owner: "vm-b", MAC: "01:00:5e:00:00:01"}, consensus.CodeInvalid},
		{netfabric.PortRequest{ID: "b", NetworkID: "default", Owner: "vm-b", Hostname: "no_underscores"}, consensus.CodeInvalid},
		{netfabric.PortRequest{ID: "b", NetworkID: "default"}, consensus.CodeInvalid}, // no owner
	}
	for _, c := range cases {
		_, err := createPort(n, c.req)
		if consensus.ErrorCode(err) != c.code {
			t.Errorf("%+v: error %v, want %s", c.req, err, c.code)
		}
	}
	if ps := netfabric.PortsOf(n.Store().ReadTxn(), "vm-b"); len(ps) != 0 {
		t.Fatalf("rejected requests left ports: %+v", ps)
	}
}

// Another domain's command that allocates ports and then fails leaves nothing.
func TestRejectedCommandLeavesStateUnchanged(t *testing.T) {
	n := startNode(t)
	createNetwork(t, n, "default", "10.42.0.0/24")
	ctx := context.Background()
	_, err := n.Apply(ctx, msgTestCreateVM, testVMCmd{ID: "vm1", NICs: 2, Fail: true}, nil)
	wantCode(t, err, consensus.CodeQuotaExceeded)
	if ps := netfabric.PortsOf(n.Store().ReadTxn(), "vm1"); len(ps) != 0 {
		t.Fatalf("failed command left ports: %+v", ps)
	}
	var ports []netfabric.Port
	if _, err := n.Apply(ctx, msgTestCreateVM, testVMCmd{ID: "vm1", NICs: 2}, &ports); err != nil {
		t.Fatal(err)
	}
	if len(ports) != 2 || ports[0].IP != "10.42.0.2" || ports[1].IP != "10.42.0.3" {
		t.Fatalf("ports %+v", ports)
	}
}

// A snapshot taken with ports in it brings them back when restored.
func TestSnapshotRestoreKeepsPorts(t *testing.T) {
	n := startNode(t)
	createNetwork(t, n, "default", "10.42.0.0/24")
	ctx := context.Background()
	if _, err := n.Apply(ctx, msgTestCreateVM, testVMCmd{ID: "vm1", NICs: 3}, nil); err != nil {
		t.Fatal(err)
	}
	before := netfabric.PortsOf(n.Store().ReadTxn(), "vm1")

	r := n.Raft()
	snap := r.Snapshot()
	if err := snap.Error(); err != nil {
		t.Fatal(err)
	}
	meta, rc, err := snap.Open()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(ctx, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(meta, bytes.NewReader(data), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	txn := n.Store().ReadTxn()
	if after := netfabric.PortsOf(txn, "vm1"); !reflect.DeepEqual(before, after) {
		t.Fatalf("after restore %+v, want %+v", after, before)
	}
	if nw := netfabric.GetNetwork(txn, "default"); nw == nil || nw.Gateway != "10.42.0.1" {
		t.Fatalf("network after restore: %+v", nw)
	}
	// The indexes came back too: the next port does not reuse an address.
	p, err := createPort(n, netfabric.PortRequest{ID: "next", NetworkID: "default", Owner: "vm2"})
	if err != nil || p.IP != "10.42.0.5" {
		t.Fatalf("port after restore %+v, %v; want 10.42.0.5", p, err)
	}
}

func TestMACFor(t *testing.T) {
	a, b := netfabric.MACFor("vm1-nic0"), netfabric.MACFor("vm1-nic1")
	if a.String() != netfabric.MACFor("vm1-nic0").String() || a.String() == b.String() {
		t.Fatalf("MACFor not deterministic or not distinct: %s %s", a, b)
	}
	if len(a) != 6 || a[0] != 0x02 {
		t.Fatalf("MACFor %s: want a locally administered unicast 02:... address", a)
	}
}

// StoreLeases answers the DHCP server from the replicated state.
func TestStoreLeases(t *testing.T) {
	n := startNode(t)
	createNetwork(t, n, "default", "10.42.0.0/24")
	createNetwork(t, n, "lab", "10.43.0.0/24")
	p, err := createPort(n, netfabric.PortRequest{ID: "a", NetworkID: "default", Owner: "vm-a", Hostname: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	q, err := createPort(n, netfabric.PortRequest{ID: "b", NetworkID: "lab", Owner: "vm-b"})
	if err != nil {
		t.Fatal(err)
	}
	l := netfabric.StoreLeases(n.Store(), "default")
	if ip, host, ok := l.Lease(p.HardwareAddr()); !ok || ip.String() != "10.42.0.2" || host != "web-1" {
		t.Fatalf("Lease(%s) = %s %q %v", p.MAC, ip, host, ok)
	}
	if _, _, ok := l.Lease(q.HardwareAddr()); ok {
		t.Fatal("a port of another network got a lease")
	}
	if _, _, ok := l.Lease(net.HardwareAddr{2, 0, 0, 0, 0, 1}); ok {
		t.Fatal("an unknown MAC got a lease")
	}
	if nw, ok := l.Network(); !ok || nw.Gateway != "10.42.0.1" {
		t.Fatalf("Network() = %+v, %v", nw, ok)
	}
	if _, ok := netfabric.StoreLeases(n.Store(), "nope").Network(); ok {
		t.Fatal("an unknown network was found")
	}
}
