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
	mustNotContain(t, p, `<option value="node1">`)
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
	mustContain(t, p, "The VM was moved", "Moved to another node")
	if got, _ := e.compute.VM(root, vm.ID); got.Node != "node2" {
		t.Fatalf("after the move: on %s", got.Node)
	}
	b.lang = "zh-CN"
	mustContain(t, b.get(at), "已迁移到另一个节点")
}
