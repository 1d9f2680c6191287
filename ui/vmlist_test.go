package ui

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
)

// The VM list searches, filters and sorts on the server (so it refreshes
// without losing them, nor the ticked rows), has per-row buttons that come
// back to the list, and bulk actions that ask once, naming every VM, and
// act only on VMs the viewer may change.
func TestVMListSearchSortAndBulk(t *testing.T) {
	e, b, root, pr, fl := computeSetup(t)
	ctx := context.Background()
	if p := b.uploadImage(qcow2(t), url.Values{"name": {"img"}, "project": {pr.ID}, "visibility": {"public"}}); p.status != http.StatusCreated {
		t.Fatalf("upload: %d %s", p.status, p.body)
	}
	icu, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: "icu"})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for name, project := range map[string]string{"ward-a": pr.ID, "ward-b": pr.ID, "pacs": pr.ID, "monitor": icu.ID} {
		vm, err := e.compute.CreateVM(ctx, root, hypervisor.VMCreate{Name: name, Project: project, Image: "img", Flavor: fl.ID})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = vm.ID
	}
	order := func(p page) string {
		t.Helper()
		var names []string
		for _, part := range strings.Split(p.body, `<tr class="vm" data-id="`)[1:] {
			_, rest, _ := strings.Cut(part, `data-name="`)
			name, _, _ := strings.Cut(rest, `"`)
			names = append(names, name)
		}
		return strings.Join(names, ",")
	}

	p := b.get("/vms")
	if got := order(p); got != "monitor,pacs,ward-a,ward-b" {
		t.Fatalf("default order: %s", got)
	}
	mustContain(t, p, `id="vm-search"`, `id="vm-filter-project"`, `<option value="`+icu.ID+`">icu</option>`, "Showing 4 of 4 VMs.",
		`href="/vms?dir=desc&amp;sort=name"`, `<th scope="col" aria-sort="ascending">`)
	if got := order(b.get("/vms?q=WARD")); got != "ward-a,ward-b" {
		t.Fatalf("search WARD: %s", got)
	}
	p = b.get("/vms/list?q=ward&sort=name&dir=desc&vm=" + ids["ward-a"])
	if got := order(p); got != "ward-b,ward-a" {
		t.Fatalf("search, newest name first: %s", got)
	}
	mustContain(t, p, `value="`+ids["ward-a"]+`" form="vm-bulk" checked`, "Showing 2 of 4 VMs.")
	mustNotContain(t, p, `value="`+ids["ward-b"]+`" form="vm-bulk" checked`)
	if got := order(b.get("/vms?project=" + icu.ID)); got != "monitor" {
		t.Fatalf("project icu: %s", got)
	}
	// Filters on a VM's state and node keep exactly the VMs that have them.
	want := map[string][]string{}
	for _, n := range []string{"monitor", "pacs", "ward-a", "ward-b"} {
		vm, err := e.compute.VM(root, ids[n])
		if err != nil {
			t.Fatal(err)
		}
		want["state="+vm.Status.State] = append(want["state="+vm.Status.State], n)
		if vm.Node != "" {
			want["node="+vm.Node] = append(want["node="+vm.Node], n)
		}
	}
	for q, names := range want {
		if got := order(b.get("/vms?" + q)); got != strings.Join(names, ",") {
			t.Fatalf("filter %s: %s, want %s", q, got, strings.Join(names, ","))
		}
	}
	// By project: icu's before radiology's, by name within each.
	if got := order(b.get("/vms?sort=project")); got != "monitor,pacs,ward-a,ward-b" {
		t.Fatalf("sorted by project: %s", got)
	}
	if got := order(b.get("/vms?sort=project&dir=desc")); !strings.HasSuffix(got, ",monitor") {
		t.Fatalf("sorted by project, last first: %s", got)
	}
	// A filter on what no VM has now stays chosen (the refresh keeps it).
	p = b.get("/vms/list?node=node9&state=paused")
	if got := order(p); got != "" {
		t.Fatalf("node9: %s", got)
	}
	p = b.get("/vms?node=node9&state=paused")
	mustContain(t, p, `<option value="node9" selected>node9</option>`, `<option value="paused" selected>`)
	mustContain(t, b.get("/vms?q=nothing-like-it"), `id="vms-none-match"`)

	// A row's button comes back to the list.
	p = b.post("/vms/"+ids["pacs"]+"/op/stop", b.formOn("/vms", url.Values{"from": {"list"}}))
	if p.status != http.StatusOK || p.path != "/vms?done=stop&name=pacs" {
		t.Fatalf("a row's shut down: %d at %s", p.status, p.path)
	}
	mustContain(t, p, "pacs: The VM is shutting down.")

	// Bulk: one question naming them all; a VM the user may not change is
	// not acted on. nurse is a member of radiology, a reader of icu.
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse", Password: "on-nights-4412"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetMember(ctx, root, "radiology", "nurse", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetMember(ctx, root, "icu", "nurse", identity.RoleReader); err != nil {
		t.Fatal(err)
	}
	nb := e.browser()
	nb.login("nurse", "on-nights-4412")
	mustNotContain(t, nb.get("/vms"), `value="`+ids["monitor"]+`" form="vm-bulk"`)
	form := nb.formOn("/vms", url.Values{"op": {"delete"}, "vm": {ids["ward-a"], ids["ward-b"], ids["monitor"]}})
	p = nb.post("/vms/bulk", form)
	mustContain(t, p, "Delete these VMs (2)?", `id="bulk-skipped"`, "Left out: a ticked VM you may not change.", `<li data-id="`+ids["ward-a"]+`">ward-a`, `<li data-id="`+ids["ward-b"]+`">ward-b`)
	mustNotContain(t, p, "monitor")
	for _, n := range []string{"ward-a", "ward-b", "monitor"} {
		if vm, _ := e.compute.VM(root, ids[n]); vm.Desired == hypervisor.DesiredDeleted {
			t.Fatalf("%s deleted before the question was answered", n)
		}
	}
	form.Set("confirm", "yes")
	form.Set("csrf", p.csrf(t))
	p = nb.post("/vms/bulk", form)
	if p.status != http.StatusOK || p.path != "/vms?done=bulk-delete&name=2" {
		t.Fatalf("bulk delete: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "VMs being deleted: 2.")
	for n, want := range map[string]bool{"ward-a": true, "ward-b": true, "monitor": false, "pacs": false} {
		vm, err := e.compute.VM(root, ids[n])
		if gone := err != nil || vm.Desired == hypervisor.DesiredDeleted; gone != want {
			t.Errorf("%s deleted %v, want %v", n, gone, want)
		}
	}
	p = nb.post("/vms/bulk", nb.formOn("/vms", url.Values{"op": {"stop"}}))
	if p.status != formStatus {
		t.Fatalf("bulk with nothing ticked: %d", p.status)
	}
	mustContain(t, p, "Tick the VMs to act on first.")

	// Bulk stop, then bulk start, each asked once.
	for _, op := range []struct{ op, desired string }{{"stop", hypervisor.DesiredStopped}, {"start", hypervisor.DesiredRunning}} {
		form := b.formOn("/vms", url.Values{"op": {op.op}, "vm": {ids["pacs"], ids["monitor"]}})
		p := b.post("/vms/bulk", form)
		mustContain(t, p, `<li data-id="`+ids["pacs"]+`">pacs`, `<li data-id="`+ids["monitor"]+`">monitor`)
		form.Set("confirm", "yes")
		form.Set("csrf", p.csrf(t))
		if p = b.post("/vms/bulk", form); p.status != http.StatusOK || p.path != "/vms?done=bulk-"+op.op+"&name=2" {
			t.Fatalf("bulk %s: %d at %s\n%s", op.op, p.status, p.path, p.body)
		}
		for _, n := range []string{"pacs", "monitor"} {
			if vm, err := e.compute.VM(root, ids[n]); err != nil || vm.Desired != op.desired {
				t.Fatalf("after bulk %s, %s wants %q (%v)", op.op, n, vm.Desired, err)
			}
		}
	}

	// In Chinese: the list, a VM's page, its serial console, and the bulk
	// question with what it leaves out.
	nb.get("/lang/zh-CN")
	for _, path := range []string{"/vms", "/vms/" + ids["pacs"], "/vms/" + ids["pacs"] + "/serial", "/vms/" + ids["pacs"] + "/console", "/vms/new"} {
		p := nb.get(path)
		if p.status != http.StatusOK {
			t.Fatalf("%s in Chinese: %d", path, p.status)
		}
		noEnglish(t, path, p.body, nil)
	}
	p = nb.post("/vms/bulk", nb.formOn("/vms", url.Values{"op": {"stop"}, "vm": {ids["pacs"], ids["monitor"]}}))
	mustContain(t, p, "关闭")
	noEnglish(t, "the bulk question", p.body, nil)
}

// A VM's page says how each of its addresses is reached: the cluster's
// network only outwards (NAT), a project network privately.
func TestVMPageSaysHowToReachIt(t *testing.T) {
	e, b, root, pr, fl := computeSetup(t)
	ctx := context.Background()
	if p := b.uploadImage(qcow2(t), url.Values{"name": {"img"}, "project": {pr.ID}}); p.status != http.StatusCreated {
		t.Fatalf("upload: %d %s", p.status, p.body)
	}
	nf := e.networksService()
	if _, err := nf.CreateNetwork(ctx, root, netfabric.NetworkCreate{Name: "pacs-net", Project: pr.ID, CIDR: "10.50.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	vm, err := e.compute.CreateVM(ctx, root, hypervisor.VMCreate{Name: "pacs", Project: pr.ID, Image: "img", Flavor: fl.ID, Networks: []string{hypervisor.DefaultNetwork, "pacs-net"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(vm.NICs) != 2 {
		t.Fatalf("NICs: %+v", vm.NICs)
	}
	p := b.get("/vms/" + vm.ID)
	mustContain(t, p, `id="vm-reach"`, `<li class="reach" data-kind="nat" data-ip="`+vm.NICs[0].IP+`">`,
		`<li class="reach" data-kind="project" data-ip="`+vm.NICs[1].IP+`">`, "on the project network pacs-net, private to the project&#39;s VMs.",
		"To reach it from the hospital&#39;s network")
	b.lang = "zh-CN"
	mustContain(t, b.get("/vms/"+vm.ID), "如何访问此虚拟机", "位于项目网络 pacs-net")
}
