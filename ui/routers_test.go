package ui

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/netfabric"
)

var routerPathRE = regexp.MustCompile(`^/routers/(rtr-[0-9a-f]+)\?done=(create|connect|disconnect|gateway)$`)

// Routers and floating IPs through the forms: a router made (a bad name
// refused next to its field), a network connected, a way out chosen, a
// floating IP taken, given to a machine and taken back, and what is in
// use kept from deletion; the pages in Chinese.
func TestRoutersAndFloatingIPsThroughForms(t *testing.T) {
	e, b, root, pr, fl := computeSetup(t)
	if p := b.uploadImage(qcow2(t), url.Values{"name": {"debian-12"}, "project": {pr.ID}}); p.status != http.StatusCreated {
		t.Fatalf("upload: %d\n%s", p.status, p.body)
	}
	img, err := e.images.Get(root, "debian-12")
	if err != nil {
		t.Fatal(err)
	}
	nets := e.networksService()
	ctx := t.Context()
	ext, err := nets.CreateNetwork(ctx, root, netfabric.NetworkCreate{Name: "hospital-lan", External: true, Interface: "eth1", CIDR: "192.0.2.0/24",
		Pools: []netfabric.Pool{{Start: "192.0.2.100", End: "192.0.2.150"}}})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := nets.CreateNetwork(ctx, root, netfabric.NetworkCreate{Name: "imaging", Project: pr.ID, CIDR: "10.50.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	// The external network is no choice for a VM.
	p := b.get("/vms/new")
	mustNotContain(t, p, `name="network" value="`+ext.ID+`"`)
	p = b.get("/networks")
	mustContain(t, p, `id="routers-link" href="/routers"`, `id="floating-ips-link" href="/floating-ips"`, "external network (the way out)")

	p = b.get("/routers")
	mustContain(t, p, `id="routers-empty"`, `id="router-form"`)
	p = b.post("/routers", b.formOn("/routers", url.Values{"name": {"bad name"}, "project": {pr.ID}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("a bad router name: %d", p.status)
	}
	mustContain(t, p, `id="router-name-error" role="alert">`)
	p = b.post("/routers", b.formOn("/routers", url.Values{"name": {"edge"}, "project": {pr.ID}}))
	m := routerPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("create router: %d at %s\n%s", p.status, p.path, p.body)
	}
	page := "/routers/" + m[1]
	mustContain(t, p, "Router edge was created.", `id="router-networks-empty"`, `<option value="`+nw.ID+`">imaging (10.50.0.0/24)</option>`)
	p = b.post(page+"/connect", b.formOn(page, url.Values{"network": {nw.ID}}))
	mustContain(t, p, "The network was connected", `data-name="imaging"`, "10.50.0.1", `id="router-delete" type="submit" class="danger" disabled`)
	p = b.post(page+"/gateway", b.formOn(page, url.Values{"network": {ext.ID}}))
	mustContain(t, p, "The router&#39;s way out was changed.", `id="router-way-out">hospital-lan<`)
	// Deleting it anyway is refused, and the router stays.
	p = b.post(page+"/delete", b.formOn(page, url.Values{}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("delete a router with a network: %d", p.status)
	}
	mustContain(t, p, "still connects 1 networks")

	// A machine on the network, and a floating IP for it.
	vmForm := b.formOn("/vms/new", url.Values{"name": {"pacs1"}, "project": {pr.ID}, "image": {img.ID}, "flavor": {fl.ID},
		"boot_disk": {"local"}, "networks_shown": {"1"}, "network": {nw.ID}})
	if p = b.post("/vms", vmForm); p.status != http.StatusOK {
		t.Fatalf("create VM: %d\n%s", p.status, p.body)
	}
	p = b.get("/floating-ips")
	mustContain(t, p, `id="floating-empty"`, `id="floating-form"`, `hospital-lan (192.0.2.0/24)`)
	p = b.post("/floating-ips", b.formOn("/floating-ips", url.Values{"network": {ext.ID}, "project": {pr.ID}}))
	mustContain(t, p, "Floating IP 192.0.2.100 is yours.", `data-ip="192.0.2.100"`, "not given to a machine", "pacs1 (10.50.0.2)")
	fips, err := nets.ListFloatingIPs(root, "")
	if err != nil || len(fips) != 1 {
		t.Fatalf("floating IPs: %+v %v", fips, err)
	}
	fip := "/floating-ips/" + fips[0].ID
	p = b.post(fip+"/associate", b.formOn("/floating-ips", url.Values{"port": {""}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("give to no machine: %d", p.status)
	}
	mustContain(t, p, "Choose a machine.")
	ports, _ := nets.ListPorts(ctx, root, nw.ID)
	p = b.post(fip+"/associate", b.formOn("/floating-ips", url.Values{"port": {ports[0].ID}}))
	mustContain(t, p, "Floating IP 192.0.2.100 reaches its machine now.", `<td class="floating-vm">pacs1 (10.50.0.2)</td>`)
	vms, err := e.compute.ListVMs(root, "")
	if err != nil || len(vms) != 1 {
		t.Fatalf("VMs: %+v %v", vms, err)
	}
	p = b.get("/vms/" + vms[0].ID)
	mustContain(t, p, `id="vm-floating">192.0.2.100 → 10.50.0.2<`)
	// The picture: the way out on top, the router, the network, the
	// machine with its floating IP, joined by lines.
	p = b.get("/topology")
	mustContain(t, p, `data-kind="external" data-name="hospital-lan"`, `data-kind="router" data-name="edge"`,
		`data-kind="network" data-name="imaging"`, `data-kind="vm" data-name="pacs1"`, "10.50.0.2 · 192.0.2.100", `<line class="topo-link"`)
	if n := strings.Count(p.body, `<line class="topo-link"`); n != 3 {
		t.Fatalf("%d lines in the picture, want 3 (router-outside, router-network, machine-network)", n)
	}
	// In use by a machine: the network stays on the router.
	p = b.post(page+"/disconnect", b.formOn(page, url.Values{"network": {nw.ID}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("disconnect a network a floating IP needs: %d", p.status)
	}
	mustContain(t, p, "take it back first")
	// A reader of the project sees the floating IP and its machine, but
	// is offered nothing to change, and changes nothing by posting.
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "clerk", Password: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetMember(ctx, root, pr.Name, "clerk", identity.RoleReader); err != nil {
		t.Fatal(err)
	}
	clerk := e.browser()
	clerk.login("clerk", "correct horse")
	p = clerk.get("/floating-ips")
	mustContain(t, p, `data-ip="192.0.2.100"`, "pacs1 (10.50.0.2)")
	mustNotContain(t, p, `id="disassociate-`, `id="release-`, `id="floating-form"`)
	p = clerk.get(page)
	mustNotContain(t, p, `id="router-delete"`, `id="connect-form"`, `id="gateway-form"`)
	if p = clerk.post(fip+"/disassociate", clerk.formOn("/floating-ips", url.Values{})); p.status == http.StatusOK {
		t.Fatalf("a reader took a floating IP back: %d", p.status)
	}
	if got, err := nets.GetFloatingIP(ctx, root, fips[0].ID); err != nil || got.PortID == "" {
		t.Fatalf("after a reader's post, the floating IP is %+v %v", got, err)
	}
	b.lang = "zh-CN"
	p = b.get("/floating-ips")
	mustContain(t, p, "浮动 IP", "收回")
	p = b.get(page)
	mustContain(t, p, "路由器 edge", "出口")
	// Every page of routers and floating IPs, said in Chinese.
	for _, path := range []string{"/routers", page, "/floating-ips", "/topology", "/networks", "/vms/" + vms[0].ID} {
		p := b.get(path)
		if p.status != http.StatusOK {
			t.Fatalf("%s in Chinese: %d", path, p.status)
		}
		noEnglish(t, path, p.body, nil)
	}
	b.lang = ""
	p = b.post(fip+"/disassociate", b.formOn("/floating-ips", url.Values{}))
	mustContain(t, p, "Floating IP 192.0.2.100 was taken back.", "not given to a machine")
	p = b.post(fip+"/delete", b.formOn("/floating-ips", url.Values{}))
	mustContain(t, p, "Floating IP 192.0.2.100 was released.", `id="floating-empty"`)
	p = b.post(page+"/disconnect", b.formOn(page, url.Values{"network": {nw.ID}}))
	mustContain(t, p, "The network was disconnected.", `id="router-networks-empty"`)
	p = b.post(page+"/delete", b.formOn(page, url.Values{}))
	if p.status != http.StatusOK || p.path != "/routers?deleted=edge" {
		t.Fatalf("delete router: %d at %s", p.status, p.path)
	}
	mustContain(t, p, "Router edge was deleted.", `id="routers-empty"`)
}
