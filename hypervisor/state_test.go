package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/volume"
)

// computeEnv is one in-process node with identity, compute, the default
// network, an image record and a running scheduler: everything but QEMU.
type computeEnv struct {
	node  *consensus.Node
	id    *identity.Service
	svc   *Service
	admin *identity.Principal
	user  *identity.Principal
	image *Image
}

func newComputeEnv(t *testing.T) *computeEnv {
	t.Helper()
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		Register(r)
		netfabric.Register(r)
		volume.Register(r)
	})
	n := c.Nodes[0]
	ctx := context.Background()
	id := identity.NewService(n, identity.DefaultConfig())
	e := &computeEnv{node: n, id: id}
	e.svc = NewService(n, id, NewImages(n, id, nil, ImagesConfig{TempDir: t.TempDir()}), slog.Default())
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := id.CreateFirstAdmin(ctx, "admin", "cluster-root-6161")
	must(err)
	e.admin = login(t, id, "admin", "cluster-root-6161")
	quota := identity.Resources{Instances: 3, VCPUs: 4, RAMMiB: 4096, DiskGiB: 100, ObjectGiB: 10, FloatingIPs: 1, Volumes: 10, VolumeGiB: 100, Networks: 2, Ports: 8}
	pr, err := id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "ward", Quota: &quota})
	must(err)
	_, err = id.CreateUser(ctx, e.admin, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"})
	must(err)
	must(id.SetMember(ctx, e.admin, "ward", "nurse", identity.RoleMember))
	e.user = login(t, id, "nurse", "night-shift-9471")
	for _, f := range []identity.FlavorSpec{{Name: "small", VCPUs: 1, RAMMiB: 512, DiskGiB: 1}, {Name: "big", VCPUs: 2, RAMMiB: 1024, DiskGiB: 2}, {Name: "huge", VCPUs: 8, RAMMiB: 512, DiskGiB: 1}} {
		_, err = id.CreateFlavor(ctx, e.admin, f)
		must(err)
	}
	_, err = n.Apply(ctx, netfabric.MsgCreateNetwork, &netfabric.Network{ID: "default", Name: "default", CIDR: "10.213.0.0/29"}, nil)
	must(err)
	img := &Image{ID: "img-1", Name: "guest", ProjectID: pr.ID, OwnerID: e.admin.User.ID, Visibility: VisibilityProject,
		Format: FormatQCOW2, DiskFormat: FormatQCOW2, Size: 1 << 20, VirtualSize: 1 << 30, Firmware: "bios"}
	_, err = n.Apply(ctx, MsgCreateImage, img, &e.image)
	must(err)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	sch := NewScheduler(n, slog.Default())
	sch.Patience = 0 // fail at once when nothing fits
	go func() { sch.Run(sctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func login(t *testing.T, id *identity.Service, user, pw string) *identity.Principal {
	t.Helper()
	tok, _, err := id.Login(context.Background(), user, pw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := id.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *computeEnv) host(t *testing.T, name string, vcpus, ram int64) {
	t.Helper()
	if _, err := e.node.Apply(context.Background(), MsgReportHost, &Host{Name: name, VCPUs: vcpus, RAMMiB: ram, Accel: "tcg", ReportedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
}

func (e *computeEnv) usage(t *testing.T) identity.Resources {
	q, err := e.id.GetQuota(e.admin, "ward")
	if err != nil {
		t.Fatal(err)
	}
	return q.Usage
}

func TestCreateChargesQuotaAllocatesAddressAndWaitsForAHost(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "ris-1", Image: "guest", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if vm.Status.State != StateScheduling || len(vm.IPs()) != 1 || vm.IPs()[0] != "10.213.0.2" {
		t.Fatalf("new VM: state %s, IPs %v", vm.Status.State, vm.IPs())
	}
	if u := e.usage(t); u.Instances != 1 || u.VCPUs != 1 || u.RAMMiB != 512 || u.DiskGiB != 1 {
		t.Fatalf("usage after create: %+v", u)
	}
	// No host has reported: the VM waits instead of failing.
	time.Sleep(200 * time.Millisecond)
	if got, _ := e.svc.VM(e.user, "ris-1"); got.Status.State != StateScheduling {
		t.Fatalf("without hosts the VM should wait, is %s (%s)", got.Status.State, got.Status.Error)
	}
	e.host(t, "node1", 2, 4096)
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		got, _ := e.svc.VM(e.user, "ris-1")
		if got.Node != "node1" || got.Status.State != StateBuilding {
			return fmt.Errorf("node %q state %s", got.Node, got.Status.State)
		}
		return nil
	})
	evs, err := e.svc.Events(e.user, "ris-1")
	if err != nil || len(evs) != 2 || evs[0].Kind != "create" || evs[1].Kind != "schedule" {
		t.Fatalf("events: %+v %v", evs, err)
	}
}

func TestBadRequestsLeaveNothingBehind(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  VMCreate
		code string
	}{
		{"unknown flavor", VMCreate{Name: "a", Image: "guest", Flavor: "nope"}, consensus.CodeNotFound},
		{"unknown image", VMCreate{Name: "a", Image: "nope", Flavor: "small"}, consensus.CodeNotFound},
		{"bad name", VMCreate{Name: "-x", Image: "guest", Flavor: "small"}, consensus.CodeInvalid},
		{"over quota", VMCreate{Name: "a", Image: "guest", Flavor: "huge"}, consensus.CodeQuotaExceeded},
		{"bad user-data", VMCreate{Name: "a", Image: "guest", Flavor: "small", UserData: "#cloud-config\nusers: [oops"}, consensus.CodeInvalid},
		{"bad ssh key", VMCreate{Name: "a", Image: "guest", Flavor: "small", SSHKeys: []string{"not a key"}}, consensus.CodeInvalid},
	} {
		_, err := e.svc.CreateVM(ctx, e.user, tc.req)
		if consensus.ErrorCode(err) != tc.code {
			t.Errorf("%s: got %v (code %q), want code %s", tc.name, err, consensus.ErrorCode(err), tc.code)
		}
	}
	// An image bigger than the flavor's disk.
	_, err := e.node.Apply(ctx, MsgCreateImage, &Image{ID: "img-2", Name: "fat", ProjectID: e.image.ProjectID, Visibility: VisibilityProject,
		DiskFormat: FormatQCOW2, VirtualSize: 5 << 30}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "a", Image: "fat", Flavor: "big"}); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Errorf("image larger than disk: %v", err)
	}
	if vms, _ := e.svc.ListVMs(e.user, ""); len(vms) != 0 {
		t.Errorf("VMs left behind: %+v", vms)
	}
	if u := e.usage(t); u != (identity.Resources{ObjectGiB: 1}) { // the guest image's GiB
		t.Errorf("quota charged by refused requests: %+v", u)
	}
	if ports := netfabric.PortsOf(e.node.Store().ReadTxn(), ""); len(ports) != 0 {
		t.Errorf("ports left: %+v", ports)
	}
}

func TestDeleteUnplacedVMReleasesEverything(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "tmp", Image: "guest", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Do(ctx, e.user, "tmp", OpDelete, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VM(e.user, vm.ID); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("deleted VM still there: %v", err)
	}
	if u := e.usage(t); u != (identity.Resources{ObjectGiB: 1}) { // the guest image's GiB
		t.Fatalf("quota not released: %+v", u)
	}
	if p := netfabric.PortsOf(e.node.Store().ReadTxn(), vm.ID); len(p) != 0 {
		t.Fatalf("ports not released: %+v", p)
	}
	// The address is free again for the next VM.
	vm2, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "tmp2", Image: "guest", Flavor: "small"})
	if err != nil || vm2.IPs()[0] != vm.IPs()[0] {
		t.Fatalf("address not reused: %v %v", vm2.IPs(), err)
	}
}

func TestSchedulerSpreadsRespectsAntiAffinityAndCapacity(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	// 1 CPU × ratio 1: each host holds one 1-vCPU VM.
	if _, err := e.svc.SetSettings(ctx, e.admin, Settings{CPUAllocationRatio: 1, RAMAllocationRatio: 1, ReservedRAMMiB: 0}, 0); err != nil {
		t.Fatal(err)
	}
	e.host(t, "node1", 1, 2048)
	e.host(t, "node2", 1, 4096)
	// b is created once a is placed: two VMs pending in one scheduling pass
	// are placed in the order of their (random) IDs, and this test is
	// about where the first one goes.
	for _, name := range []string{"a", "b"} {
		if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: name, Image: "guest", Flavor: "small", Group: "db"}); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 5*time.Second, name+" placed", func() error {
			if v, _ := e.svc.VM(e.user, name); v.Node == "" {
				return fmt.Errorf("%s not placed yet", name)
			}
			return nil
		})
	}
	testutil.WaitFor(t, 5*time.Second, "both placed", func() error {
		a, _ := e.svc.VM(e.user, "a")
		b, _ := e.svc.VM(e.user, "b")
		if a.Node == "" || b.Node == "" {
			return fmt.Errorf("a on %q, b on %q", a.Node, b.Node)
		}
		if a.Node == b.Node {
			t.Fatalf("anti-affinity group on one node %s", a.Node)
		}
		if a.Node != "node2" {
			t.Fatalf("spread: first VM should go to the emptier node2, went to %s", a.Node)
		}
		return nil
	})
	// Its NICs are bound where it was placed (their networks reach it there).
	a, _ := e.svc.VM(e.user, "a")
	if ports := netfabric.PortsOf(e.node.Store().ReadTxn(), a.ID); len(ports) == 0 || ports[0].Node != "node2" {
		t.Fatalf("ports of a VM placed on node2: %+v", ports)
	}
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "c", Image: "guest", Flavor: "small"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "c refused", func() error {
		c, _ := e.svc.VM(e.user, "c")
		if c.Status.State != StateError {
			return fmt.Errorf("state %s", c.Status.State)
		}
		return nil
	})
	// A placement the FSM must refuse even if a scheduler proposed it.
	c, _ := e.svc.VM(e.user, "c")
	if _, err := e.node.Apply(ctx, MsgPlaceVM, placeVMCmd{ID: c.ID, Node: "node1"}, nil); consensus.ErrorCode(err) == "" {
		t.Fatalf("overfilling node1 was accepted")
	}
	// Room appears; starting the failed VM again gets it scheduled.
	e.host(t, "node3", 2, 4096)
	if _, err := e.svc.Do(ctx, e.user, "c", OpStart, 0); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "c placed after a new start", func() error {
		if c, _ := e.svc.VM(e.user, "c"); c.Node != "node3" {
			return fmt.Errorf("c on %q, state %s", c.Node, c.Status.State)
		}
		return nil
	})
}

// The guest powering itself off stops the VM, unless the owner asked for
// something after the node saw it.
func TestGuestStopDoesNotOverrideANewerRequest(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node1", 2, 4096)
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "g", Image: "guest", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "placed", func() error {
		if v, _ := e.svc.VM(e.user, "g"); v.Node == "" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	seen, _ := e.svc.VM(e.user, "g")
	if _, err := e.svc.Do(ctx, e.user, "g", OpReboot, 0); err != nil { // a newer request
		t.Fatal(err)
	}
	report := func(version uint64) {
		if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: vm.ID, Node: "node1", Status: VMStatus{State: StateStopped}, GuestStopped: true, Version: version}, nil); err != nil {
			t.Fatal(err)
		}
	}
	report(seen.Version)
	if v, _ := e.svc.VM(e.user, "g"); v.Desired != DesiredRunning {
		t.Fatalf("a stale guest stop overrode the newer request: desired %s", v.Desired)
	}
	now, _ := e.svc.VM(e.user, "g")
	report(now.Version)
	if v, _ := e.svc.VM(e.user, "g"); v.Desired != DesiredStopped {
		t.Fatalf("the guest's own stop was not recorded: desired %s", v.Desired)
	}
}

func TestResizeChargesTheDifference(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "r", Image: "guest", Flavor: "big"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Resize(ctx, e.user, "r", "small", 0); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("shrinking the disk: %v", err)
	}
	if _, err := e.svc.Resize(ctx, e.user, "r", "huge", 0); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("huge has a smaller disk too: %v", err)
	}
	if _, err := e.id.CreateFlavor(ctx, e.admin, identity.FlavorSpec{Name: "bigger", VCPUs: 3, RAMMiB: 2048, DiskGiB: 4}); err != nil {
		t.Fatal(err)
	}
	vm, err := e.svc.Resize(ctx, e.user, "r", "bigger", 0)
	if err != nil || vm.Spec.VCPUs != 3 {
		t.Fatalf("resize: %+v %v", vm, err)
	}
	if u := e.usage(t); u.VCPUs != 3 || u.RAMMiB != 2048 || u.DiskGiB != 4 {
		t.Fatalf("usage after resize: %+v", u)
	}
}

// Private images are their uploader's, project images their project's,
// public images everyone's.
func TestImageVisibility(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	if _, err := e.id.CreateUser(ctx, e.admin, identity.UserSpec{Name: "porter", Password: "trolley-route-88"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "kitchen"}); err != nil {
		t.Fatal(err)
	}
	if err := e.id.SetMember(ctx, e.admin, "kitchen", "porter", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	if _, err := e.id.CreateUser(ctx, e.admin, identity.UserSpec{Name: "doctor", Password: "ward-round-5523"}); err != nil {
		t.Fatal(err)
	}
	if err := e.id.SetMember(ctx, e.admin, "ward", "doctor", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	porter, doctor := login(t, e.id, "porter", "trolley-route-88"), login(t, e.id, "doctor", "ward-round-5523")
	for _, img := range []Image{
		{ID: "img-private", Name: "mine", Visibility: VisibilityPrivate},
		{ID: "img-public", Name: "everyone", Visibility: VisibilityPublic},
	} {
		img.ProjectID, img.OwnerID, img.DiskFormat = e.image.ProjectID, e.user.User.ID, FormatQCOW2
		if _, err := e.node.Apply(ctx, MsgCreateImage, &img, nil); err != nil {
			t.Fatal(err)
		}
	}
	names := func(p *identity.Principal) string {
		var out []string
		for _, img := range e.svc.images.List(p, "") {
			out = append(out, img.Name)
		}
		return strings.Join(out, ",")
	}
	for who, want := range map[*identity.Principal]string{
		e.user:  "everyone,guest,mine", // the uploader
		doctor:  "everyone,guest",      // same project, not the uploader
		porter:  "everyone",            // another project
		e.admin: "everyone,guest,mine", // cluster admin
	} {
		if got := names(who); got != want {
			t.Errorf("%s sees %q, want %q", who.User.Name, got, want)
		}
	}
	if _, err := e.svc.CreateVM(ctx, porter, VMCreate{Name: "x", Image: "guest", Flavor: "small"}); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Errorf("a VM from another project's image: %v", err)
	}
	// Only the project's members change an image; only cluster admins make one public.
	if _, err := e.svc.images.Update(ctx, porter, "everyone", nil, ptr(VisibilityPrivate), 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("another project's member changed a public image: %v", err)
	}
	if _, err := e.svc.images.Update(ctx, e.user, "guest", nil, ptr(VisibilityPublic), 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a member published an image: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// A VM deleted on a node that stopped reporting is purged by the leader;
// its quota and address come back.
func TestDeletedVMOnLostNodeIsReaped(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	if _, err := e.node.Apply(ctx, MsgReportHost, &Host{Name: "gone", VCPUs: 4, RAMMiB: 8192, ReportedAt: time.Now().Add(-10 * time.Minute)}, nil); err != nil {
		t.Fatal(err)
	}
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "orphan", Image: "guest", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, MsgPlaceVM, placeVMCmd{ID: vm.ID, Node: "gone"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Do(ctx, e.user, "orphan", OpDelete, 0); err != nil {
		t.Fatal(err)
	}
	sch := NewScheduler(e.node, slog.Default())
	// A node that reported recently is left to do it itself.
	if err := sch.ReapDeleted(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VM(e.user, vm.ID); err != nil {
		t.Fatalf("reaped too early: %v", err)
	}
	if err := sch.ReapDeleted(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VM(e.user, vm.ID); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("not reaped: %v", err)
	}
	if u := e.usage(t); u != (identity.Resources{ObjectGiB: 1}) { // the guest image's GiB
		t.Fatalf("quota not released: %+v", u)
	}
}

// Images count against their project's object-storage quota.
func TestImagesChargeObjectQuota(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	q, err := e.id.GetQuota(e.admin, "ward")
	if err != nil {
		t.Fatal(err)
	}
	limits := q.Limits
	limits.ObjectGiB = 2
	if _, err := e.id.SetQuota(ctx, e.admin, "ward", limits, 0); err != nil {
		t.Fatal(err)
	}
	add := func(id string, size int64) error {
		_, err := e.node.Apply(ctx, MsgCreateImage, &Image{ID: id, Name: id, ProjectID: e.image.ProjectID, Visibility: VisibilityProject,
			DiskFormat: FormatQCOW2, Size: size}, nil)
		return err
	}
	if err := add("img-big", 3<<29); err != nil { // 1.5 GiB: with the 1 MiB guest, 2 GiB
		t.Fatal(err)
	}
	if u := e.usage(t); u.ObjectGiB != 2 {
		t.Fatalf("object usage %d GiB, want 2", u.ObjectGiB)
	}
	if err := add("img-more", 1<<30); consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("an image past the quota: %v", err)
	}
	if _, err := e.svc.images.Get(e.admin, "img-more"); err == nil {
		t.Fatal("the refused image was recorded")
	}
	if _, err := e.node.Apply(ctx, MsgDeleteImage, deleteImageCmd{ID: "img-big"}, nil); err != nil {
		t.Fatal(err)
	}
	if u := e.usage(t); u.ObjectGiB != 1 {
		t.Fatalf("object usage after delete %d GiB, want 1", u.ObjectGiB)
	}
}

// An upload past the quota is refused before a byte is spooled; a resize
// below the image's minimum RAM is refused.
func TestUploadRoomAndResizeMinimum(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	q, _ := e.id.GetQuota(e.admin, "ward")
	limits := q.Limits
	limits.ObjectGiB = 2
	if _, err := e.id.SetQuota(ctx, e.admin, "ward", limits, 0); err != nil {
		t.Fatal(err)
	}
	spec := ImageSpec{Name: "huge", Project: "ward"}
	if err := e.svc.images.CheckRoom(ctx, e.user, spec, 3<<30); consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("3 GiB into a 2 GiB quota: %v", err)
	}
	if err := e.svc.images.CheckRoom(ctx, e.user, spec, 1<<20); err != nil {
		t.Fatalf("1 MiB: %v", err)
	}
	if _, err := e.node.Apply(ctx, MsgCreateImage, &Image{ID: "img-fat", Name: "fat", ProjectID: e.image.ProjectID, Visibility: VisibilityProject,
		DiskFormat: FormatQCOW2, MinRAMMiB: 1024}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "f", Image: "fat", Flavor: "big"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Resize(ctx, e.user, "f", "huge", 0); consensus.ErrorCode(err) != consensus.CodeInvalid || !strings.Contains(err.Error(), "1024 MiB") {
		t.Fatalf("resize below the image's minimum RAM: %v", err)
	}
}

// Console tickets: signed with the cluster's own key, good once per node,
// for one VM, and only for members of its project.
func TestConsoleTickets(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "c1", Image: "guest", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ConsoleTicket(ctx, e.user, "c1"); consensus.ErrorCode(err) != consensus.CodeUnavailable {
		t.Fatalf("a ticket before the cluster has a console key: %v", err)
	}
	if err := EnsureConsoleKey(ctx, e.node); err != nil {
		t.Fatal(err)
	}
	first := consensus.First[consoleKey](e.node.Store().ReadTxn(), tKeys, "id").Key
	if err := EnsureConsoleKey(ctx, e.node); err != nil || string(consensus.First[consoleKey](e.node.Store().ReadTxn(), tKeys, "id").Key) != string(first) {
		t.Fatalf("a second EnsureConsoleKey changed the key: %v", err)
	}
	cons := NewConsoles(e.svc, nil, nil, slog.Default())
	tk, err := e.svc.ConsoleTicket(ctx, e.user, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.check(tk.Ticket, "vm-other"); err == nil {
		t.Error("a ticket worked for another VM")
	}
	forged := tk.Ticket[:len(tk.Ticket)-2] + "AA"
	if err := cons.check(forged, vm.ID); err == nil {
		t.Error("a tampered ticket worked")
	}
	if err := cons.check(tk.Ticket, vm.ID); err != nil {
		t.Fatalf("a fresh ticket: %v", err)
	}
	if err := cons.check(tk.Ticket, vm.ID); err == nil {
		t.Error("a ticket worked twice")
	}
	// A reader of the project may look, not take the console.
	if _, err := e.id.CreateUser(ctx, e.admin, identity.UserSpec{Name: "auditor", Password: "read-only-3391"}); err != nil {
		t.Fatal(err)
	}
	if err := e.id.SetMember(ctx, e.admin, "ward", "auditor", identity.RoleReader); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ConsoleTicket(ctx, login(t, e.id, "auditor", "read-only-3391"), "c1"); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a reader got a console ticket: %v", err)
	}
}

// A VM joins the networks it names, in order: its project's and the
// cluster's, one NIC each, a project network's at its MTU. Another
// project's network is not found, and a refused VM leaves nothing behind.
func TestVMOnProjectNetworks(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	ward, err := e.id.GetProject(e.admin, "ward")
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	for _, nw := range []netfabric.Network{
		{ID: "net-imaging", Name: "imaging", Project: ward.ID, CIDR: "10.50.0.0/24"},
		{ID: "net-lab", Name: "lab-net", Project: other.ID, CIDR: "10.51.0.0/24"},
	} {
		if _, err := e.node.Apply(ctx, netfabric.MsgCreateNetwork, nw, nil); err != nil {
			t.Fatal(err)
		}
	}
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "pacs", Image: "guest", Flavor: "small", Stopped: true, Networks: []string{"imaging", "default"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(vm.NICs) != 2 || vm.NICs[0].Network != "net-imaging" || vm.NICs[0].MTU != 1450 || vm.NICs[0].IP != "10.50.0.2" ||
		vm.NICs[1].Network != "default" || vm.NICs[1].MTU != 0 {
		t.Fatalf("NICs: %+v", vm.NICs)
	}
	if ports := netfabric.PortsOf(e.node.Store().ReadTxn(), vm.ID); len(ports) != 2 || ports[0].Project != ward.ID || !ports[0].Charged ||
		fmt.Sprint(ports[0].SecurityGroups) != fmt.Sprint([]string{netfabric.DefaultGroupID(ward.ID)}) || len(ports[1].SecurityGroups) != 0 {
		t.Fatalf("ports (the project network's in the default group, the cluster network's in none): %+v", ports)
	}
	// Named groups: the project network's NIC is in them.
	if _, err := e.node.Apply(ctx, netfabric.MsgCreateSecurityGroup, netfabric.SecurityGroup{ID: "sg-00000000000000a1", Name: "pacs-in", Project: ward.ID}, nil); err != nil {
		t.Fatal(err)
	}
	vm2, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "pacs2", Image: "guest", Flavor: "small", Stopped: true, Networks: []string{"imaging"}, SecurityGroups: []string{"pacs-in", "default"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := netfabric.PortsOf(e.node.Store().ReadTxn(), vm2.ID); len(p) != 1 || fmt.Sprint(p[0].SecurityGroups) != fmt.Sprint([]string{"sg-00000000000000a1", netfabric.DefaultGroupID(ward.ID)}) {
		t.Fatalf("ports with named groups: %+v", p)
	}
	if u := e.usage(t); u.Ports != 3 {
		t.Fatalf("the project's ports in use: %d, want 3", u.Ports)
	}
	countVMs := func() int { l, _ := e.svc.ListVMs(e.admin, ""); return len(l) }
	vms, ports := countVMs(), len(netfabric.AllPorts(e.node.Store().ReadTxn()))
	for _, c := range []struct {
		nets   []string
		groups []string
		code   string
	}{
		{[]string{"lab-net"}, nil, consensus.CodeNotFound},
		{[]string{"net-lab"}, nil, consensus.CodeNotFound},
		{[]string{"nowhere"}, nil, consensus.CodeNotFound},
		{[]string{"imaging", "net-imaging"}, nil, consensus.CodeInvalid},
		{[]string{"default", "imaging", "default", "imaging", "default"}, nil, consensus.CodeInvalid},
		{[]string{"imaging"}, []string{"no-such-group"}, consensus.CodeNotFound},
		{[]string{"default"}, []string{"pacs-in"}, consensus.CodeInvalid}, // no project network to filter
	} {
		if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "x", Image: "guest", Flavor: "small", Stopped: true, Networks: c.nets, SecurityGroups: c.groups}); consensus.ErrorCode(err) != c.code {
			t.Errorf("networks %v, groups %v: %v, want %s", c.nets, c.groups, err, c.code)
		}
	}
	if countVMs() != vms || len(netfabric.AllPorts(e.node.Store().ReadTxn())) != ports {
		t.Fatal("a refused VM left a VM or ports behind")
	}
}

// testDriver is a QEMU driver for tests that start real QEMUs as root,
// unconfined and outside cgroups, in a run directory of their own
// (short: QEMU's socket paths are limited) removed after the test.
func testDriver(t *testing.T, name string) *qemu.Driver {
	t.Helper()
	runDir, err := os.MkdirTemp("", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	return qemu.NewDriver(qemu.DriverConfig{RunDir: runDir, NoCgroups: true, Unconfined: true})
}
