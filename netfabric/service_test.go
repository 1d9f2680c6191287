package netfabric_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/netfabric"
)

const testPassword = "night-shift-9471"

type svcEnv struct {
	t                           *testing.T
	node                        *consensus.Node
	id                          *identity.Service
	svc                         *netfabric.Service
	admin, nurse, visitor, tech *identity.Principal
	ward, lab                   string
}

func newSvcEnv(t *testing.T) *svcEnv {
	t.Helper()
	n := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		netfabric.Register(r)
	}).Nodes[0]
	ctx := context.Background()
	id := identity.NewService(n, identity.DefaultConfig())
	e := &svcEnv{t: t, node: n, id: id, svc: netfabric.NewService(n, id)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := id.CreateFirstAdmin(ctx, "admin", "cluster-root-6161")
	must(err)
	login := func(user, pw string) *identity.Principal {
		tok, _, err := id.Login(ctx, user, pw)
		must(err)
		p, err := id.Authenticate(ctx, tok)
		must(err)
		return p
	}
	e.admin = login("admin", "cluster-root-6161")
	ward, err := id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "ward"})
	must(err)
	lab, err := id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "lab"})
	must(err)
	e.ward, e.lab = ward.ID, lab.ID
	for _, u := range []struct {
		name, project string
		role          identity.Role
	}{{"nurse", "ward", identity.RoleMember}, {"visitor", "ward", identity.RoleReader}, {"tech", "lab", identity.RoleMember}} {
		_, err = id.CreateUser(ctx, e.admin, identity.UserSpec{Name: u.name, Password: testPassword})
		must(err)
		must(id.SetMember(ctx, e.admin, u.project, u.name, u.role))
	}
	e.nurse, e.visitor, e.tech = login("nurse", testPassword), login("visitor", testPassword), login("tech", testPassword)
	_, err = n.Apply(ctx, netfabric.MsgCreateNetwork, netfabric.Network{ID: "default", Name: "default", CIDR: "10.77.0.0/24", CreatedAt: t0}, nil)
	must(err)
	return e
}

// The network service: members create and delete their project's
// networks, readers see them, other projects do not; every user sees and
// nobody deletes the cluster's network; bad requests change nothing; the
// cluster network's ports are listed only for the caller's projects.
func TestNetworkService(t *testing.T) {
	e := newSvcEnv(t)
	ctx := context.Background()
	nw, err := e.svc.CreateNetwork(ctx, e.nurse, netfabric.NetworkCreate{Name: "imaging", CIDR: "10.50.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if nw.Project != e.ward || nw.VNI == 0 || nw.MTU != 1450 {
		t.Fatalf("created %+v", nw)
	}
	// The same name and CIDR in another project are its own, with a
	// conntrack zone of its own.
	other, err := e.svc.CreateNetwork(ctx, e.tech, netfabric.NetworkCreate{Name: "imaging", CIDR: "10.50.0.0/24"})
	if err != nil {
		t.Fatalf("another project's network of the same name and CIDR: %v", err)
	}
	if nw.CTZone == 0 || other.CTZone == 0 || nw.Zone() == other.Zone() || nw.Zone() >= 1<<15 {
		t.Fatalf("conntrack zones %d and %d", nw.Zone(), other.Zone())
	}
	count := func() int { return len(netfabric.ListNetworks(e.node.Store().ReadTxn())) }
	before := count()
	for _, c := range []struct {
		who  *identity.Principal
		req  netfabric.NetworkCreate
		code string
	}{
		{e.visitor, netfabric.NetworkCreate{Name: "x", CIDR: "10.60.0.0/24"}, consensus.CodeForbidden},
		{e.tech, netfabric.NetworkCreate{Name: "x", Project: "ward", CIDR: "10.60.0.0/24"}, consensus.CodeNotFound},
		{e.nurse, netfabric.NetworkCreate{Name: "imaging", CIDR: "10.60.0.0/24"}, consensus.CodeAlreadyExists},
		{e.nurse, netfabric.NetworkCreate{Name: "x", CIDR: "10.50.0.128/25"}, consensus.CodeConflict},
		{e.nurse, netfabric.NetworkCreate{Name: "x", CIDR: "10.60.0.1/24"}, consensus.CodeInvalid},
		{e.nurse, netfabric.NetworkCreate{Name: "x", CIDR: "fd00::/64"}, consensus.CodeInvalid},
		{e.nurse, netfabric.NetworkCreate{Name: "x", CIDR: "10.60.0.0/24", MTU: 100}, consensus.CodeInvalid},
		{e.nurse, netfabric.NetworkCreate{Name: "x", CIDR: "10.60.0.0/24", DNS: []string{"dns.example"}}, consensus.CodeInvalid},
		{e.nurse, netfabric.NetworkCreate{Name: "no spaces", CIDR: "10.60.0.0/24"}, consensus.CodeInvalid},
		{e.nurse, netfabric.NetworkCreate{Name: "default", CIDR: "10.60.0.0/24"}, consensus.CodeInvalid},
		{e.nurse, netfabric.NetworkCreate{Name: "net-0123456789abcdef", CIDR: "10.60.0.0/24"}, consensus.CodeInvalid},
		{e.nurse, netfabric.NetworkCreate{Name: "x", CIDR: "10.60.0.0/24", DNS: []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6", "1.1.1.7", "1.1.1.8", "1.1.1.9"}}, consensus.CodeInvalid},
		{e.admin, netfabric.NetworkCreate{Name: "x", CIDR: "10.60.0.0/24"}, consensus.CodeInvalid}, // in no project: say which
	} {
		if _, err := e.svc.CreateNetwork(ctx, c.who, c.req); consensus.ErrorCode(err) != c.code {
			t.Errorf("create %+v as %s: %v, want %s", c.req, c.who.User.Name, err, c.code)
		}
	}
	if count() != before {
		t.Fatalf("refused creates left %d networks behind", count()-before)
	}

	if _, err := e.svc.GetNetwork(ctx, e.visitor, "imaging"); err != nil {
		t.Fatalf("a reader of the project: %v", err)
	}
	if _, err := e.svc.GetNetwork(ctx, e.tech, nw.ID); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("another project's network by ID: %v, want not_found", err)
	}
	if got, _ := e.svc.GetNetwork(ctx, e.tech, "imaging"); got == nil || got.Project != e.lab {
		t.Fatalf("tech's imaging is lab's own: %+v", got)
	}
	for _, p := range []*identity.Principal{e.visitor, e.tech} {
		ns, err := e.svc.ListNetworks(p, "")
		if err != nil || len(ns) != 2 || ns[0].ID != "default" && ns[1].ID != "default" {
			t.Fatalf("%s sees %+v (%v): their project's and the cluster's", p.User.Name, ns, err)
		}
	}
	if ns, _ := e.svc.ListNetworks(e.admin, ""); len(ns) != 3 {
		t.Fatalf("a cluster admin sees every network: %+v", ns)
	}

	// Ports of the cluster's network: each project sees its own.
	for _, r := range []netfabric.PortRequest{
		{ID: "p-ward", NetworkID: "default", Owner: "vm-w", Project: e.ward, CreatedAt: t0},
		{ID: "p-lab", NetworkID: "default", Owner: "vm-l", Project: e.lab, CreatedAt: t0},
		{ID: "p-img", NetworkID: nw.ID, Owner: "vm-i", Project: e.ward, CreatedAt: t0},
	} {
		if _, err := e.node.Apply(ctx, netfabric.MsgCreatePort, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	if ps, err := e.svc.ListPorts(ctx, e.visitor, "default"); err != nil || len(ps) != 1 || ps[0].ID != "p-ward" {
		t.Fatalf("ward's reader sees on the default network %+v (%v)", ps, err)
	}
	if ps, _ := e.svc.ListPorts(ctx, e.admin, "default"); len(ps) != 2 {
		t.Fatalf("a cluster admin sees every port: %+v", ps)
	}
	if _, err := e.svc.ListPorts(ctx, e.tech, nw.ID); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("another project's network's ports: %v", err)
	}

	// Deletes: not the cluster's network, not by a reader, not while a
	// port is on it; then the member's.
	for _, c := range []struct {
		who  *identity.Principal
		ref  string
		code string
	}{
		{e.nurse, "default", consensus.CodeForbidden},
		{e.admin, "default", consensus.CodeForbidden},
		{e.visitor, nw.ID, consensus.CodeForbidden},
		{e.tech, nw.ID, consensus.CodeNotFound},
		{e.nurse, nw.ID, consensus.CodeConflict}, // p-img is on it
	} {
		if _, err := e.svc.DeleteNetwork(ctx, c.who, c.ref); consensus.ErrorCode(err) != c.code {
			t.Errorf("delete %s as %s: %v, want %s", c.ref, c.who.User.Name, err, c.code)
		}
	}
	if count() != before {
		t.Fatal("a refused delete removed a network")
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm-i"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DeleteNetwork(ctx, e.nurse, "imaging"); err != nil {
		t.Fatal(err)
	}
	if count() != before-1 {
		t.Fatal("the network is still there")
	}
}

// Networks and ports count against the project's quota, charged in the
// command that makes them and refunded by the one that removes them; a
// create past the limit is refused and changes nothing.
func TestNetworkQuotas(t *testing.T) {
	e := newSvcEnv(t)
	ctx := context.Background()
	limits := identity.DefaultQuota
	limits.Networks, limits.Ports = 1, 1
	if _, err := e.id.SetQuota(ctx, e.admin, "ward", limits, 0); err != nil {
		t.Fatal(err)
	}
	usage := func() identity.Resources {
		q, err := e.id.GetQuota(e.admin, "ward")
		if err != nil {
			t.Fatal(err)
		}
		return q.Usage
	}
	nw, err := e.svc.CreateNetwork(ctx, e.nurse, netfabric.NetworkCreate{Name: "imaging", CIDR: "10.50.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if u := usage(); u.Networks != 1 {
		t.Fatalf("usage after a network: %+v", u)
	}
	before := len(netfabric.ListNetworks(e.node.Store().ReadTxn()))
	if _, err := e.svc.CreateNetwork(ctx, e.nurse, netfabric.NetworkCreate{Name: "lab2", CIDR: "10.51.0.0/24"}); consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("a network past the quota: %v", err)
	}
	if len(netfabric.ListNetworks(e.node.Store().ReadTxn())) != before || usage().Networks != 1 {
		t.Fatal("a refused network changed something")
	}
	port := func(id, owner string) error {
		_, err := e.node.Apply(ctx, netfabric.MsgCreatePort, netfabric.PortRequest{ID: id, NetworkID: nw.ID, Owner: owner, Project: e.ward, Charge: true, CreatedAt: t0}, nil)
		return err
	}
	if err := port("p1", "vm-1"); err != nil {
		t.Fatal(err)
	}
	if err := port("p2", "vm-2"); consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("a port past the quota: %v", err)
	}
	if netfabric.GetPort(e.node.Store().ReadTxn(), "p2") != nil || usage().Ports != 1 {
		t.Fatal("a refused port changed something")
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm-1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DeleteNetwork(ctx, e.nurse, "imaging"); err != nil {
		t.Fatal(err)
	}
	if u := usage(); u.Networks != 0 || u.Ports != 0 {
		t.Fatalf("usage after the port and network went: %+v", u)
	}

	// Rows made by commands that did not charge (written before networks
	// and ports were counted) refund nothing when they go, and removing
	// them works after their project is gone.
	old := netfabric.Network{ID: "net-old", Name: "old", Project: e.lab, CIDR: "10.52.0.0/24", CreatedAt: t0}
	if _, err := e.node.Apply(ctx, netfabric.MsgCreateNetwork, old, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgCreatePort, netfabric.PortRequest{ID: "p-old", NetworkID: "net-old", Owner: "vm-old", Project: e.lab, CreatedAt: t0}, nil); err != nil {
		t.Fatal(err)
	}
	if q, _ := e.id.GetQuota(e.admin, "lab"); q.Usage.Networks != 0 || q.Usage.Ports != 0 {
		t.Fatalf("uncharged rows were charged: %+v", q.Usage)
	}
	// Uncharged, they still keep the project: deleting it is refused,
	// naming them.
	if err := e.id.DeleteProject(ctx, e.admin, "lab", 0); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "1 networks (old)") {
		t.Fatalf("delete a project that holds an uncharged network: %v", err)
	}
	// A project deleted by the command of older nodes (in logs written
	// before) left them behind; they still go.
	if _, err := e.node.Apply(ctx, identity.MsgDeleteProject, map[string]string{"id": e.lab}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm-old"}, nil); err != nil {
		t.Fatalf("releasing a port of a project that is gone: %v", err)
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgDeleteNetwork, netfabric.DeleteNetworkCmd{ID: "net-old"}, nil); err != nil {
		t.Fatalf("deleting a network of a project that is gone: %v", err)
	}
}

// VLAN provider networks are a cluster admin's: made in a project, on a
// VLAN of an interface no other network has; bad ones change nothing, the
// project's members use them but cannot delete them, and the segment they
// give a node has no VXLAN peers (the site's switch carries it).
func TestVLANNetworks(t *testing.T) {
	e := newSvcEnv(t)
	ctx := context.Background()
	nw, err := e.svc.CreateNetwork(ctx, e.admin, netfabric.NetworkCreate{Name: "pacs", Project: "ward", CIDR: "10.80.0.0/24", VLAN: 120, Interface: "eth1"})
	if err != nil {
		t.Fatal(err)
	}
	if !nw.IsVLAN() || nw.Project != e.ward || nw.VLAN != 120 || nw.Interface != "eth1" || nw.MTU != 1500 || nw.VNI == 0 || nw.CTZone == 0 {
		t.Fatalf("created %+v", nw)
	}
	count := func() int { return len(netfabric.ListNetworks(e.node.Store().ReadTxn())) }
	before := count()
	for _, c := range []struct {
		who  *identity.Principal
		req  netfabric.NetworkCreate
		code string
	}{
		{e.nurse, netfabric.NetworkCreate{Name: "x", CIDR: "10.81.0.0/24", VLAN: 121, Interface: "eth1"}, consensus.CodeForbidden},
		{e.admin, netfabric.NetworkCreate{Name: "x", Project: "lab", CIDR: "10.81.0.0/24", VLAN: 120, Interface: "eth1"}, consensus.CodeConflict},
		{e.admin, netfabric.NetworkCreate{Name: "x", Project: "lab", CIDR: "10.81.0.0/24", VLAN: 4095, Interface: "eth1"}, consensus.CodeInvalid},
		{e.admin, netfabric.NetworkCreate{Name: "x", Project: "lab", CIDR: "10.81.0.0/24", VLAN: -1, Interface: "eth1"}, consensus.CodeInvalid},
		{e.admin, netfabric.NetworkCreate{Name: "x", Project: "lab", CIDR: "10.81.0.0/24", VLAN: 121}, consensus.CodeInvalid},
		{e.admin, netfabric.NetworkCreate{Name: "x", Project: "lab", CIDR: "10.81.0.0/24", Interface: "eth1"}, consensus.CodeInvalid},
		{e.admin, netfabric.NetworkCreate{Name: "x", Project: "lab", CIDR: "10.81.0.0/24", VLAN: 121, Interface: "eth 1"}, consensus.CodeInvalid},
		{e.admin, netfabric.NetworkCreate{Name: "x", Project: "lab", CIDR: "10.81.0.0/24", VLAN: 121, Interface: "eth1", MTU: 9001}, consensus.CodeInvalid},
		{e.admin, netfabric.NetworkCreate{Name: "x", CIDR: "10.81.0.0/24", VLAN: 121, Interface: "eth1", External: true}, consensus.CodeInvalid},
	} {
		if _, err := e.svc.CreateNetwork(ctx, c.who, c.req); consensus.ErrorCode(err) != c.code {
			t.Errorf("create %+v as %s: %v, want %s", c.req, c.who.User.Name, err, c.code)
		}
	}
	if count() != before {
		t.Fatalf("refused creates left %d networks behind", count()-before)
	}
	// The same VLAN id on another interface is another network; a jumbo
	// VLAN may go to 9000.
	if _, err := e.svc.CreateNetwork(ctx, e.admin, netfabric.NetworkCreate{Name: "pacs2", Project: "lab", CIDR: "10.80.0.0/24", VLAN: 120, Interface: "eth2", MTU: 9000}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgCreatePort, netfabric.PortRequest{ID: "p-pacs", NetworkID: nw.ID, Owner: "vm-p", Project: e.ward, CreatedAt: t0}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgBindPorts, netfabric.BindPortsCmd{Owner: "vm-p", Node: "n1"}, nil); err != nil {
		t.Fatal(err)
	}
	// What speaks on the site's network stays the admin's: a member gives
	// no address pairs there and connects no router to it.
	pairs := []netfabric.AddressPair{{IP: "10.80.0.254", MAC: "02:00:00:00:00:fe"}}
	if _, err := e.svc.UpdatePort(ctx, e.nurse, "p-pacs", netfabric.PortUpdate{AddressPairs: &pairs}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member's address pair on a VLAN network: %v", err)
	}
	if _, err := e.svc.CreateRouter(ctx, e.nurse, netfabric.RouterCreate{Name: "edge"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetRouterInterface(ctx, e.nurse, "edge", "pacs", false); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member's router on a VLAN network: %v", err)
	}
	if _, err := e.svc.UpdatePort(ctx, e.admin, "p-pacs", netfabric.PortUpdate{AddressPairs: &pairs}); err != nil {
		t.Fatalf("the admin's address pair: %v", err)
	}
	for _, node := range []string{"n1", "n2"} {
		segs := netfabric.Segments(e.node.Store().ReadTxn(), node, func(string) (netip.Addr, bool) { return netip.MustParseAddr("198.18.0.9"), true })
		if node == "n1" && (len(segs) != 1 || segs[0].Network.ID != nw.ID || len(segs[0].Peers) != 0 || len(segs[0].Remote) != 0) {
			t.Fatalf("n1 carries %+v: the VLAN network alone, with no VXLAN peers", segs)
		}
		if node == "n2" && len(segs) != 0 {
			t.Fatalf("n2 has no port on it yet carries %+v", segs)
		}
	}
	if _, err := e.node.Apply(ctx, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm-p"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DeleteNetwork(ctx, e.nurse, "pacs"); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member deletes the admin's VLAN network: %v", err)
	}
	if _, err := e.svc.DeleteNetwork(ctx, e.admin, nw.ID); err != nil {
		t.Fatal(err)
	}
}
