package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/volume"
)

// volumeSetup signs root in on a volume env with a project, a 1 GiB
// flavor and an image, once a volume can be placed.
func volumeSetup(t *testing.T) (*env, *browser, *identity.Principal, *identity.Project, *identity.Flavor, *hypervisor.Image) {
	t.Helper()
	e := newVolumeEnv(t)
	e.admin("root", "correct horse")
	e.waitDisks(2)
	testutil.WaitFor(t, 15*time.Second, "room for a volume", func() error {
		if !e.volumes.CanPlace() {
			return fmt.Errorf("no disk for a volume yet")
		}
		return nil
	})
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
	if p := b.uploadImage(qcow2(t), url.Values{"name": {"debian-12"}, "project": {pr.ID}}); p.status != http.StatusCreated {
		t.Fatalf("upload: %d\n%s", p.status, p.body)
	}
	img, err := e.images.Get(root, "debian-12")
	if err != nil {
		t.Fatal(err)
	}
	return e, b, root, pr, fl, img
}

var volPathRE = regexp.MustCompile(`^/volumes/(vol-[0-9a-f]+)\?done=create$`)

// A VM made with the form boots from a replicated volume of the size
// asked for; a volume made on the volumes page is attached to it, shown on
// its page after the boot disk, grown, detached and deleted, each action
// offered only when the service would allow it.
func TestVolumesThroughForms(t *testing.T) {
	e, b, root, pr, fl, img := volumeSetup(t)

	p := b.get("/vms/new")
	mustContain(t, p, `id="vm-boot-volume" name="boot_disk" value="volume" checked`, `id="vm-boot-size" name="boot_volume_gib"`,
		`id="vm-boot-local" name="boot_disk" value="local"`)
	vmForm := func(name, boot, size string) url.Values {
		return b.formOn("/vms/new", url.Values{"name": {name}, "project": {pr.ID}, "image": {img.ID}, "flavor": {fl.ID},
			"boot_disk": {boot}, "boot_volume_gib": {size}})
	}
	p = b.post("/vms", vmForm("web1", "volume", "lots"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("boot size lots: %d", p.status)
	}
	mustContain(t, p, `<p class="field-error" id="vm-boot-size-error" role="alert">Boot volume size (GiB) must be a whole number</p>`, `value="lots"`)
	p = b.post("/vms", vmForm("web1", "volume", "3"))
	m := vmPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("create: %d at %s\n%s", p.status, p.path, p.body)
	}
	vmID := m[1]
	mustContain(t, p, `id="vm-boot-disk" data-kind="volume"`, "a replicated volume: survives the loss of a box",
		`data-name="web1-boot" data-boot="true"`, `<span class="badge">boot disk</span>`, "3 GiB")
	vm, err := e.compute.VM(root, vmID)
	if err != nil || vm.Spec.BootVolume == "" {
		t.Fatalf("VM: %+v %v", vm, err)
	}
	if boot, err := e.volumes.Get(root, vm.Spec.BootVolume); err != nil || boot.SizeGiB() != 3 || !boot.Attachment.Boot {
		t.Fatalf("boot volume: %+v %v", boot, err)
	}

	// A local scratch disk when asked for: the page says what that means.
	p = b.post("/vms", vmForm("scratch1", "local", "3"))
	if m := vmPathRE.FindStringSubmatch(p.path); p.status != http.StatusOK || m == nil {
		t.Fatalf("create local: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `id="vm-boot-disk" data-kind="local"`, "local to the box it runs on: lost if that box fails", `id="vm-volumes-none"`)

	// The volumes page: what a volume is, the boot volume, the form.
	p = b.get("/volumes")
	mustContain(t, p, "survives the loss of one box", `id="nav-volumes" href="/volumes" class="active"`,
		`data-name="web1-boot" data-state="in-use"`, `<a class="volume-vm" href="/vms/`+vmID+`">web1</a>`, `id="volume-form"`)
	volForm := func(name, size string) url.Values {
		return b.formOn("/volumes", url.Values{"name": {name}, "size_gib": {size}, "project": {pr.ID}})
	}
	p = b.post("/volumes", volForm("scans", "0"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("size 0: %d", p.status)
	}
	mustContain(t, p, `id="volume-size-error" role="alert">Enter a size in whole GiB, at least 1.`, `value="scans"`)
	b.lang = "zh-CN"
	p = b.post("/volumes", volForm("bad name!", "2"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("bad name: %d", p.status)
	}
	mustContain(t, p, `id="volume-name-error" role="alert">名称为 1–63 个字母`, `value="bad name!"`)
	b.lang = ""
	p = b.post("/volumes", volForm("web1-boot", "2"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("duplicate: %d", p.status)
	}
	mustContain(t, p, `id="volume-name-error" role="alert">A volume or snapshot named “web1-boot” already exists in this project.`)
	p = b.post("/volumes", volForm("scans", "2"))
	m = volPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("create volume: %d at %s\n%s", p.status, p.path, p.body)
	}
	volID := m[1]
	mustContain(t, p, "The volume was created.", `id="volume-size-value">2 GiB<`, "1 copy only: lost if its box fails",
		"Replicas (1): node1: in_sync", `id="volume-attach-form"`, `<option value="`+vmID+`">web1</option>`,
		`id="volume-extend-form"`, `id="volume-delete-form"`, `hx-confirm="Delete volume scans and all its data?`)
	mustNotContain(t, p, `id="volume-detach-form"`)
	act := func(action string, form url.Values) page {
		t.Helper()
		form.Set("csrf", b.get("/volumes/"+volID).csrf(t))
		return b.post("/volumes/"+volID+"/"+action, form)
	}

	// Grow only.
	p = act("extend", url.Values{"size_gib": {"2"}})
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("extend to 2: %d", p.status)
	}
	mustContain(t, p, `id="volume-extend-error" role="alert">The volume is 2 GiB: enter a larger size.`, `value="2"`)
	p = act("extend", url.Values{"size_gib": {"4"}})
	if p.status != http.StatusOK || p.path != "/volumes/"+volID+"?done=extend" {
		t.Fatalf("extend: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "The volume was grown.", `id="volume-size-value">4 GiB<`)

	// Attach it to the VM: its page lists the boot disk first, then it.
	p = act("attach", url.Values{"vm": {vmID}})
	if p.status != http.StatusOK || p.path != "/volumes/"+volID+"?done=attach" {
		t.Fatalf("attach: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "The volume was attached.", `href="/vms/`+vmID+`">web1</a>`, `id="volume-detach-form"`,
		`id="volume-delete-why"`, `id="volume-extend-form"`, `id="volume-extend-online"`)
	mustNotContain(t, p, `id="volume-delete-form"`, `id="volume-attach-form"`)
	p = b.get("/vms/" + vmID)
	boot, data := strings.Index(p.body, `data-name="web1-boot" data-boot="true"`), strings.Index(p.body, `data-name="scans" data-boot="false"`)
	if boot < 0 || data < boot {
		t.Fatalf("VM page lists the boot volume at %d and the data volume at %d:\n%s", boot, data, p.body)
	}
	mustContain(t, p, `<a href="/volumes/`+volID+`">scans</a>`, "4 GiB")

	// Deleting an attached volume is refused with the service's reason,
	// next to the button that was not offered.
	p = act("delete", url.Values{})
	if p.status != http.StatusConflict && p.status != http.StatusUnprocessableEntity {
		t.Fatalf("delete attached: %d", p.status)
	}
	mustContain(t, p, `id="volume-delete-error" role="alert">`)
	// The boot volume is never offered for detaching.
	p = b.get("/volumes/" + vm.Spec.BootVolume)
	mustContain(t, p, `id="volume-detach-why"`, "it stays attached as long as the VM exists",
		`id="volume-snapshot-why">Snapshots and clones can be made once the image has been copied in`) // the VM never ran
	mustNotContain(t, p, `id="volume-detach-form"`, `id="volume-delete-form"`, `id="volume-snapshot-form"`, `id="volume-clone-form"`)
	// Asked anyway, the service's refusal shows where the button would be.
	bootAt := "/volumes/" + vm.Spec.BootVolume
	p = b.post(bootAt+"/detach", b.formOn(bootAt, url.Values{}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("detach the boot volume: %d", p.status)
	}
	mustContain(t, p, `id="volume-detach-error" role="alert">Conflict: volume web1-boot is VM `+vmID+`&#39;s boot disk: it stays attached while the VM exists`)

	// The VM has never run, so the data volume may go; then it is deleted.
	p = act("detach", url.Values{})
	if p.status != http.StatusOK || p.path != "/volumes/"+volID+"?done=detach" {
		t.Fatalf("detach: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "The volume was detached.", "not attached")
	p = act("delete", url.Values{})
	if p.status != http.StatusOK || p.path != "/volumes?deleted=scans" {
		t.Fatalf("delete: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Volume scans was deleted.")
	// The list refreshes itself; the page of a deleted volume sends htmx to the list.
	p = b.get("/volumes/list")
	if p.status != http.StatusOK || !strings.HasPrefix(p.body, `<section id="volume-list" hx-get="/volumes/list" hx-trigger="every 5s"`) {
		t.Fatalf("list fragment: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, `data-name="web1-boot"`)
	mustNotContain(t, p, `data-name="scans"`)
	if p := b.get("/volumes/" + volID + "/status"); p.status != http.StatusNoContent || p.header.Get("HX-Redirect") != "/volumes" {
		t.Fatalf("status of a deleted volume: %d %q", p.status, p.header.Get("HX-Redirect"))
	}
	p = b.get("/volumes/" + vm.Spec.BootVolume + "/status")
	if p.status != http.StatusOK || !strings.HasPrefix(p.body, `<section class="card" id="volume"`) {
		t.Fatalf("status fragment: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, "1 copy only")
	if _, err := e.volumes.Get(root, volID); err == nil {
		t.Fatal("the deleted volume is still there")
	}

	// In Chinese.
	b.lang = "zh-CN"
	p = b.get("/volumes")
	mustContain(t, p, "云硬盘", "任何一台机器损坏都不会丢失数据", "使用中")
	if p := b.post("/volumes/"+volID+"/frobnicate", b.formOn("/volumes", url.Values{})); p.status != http.StatusNotFound {
		t.Fatalf("unknown action: %d", p.status)
	}
}

// Without volumes the page says so.
func TestVolumesUnavailable(t *testing.T) {
	_, b, _, _, _ := computeSetup(t)
	if p := b.get("/volumes"); p.status != http.StatusServiceUnavailable || !strings.Contains(p.body, "Volumes are not available") {
		t.Fatalf("volumes without the service: %d\n%s", p.status, p.body)
	}
}

// A flavor made with the local-disk box keeps its VMs' disks on their node.
func TestFlavorLocalDisk(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	b.login("root", "correct horse")
	p := b.post("/flavors", b.formOn("/flavors", url.Values{"name": {"scratch"}, "vcpus": {"1"}, "ram_mib": {"512"}, "disk_gib": {"4"}, "local_disk": {"true"}}))
	if p.status != http.StatusOK {
		t.Fatalf("create flavor: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, `class="flavor-disk-kind" data-local="true"`, "local disk")
	fl, err := e.svc.GetFlavor("scratch")
	if err != nil || !fl.LocalDisk {
		t.Fatalf("flavor: %+v %v", fl, err)
	}
}

// The redundancy line follows the replicas' states.
func TestVolumeRedundancyText(t *testing.T) {
	v := goldenView(langEN, false, "volumes")
	reps := func(states ...string) volume.Volume {
		vol := volume.Volume{State: volume.StateInUse}
		for i, s := range states {
			vol.Replicas = append(vol.Replicas, volume.Replica{Node: fmt.Sprintf("node%d", i+1), State: s})
		}
		return vol
	}
	in, stale, rb := volume.ReplicaInSync, volume.ReplicaStale, volume.ReplicaRebuilding
	for _, c := range []struct {
		vol         volume.Volume
		text, class string
	}{
		{reps(in, in, in), "3 copies, all up to date", "ok"},
		{reps(in, in), "2 copies, all up to date", "ok"},
		{reps(in), "1 copy only: lost if its box fails", "warn"},
		{reps(in, rb, in), "degraded: 1 of 3 copies behind, catching up", "warn"},
		{reps(in, stale, in), "degraded: 1 of 3 copies behind, waiting to catch up", "warn"},
		{reps(stale, stale), "at risk: none of the 2 copies is up to date", "bad"},
		{volume.Volume{State: volume.StateCreating}, "copies being made", "warn"},
	} {
		got := volumeRedundancy(v, &c.vol)
		if got.Text != c.text || got.Class != c.class {
			t.Errorf("%v: got %q (%s), want %q (%s)", c.vol.Replicas, got.Text, got.Class, c.text, c.class)
		}
	}
	if got := volumeRedundancy(v, &volume.Volume{Replicas: []volume.Replica{{Node: "n1", State: rb}}}).Tech; got != "Replicas (1): n1: rebuilding" {
		t.Errorf("tech line: %q", got)
	}
}

// A project's reader sees its volumes and nothing to change them with; a
// member gets the controls; the service refuses the reader's request anyway.
func TestVolumeControlsFollowRoles(t *testing.T) {
	e, _, root, pr, _, _ := volumeSetup(t)
	ctx := context.Background()
	for name, role := range map[string]identity.Role{"clerk": identity.RoleReader, "nurse": identity.RoleMember} {
		if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: name, Password: "correct horse"}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.SetMember(ctx, root, pr.Name, name, role); err != nil {
			t.Fatal(err)
		}
	}
	vol, err := e.volumes.Create(ctx, root, volume.Create{Name: "archive", SizeGiB: 1, Project: pr.ID})
	if err != nil {
		t.Fatal(err)
	}
	at := "/volumes/" + vol.ID
	clerk := e.browser()
	clerk.login("clerk", "correct horse")
	p := clerk.get("/volumes")
	mustContain(t, p, `data-name="archive"`, `id="volume-no-project"`)
	mustNotContain(t, p, `id="volume-form"`)
	p = clerk.get(at)
	mustContain(t, p, `id="volume-redundancy"`)
	mustNotContain(t, p, `id="volume-change"`, `id="volume-snapshot-form"`, `id="volume-clone-form"`)
	p = clerk.post(at+"/delete", clerk.formOn(at, url.Values{}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("the reader's delete: %d at %s", p.status, p.path)
	}
	mustContain(t, p, `id="error">Not allowed: not allowed to change volume archive`)
	if _, err := e.volumes.Get(root, vol.ID); err != nil {
		t.Fatalf("the reader deleted the volume: %v", err)
	}
	// Snapshots likewise: listed, with no forms, and refused anyway.
	sn, err := e.volumes.CreateSnapshot(ctx, root, vol.ID, "archive-monday")
	if err != nil {
		t.Fatal(err)
	}
	p = clerk.get("/volumes")
	mustContain(t, p, `data-name="archive-monday"`)
	mustNotContain(t, p, `snapshot-delete-form`, `snapshot-volume-form`)
	p = clerk.post("/snapshots/"+sn.ID+"/delete", clerk.formOn("/volumes", url.Values{}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("the reader's snapshot delete: %d at %s", p.status, p.path)
	}
	mustContain(t, p, `id="error">Not allowed: `)
	if _, err := e.volumes.GetSnapshot(root, sn.ID); err != nil {
		t.Fatalf("the reader deleted the snapshot: %v", err)
	}
	nurse := e.browser()
	nurse.login("nurse", "correct horse")
	p = nurse.get(at)
	mustContain(t, p, `id="volume-change"`, `id="volume-extend-form"`, `id="volume-delete-form"`, `id="volume-snapshot-form"`, `id="volume-clone-form"`)
	p = nurse.get("/volumes")
	mustContain(t, p, `id="volume-form"`, `type="hidden" id="volume-project" name="project" value="`+pr.ID+`"`, `snapshot-delete-form`, `snapshot-volume-form`)
}

// placeAndReport puts a VM on node1 (a host reported for it) in the given
// state, as a node's agent would report it.
func placeAndReport(t *testing.T, e *env, vmID, state string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	host := map[string]any{"name": "node1", "vcpus": 16, "ram_mib": 65536, "accel": "tcg", "reported_at": now}
	if _, err := e.node.Apply(ctx, hypervisor.MsgReportHost, host, nil); err != nil {
		t.Fatal(err)
	}
	// Placing twice is refused; the first placement is what counts.
	_, _ = e.node.Apply(ctx, hypervisor.MsgPlaceVM, map[string]any{"id": vmID, "node": "node1", "at": now}, nil)
	report := map[string]any{"id": vmID, "node": "node1", "status": map[string]any{"state": state, "updated_at": now}}
	if _, err := e.node.Apply(ctx, hypervisor.MsgReportVM, report, nil); err != nil {
		t.Fatal(err)
	}
}

// A data volume of a running VM is detached in two steps: the request
// asks the VM's node to have the guest let go of the disk, the page says
// so (and offers no second detach), and the volume is detached once the
// node has unplugged it. A stopped VM lets go at once.
func TestDetachFromARunningVM(t *testing.T) {
	e, b, root, pr, fl, img := volumeSetup(t)
	ctx := context.Background()
	vm, err := e.compute.CreateVM(ctx, root, hypervisor.VMCreate{Name: "ris", Project: pr.ID, Image: img.ID, Flavor: fl.ID})
	if err != nil {
		t.Fatal(err)
	}
	placeAndReport(t, e, vm.ID, hypervisor.StateRunning)
	vol, err := e.volumes.Create(ctx, root, volume.Create{Name: "reports", SizeGiB: 1, Project: pr.ID})
	if err != nil {
		t.Fatal(err)
	}
	at := "/volumes/" + vol.ID
	p := b.post(at+"/attach", b.formOn(at, url.Values{"vm": {vm.ID}}))
	if p.status != http.StatusOK || p.path != at+"?done=attach" {
		t.Fatalf("attach to a running VM: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `id="volume-detach-form"`, `id="volume-detach-hint"`, `id="volume-extend-online"`)
	p = b.get("/vms/" + vm.ID)
	mustContain(t, p, `id="vm-boot-disk" data-kind="volume"`, `data-name="ris-boot" data-boot="true"`, `data-name="reports" data-boot="false"`)

	p = b.post(at+"/detach", b.formOn(at, url.Values{}))
	if p.status != http.StatusOK || p.path != at+"?done=detach" {
		t.Fatalf("detach from a running VM: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `id="volume-detach-why"`, "VM ris is asked to let go of the disk")
	mustNotContain(t, p, `id="volume-detach-form"`)
	b.lang = "zh-CN"
	p = b.get(at)
	mustContain(t, p, "已请求虚拟机 ris 释放此磁盘")
	b.lang = ""
	if v, _ := e.volumes.Get(root, vol.ID); v.Attachment == nil || !v.Attachment.Detaching {
		t.Fatalf("a detach from a running VM waits for its node: %+v", v)
	}

	// A stopped VM's volume goes at once.
	vol2, err := e.volumes.Create(ctx, root, volume.Create{Name: "scratch", SizeGiB: 1, Project: pr.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.compute.Do(ctx, root, vm.ID, hypervisor.OpStop, 0); err != nil {
		t.Fatal(err)
	}
	placeAndReport(t, e, vm.ID, hypervisor.StateStopped)
	at2 := "/volumes/" + vol2.ID
	if p = b.post(at2+"/attach", b.formOn(at2, url.Values{"vm": {vm.ID}})); p.status != http.StatusOK {
		t.Fatalf("attach to a stopped VM: %d", p.status)
	}
	p = b.post(at2+"/detach", b.formOn(at2, url.Values{}))
	if p.status != http.StatusOK || p.path != at2+"?done=detach" {
		t.Fatalf("detach from a stopped VM: %d at %s\n%s", p.status, p.path, p.body)
	}
	if v, _ := e.volumes.Get(root, vol2.ID); v.Attachment != nil {
		t.Fatalf("a stopped VM's volume is detached at once: %+v", v)
	}
}

var snapVolPathRE = regexp.MustCompile(`^/volumes/(vol-[0-9a-f]+)\?done=(clone|from_snapshot)$`)

// A volume is snapshotted on its page; the snapshot is listed on the
// volumes page, where a volume is made from it and it is deleted (the
// volume made from it keeps its data). A clone is made on the volume's
// page. What each volume was made from is shown, and refusals show next
// to the form they came from.
func TestSnapshotsThroughForms(t *testing.T) {
	e, b, root, pr, _, _ := volumeSetup(t)
	ctx := context.Background()
	vol, err := e.volumes.Create(ctx, root, volume.Create{Name: "scans", SizeGiB: 2, Project: pr.ID})
	if err != nil {
		t.Fatal(err)
	}
	at := "/volumes/" + vol.ID
	p := b.get(at)
	mustContain(t, p, `id="volume-snapshot-form"`, `id="volume-clone-form"`, `id="volume-snapshot-hint"`, `id="volume-clone-hint"`, `id="volume-image-name"`,
		`id="volume-snapshots">none yet`)
	mustNotContain(t, p, `id="volume-origin"`, `id="volume-snapshot-freeze"`) // not attached: no guest to freeze
	p = b.get("/volumes")
	mustContain(t, p, `id="snapshots"`, `id="snapshots-empty"`, "There are no snapshots. Take one on a volume&#39;s page.")

	// Snapshot: a bad name, then a good one.
	p = b.post(at+"/snapshot", b.formOn(at, url.Values{"name": {"bad name!"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("snapshot named badly: %d", p.status)
	}
	mustContain(t, p, `id="volume-snapshot-error" role="alert">A name is 1–63 letters`, `id="volume-snapshot-name"`, `value="bad name!"`)
	p = b.post(at+"/snapshot", b.formOn(at, url.Values{"name": {"before-upgrade"}}))
	if p.status != http.StatusOK || p.path != "/volumes?done=snap_taken&name=before-upgrade" {
		t.Fatalf("snapshot: %d at %s\n%s", p.status, p.path, p.body)
	}
	sn, err := e.volumes.GetSnapshot(root, "before-upgrade")
	if err != nil || sn.Of != vol.ID || sn.State != volume.StateAvailable {
		t.Fatalf("snapshot: %+v %v", sn, err)
	}
	mustContain(t, p, "Snapshot before-upgrade was taken.",
		`<tr class="snapshot" data-id="`+sn.ID+`" data-name="before-upgrade" data-state="available" data-quiesced="false">`,
		`<a href="/volumes/`+vol.ID+`">scans</a>`, "2 GiB", "no: as after a sudden power cut", `hx-post="/snapshots/`+sn.ID+`/volume"`,
		`hx-confirm="Delete snapshot before-upgrade? Volumes made from it keep their data`)
	mustNotContain(t, p, `id="snapshots-empty"`, `hx-select="#snapshots"`) // nothing being taken: no refreshing
	// The same name again is refused next to the form.
	p = b.post(at+"/snapshot", b.formOn(at, url.Values{"name": {"before-upgrade"}}))
	if p.status != http.StatusUnprocessableEntity && p.status != http.StatusConflict {
		t.Fatalf("snapshot named twice: %d", p.status)
	}
	mustContain(t, p, `id="volume-snapshot-error" role="alert">A volume or snapshot named “before-upgrade” already exists in this project.`, `value="before-upgrade"`)
	// The snapshotted volume was not made from anything: its own snapshot
	// is not its origin.
	p = b.get(at)
	mustContain(t, p, `id="volume-image-name"`, "before-upgrade<br><a class=\"hint\" href=\"/volumes#snapshots\">listed on the Volumes page</a>")
	mustNotContain(t, p, `id="volume-origin"`)

	// A volume from the snapshot: too small, then at the snapshot's size.
	snapAt := "/snapshots/" + sn.ID
	p = b.post(snapAt+"/volume", b.formOn("/volumes", url.Values{"name": {"restored"}, "size_gib": {"1"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("volume smaller than its snapshot: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, `<details class="snapshot-new" open>`, `id="snap-vol-error-`+sn.ID+`" role="alert">`, "before-upgrade is 2 GiB",
		`value="restored"`, `value="1"`)
	p = b.post(snapAt+"/volume", b.formOn("/volumes", url.Values{"name": {"restored"}, "size_gib": {""}}))
	m := snapVolPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || m == nil || m[2] != "from_snapshot" {
		t.Fatalf("volume from the snapshot: %d at %s\n%s", p.status, p.path, p.body)
	}
	restoredID := m[1]
	mustContain(t, p, "The volume was made from the snapshot.", `id="volume-size-value">2 GiB<`,
		`id="volume-origin">copy of snapshot before-upgrade of volume scans<`)
	if got, err := e.volumes.Get(root, restoredID); err != nil || got.Parent != sn.ID {
		t.Fatalf("restored volume: %+v %v", got, err)
	}
	p = b.get("/volumes")
	mustContain(t, p, `<span class="hint volume-origin">copy of snapshot before-upgrade of volume scans</span>`)

	// A clone, on the volume's page.
	p = b.post(at+"/clone", b.formOn(at, url.Values{"name": {"restored"}}))
	if p.status != http.StatusUnprocessableEntity && p.status != http.StatusConflict {
		t.Fatalf("clone named as another volume: %d", p.status)
	}
	mustContain(t, p, `id="volume-clone-error" role="alert">A volume or snapshot named “restored” already exists in this project.`, `value="restored"`)
	p = b.post(at+"/clone", b.formOn(at, url.Values{"name": {"scans-copy"}}))
	m = snapVolPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || m == nil || m[2] != "clone" {
		t.Fatalf("clone: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "The copy was made", `id="volume-size-value">2 GiB<`, `id="volume-origin">copy of volume scans as it was at `)
	// A clone's snapshot is the system's own: it is not listed.
	if snaps, _ := e.volumes.ListSnapshots(root, "", ""); len(snaps) != 1 {
		t.Fatalf("snapshots after a clone: %+v", snaps)
	}

	// Delete the snapshot: the volume made from it keeps its data, and
	// now says what it is a copy of. Without the form's token, nothing.
	if p := b.post(snapAt+"/delete", url.Values{}); p.status != http.StatusForbidden {
		t.Fatalf("delete without the form's token: %d", p.status)
	}
	if _, err := e.volumes.GetSnapshot(root, sn.ID); err != nil {
		t.Fatalf("deleted without the form's token: %v", err)
	}
	p = b.post(snapAt+"/delete", b.formOn("/volumes", url.Values{}))
	if p.status != http.StatusOK || p.path != "/volumes?done=snap_deleted&name=before-upgrade" {
		t.Fatalf("delete the snapshot: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Snapshot before-upgrade was deleted. Volumes made from it keep their data.", `id="snapshots-empty"`)
	p = b.get("/volumes/" + restoredID)
	mustContain(t, p, `id="volume-origin">copy of volume scans as it was at `)
	if p := b.post(snapAt+"/delete", b.formOn("/volumes", url.Values{})); p.status != http.StatusNotFound {
		t.Fatalf("delete a deleted snapshot: %d", p.status)
	}

	// In Chinese.
	if _, err := e.volumes.CreateSnapshot(ctx, root, vol.ID, "nightly"); err != nil {
		t.Fatal(err)
	}
	b.lang = "zh-CN"
	p = b.get("/volumes")
	mustContain(t, p, "<h2>快照</h2>", "从此快照新建云硬盘", "否：相当于突然断电后的磁盘<", "就绪", `hx-confirm="删除快照 nightly？由它创建的云硬盘保留各自的数据`)
	p = b.get(at)
	mustContain(t, p, "创建快照", "克隆")
	p = b.get("/volumes/" + restoredID)
	mustContain(t, p, `id="volume-origin">云硬盘 scans 在 `)
	b.lang = ""
	if p := b.post(snapAt+"/frobnicate", b.formOn("/volumes", url.Values{})); p.status != http.StatusNotFound {
		t.Fatalf("unknown snapshot action: %d", p.status)
	}
}

// The text of what a volume was made from.
func TestVolumeOriginText(t *testing.T) {
	v := goldenView(langEN, false, "volumes")
	at := time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
	for _, c := range []struct {
		o    *volume.Origin
		want string
	}{
		{nil, ""},
		{&volume.Origin{Snapshot: "s1", Volume: "vol-1", VolumeName: "scans", At: at}, "copy of snapshot s1 of volume scans"},
		{&volume.Origin{Snapshot: "s1", Volume: "vol-1", At: at}, "copy of snapshot s1"},
		{&volume.Origin{Volume: "vol-1", VolumeName: "scans", At: at}, "copy of volume scans as it was at 2026-03-14 09:26:53 UTC"},
		{&volume.Origin{Volume: "vol-1", At: at}, "copy of a volume that was deleted since, as it was at 2026-03-14 09:26:53 UTC"},
	} {
		if got := volumeOrigin(v, c.o); got != c.want {
			t.Errorf("%+v: %q, want %q", c.o, got, c.want)
		}
	}
}

// A VM booted from a volume restarts elsewhere if its node dies; its page
// switches that off and on again, a stale page is refused, and the service
// holds what the page says.
func TestVMHASwitchFromItsPage(t *testing.T) {
	e, b, root, pr, fl, img := volumeSetup(t)
	ctx := context.Background()
	vm, err := e.compute.CreateVM(ctx, root, hypervisor.VMCreate{Name: "ris", Project: pr.ID, Image: img.ID, Flavor: fl.ID})
	if err != nil {
		t.Fatal(err)
	}
	page := "/vms/" + vm.ID
	p := b.get(page)
	mustContain(t, p, `id="vm-ha" data-ha="on"`, `<input type="hidden" name="enabled" value="false">`, `id="vm-ha-toggle"`)
	stale := versionOn(t, p)
	form := b.formOn(page, url.Values{"enabled": {"false"}, "version": {stale}})
	p = b.post(page+"/ha", form)
	if p.status != http.StatusOK || p.path != page+"?done=ha_off" {
		t.Fatalf("switch off: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `id="vm-ha" data-ha="off"`, `<input type="hidden" name="enabled" value="true">`)
	if got, _ := e.compute.VM(root, vm.ID); !got.Spec.HAOff || got.HA != "off" {
		t.Fatalf("after the switch: HAOff %v, HA %q", got.Spec.HAOff, got.HA)
	}
	// The page it was sent from is now out of date: refused, nothing changes.
	form = b.formOn(page, url.Values{"enabled": {"true"}, "version": {stale}})
	if p = b.post(page+"/ha", form); p.status != formStatus {
		t.Fatalf("a stale switch: %d", p.status)
	}
	if got, _ := e.compute.VM(root, vm.ID); !got.Spec.HAOff {
		t.Fatal("a stale switch changed the VM")
	}
	form = b.formOn(page, url.Values{"enabled": {"true"}, "version": {versionOn(t, b.get(page))}})
	if p = b.post(page+"/ha", form); p.status != http.StatusOK || p.path != page+"?done=ha_on" {
		t.Fatalf("switch on: %d at %s", p.status, p.path)
	}
	if got, _ := e.compute.VM(root, vm.ID); got.Spec.HAOff || got.HA != "on" {
		t.Fatalf("after switching on: HAOff %v, HA %q", got.Spec.HAOff, got.HA)
	}
}
