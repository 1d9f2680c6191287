package hypervisor

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID5WHCIylmEUGhyxygnxLkggX/botwVqq/W+x/6LNgjl nurse@ward"

// addUser creates a user with a role in a project ("" for none) and logs in.
func (e *computeEnv) addUser(t *testing.T, name, project string, role identity.Role) *identity.Principal {
	t.Helper()
	ctx := context.Background()
	if _, err := e.id.CreateUser(ctx, e.admin, identity.UserSpec{Name: name, Password: "correct-horse-battery"}); err != nil {
		t.Fatal(err)
	}
	if project != "" {
		if err := e.id.SetMember(ctx, e.admin, project, name, role); err != nil {
			t.Fatal(err)
		}
	}
	return login(t, e.id, name, "correct-horse-battery")
}

// addImage records an image directly (no bytes: these tests never boot).
func (e *computeEnv) addImage(t *testing.T, img Image) *Image {
	t.Helper()
	img.DiskFormat, img.Firmware = FormatQCOW2, "bios"
	var out *Image
	if _, err := e.node.Apply(context.Background(), MsgCreateImage, &img, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// A VM's cloud-init (SSH keys, user-data) is for its project's members:
// readers get the VM without it, by ID, by name and in lists.
func TestReadersDoNotSeeCloudInit(t *testing.T) {
	e := newComputeEnv(t)
	clerk := e.addUser(t, "clerk", "ward", identity.RoleReader)
	const userData = "#cloud-config\npassword: hunter2\n"
	vm, err := e.svc.CreateVM(context.Background(), e.user, VMCreate{Name: "pacs", Image: "guest", Flavor: "small",
		SSHKeys: []string{testKey}, UserData: userData})
	if err != nil {
		t.Fatal(err)
	}
	full := func(who string, v *VM) {
		t.Helper()
		if len(v.Spec.SSHKeys) != 1 || v.Spec.UserData != userData || v.CloudInitRedacted {
			t.Errorf("%s: cloud-init missing: keys %v, user-data %q, redacted %v", who, v.Spec.SSHKeys, v.Spec.UserData, v.CloudInitRedacted)
		}
	}
	hidden := func(who string, v *VM) {
		t.Helper()
		if len(v.Spec.SSHKeys) != 0 || v.Spec.UserData != "" || !v.CloudInitRedacted {
			t.Errorf("%s: a reader sees cloud-init: keys %v, user-data %q, redacted %v", who, v.Spec.SSHKeys, v.Spec.UserData, v.CloudInitRedacted)
		}
	}
	for _, ref := range []string{vm.ID, "pacs"} {
		got, err := e.svc.VM(clerk, ref)
		if err != nil {
			t.Fatal(err)
		}
		hidden("reader, "+ref, got)
	}
	list, err := e.svc.ListVMs(clerk, "")
	if err != nil || len(list) != 1 {
		t.Fatalf("reader's list: %v %v", list, err)
	}
	hidden("reader's list", &list[0])
	if list, err = e.svc.ListVMs(clerk, "ward"); err != nil || len(list) != 1 {
		t.Fatalf("reader's list of ward: %v %v", list, err)
	}
	hidden("reader's list of ward", &list[0])
	// Members and cluster admins see it; the reader's view changed nothing.
	for who, p := range map[string]*identity.Principal{"member": e.user, "cluster admin": e.admin} {
		got, err := e.svc.VM(p, "pacs")
		if err != nil {
			t.Fatal(err)
		}
		full(who, got)
		list, err := e.svc.ListVMs(p, "")
		if err != nil || len(list) != 1 {
			t.Fatalf("%s's list: %v %v", who, list, err)
		}
		full(who+"'s list", &list[0])
	}
}

// An image name means the VM's own project's image, else a public one; a
// cluster admin creating a VM in one project never boots another's upload,
// by name or by ID, and neither does a command that reaches the FSM.
func TestVMImagesResolveInTheirOwnProject(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	if _, err := e.id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	lab, err := e.id.GetProject(e.admin, "lab")
	if err != nil {
		t.Fatal(err)
	}
	public := e.addImage(t, Image{ID: "img-pub", Name: "ubuntu", Visibility: VisibilityPublic})
	shadow := e.addImage(t, Image{ID: "img-lab", Name: "ubuntu", ProjectID: lab.ID, OwnerID: e.admin.User.ID, Visibility: VisibilityProject})
	labOnly := e.addImage(t, Image{ID: "img-lab-only", Name: "labonly", ProjectID: lab.ID, OwnerID: e.admin.User.ID, Visibility: VisibilityProject})

	vm, err := e.svc.CreateVM(ctx, e.admin, VMCreate{Name: "a", Project: "ward", Image: "ubuntu", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.Image != public.ID {
		t.Errorf("a cluster admin's VM in ward boots %s, want the public %s", vm.Spec.Image, public.ID)
	}
	if vm, err = e.svc.CreateVM(ctx, e.admin, VMCreate{Name: "b", Project: "lab", Image: "ubuntu", Flavor: "small"}); err != nil || vm.Spec.Image != shadow.ID {
		t.Errorf("in lab, lab's own ubuntu wins: %v %v", vm, err)
	}
	for _, ref := range []string{labOnly.ID, "labonly", shadow.ID} {
		_, err := e.svc.CreateVM(ctx, e.admin, VMCreate{Name: "c", Project: "ward", Image: ref, Flavor: "small"})
		if consensus.ErrorCode(err) != consensus.CodeNotFound || !strings.Contains(err.Error(), "belongs to another project") {
			t.Errorf("a VM in ward from lab's image %s: %v", ref, err)
		}
	}
	// The FSM refuses it too, whoever proposes it.
	cmd := createVMCmd{VM: VM{ID: "vm-x", Name: "x", ProjectID: e.image.ProjectID, Desired: DesiredStopped,
		Spec: VMSpec{VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: labOnly.ID}}, ImageScoped: true}
	if _, err := e.node.Apply(ctx, MsgCreateVM, &cmd, nil); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Errorf("the FSM created a VM from another project's image: %v", err)
	}
	// A command from before the rule (in the log, or from an older node)
	// still applies as it did when it was first applied.
	cmd.ImageScoped = false
	if _, err := e.node.Apply(ctx, MsgCreateVM, &cmd, nil); err != nil {
		t.Errorf("an old command replays differently: %v", err)
	}
}

// Public images are the cluster's: a member of the project that filed one
// cannot rename, hide or delete it; a cluster admin can.
func TestOnlyClusterAdminsChangePublicImages(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.addImage(t, Image{ID: "img-pub", Name: "ubuntu", ProjectID: e.image.ProjectID, OwnerID: e.user.User.ID, Visibility: VisibilityPublic})
	if _, err := e.svc.images.Update(ctx, e.user, "ubuntu", ptr("mine"), nil, 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a member renamed a public image: %v", err)
	}
	if _, err := e.svc.images.Update(ctx, e.user, "ubuntu", nil, ptr(VisibilityProject), 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a member hid a public image: %v", err)
	}
	if err := e.svc.images.Delete(ctx, e.user, "ubuntu", 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Errorf("a member deleted a public image: %v", err)
	}
	if img, err := e.svc.images.Get(e.user, "img-pub"); err != nil || img.Name != "ubuntu" || img.Visibility != VisibilityPublic {
		t.Fatalf("the public image changed: %+v %v", img, err)
	}
	// A member still changes their project's own images.
	if img, err := e.svc.images.Update(ctx, e.user, "guest", ptr("guest2"), nil, 0); err != nil || img.Name != "guest2" {
		t.Errorf("a member renaming a project image: %+v %v", img, err)
	}
	if img, err := e.svc.images.Update(ctx, e.admin, "ubuntu", ptr("ubuntu-24.04"), nil, 0); err != nil || img.Name != "ubuntu-24.04" {
		t.Errorf("a cluster admin renaming a public image: %+v %v", img, err)
	}
}

// A private image belongs to its project: once its uploader is removed from
// the project they neither see it nor boot it, by name or by ID.
func TestRemovedMemberLosesPrivateImages(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	mine := e.addImage(t, Image{ID: "img-mine", Name: "mine", ProjectID: e.image.ProjectID, OwnerID: e.user.User.ID, Visibility: VisibilityPrivate})
	if _, err := e.svc.images.Get(e.user, "mine"); err != nil {
		t.Fatalf("the uploader does not see their image: %v", err)
	}
	if _, err := e.id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "kitchen"}); err != nil {
		t.Fatal(err)
	}
	if err := e.id.SetMember(ctx, e.admin, "kitchen", "nurse", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	if err := e.id.RemoveMember(ctx, e.admin, "ward", "nurse"); err != nil {
		t.Fatal(err)
	}
	nurse := login(t, e.id, "nurse", "night-shift-9471")
	var names []string
	for _, img := range e.svc.images.List(nurse, "") {
		names = append(names, img.Name)
	}
	if slices.Contains(names, "mine") {
		t.Errorf("removed from ward, the uploader still lists %v", names)
	}
	for _, ref := range []string{mine.ID, "mine"} {
		if _, err := e.svc.images.Get(nurse, ref); consensus.ErrorCode(err) != consensus.CodeNotFound {
			t.Errorf("removed from ward, the uploader gets image %s: %v", ref, err)
		}
		if _, err := e.svc.CreateVM(ctx, nurse, VMCreate{Name: "x", Project: "kitchen", Image: ref, Flavor: "small"}); consensus.ErrorCode(err) != consensus.CodeNotFound {
			t.Errorf("removed from ward, the uploader boots image %s: %v", ref, err)
		}
		if _, err := e.svc.images.Update(ctx, nurse, ref, ptr("stolen"), nil, 0); consensus.ErrorCode(err) != consensus.CodeNotFound {
			t.Errorf("removed from ward, the uploader renames image %s: %v", ref, err)
		}
	}
}
