package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/storagetest"
	"github.com/cairnhq/cairn/storage/volume"
)

// role is who sends a request in the authorization matrix.
type role int

const (
	anonymous    role = iota // no token
	reader                   // reader of project A
	member                   // member of project A
	projectAdmin             // admin of project A
	clusterAdmin             // cluster admin, in no project
	outsider                 // member of project B only
	numRoles
)

var roleNames = [numRoles]string{"anonymous", "reader", "member", "project admin", "cluster admin", "member of another project"}

// who is the set of roles a route lets through.
type who []role

var (
	everyone      = who{anonymous, reader, member, projectAdmin, clusterAdmin, outsider}
	users         = who{reader, member, projectAdmin, clusterAdmin, outsider}
	readers       = who{reader, member, projectAdmin, clusterAdmin}
	members       = who{member, projectAdmin, clusterAdmin}
	projectAdmins = who{projectAdmin, clusterAdmin}
	clusterAdmins = who{clusterAdmin}
	// The member owns what {token} and {key} name.
	ownerOrClusterAdmin = who{member, clusterAdmin}
)

// grant is one line of the matrix: one API route, the request sent to it
// and who gets through. Everyone else gets 401 without a token and 403 or
// 404 with one (404 where the route hides that the thing exists).
type grant struct {
	route string // "METHOD /api/v1/path" exactly as registered
	// path is what is called when the route's pattern with the fixture's
	// names is not what is meant; it may carry a query. {name}s in the
	// pattern or here are the fixture's (see fixture.value).
	path string
	body string // JSON; {n} becomes a number unique to the call
	// stale sends If-Match with a version long gone: a destructive route
	// lets the allowed through to a 412 and changes nothing.
	stale bool
	// freshToken: the route spends the caller's token; use a new one.
	freshToken bool
	status     int // what the allowed get: 2xx, or the 4xx their bad body or stale version earns past authorization
	allow      who
}

// matrix has one line per API route. A route without one fails the test.
var matrix = []grant{
	{route: "GET /api/v1/setup", status: 200, allow: everyone},
	{route: "POST /api/v1/setup", body: `{"setup_code":"WRONG-CODE","username":"x{n}","password":"long-enough-password"}`, status: 403, allow: everyone}, // a wrong code, refused alike for all
	{route: "POST /api/v1/auth/login", body: `{"username":"mike","password":"correct-horse-battery"}`, status: 200, allow: everyone},
	{route: "POST /api/v1/auth/logout", freshToken: true, status: 204, allow: users},
	{route: "GET /api/v1/auth/whoami", status: 200, allow: users},

	{route: "GET /api/v1/cluster", status: 200, allow: users},
	{route: "GET /api/v1/nodes", status: 200, allow: users},

	{route: "GET /api/v1/projects", status: 200, allow: users},
	{route: "POST /api/v1/projects", body: `{"name":"made-{n}"}`, status: 201, allow: clusterAdmins},
	{route: "GET /api/v1/projects/{project}", status: 200, allow: readers},
	{route: "PATCH /api/v1/projects/{project}", body: `{"description":"radiology"}`, status: 200, allow: projectAdmins},
	{route: "DELETE /api/v1/projects/{project}", stale: true, status: 412, allow: clusterAdmins},
	{route: "GET /api/v1/projects/{project}/members", status: 200, allow: readers},
	{route: "PUT /api/v1/projects/{project}/members/{user}", path: "/api/v1/projects/{project}/members/rita", body: `{"role":"reader"}`, status: 204, allow: projectAdmins},
	{route: "DELETE /api/v1/projects/{project}/members/{user}", path: "/api/v1/projects/{project}/members/{fresh-reader}", status: 204, allow: projectAdmins},
	{route: "GET /api/v1/projects/{project}/quota", status: 200, allow: readers},
	{route: "PUT /api/v1/projects/{project}/quota", body: `{"instances":10,"vcpus":20,"ram_mib":51200,"disk_gib":1000,"object_gib":1000,"floating_ips":-1,"objects":1000000}`, status: 200, allow: clusterAdmins},

	{route: "GET /api/v1/users", status: 200, allow: users},
	{route: "POST /api/v1/users", body: `{"name":"made-{n}","password":"long-enough-password"}`, status: 201, allow: clusterAdmins},
	{route: "GET /api/v1/users/{user}", status: 200, allow: ownerOrClusterAdmin},
	{route: "PATCH /api/v1/users/{user}", body: `{"display_name":"Mike"}`, status: 200, allow: ownerOrClusterAdmin},
	{route: "DELETE /api/v1/users/{user}", path: "/api/v1/users/{fresh-user}", status: 204, allow: clusterAdmins},

	{route: "GET /api/v1/tokens", status: 200, allow: users},
	{route: "POST /api/v1/tokens", body: `{"name":"t{n}"}`, status: 201, allow: users},
	{route: "DELETE /api/v1/tokens/{token}", status: 204, allow: ownerOrClusterAdmin},
	{route: "POST /api/v1/metrics/tokens", body: `{"name":"prometheus{n}"}`, status: 201, allow: clusterAdmins},
	{route: "GET /api/v1/identity/settings", status: 200, allow: users},
	{route: "POST /api/v1/cluster/enrol-tokens", body: `{}`, status: 201, allow: clusterAdmins},
	{route: "GET /api/v1/cluster/pending", status: 200, allow: clusterAdmins},
	// No node is pending: an admin's approval of one is refused as unknown.
	{route: "POST /api/v1/cluster/pending/{node}/approve", path: "/api/v1/cluster/pending/node9/approve", body: `{"fingerprint":"SHA256:x"}`, status: 404, allow: clusterAdmins},
	{route: "DELETE /api/v1/cluster/pending/{node}", path: "/api/v1/cluster/pending/node9", status: 404, allow: clusterAdmins},
	{route: "PUT /api/v1/identity/settings", body: `{"max_token_lifetime_seconds":7776000}`, status: 200, allow: clusterAdmins},

	{route: "GET /api/v1/flavors", status: 200, allow: users},
	{route: "POST /api/v1/flavors", body: `{"name":"made-{n}","vcpus":1,"ram_mib":512,"disk_gib":1}`, status: 201, allow: clusterAdmins},
	{route: "GET /api/v1/flavors/{flavor}", status: 200, allow: users},
	{route: "PATCH /api/v1/flavors/{flavor}", body: `{"name":"small"}`, status: 200, allow: clusterAdmins},
	{route: "DELETE /api/v1/flavors/{flavor}", path: "/api/v1/flavors/{fresh-flavor}", status: 204, allow: clusterAdmins},

	{route: "GET /api/v1/audit", path: "/api/v1/audit?project={project}", status: 200, allow: projectAdmins},

	{route: "POST /api/v1/s3/credentials", body: `{"project":"proj-a"}`, status: 201, allow: readers},
	{route: "GET /api/v1/s3/credentials", status: 200, allow: users},
	{route: "DELETE /api/v1/s3/credentials/{key}", status: 204, allow: ownerOrClusterAdmin},
	{route: "GET /api/v1/storage", status: 200, allow: clusterAdmins},
	{route: "GET /api/v1/storage/inline", status: 200, allow: clusterAdmins},
	{route: "PUT /api/v1/storage/inline", body: `{"inline_budget":134217728}`, status: 200, allow: clusterAdmins},
	{route: "GET /api/v1/buckets", status: 200, allow: users},
	{route: "PUT /api/v1/buckets/{bucket}/layout", body: `{"data":0,"parity":0}`, status: 200, allow: projectAdmins},
	{route: "GET /api/v1/disks", status: 200, allow: clusterAdmins},
	{route: "POST /api/v1/disks", body: `{"node":"node1","path":"relative/dir"}`, status: 400, allow: clusterAdmins},
	{route: "GET /api/v1/disks/{disk}", status: 200, allow: clusterAdmins},
	{route: "POST /api/v1/disks/{disk}/drain", stale: true, status: 412, allow: clusterAdmins},
	{route: "POST /api/v1/disks/{disk}/activate", stale: true, status: 412, allow: clusterAdmins},
	{route: "DELETE /api/v1/disks/{disk}", stale: true, status: 412, allow: clusterAdmins},

	{route: "GET /api/v1/vms", status: 200, allow: users},
	{route: "POST /api/v1/vms", body: `{"name":"made-{n}","project":"proj-a","image":"guest","flavor":"small","stopped":true}`, status: 201, allow: members},
	{route: "GET /api/v1/vms/{vm}", status: 200, allow: readers},
	{route: "PATCH /api/v1/vms/{vm}", body: `{"name":"vm-a"}`, status: 200, allow: members},
	{route: "DELETE /api/v1/vms/{vm}", stale: true, status: 412, allow: members},
	{route: "GET /api/v1/vms/{vm}/events", status: 200, allow: readers},
	{route: "POST /api/v1/vms/{vm}/console", status: 200, allow: members},
	{route: "GET /api/v1/vms/{vm}/serial-log", status: 200, allow: members},
	{route: "GET /api/v1/vms/{vm}/usage", status: 200, allow: readers},
	{route: "POST /api/v1/vms/{vm}/start", stale: true, status: 412, allow: members},
	{route: "POST /api/v1/vms/{vm}/stop", stale: true, status: 412, allow: members},
	{route: "POST /api/v1/vms/{vm}/force-stop", stale: true, status: 412, allow: members},
	{route: "POST /api/v1/vms/{vm}/reboot", stale: true, status: 412, allow: members},
	{route: "POST /api/v1/vms/{vm}/pause", stale: true, status: 412, allow: members},
	{route: "POST /api/v1/vms/{vm}/resume", stale: true, status: 409, allow: members}, // it is not paused
	{route: "POST /api/v1/vms/{vm}/resize", body: `{"flavor":"small"}`, stale: true, status: 412, allow: members},
	{route: "POST /api/v1/vms/{vm}/convert-disk", stale: true, status: 412, allow: members},
	{route: "PUT /api/v1/vms/{vm}/ha", body: `{"enabled":false}`, stale: true, status: 412, allow: members},
	{route: "POST /api/v1/vms/{vm}/migrate", body: `{"node":"maint-node"}`, stale: true, status: 412, allow: clusterAdmins},
	{route: "POST /api/v1/vms/{vm}/migrate/cancel", status: 409, allow: clusterAdmins},
	{route: "GET /api/v1/capacity", status: 200, allow: clusterAdmins},
	{route: "GET /api/v1/hosts", status: 200, allow: clusterAdmins},
	{route: "POST /api/v1/hosts/{host}/cordon", path: "/api/v1/hosts/maint-node/cordon", body: `{"reason":"new disks"}`, status: 200, allow: clusterAdmins},
	{route: "POST /api/v1/hosts/{host}/uncordon", path: "/api/v1/hosts/maint-node/uncordon", status: 204, allow: clusterAdmins},
	{route: "POST /api/v1/hosts/{host}/drain", path: "/api/v1/hosts/maint-node/drain", body: `{"restart":true}`, status: 409, allow: clusterAdmins},
	{route: "GET /api/v1/compute/settings", status: 200, allow: users},
	{route: "PUT /api/v1/compute/settings", body: `{"cpu_allocation_ratio":4,"ram_allocation_ratio":1,"reserved_ram_mib":1024}`, status: 200, allow: clusterAdmins},

	// No replica provisioner in the fixture: the allowed get past
	// authorization to "not available on this node".
	{route: "GET /api/v1/networks", status: 200, allow: users},
	{route: "POST /api/v1/networks", body: `{"name":"made-{n}","cidr":"{cidr}","project":"proj-a"}`, status: 201, allow: members},
	{route: "GET /api/v1/networks/{network}", status: 200, allow: readers},
	{route: "DELETE /api/v1/networks/{network}", path: "/api/v1/networks/{fresh-network}", status: 200, allow: members},
	{route: "POST /api/v1/networks/{network}/subnets", body: `{"cidr":"fd00:a::/64"}`, status: 200, allow: members},
	{route: "GET /api/v1/networks/{network}/ports", status: 200, allow: readers},
	{route: "GET /api/v1/ports/{port}", status: 200, allow: readers},
	{route: "PATCH /api/v1/ports/{port}", body: `{"security_groups":["default"]}`, status: 200, allow: members},
	{route: "GET /api/v1/routers", status: 200, allow: users},
	{route: "POST /api/v1/routers", body: `{"name":"made-{n}","project":"proj-a"}`, status: 201, allow: members},
	{route: "GET /api/v1/routers/{router}", status: 200, allow: readers},
	{route: "DELETE /api/v1/routers/{router}", path: "/api/v1/routers/{fresh-router}", status: 200, allow: members},
	{route: "POST /api/v1/routers/{router}/interfaces", body: `{"network":"net-a"}`, status: 200, allow: members},
	{route: "DELETE /api/v1/routers/{router}/interfaces/{network}", path: "/api/v1/routers/{fresh-interface}", status: 200, allow: members},
	{route: "PUT /api/v1/routers/{router}/gateway", body: `{"network":"public"}`, status: 200, allow: members},
	{route: "GET /api/v1/floating-ips", status: 200, allow: users},
	{route: "POST /api/v1/floating-ips", body: `{"project":"proj-a","network":"public"}`, status: 201, allow: members},
	{route: "GET /api/v1/floating-ips/{fip}", status: 200, allow: readers},
	{route: "DELETE /api/v1/floating-ips/{fip}", path: "/api/v1/floating-ips/{fresh-fip}", status: 200, allow: members},
	{route: "PUT /api/v1/floating-ips/{fip}/port", body: `{"port_id":"port-a"}`, status: 200, allow: members},
	{route: "DELETE /api/v1/floating-ips/{fip}/port", status: 200, allow: members},
	{route: "GET /api/v1/security-groups", status: 200, allow: users},
	{route: "POST /api/v1/security-groups", body: `{"name":"made-{n}","project":"proj-a"}`, status: 201, allow: members},
	{route: "GET /api/v1/security-groups/{group}", status: 200, allow: readers},
	{route: "DELETE /api/v1/security-groups/{group}", path: "/api/v1/security-groups/{fresh-group}", status: 200, allow: members},
	{route: "POST /api/v1/security-groups/{group}/rules", body: `{"direction":"ingress","protocol":"tcp","port_min":{n}}`, status: 201, allow: members},
	{route: "DELETE /api/v1/security-groups/{group}/rules/{rule}", path: "/api/v1/security-groups/{group}/rules/{fresh-rule}", status: 200, allow: members},

	{route: "GET /api/v1/volumes", status: 200, allow: users},
	{route: "POST /api/v1/volumes", body: `{"name":"made-{n}","size_gib":1,"project":"proj-a"}`, status: 503, allow: members},
	{route: "GET /api/v1/volumes/{volume}", status: 200, allow: readers},
	{route: "DELETE /api/v1/volumes/{volume}", stale: true, status: 412, allow: members},
	{route: "POST /api/v1/volumes/{volume}/extend", body: `{"size_gib":2}`, stale: true, status: 412, allow: members},
	// Upload and download borrow the volume for this node, then: an empty
	// image is refused; the fixture's node serves no volumes.
	{route: "POST /api/v1/volumes/{volume}/upload", status: 400, allow: members},
	{route: "GET /api/v1/volumes/{volume}/download", status: 503, allow: members},
	// The fixture's node has no export port; the volume is not exported.
	{route: "POST /api/v1/volumes/{volume}/export", status: 503, allow: members},
	{route: "DELETE /api/v1/volumes/{volume}/export", status: 409, allow: members},
	{route: "POST /api/v1/volumes/{volume}/attach", body: `{"vm":"vm-a"}`, stale: true, status: 412, allow: members},
	{route: "POST /api/v1/volumes/{volume}/detach", stale: true, status: 412, allow: members},
	// Snapshots: vol-a is detached, and its snapshot needs new replicas
	// made, which the fixture cannot.
	{route: "POST /api/v1/volumes/{volume}/snapshots", body: `{"name":"snap-{n}"}`, status: 503, allow: members},
	{route: "GET /api/v1/snapshots", status: 200, allow: users},
	{route: "GET /api/v1/snapshots/{snapshot}", status: 200, allow: readers},
	{route: "DELETE /api/v1/snapshots/{snapshot}", stale: true, status: 412, allow: members},
	{route: "POST /api/v1/snapshots/{snapshot}/export", status: 503, allow: members},
	{route: "DELETE /api/v1/snapshots/{snapshot}/export", status: 409, allow: members},

	{route: "GET /api/v1/images", status: 200, allow: users},
	{route: "GET /api/v1/images/{image}", status: 200, allow: readers},
	{route: "POST /api/v1/images/upload", path: "/api/v1/images/upload?name=up-{n}&project={project}", status: 400, allow: members}, // the body is empty
	{route: "POST /api/v1/images/import", body: `{"name":"imp-{n}","project":"proj-a","url":"ftp://files.example/x.qcow2"}`, status: 400, allow: members},
	// Public images are the cluster admins', whoever filed them.
	{route: "PATCH /api/v1/images/{image}", path: "/api/v1/images/{public-image}", body: `{"name":"ubuntu"}`, status: 200, allow: clusterAdmins},
	{route: "DELETE /api/v1/images/{image}", path: "/api/v1/images/{public-image}", stale: true, status: 412, allow: clusterAdmins},
}

// matrixFixture is one real node (Raft, storage on two disks, compute
// without hosts) behind the real API server, with project A (a reader, a
// member, a project admin; a VM, a project image, a public image filed by
// the member, a bucket) and project B (a member).
type matrixFixture struct {
	t        *testing.T
	srv      *httptest.Server
	server   *api.Server
	node     *storagetest.Node
	admin    *identity.Principal
	mike     *identity.Principal // the member
	networks *netfabric.Service
	tokens   [numRoles]string
	names    map[string]string
	seq      atomic.Int64
}

func newMatrixFixture(t *testing.T) *matrixFixture {
	t.Helper()
	ns, admin := storagetest.PoolWith(t, 1, 2, func(reg *consensus.Registry) {
		hypervisor.Register(reg)
		netfabric.Register(reg)
		volume.Register(reg)
	})
	nd := ns[0]
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	images := hypervisor.NewImages(nd.Node, nd.ID, nd.Objects, hypervisor.ImagesConfig{TempDir: filepath.Join(t.TempDir(), "images"), Logger: log})
	compute := hypervisor.NewService(nd.Node, nd.ID, images, log)
	consoles := hypervisor.NewConsoles(compute, nd.Node, func(string, string) (string, bool) { return "", false }, log)
	volumes := volume.NewService(volume.Deps{Cluster: nd.Node, Identity: nd.ID, Logger: log, VMs: compute, Images: compute.FindImage})
	compute.SetVolumes(volumes)
	networks := netfabric.NewService(nd.Node, nd.ID)
	s := api.New(api.Deps{Identity: nd.ID, Storage: storage.NewService(nd.Node, nd.ID), Objects: nd.Objects, Compute: compute, Volumes: volumes, Networks: networks,
		Images: images, Consoles: consoles, Usage: hypervisor.NewUsageReader(compute, nd.Node, nil), Cluster: nd.Node, Logger: log,
		StorageHealth: func(ctx context.Context) (api.StorageHealth, error) {
			d, err := nd.Objects.Degraded(ctx)
			return api.StorageHealth{Node: nd.Node.Name(), DegradedSegments: d}, err
		}})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	f := &matrixFixture{t: t, srv: srv, server: s, node: nd, admin: admin, names: map[string]string{}, networks: networks}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	nw := netfabric.Network{ID: hypervisor.DefaultNetwork, Name: "default", CIDR: "10.213.0.0/16", CreatedAt: time.Now().UTC()}
	_, err := nd.Node.Apply(ctx, netfabric.MsgCreateNetwork, &nw, nil)
	must(err)
	must(hypervisor.EnsureConsoleKey(ctx, nd.Node))
	// A host to cordon, that runs no VM (it reports an error): the
	// fixture's VMs stay unplaced.
	_, err = nd.Node.Apply(ctx, hypervisor.MsgReportHost, &hypervisor.Host{Name: "maint-node", VCPUs: 1, RAMMiB: 1024, Error: "kept for the cordon routes", ReportedAt: time.Now()}, nil)
	must(err)
	a, err := nd.ID.CreateProject(ctx, admin, identity.ProjectSpec{Name: "proj-a"})
	must(err)
	_, err = nd.ID.CreateProject(ctx, admin, identity.ProjectSpec{Name: "proj-b"})
	must(err)
	for _, u := range []struct {
		name, project string
		role          identity.Role
	}{{"rita", "proj-a", identity.RoleReader}, {"mike", "proj-a", identity.RoleMember}, {"alice", "proj-a", identity.RoleAdmin}, {"bob", "proj-b", identity.RoleMember}} {
		_, err = nd.ID.CreateUser(ctx, admin, identity.UserSpec{Name: u.name, Password: testPassword})
		must(err)
		must(nd.ID.SetMember(ctx, admin, u.project, u.name, u.role))
	}
	f.mike = storagetest.Principal(t, nd.ID, "mike", testPassword)
	fl, err := nd.ID.CreateFlavor(ctx, admin, identity.FlavorSpec{Name: "small", VCPUs: 1, RAMMiB: 512, DiskGiB: 1})
	must(err)
	// Image records without bytes: nothing here boots.
	for _, img := range []hypervisor.Image{
		{ID: "img-guest", Name: "guest", Visibility: hypervisor.VisibilityProject},
		{ID: "img-public", Name: "ubuntu", Visibility: hypervisor.VisibilityPublic},
	} {
		img.ProjectID, img.OwnerID, img.DiskFormat, img.Firmware = a.ID, f.mike.User.ID, hypervisor.FormatQCOW2, "bios"
		_, err = nd.Node.Apply(ctx, hypervisor.MsgCreateImage, &img, nil)
		must(err)
	}
	_, err = compute.CreateVM(ctx, f.mike, hypervisor.VMCreate{Name: "vm-a", Project: "proj-a", Image: "guest", Flavor: "small", Stopped: true,
		UserData: "#cloud-config\npassword: hunter2\n", SSHKeys: []string{testSSHKey}})
	must(err)
	_, err = nd.Objects.CreateBucket(ctx, admin, a.ID, "bucket-a")
	must(err)
	ds, err := storage.NewService(nd.Node, nd.ID).ListDisks(admin)
	must(err)
	// A volume record without replicas' bytes: nothing here serves it.
	vol := volume.Volume{ID: "vol-a", Name: "vol-a", ProjectID: a.ID, SizeBytes: 1 << 30, CreatedAt: time.Now().UTC(),
		Replicas: []volume.Replica{{ID: "vol-a-r0", Node: nd.Node.Name(), Disk: ds[0].ID}}}
	_, err = nd.Node.Apply(ctx, volume.MsgCreateVolume, map[string]any{"volume": vol}, nil)
	must(err)
	_, err = nd.Node.Apply(ctx, volume.MsgSetVolumeState, map[string]any{"id": vol.ID, "state": volume.StateAvailable}, nil)
	must(err)
	// Its snapshot, taken detached: vol-a moves to a new (record-only)
	// replica.
	snap := volume.Volume{ID: "snap-0000000000a1", Name: "snap-a", ProjectID: a.ID, CreatedAt: time.Now().UTC()}
	_, err = nd.Node.Apply(ctx, volume.MsgCreateSnapshot, map[string]any{"snapshot": snap, "of": vol.ID,
		"top": []volume.Replica{{ID: "vol-a-top", Node: nd.Node.Name(), Disk: ds[0].ID}}}, nil)
	must(err)

	netA, err := networks.CreateNetwork(ctx, f.mike, netfabric.NetworkCreate{Name: "net-a", Project: "proj-a", CIDR: "10.50.0.0/24"})
	must(err)
	_, err = networks.CreateSecurityGroup(ctx, f.mike, netfabric.SecurityGroupCreate{Name: "group-a", Project: "proj-a"})
	must(err)
	var port netfabric.Port
	_, err = nd.Node.Apply(ctx, netfabric.MsgCreatePort, netfabric.PortRequest{ID: "port-a", NetworkID: netA.ID, Owner: "vm-a", Project: a.ID,
		SecurityGroups: []string{netfabric.DefaultGroupID(a.ID)}, CreatedAt: time.Now().UTC()}, &port)
	must(err)
	// An external network, and proj-a's router onto it with net-a, and a
	// floating IP; the matrix makes more of both than a project may have.
	_, err = networks.CreateNetwork(ctx, admin, netfabric.NetworkCreate{Name: "public", External: true, Interface: "eth1",
		CIDR: "198.51.100.0/24", Pools: []netfabric.Pool{{Start: "198.51.100.10", End: "198.51.100.250"}}})
	must(err)
	lim, err := nd.ID.GetQuota(admin, "proj-a")
	must(err)
	lim.Limits.FloatingIPs, lim.Limits.Routers = identity.Unlimited, identity.Unlimited
	_, err = nd.ID.SetQuota(ctx, admin, "proj-a", lim.Limits, 0)
	must(err)
	rt, err := networks.CreateRouter(ctx, f.mike, netfabric.RouterCreate{Name: "router-a", Project: "proj-a"})
	must(err)
	_, err = networks.SetRouterInterface(ctx, f.mike, rt.ID, "net-a", false)
	must(err)
	_, err = networks.SetRouterGateway(ctx, f.mike, rt.ID, "public")
	must(err)
	fip, err := networks.CreateFloatingIP(ctx, f.mike, netfabric.FloatingIPCreate{Project: "proj-a", Network: "public"})
	must(err)
	f.names = map[string]string{"router": "router-a", "fip": fip.ID, "network": "net-a", "project": "proj-a", "user": "mike", "vm": "vm-a", "image": "img-guest", "public-image": "img-public",
		"flavor": fl.Name, "bucket": "bucket-a", "disk": ds[0].ID, "volume": "vol-a", "snapshot": "snap-a", "group": "group-a", "port": "port-a"}
	for r, u := range map[role]string{reader: "rita", member: "mike", projectAdmin: "alice", clusterAdmin: "admin", outsider: "bob"} {
		f.tokens[r] = f.login(u)
	}
	return f
}

const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID5WHCIylmEUGhyxygnxLkggX/botwVqq/W+x/6LNgjl nurse@ward"

// login returns a new session token of a user.
func (f *matrixFixture) login(user string) string {
	f.t.Helper()
	pw := testPassword
	if user == "admin" {
		pw = storagetest.AdminPassword
	}
	tok, _, err := f.node.ID.Login(context.Background(), user, pw)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

var placeholderRE = regexp.MustCompile(`\{[a-z-]+\}`)

// value is what a {name} in a path stands for. The fresh ones are made
// anew for every call, for routes that use them up.
func (f *matrixFixture) value(name string) string {
	f.t.Helper()
	ctx, n := context.Background(), f.seq.Add(1)
	must := func(err error) {
		f.t.Helper()
		if err != nil {
			f.t.Fatal(err)
		}
	}
	switch name {
	case "token": // the member's
		_, tok, err := f.node.ID.CreateAPIToken(ctx, f.mike, fmt.Sprintf("t%d", n), 0)
		must(err)
		return tok.ID
	case "key": // the member's
		c, err := f.node.ID.CreateS3Credential(ctx, f.mike, "proj-a")
		must(err)
		return c.ID
	case "fresh-user", "fresh-reader":
		u, err := f.node.ID.CreateUser(ctx, f.admin, identity.UserSpec{Name: fmt.Sprintf("fresh-%d", n), Password: "long-enough-password"})
		must(err)
		if name == "fresh-reader" {
			must(f.node.ID.SetMember(ctx, f.admin, "proj-a", u.Name, identity.RoleReader))
		}
		return u.Name
	case "fresh-network":
		nw, err := f.networks.CreateNetwork(ctx, f.mike, netfabric.NetworkCreate{Name: fmt.Sprintf("fresh-%d", n), Project: "proj-a", CIDR: matrixCIDR(n)})
		must(err)
		return nw.ID
	case "fresh-router":
		rt, err := f.networks.CreateRouter(ctx, f.mike, netfabric.RouterCreate{Name: fmt.Sprintf("fresh-%d", n), Project: "proj-a"})
		must(err)
		return rt.ID
	case "fresh-interface": // a router with a network: {router}/interfaces/{network}
		rt, err := f.networks.CreateRouter(ctx, f.mike, netfabric.RouterCreate{Name: fmt.Sprintf("fresh-%d", n), Project: "proj-a"})
		must(err)
		nw, err := f.networks.CreateNetwork(ctx, f.mike, netfabric.NetworkCreate{Name: fmt.Sprintf("fresh-%d", n), Project: "proj-a", CIDR: matrixCIDR(n)})
		must(err)
		_, err = f.networks.SetRouterInterface(ctx, f.mike, rt.ID, nw.ID, false)
		must(err)
		return rt.ID + "/interfaces/" + nw.ID
	case "fresh-fip":
		fip, err := f.networks.CreateFloatingIP(ctx, f.mike, netfabric.FloatingIPCreate{Project: "proj-a", Network: "public"})
		must(err)
		return fip.ID
	case "fresh-group":
		g, err := f.networks.CreateSecurityGroup(ctx, f.mike, netfabric.SecurityGroupCreate{Name: fmt.Sprintf("fresh-%d", n), Project: "proj-a"})
		must(err)
		return g.ID
	case "fresh-rule":
		g, err := f.networks.AddRule(ctx, f.mike, "group-a", netfabric.Rule{Direction: "egress", Protocol: "udp", PortMin: int(n)})
		must(err)
		return g.Rules[len(g.Rules)-1].ID
	case "fresh-flavor":
		fl, err := f.node.ID.CreateFlavor(ctx, f.admin, identity.FlavorSpec{Name: fmt.Sprintf("fresh-%d", n), VCPUs: 1, RAMMiB: 512, DiskGiB: 1})
		must(err)
		return fl.Name
	}
	v, ok := f.names[name]
	if !ok {
		f.t.Fatalf("the matrix fixture has no {%s}", name)
	}
	return v
}

// matrixCIDR is a /24 of its own for call n.
func matrixCIDR(n int64) string { return fmt.Sprintf("10.%d.%d.0/24", 100+(n>>8)&127, n&255) }

// send makes one request of the matrix as r and returns its status and body.
func (f *matrixFixture) send(g grant, r role) (int, string) {
	f.t.Helper()
	method, pattern, _ := strings.Cut(g.route, " ")
	path := g.path
	if path == "" {
		path = pattern
	}
	n := fmt.Sprint(f.seq.Add(1))
	path = placeholderRE.ReplaceAllStringFunc(strings.ReplaceAll(path, "{n}", n), func(m string) string { return f.value(m[1 : len(m)-1]) })
	body := strings.ReplaceAll(strings.ReplaceAll(g.body, "{n}", n), "{cidr}", matrixCIDR(f.seq.Add(1)))
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if g.stale {
		req.Header.Set("If-Match", `"1"`)
	}
	if tok := f.tokens[r]; r != anonymous {
		if g.freshToken {
			tok = f.login(map[role]string{reader: "rita", member: "mike", projectAdmin: "alice", clusterAdmin: "admin", outsider: "bob"}[r])
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}

// TestAuthorizationMatrixCoversEveryRoute sends every API route a request
// as each role and checks who gets through: the allowed get the line's
// status, others 401 without a token and 403 or 404 with one.
func TestAuthorizationMatrixCoversEveryRoute(t *testing.T) {
	f := newMatrixFixture(t)
	lines := map[string]grant{}
	for _, g := range matrix {
		if _, dup := lines[g.route]; dup {
			t.Errorf("the matrix has two lines for %s", g.route)
		}
		lines[g.route] = g
	}
	registered := map[string]api.Route{}
	for _, rt := range f.server.Routes() {
		key := rt.Method + " " + rt.Path
		registered[key] = rt
		if _, ok := lines[key]; !ok {
			t.Errorf("route %s has no line in the authorization matrix: say who may call it", key)
		}
	}
	for _, g := range matrix {
		rt, ok := registered[g.route]
		if !ok {
			t.Errorf("the matrix has a line for %s, which is not a route", g.route)
			continue
		}
		allowed := map[role]bool{}
		for _, r := range g.allow {
			allowed[r] = true
		}
		if allowed[anonymous] != rt.Public {
			t.Errorf("%s: public %v, but the matrix lets anonymous callers through: %v", g.route, rt.Public, allowed[anonymous])
		}
		t.Run(g.route, func(t *testing.T) {
			f.t = t
			defer func() { f.t = t }()
			for r := range numRoles {
				status, body := f.send(g, r)
				switch {
				case allowed[r]:
					if status != g.status {
						t.Errorf("%s: status %d, want %d: %s", roleNames[r], status, g.status, body)
					}
				case r == anonymous:
					if status != http.StatusUnauthorized {
						t.Errorf("%s: status %d, want 401: %s", roleNames[r], status, body)
					}
				default:
					if status != http.StatusForbidden && status != http.StatusNotFound {
						t.Errorf("%s: status %d, want 403 or 404: %s", roleNames[r], status, body)
					}
				}
			}
		})
	}
}

// Readers of a project get its VMs without cloud-init through the API;
// members get them whole.
func TestReadersGetVMsWithoutCloudInit(t *testing.T) {
	f := newMatrixFixture(t)
	get := func(r role, path string) string {
		t.Helper()
		status, body := f.send(grant{route: "GET " + path}, r)
		if status != http.StatusOK {
			t.Fatalf("%s GET %s: %d %s", roleNames[r], path, status, body)
		}
		return body
	}
	for _, path := range []string{"/api/v1/vms/vm-a", "/api/v1/vms", "/api/v1/vms?project=proj-a"} {
		body := get(reader, path)
		if strings.Contains(body, "hunter2") || strings.Contains(body, "ssh-ed25519") || !strings.Contains(body, `"cloud_init_redacted":true`) {
			t.Errorf("a reader's GET %s shows cloud-init: %s", path, body)
		}
		for _, r := range []role{member, projectAdmin, clusterAdmin} {
			if body := get(r, path); !strings.Contains(body, "hunter2") || !strings.Contains(body, "ssh-ed25519") || strings.Contains(body, "redacted") {
				t.Errorf("%s's GET %s lacks cloud-init: %s", roleNames[r], path, body)
			}
		}
	}
	var vm hypervisor.VM
	if err := json.Unmarshal([]byte(get(reader, "/api/v1/vms/vm-a")), &vm); err != nil || vm.Name != "vm-a" || vm.Spec.Image != "img-guest" {
		t.Errorf("a reader's VM: %+v %v", vm, err)
	}
}

// testPassword is every matrix user's password: long enough, and no user's
// name is in it.
const testPassword = "correct-horse-battery"

// A cluster admin sets the pool's inline budget through the API: it shows
// at once, and a budget out of range is refused and changes nothing.
func TestInlineBudgetThroughTheAPI(t *testing.T) {
	f := newMatrixFixture(t)
	read := func() storage.InlineUsage {
		t.Helper()
		code, body := f.send(grant{route: "GET /api/v1/storage/inline"}, clusterAdmin)
		var u storage.InlineUsage
		if code != 200 || json.Unmarshal([]byte(body), &u) != nil {
			t.Fatalf("GET: %d %s", code, body)
		}
		return u
	}
	if u := read(); u.Budget != storage.DefaultInlineBudget {
		t.Fatalf("the default budget reads %+v", u)
	}
	if code, body := f.send(grant{route: "PUT /api/v1/storage/inline", body: `{"inline_budget":1048576}`}, clusterAdmin); code != 200 || !strings.Contains(body, `"inline_budget":1048576`) {
		t.Fatalf("PUT: %d %s", code, body)
	}
	for _, bad := range []string{`{"inline_budget":0}`, `{"inline_budget":5368709120}`, `{"inline_budget":"big"}`} {
		if code, body := f.send(grant{route: "PUT /api/v1/storage/inline", body: bad}, clusterAdmin); code != 400 {
			t.Fatalf("PUT %s: %d %s", bad, code, body)
		}
	}
	if u := read(); u.Budget != 1<<20 {
		t.Fatalf("after refused budgets: %+v", u)
	}
}
