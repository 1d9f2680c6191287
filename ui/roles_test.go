package ui

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
)

// rolesSetup is computeSetup with a reader ("clerk") and a member ("nurse")
// of radiology, and two image records of radiology without bytes: "guest"
// (project) and "ubuntu" (public, filed by the nurse).
func rolesSetup(t *testing.T) (*env, *identity.Principal, *identity.Project) {
	t.Helper()
	e, _, root, pr, _ := computeSetup(t)
	ctx := context.Background()
	for name, role := range map[string]identity.Role{"clerk": identity.RoleReader, "nurse": identity.RoleMember} {
		if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: name, Password: "correct horse"}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.SetMember(ctx, root, pr.Name, name, role); err != nil {
			t.Fatal(err)
		}
	}
	nurse, err := e.svc.GetUser(root, "nurse")
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []hypervisor.Image{
		{ID: "img-guest", Name: "guest", Visibility: hypervisor.VisibilityProject},
		{ID: "img-ubuntu", Name: "ubuntu", Visibility: hypervisor.VisibilityPublic},
	} {
		img.ProjectID, img.OwnerID, img.DiskFormat, img.Firmware = pr.ID, nurse.ID, hypervisor.FormatQCOW2, "bios"
		if _, err := e.node.Apply(ctx, hypervisor.MsgCreateImage, &img, nil); err != nil {
			t.Fatal(err)
		}
	}
	return e, root, pr
}

// The VM page shows a VM's cloud-init to the project's members and says
// it is hidden to its readers.
func TestVMPageHidesCloudInitFromReaders(t *testing.T) {
	e, root, pr := rolesSetup(t)
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID5WHCIylmEUGhyxygnxLkggX/botwVqq/W+x/6LNgjl nurse@ward"
	vm, err := e.compute.CreateVM(context.Background(), root, hypervisor.VMCreate{Name: "pacs", Project: pr.ID, Image: "guest", Flavor: "m1.small",
		Stopped: true, SSHKeys: []string{key}, UserData: "#cloud-config\npassword: hunter2\n"})
	if err != nil {
		t.Fatal(err)
	}
	clerk := e.browser()
	clerk.login("clerk", "correct horse")
	p := clerk.get("/vms/" + vm.ID)
	if p.status != http.StatusOK {
		t.Fatalf("the reader's VM page: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, `id="vm-cloud-init"`, "Hidden: only the project&#39;s members see a VM&#39;s SSH keys and user-data.")
	mustNotContain(t, p, "nurse@ward", "SHA256:", "user-data: ")
	nurse := e.browser()
	nurse.login("nurse", "correct horse")
	p = nurse.get("/vms/" + vm.ID)
	mustContain(t, p, `<code class="ssh-key">SHA256:`, "nurse@ward</code>", "user-data: 32 bytes")
	mustNotContain(t, p, "Hidden: only")
}

// imageRowOf finds an image's row on the images page.
func imageRowOf(t *testing.T, p page, id string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<tr class="image" data-id="` + regexp.QuoteMeta(id) + `".*?</tr>`).FindString(p.body)
	if m == "" {
		t.Fatalf("no row of image %s on %s:\n%s", id, p.path, p.body)
	}
	return m
}

// The images page offers the visibility and delete controls to whoever the
// image service lets change an image: a public image's only to cluster
// admins, even for a member of the project that filed it.
func TestImageControlsFollowWhoMayChange(t *testing.T) {
	e, _, _ := rolesSetup(t)
	controls := []string{`data-do="delete-image"`, `data-do="set-visibility"`}
	for user, want := range map[string]map[string]bool{
		"nurse": {"img-guest": true, "img-ubuntu": false},
		"clerk": {"img-guest": false, "img-ubuntu": false},
		"root":  {"img-guest": true, "img-ubuntu": true},
	} {
		b := e.browser()
		b.login(user, "correct horse")
		p := b.get("/images")
		for id, can := range want {
			row := imageRowOf(t, p, id)
			for _, c := range controls {
				if strings.Contains(row, c) != can {
					t.Errorf("%s: image %s has %s: %v, want %v", user, id, c, !can, can)
				}
			}
		}
	}
	// And the service agrees: the nurse's attempt is refused.
	b := e.browser()
	b.login("nurse", "correct horse")
	p := b.post("/images/img-ubuntu/delete", b.formOn("/images", url.Values{}))
	if p.status == http.StatusOK && strings.Contains(p.path, "done=deleted") {
		t.Fatalf("the nurse deleted the public image: %s", p.path)
	}
	if _, err := e.images.Get(adminPrincipal(t, e), "img-ubuntu"); err != nil {
		t.Fatalf("the public image is gone: %v", err)
	}
}
