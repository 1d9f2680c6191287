package ui

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
)

// A cluster admin takes a node out of use and back from the Nodes page; a
// drain with nowhere to send the VMs is refused on the page and changes
// nothing; with a second node it starts, and the page shows it. A project
// member gets no such page and is refused if they post its forms.
func TestHostsPage(t *testing.T) {
	e := newComputeEnv(t)
	e.admin("root", "correct horse")
	ctx := context.Background()
	report := func(name string) {
		t.Helper()
		host := map[string]any{"name": name, "vcpus": 16, "ram_mib": 65536, "accel": "tcg", "reported_at": time.Now().UTC()}
		if _, err := e.node.Apply(ctx, hypervisor.MsgReportHost, host, nil); err != nil {
			t.Fatal(err)
		}
	}
	report("node1")
	b := e.browser()
	b.login("root", "correct horse")
	mustContain(t, b.get("/dashboard"), `href="/hosts"`)
	p := b.get("/hosts")
	mustContain(t, p, `data-host="node1" data-state="in_use"`, "Take out of use", `id="host-drain-node1"`)

	p = b.post("/hosts/node1/cordon", b.formOn("/hosts", url.Values{"reason": {"new RAM"}}))
	if p.status != http.StatusOK || p.path != "/hosts?done=cordon&node=node1" {
		t.Fatalf("cordon: %d at %s", p.status, p.path)
	}
	mustContain(t, p, "Node node1 is out of use", `data-state="cordoned"`, "Why: new RAM", "Put back in use")
	p = b.post("/hosts/node1/uncordon", b.formOn("/hosts", url.Values{}))
	mustContain(t, p, "Node node1 is back in use.", `data-state="in_use"`)

	// Nowhere to go: refused, on the page, nothing changed.
	p = b.post("/hosts/node1/drain", b.formOn("/hosts", url.Values{"restart": {"true"}}))
	if p.status != formStatus {
		t.Fatalf("drain of the only node: %d", p.status)
	}
	mustContain(t, p, "no other node", `data-state="in_use"`)
	if hs, _ := e.compute.Hosts(adminPrincipal(t, e)); hs[0].Cordon != nil {
		t.Fatalf("a refused drain cordoned node1: %+v", hs[0].Cordon)
	}

	// Both consents, as the form's boxes give them, reach the drain.
	report("node2")
	mustContain(t, b.get("/hosts"), `id="host-convert-node1" name="convert" type="checkbox" value="true"`)
	p = b.post("/hosts/node1/drain", b.formOn("/hosts", url.Values{"restart": {"true"}, "convert": {"true"}}))
	if p.status != http.StatusOK || p.path != "/hosts?done=drain&node=node1" {
		t.Fatalf("drain: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Node node1 is being drained")
	if hs, _ := e.compute.Hosts(adminPrincipal(t, e)); hs[0].Cordon == nil || hs[0].Cordon.Drain == nil || !hs[0].Cordon.Drain.Restart || !hs[0].Cordon.Drain.Convert {
		t.Fatalf("the drain's consents: %+v", hs[0].Cordon)
	}
	mustContain(t, b.get("/hosts/panel"), `data-host="node1" data-state="d`) // draining, or drained already: it has no VMs
	b.lang = "zh-CN"
	mustContain(t, b.get("/hosts"), "运行虚拟机的节点", "恢复使用")

	// A member: no page, no forms.
	if _, err := e.svc.CreateUser(ctx, adminPrincipal(t, e), identity.UserSpec{Name: "nurse", Password: "night shift 9"}); err != nil {
		t.Fatal(err)
	}
	nurse := e.browser()
	nurse.login("nurse", "night shift 9")
	mustNotContain(t, nurse.get("/dashboard"), `href="/hosts"`)
	if p := nurse.get("/hosts"); p.status != http.StatusForbidden {
		t.Fatalf("a member's hosts page: %d", p.status)
	}
	if p := nurse.post("/hosts/node2/cordon", nurse.formOn("/dashboard", url.Values{})); p.status == http.StatusOK {
		t.Fatalf("a member's cordon: %d", p.status)
	}
	if hs, _ := e.compute.Hosts(adminPrincipal(t, e)); hs[1].Cordon != nil {
		t.Fatalf("a member cordoned node2")
	}
}
