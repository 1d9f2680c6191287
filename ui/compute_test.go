package ui

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
)

// computeSetup signs root in on a compute env with disks, a project and a
// flavor: what creating a VM needs besides an image.
func computeSetup(t *testing.T) (*env, *browser, *identity.Principal, *identity.Project, *identity.Flavor) {
	t.Helper()
	e := newComputeEnv(t)
	e.admin("root", "correct horse")
	e.waitDisks(2)
	root := adminPrincipal(t, e)
	ctx := context.Background()
	pr, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: "radiology"})
	if err != nil {
		t.Fatal(err)
	}
	fl, err := e.svc.CreateFlavor(ctx, root, identity.FlavorSpec{Name: "m1.small", VCPUs: 1, RAMMiB: 512, DiskGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.login("root", "correct horse")
	return e, b, root, pr, fl
}

// qcow2 makes a small, valid qcow2 image with qemu-img.
func qcow2(t *testing.T) []byte {
	t.Helper()
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatalf("qemu-img is required (apt-get install qemu-utils): %v", err)
	}
	f := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", f, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// uploadImage sends an image as the images page's script does.
func (b *browser) uploadImage(body []byte, q url.Values) page {
	b.t.Helper()
	csrf := b.get("/images").csrf(b.t)
	return b.upload("/images/upload?"+q.Encode(), body, csrfHeader, csrf, "Content-Type", "application/octet-stream")
}

var vmPathRE = regexp.MustCompile(`^/vms/(vm-[0-9a-f]+)\?done=create$`)

func TestCreateVMThroughForm(t *testing.T) {
	e, b, root, pr, fl := computeSetup(t)

	// Without an image the form says where to get one.
	p := b.get("/vms/new")
	mustContain(t, p, `id="vm-no-image"`, `href="/images"`)

	p = b.uploadImage(qcow2(t), url.Values{"name": {"debian-12"}, "project": {pr.ID}, "os_type": {"linux"}})
	if p.status != http.StatusCreated || p.header.Get("Location") != "/images?done=uploaded&name=debian-12" {
		t.Fatalf("upload: %d %q\n%s", p.status, p.header.Get("Location"), p.body)
	}
	img, err := e.images.Get(root, "debian-12")
	if err != nil || img.Format != hypervisor.FormatQCOW2 || img.VirtualSize != 64<<20 || img.OSType != "linux" {
		t.Fatalf("uploaded image: %+v %v", img, err)
	}
	// Without the form token the upload is refused.
	if p := b.upload("/images/upload?name=x", []byte("x")); p.status != http.StatusForbidden {
		t.Fatalf("upload without a token: %d", p.status)
	}

	p = b.get("/vms/new")
	mustContain(t, p, `id="vm-name"`, `id="vm-image"`, `id="vm-flavor"`, `id="vm-create"`,
		`<option value="`+img.ID+`"`, `<option value="`+fl.ID+`"`, "1 vCPU, 512 MiB RAM, 1 GiB disk",
		`type="hidden" id="vm-project" name="project" value="`+pr.ID+`"`)

	form := func(name, disk string) url.Values {
		return b.formOn("/vms/new", url.Values{"name": {name}, "project": {pr.ID}, "image": {img.ID}, "flavor": {fl.ID},
			"ssh_keys": {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID5WHCIylmEUGhyxygnxLkggX/botwVqq/W+x/6LNgjl nurse@ward\n\n"}, "user_data": {"#cloud-config\n"}, "data_disk_gib": {disk}})
	}
	p = b.post("/vms", form("web1", "two"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("data disk two: %d", p.status)
	}
	mustContain(t, p, "Extra data disk (GiB) must be a whole number", `value="web1"`)
	p = b.post("/vms", form("bad name!", ""))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("bad name: %d", p.status)
	}
	mustContain(t, p, `id="vm-name-error" role="alert">“bad name!” cannot be a name: a name is 1–63 letters`, `value="bad name!"`)
	mustNotContain(t, p, "Invalid input")

	// Sent by htmx, as the browser sends it: the page it lands on after
	// the redirect tells htmx its own address, without the one-time
	// message, and a plain GET of that address shows no message.
	p = b.post("/vms", form("web1", "2"), "HX-Request", "true")
	m := vmPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("create: %d at %s\n%s", p.status, p.path, p.body)
	}
	id := m[1]
	if got := p.header.Get("HX-Push-Url"); got != "/vms/"+id {
		t.Fatalf("HX-Push-Url after the create: %q", got)
	}
	// A button on the VM's own page replaces its history entry instead.
	op := b.post("/vms/"+id+"/op/stop", b.formOn("/vms/"+id, url.Values{}), "HX-Request", "true", "HX-Current-URL", "https://cairn.example/vms/"+id)
	if op.header.Get("HX-Replace-Url") != "/vms/"+id || op.header.Get("HX-Push-Url") != "" {
		t.Fatalf("after a button on the page (%d at %s): push %q, replace %q", op.status, op.path, op.header.Get("HX-Push-Url"), op.header.Get("HX-Replace-Url"))
	}
	if _, err := e.compute.Do(context.Background(), root, id, hypervisor.OpStart, 0); err != nil {
		t.Fatal(err)
	}
	mustContain(t, p, "The VM was created.", `id="vm-state"`, `data-state="scheduling"`, "Waiting for a node",
		`id="vm-ips">10.213.`, `id="vm-console-link" class="button" href="/vms/`+id+`/console"`,
		`hx-get="/vms/`+id+`/status" hx-trigger="every 2s"`, `id="vm-data-disks">2 GiB<`, "debian-12", "m1.small")
	vms, err := e.compute.ListVMs(root, "")
	if err != nil || len(vms) != 1 || vms[0].ID != id || len(vms[0].Spec.SSHKeys) != 1 || vms[0].Spec.DataDisks[0].SizeGiB != 2 {
		t.Fatalf("VMs in the service: %+v %v", vms, err)
	}

	// The list shows it, and so does its refresh.
	p = b.get("/vms")
	mustContain(t, p, `<tr class="vm" data-id="`+id+`" data-name="web1" data-state="scheduling">`, `id="vm-new"`,
		`hx-get="/vms/list" hx-trigger="every 2s"`, `id="nav-vms" href="/vms" class="active"`)
	p = b.get("/vms/list")
	if p.status != http.StatusOK || !strings.HasPrefix(p.body, `<section id="vm-list"`) {
		t.Fatalf("list fragment: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, `data-name="web1"`, "10.213.")

	// A second VM of the same name is refused, in the user's language.
	b.lang = "zh-CN"
	p = b.post("/vms", form("web1", ""))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("duplicate: %d", p.status)
	}
	// Said once, whole, in Chinese: not a Chinese label before the
	// English sentence that says it again.
	mustContain(t, p, "此项目中已有名为“web1”的虚拟机。", `value="web1"`)
	mustNotContain(t, p, "already exists", "已存在：")
}

func TestVMButtonsSendOperations(t *testing.T) {
	e, b, root, pr, fl := computeSetup(t)
	ctx := context.Background()
	if p := b.uploadImage(qcow2(t), url.Values{"name": {"img"}, "project": {pr.ID}}); p.status != http.StatusCreated {
		t.Fatalf("upload: %d %s", p.status, p.body)
	}
	vm, err := e.compute.CreateVM(ctx, root, hypervisor.VMCreate{Name: "web1", Project: pr.ID, Image: "img", Flavor: fl.ID})
	if err != nil {
		t.Fatal(err)
	}
	at := "/vms/" + vm.ID
	desired := func(want string) {
		t.Helper()
		got, err := e.compute.VM(root, vm.ID)
		if err != nil || got.Desired != want {
			t.Fatalf("desired %+v %v, want %s", got, err, want)
		}
	}
	op := func(name, want string) page {
		t.Helper()
		p := b.post(at+"/op/"+name, b.formOn(at, url.Values{}))
		if p.status != http.StatusOK || p.path != at+"?done="+name {
			t.Fatalf("%s: %d at %s\n%s", name, p.status, p.path, p.body)
		}
		desired(want)
		return p
	}

	p := b.get(at)
	mustContain(t, p, `id="vm-op-stop"`, `id="vm-op-force-stop"`, `id="vm-op-delete"`, `hx-confirm="Delete VM web1`)
	mustNotContain(t, p, `id="vm-op-start"`, `id="vm-op-reboot"`, `id="vm-op-resume"`)

	p = op(hypervisor.OpStop, hypervisor.DesiredStopped)
	mustContain(t, p, `id="vm-op-start"`, "The VM is shutting down.", "requested: Shut down", "Shutdown requested")
	mustNotContain(t, p, `id="vm-op-stop"`)
	op(hypervisor.OpStart, hypervisor.DesiredRunning)
	p = op(hypervisor.OpPause, hypervisor.DesiredPaused)
	mustContain(t, p, `id="vm-op-resume"`)
	op(hypervisor.OpResume, hypervisor.DesiredRunning)
	op(hypervisor.OpForceStop, hypervisor.DesiredStopped)
	if got, _ := e.compute.VM(root, vm.ID); got.StopMode != hypervisor.StopForce {
		t.Fatalf("force stop: stop mode %q", got.StopMode)
	}

	// Refusals come back on the page: a stopped VM cannot be rebooted.
	p = b.post(at+"/op/reboot", b.formOn(at, url.Values{}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("reboot of a stopped VM: %d", p.status)
	}
	mustContain(t, p, "Conflict: VM web1 is stopped")
	if p := b.post(at+"/op/explode", b.formOn(at, url.Values{})); p.status != http.StatusNotFound {
		t.Fatalf("unknown operation: %d", p.status)
	}

	// Rename and resize carry the version the page showed.
	big, err := e.svc.CreateFlavor(ctx, root, identity.FlavorSpec{Name: "m1.large", VCPUs: 2, RAMMiB: 1024, DiskGiB: 2})
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := e.compute.VM(root, vm.ID)
	p = b.post(at+"/rename", b.formOn(at, url.Values{"name": {"web2"}, "version": {uitoa(cur.Version - 1)}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("rename with a stale version: %d", p.status)
	}
	mustContain(t, p, "Someone changed this VM meanwhile", `value="web2"`)
	p = b.post(at+"/rename", b.formOn(at, url.Values{"name": {"web2"}, "version": {uitoa(cur.Version)}}))
	if p.status != http.StatusOK || p.path != at+"?done=rename" {
		t.Fatalf("rename: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "VM web2")
	cur, _ = e.compute.VM(root, vm.ID)
	p = b.post(at+"/resize", b.formOn(at, url.Values{"flavor": {big.ID}, "version": {uitoa(cur.Version)}}))
	if p.status != http.StatusOK || p.path != at+"?done=resize" {
		t.Fatalf("resize: %d at %s\n%s", p.status, p.path, p.body)
	}
	if got, _ := e.compute.VM(root, vm.ID); got.Spec.VCPUs != 2 || got.Spec.Flavor != big.ID {
		t.Fatalf("after resize: %+v", got.Spec)
	}

	// The consoles get a fresh ticket's paths.
	p = b.get(at + "/console")
	mustContain(t, p, `id="novnc-screen"`, `data-path="/api/v1/vms/`+vm.ID+`/vnc?ticket=`, `id="console-status"`,
		`<script type="module" src="/static/console.js">`, `id="console-cad"`, `href="/vms/`+vm.ID+`/serial"`)
	p = b.get(at + "/serial")
	mustContain(t, p, `id="serial-output"`, `data-path="/api/v1/vms/`+vm.ID+`/serial?ticket=`, `src="/static/serial.js"`)

	// Delete: a VM that never had a node is gone at once.
	p = b.post(at+"/op/delete", b.formOn(at, url.Values{}))
	if p.status != http.StatusOK || p.path != "/vms?deleted=web2" {
		t.Fatalf("delete: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "VM web2 is being deleted.", `id="vms-empty"`)
	if _, err := e.compute.VM(root, vm.ID); err == nil {
		t.Fatal("the VM is still there after delete")
	}
	// Its page's refresh now sends htmx to the list.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+at+"/status", nil)
	req.Header.Set("HX-Request", "true")
	p = b.noFollow().do(req)
	if p.status != http.StatusNoContent || p.header.Get("HX-Redirect") != "/vms" {
		t.Fatalf("status of a deleted VM: %d, HX-Redirect %q", p.status, p.header.Get("HX-Redirect"))
	}
}

func TestImagesSearchVisibilityDelete(t *testing.T) {
	e, b, root, pr, _ := computeSetup(t)
	disk := qcow2(t)
	for name, os := range map[string]string{"debian-12": "linux", "win-2022": "windows"} {
		if p := b.uploadImage(disk, url.Values{"name": {name}, "project": {pr.ID}, "os_type": {os}, "visibility": {"project"}}); p.status != http.StatusCreated {
			t.Fatalf("upload %s: %d %s", name, p.status, p.body)
		}
	}
	p := b.get("/images?done=uploaded&name=win-2022")
	mustContain(t, p, "Image win-2022 was added.", `id="image-file"`, `id="image-name"`, `id="image-upload"`, `id="image-progress"`,
		`data-name="debian-12"`, `data-name="win-2022"`, "64.0 MiB", `id="nav-images" href="/images" class="active"`)

	p = b.get("/images?q=WINDOWS")
	mustContain(t, p, `data-name="win-2022"`, `value="WINDOWS"`)
	mustNotContain(t, p, `data-name="debian-12"`)
	p = b.get("/images?q=ubuntu")
	mustContain(t, p, `id="images-empty"`, `No image matches &#34;ubuntu&#34;.`)

	img, _ := e.images.Get(root, "debian-12")
	p = b.post("/images/"+img.ID+"/visibility", b.formOn("/images", url.Values{"visibility": {"private"}, "version": {uitoa(img.Version)}}))
	if p.status != http.StatusOK || p.path != "/images?done=visibility&name=debian-12" {
		t.Fatalf("visibility: %d at %s\n%s", p.status, p.path, p.body)
	}
	if got, _ := e.images.Get(root, img.ID); got.Visibility != hypervisor.VisibilityPrivate {
		t.Fatalf("visibility after the change: %q", got.Visibility)
	}
	p = b.post("/images/"+img.ID+"/delete", b.formOn("/images", url.Values{}))
	if p.status != http.StatusOK || p.path != "/images?done=deleted&name=debian-12" {
		t.Fatalf("delete: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustNotContain(t, p, `data-name="debian-12"`)
	if _, err := e.images.Get(root, img.ID); err == nil {
		t.Fatal("the image is still there after delete")
	}

	// Import refuses what is not a LAN web address, and keeps the input.
	p = b.post("/images/import", b.formOn("/images", url.Values{"name": {"x"}, "url": {"ftp://files/x.qcow2"}, "project": {pr.ID}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("import from ftp: %d", p.status)
	}
	mustContain(t, p, "import needs an http:// or https:// URL", `value="ftp://files/x.qcow2"`)
	// A name against the rule: said next to the name.
	p = b.post("/images/import", b.formOn("/images", url.Values{"name": {"bad name"}, "url": {"http://files/x.qcow2"}, "project": {pr.ID}}))
	mustContain(t, p, `id="import-name-error" role="alert">“bad name” cannot be a name`)
}

func TestComputeUnavailable(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	b.login("root", "correct horse")
	for _, path := range []string{"/vms", "/vms/new", "/images", "/vms/vm-1/console"} {
		p := b.get(path)
		if p.status != http.StatusServiceUnavailable {
			t.Errorf("%s without compute: %d", path, p.status)
		}
		mustContain(t, p, "Virtual machines are not available on this node.")
	}
}
