package ui

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/storage/volume"
)

// A cluster admin moves a stopped VM booted from a volume to another box
// from its page: no form while it runs or while there is nowhere to go; a
// refusal (its boot volume still being filled) comes back on the page;
// then the move, and the VM on its new box.
func TestMigrateFromTheVMPage(t *testing.T) {
	e, b, root, pr, fl, img := volumeSetup(t)
	ctx := context.Background()
	vm, err := e.compute.CreateVM(ctx, root, hypervisor.VMCreate{Name: "ris", Project: pr.ID, Image: img.ID, Flavor: fl.ID})
	if err != nil || vm.Spec.BootVolume == "" {
		t.Fatalf("VM: %+v %v", vm, err)
	}
	placeAndReport(t, e, vm.ID, hypervisor.StateRunning)
	at := "/vms/" + vm.ID
	mustNotContain(t, b.get(at), `id="vm-migrate-form"`)
	if _, err := e.compute.Do(ctx, root, vm.ID, hypervisor.OpStop, 0); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := e.node.Apply(ctx, hypervisor.MsgReportVM, map[string]any{"id": vm.ID, "node": "node1", "status": map[string]any{"state": "stopped", "updated_at": now}}, nil); err != nil {
		t.Fatal(err)
	}
	mustNotContain(t, b.get(at), `id="vm-migrate-form"`) // no other box yet
	if _, err := e.node.Apply(ctx, hypervisor.MsgReportHost, map[string]any{"name": "node2", "vcpus": 16, "ram_mib": 65536, "accel": "tcg", "reported_at": now}, nil); err != nil {
		t.Fatal(err)
	}
	p := b.get(at)
	mustContain(t, p, `id="vm-migrate-form"`, `<option value="">Let Cairn choose</option>`, `<option value="node2">node2</option>`, "Nothing is copied")
	mustNotContain(t, p, `<option value="node1">`, `id="vm-migrate-post-copy"`)
	// A project member sees no such form, and is refused if they post it.
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse", Password: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetMember(ctx, root, pr.Name, "nurse", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	nurse := e.browser()
	nurse.login("nurse", "correct horse")
	mustNotContain(t, nurse.get(at), `id="vm-migrate-form"`)
	if p := nurse.post(at+"/migrate", nurse.formOn(at, url.Values{"node": {"node2"}})); p.status != http.StatusUnprocessableEntity && p.status != http.StatusForbidden {
		t.Fatalf("a member's move: %d", p.status)
	}
	if got, _ := e.compute.VM(root, vm.ID); got.Node != "node1" {
		t.Fatalf("a member moved the VM to %s", got.Node)
	}

	cur, _ := e.compute.VM(root, vm.ID)
	p = b.post(at+"/migrate", b.formOn(at, url.Values{"node": {"node2"}, "version": {uitoa(cur.Version)}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("a move while the boot volume is being filled: %d", p.status)
	}
	mustContain(t, p, "still being filled")
	if got, _ := e.compute.VM(root, vm.ID); got.Node != "node1" {
		t.Fatalf("a refused move moved the VM to %s", got.Node)
	}

	// Filled, it moves.
	if _, err := e.node.Apply(ctx, volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: vm.Spec.BootVolume, Node: "node1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, volume.MsgSourceFilled, &volume.SourceFilled{Volume: vm.Spec.BootVolume, Node: "node1", Epoch: 1}, nil); err != nil {
		t.Fatal(err)
	}
	p = b.post(at+"/migrate", b.formOn(at, url.Values{"node": {""}, "version": {uitoa(cur.Version)}}))
	if p.status != http.StatusOK || p.path != at+"?done=migrate" {
		t.Fatalf("move: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "The VM was moved", "Move between nodes")
	if got, _ := e.compute.VM(root, vm.ID); got.Node != "node2" {
		t.Fatalf("after the move: on %s", got.Node)
	}
	b.lang = "zh-CN"
	mustContain(t, b.get(at), "节点间迁移")
}

// A cluster admin moves a running VM live from its page: the form says
// it keeps running; while it moves, the page shows how far it got (in
// English and Chinese) and offers a cancel instead of the power buttons;
// the cancel leaves it where it was.
func TestLiveMigrationFromTheVMPage(t *testing.T) {
	e, b, root, pr, fl, img := volumeSetup(t)
	ctx := context.Background()
	vm, err := e.compute.CreateVM(ctx, root, hypervisor.VMCreate{Name: "pacs", Project: pr.ID, Image: img.ID, Flavor: fl.ID})
	if err != nil {
		t.Fatal(err)
	}
	placeAndReport(t, e, vm.ID, hypervisor.StateRunning)
	if _, err := e.node.Apply(ctx, volume.MsgAcquireWriter, &volume.AcquireWriter{Volume: vm.Spec.BootVolume, Node: "node1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, volume.MsgSourceFilled, &volume.SourceFilled{Volume: vm.Spec.BootVolume, Node: "node1", Epoch: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, hypervisor.MsgReportHost, map[string]any{"name": "node2", "vcpus": 16, "ram_mib": 65536, "accel": "tcg", "reported_at": time.Now().UTC()}, nil); err != nil {
		t.Fatal(err)
	}
	if err := hypervisor.EnsureMigrationCA(ctx, e.node); err != nil {
		t.Fatal(err)
	}
	at := "/vms/" + vm.ID
	p := b.get(at)
	mustContain(t, p, `id="vm-migrate-form"`, `id="vm-migrate-live-hint"`, "keeps running while it moves", `id="vm-op-stop"`, `id="vm-migrate-post-copy"`)
	mustNotContain(t, p, `id="vm-migration"`, `id="vm-migrate-tcg-hint"`)
	// Under software emulation the page says the guest is paused for
	// the copy.
	report := map[string]any{"id": vm.ID, "node": "node1", "status": map[string]any{"state": "running", "accel": "tcg", "updated_at": time.Now().UTC()}}
	if _, err := e.node.Apply(ctx, hypervisor.MsgReportVM, report, nil); err != nil {
		t.Fatal(err)
	}
	mustContain(t, b.get(at), `id="vm-migrate-tcg-hint"`, "paused while its memory is copied")
	b.lang = "zh-CN"
	mustContain(t, b.get(at), "复制内存期间它会暂停数秒")
	b.lang = ""
	cur, _ := e.compute.VM(root, vm.ID)
	p = b.post(at+"/migrate", b.formOn(at, url.Values{"node": {"node2"}, "version": {uitoa(cur.Version)}}))
	if p.status != http.StatusOK || p.path != at+"?done=migrate_live" {
		t.Fatalf("move: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "keeps running meanwhile", `id="vm-migration"`, "Moving from node1 to node2 while it runs", `id="vm-migrate-cancel"`)
	mustNotContain(t, p, `id="vm-op-stop"`, `id="vm-migrate-form"`)
	// The source reports its progress; the panel's refresh shows it.
	got, _ := e.compute.VM(root, vm.ID)
	step := map[string]any{"vm": vm.ID, "id": got.Migration.ID, "node": "node1", "at": time.Now().UTC(),
		"progress": map[string]any{"ram_total": 256 << 20, "ram_transferred": 100 << 20, "ram_remaining": 150 << 20, "dirty_rate": 3 << 20, "expected_downtime_ms": 12}}
	if _, err := e.node.Apply(ctx, hypervisor.MsgMigrationStep, step, nil); err != nil {
		t.Fatal(err)
	}
	mustContain(t, b.get(at+"/status"), "100 of 256 MiB of memory copied, 150 MiB left; the guest changes 3 MiB/s; expected pause 12 ms", `id="vm-migration-tcg"`)
	b.lang = "zh-CN"
	mustContain(t, b.get(at+"/status"), "正在从 node1 热迁移到 node2", "已复制内存 100 / 256 MiB", "取消迁移")
	b.lang = ""
	p = b.post(at+"/migrate/cancel", b.formOn(at, url.Values{}))
	if p.status != http.StatusOK || p.path != at+"?done=migrate_cancel" {
		t.Fatalf("cancel: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "The move was cancelled", `id="vm-op-stop"`)
	mustNotContain(t, p, `id="vm-migration"`)
	if got, _ := e.compute.VM(root, vm.ID); got.Migration != nil || got.Node != "node1" {
		t.Fatalf("after the cancel: %+v on %s", got.Migration, got.Node)
	}
	// Again, allowed to go post-copy; the panel says when it has.
	cur, _ = e.compute.VM(root, vm.ID)
	p = b.post(at+"/migrate", b.formOn(at, url.Values{"node": {"node2"}, "post_copy": {"on"}, "version": {uitoa(cur.Version)}}))
	got, _ = e.compute.VM(root, vm.ID)
	if p.status != http.StatusOK || got.Migration == nil || !got.Migration.PostCopy {
		t.Fatalf("move with post-copy: %d, %+v\n%s", p.status, got.Migration, p.body)
	}
	mustNotContain(t, b.get(at+"/status"), `id="vm-migration-post-copy"`)
	step["id"], step["progress"].(map[string]any)["post_copy_at"] = got.Migration.ID, time.Now().UTC()
	if _, err := e.node.Apply(ctx, hypervisor.MsgMigrationStep, step, nil); err != nil {
		t.Fatal(err)
	}
	mustContain(t, b.get(at+"/status"), `id="vm-migration-post-copy"`, "fetches the rest of its memory")
	b.lang = "zh-CN"
	mustContain(t, b.get(at+"/status"), "后拷贝中")
	b.lang = ""
}
