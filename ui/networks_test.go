package ui

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/netfabric"
)

var (
	netPathRE   = regexp.MustCompile(`^/networks/(net-[0-9a-f]+)\?done=create$`)
	groupPathRE = regexp.MustCompile(`^/security-groups/(sg-[0-9a-f]+)\?done=(create|rule|rule_deleted)$`)
)

// Networks and firewall groups through the forms: a project network made
// (bad input refused next to its field, in the reader's language), a
// group with rules in words (bad ports refused), a VM made on the network
// in the group, the network's page listing it with its group, and what is
// in use kept from deletion.
func TestNetworksAndGroupsThroughForms(t *testing.T) {
	e, b, root, pr, fl := computeSetup(t)
	if p := b.uploadImage(qcow2(t), url.Values{"name": {"debian-12"}, "project": {pr.ID}}); p.status != http.StatusCreated {
		t.Fatalf("upload: %d\n%s", p.status, p.body)
	}
	img, err := e.images.Get(root, "debian-12")
	if err != nil {
		t.Fatal(err)
	}

	p := b.get("/networks")
	mustContain(t, p, `id="nav-networks" href="/networks" class="active"`, `data-name="default"`, "the cluster&#39;s network (shared, with internet access)",
		`id="network-form"`, `href="/security-groups"`)
	netForm := func(name, cidr, dns string) url.Values {
		return b.formOn("/networks", url.Values{"name": {name}, "cidr": {cidr}, "dns": {dns}, "project": {pr.ID}})
	}
	p = b.post("/networks", netForm("imaging", "10.50.0.1/24", ""))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("CIDR with host bits: %d", p.status)
	}
	mustContain(t, p, `id="network-cidr-error" role="alert">Enter an IPv4 range such as 10.50.0.0/24`, `value="imaging"`)
	b.lang = "zh-CN"
	p = b.post("/networks", netForm("imaging", "10.50.0.0/8", ""))
	mustContain(t, p, `id="network-cidr-error" role="alert">请输入 IPv4 地址段`)
	b.lang = ""
	p = b.post("/networks", netForm("imaging", "10.50.0.0/24", "10.50.0.53"))
	m := netPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("create network: %d at %s\n%s", p.status, p.path, p.body)
	}
	netID := m[1]
	mustContain(t, p, "Network imaging was created.", `id="network-cidr">10.50.0.0/24<`, "10.50.0.53", "project network", `id="ports-empty"`)
	p = b.post("/networks", netForm("imaging2", "10.50.0.128/25", ""))
	mustContain(t, p, `id="network-cidr-error" role="alert">`, "overlaps")

	// An IPv6 subnet: a bad one is named next to the field and changes
	// nothing; a /64 is added, and the page says how machines get theirs.
	p = b.get("/networks/" + netID)
	mustContain(t, p, `id="network-ipv6">`, "none: IPv4 only", `id="subnet6-form"`)
	subnetForm := func(cidr string) url.Values {
		return b.formOn("/networks/"+netID, url.Values{"cidr": {cidr}, "ipv6_mode": {"slaac"}})
	}
	p = b.post("/networks/"+netID+"/subnets", subnetForm("fd00:50::/48"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("a /48: %d", p.status)
	}
	mustContain(t, p, `id="subnet6-error" role="alert">The IPv6 subnet must be a /64`, `value="fd00:50::/48"`)
	if nw, _ := e.networksService().GetNetwork(t.Context(), root, netID); nw.CIDR6 != "" {
		t.Fatalf("a refused subnet was added: %+v", nw)
	}
	p = b.post("/networks/"+netID+"/subnets", subnetForm("fd00:50::/64"))
	if p.status != http.StatusOK || !strings.HasPrefix(p.path, "/networks/"+netID+"?") {
		t.Fatalf("add subnet: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "IPv6 subnet fd00:50::/64 added", `id="network-ipv6">fd00:50::/64`, "router advertisements (SLAAC)")
	mustNotContain(t, p, `id="subnet6-form"`)

	// The groups: the project's default one is there from the start.
	p = b.get("/security-groups")
	mustContain(t, p, `data-name="default"`, "its machines may reach each other", `id="group-form"`)
	p = b.post("/security-groups", b.formOn("/security-groups", url.Values{"name": {"pacs"}, "description": {"the PACS servers"}, "project": {pr.ID}}))
	gm := groupPathRE.FindStringSubmatch(p.path)
	if p.status != http.StatusOK || gm == nil {
		t.Fatalf("create group: %d at %s\n%s", p.status, p.path, p.body)
	}
	groupID := gm[1]
	mustContain(t, p, "Group pacs was created. It blocks everything until you add rules below.", `id="rules-empty"`, `id="rule-form"`)
	groupPage := "/security-groups/" + groupID
	rule := func(extra url.Values) page {
		v := url.Values{"direction": {"ingress"}, "ethertype": {"IPv4"}, "protocol": {"tcp"}, "remote": {"any"}}
		for k, x := range extra {
			v[k] = x
		}
		return b.post(groupPage+"/rules", b.formOn(groupPage, v))
	}
	p = rule(url.Values{"ports": {"70000"}})
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("port 70000: %d", p.status)
	}
	mustContain(t, p, `id="rule-ports-error" role="alert">Enter a port from 1 to 65535`, `value="70000"`)
	p = rule(url.Values{"ports": {"443"}, "protocol": {""}})
	mustContain(t, p, `id="rule-ports-error" role="alert">A port needs the protocol TCP or UDP.`)
	p = rule(url.Values{"ports": {"104"}, "remote": {"cidr"}, "remote_cidr": {"10.0.0.1/8"}})
	mustContain(t, p, `id="rule-cidr-error" role="alert">`, "did you mean 10.0.0.0/8")
	p = rule(url.Values{"ports": {"104"}, "remote": {"cidr"}, "remote_cidr": {"10.0.0.0/8"}})
	if p.status != http.StatusOK || !groupPathRE.MatchString(p.path) {
		t.Fatalf("add rule: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "The rule was added; running machines follow at once.", "TCP port 104", "from 10.0.0.0/8")
	p = rule(url.Values{"protocol": {"icmp"}, "remote": {"group"}, "remote_group": {netfabric.DefaultGroupID(pr.ID)}})
	mustContain(t, p, "ICMP", "from the machines in group default")
	g, err := e.networksService().GetSecurityGroup(t.Context(), root, groupID)
	if err != nil || len(g.Rules) != 2 {
		t.Fatalf("group after the forms: %+v %v", g, err)
	}

	// A VM on the network, in the group.
	p = b.get("/vms/new")
	mustContain(t, p, `id="vm-networks"`, `name="network" value="default" checked`, `name="network" value="`+netID+`"`,
		`id="vm-groups"`, `name="security_group" value="`+groupID+`"`)
	vmForm := func(networks, groups []string) url.Values {
		return b.formOn("/vms/new", url.Values{"name": {"pacs1"}, "project": {pr.ID}, "image": {img.ID}, "flavor": {fl.ID},
			"boot_disk": {"local"}, "networks_shown": {"1"}, "network": networks, "security_group": groups})
	}
	p = b.post("/vms", vmForm(nil, nil))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("no network ticked: %d", p.status)
	}
	mustContain(t, p, `id="vm-networks-error" role="alert">Tick at least one network.`)
	p = b.post("/vms", vmForm([]string{netID}, []string{groupID}))
	if vm := vmPathRE.FindStringSubmatch(p.path); p.status != http.StatusOK || vm == nil {
		t.Fatalf("create VM: %d at %s\n%s", p.status, p.path, p.body)
	}
	p = b.get("/networks/" + netID)
	mustContain(t, p, `<td>pacs1</td>`, "10.50.0.2", `<td class="port-groups">pacs</td>`, `id="network-delete" type="submit" class="danger" disabled`)
	p = b.get(groupPage)
	mustContain(t, p, "1 machine network cards are in this group.", `id="group-delete" type="submit" class="danger" disabled`)
	p = b.post(groupPage+"/delete", b.formOn(groupPage, url.Values{}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("delete a group in use: %d", p.status)
	}

	// A rule deleted; the page in Chinese.
	p = b.post(groupPage+"/rules/"+g.Rules[0].ID+"/delete", b.formOn(groupPage, url.Values{}))
	if p.status != http.StatusOK {
		t.Fatalf("delete rule: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, "The rule was deleted; the connections it allowed are cut.")
	mustNotContain(t, p, "TCP port 104")
	b.lang = "zh-CN"
	p = b.get(groupPage)
	mustContain(t, p, "防火墙组 pacs", "来自防火墙组 default 中的虚拟机", "入站")
	p = b.get("/networks")
	mustContain(t, p, "项目网络", "集群网络")
	// Every page of the networks, said in Chinese.
	for _, path := range []string{"/networks", "/networks/" + netID, "/security-groups", groupPage, "/vms/new"} {
		p := b.get(path)
		if p.status != http.StatusOK {
			t.Fatalf("%s in Chinese: %d", path, p.status)
		}
		noEnglish(t, path, p.body, map[string]string{"the PACS servers": "the group's description, as its user wrote it"})
	}
}
