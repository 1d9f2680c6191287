package ui

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/netfabric"
)

// A cluster admin picks members from the list of users, removes one after
// a confirmation that names them, and deletes the project: refused, with
// what it still holds named, while a bucket or a security group of its
// own is left; deleted once they are gone, its default group with it.
func TestProjectMembersAndDelete(t *testing.T) {
	e := newComputeEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	ctx := context.Background()
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse1", DisplayName: "Li Na", Password: "on-nights-4412"}); err != nil {
		t.Fatal(err)
	}
	pr, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: "oncology"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.login("root", "correct horse")

	p := b.get("/projects/oncology")
	mustContain(t, p, `<select id="member-user" name="user" required>`, `<option value="nurse1">nurse1 (Li Na)</option>`, `id="project-delete-submit"`,
		`data-resource="instances"`, `data-resource="object_gib"`, `data-resource="networks"`, `data-resource="floating_ips"`)
	mustNotContain(t, p, `data-resource="volumes"`) // no volume service here
	p = b.post("/projects/oncology/members", b.formOn("/projects/oncology", url.Values{"user": {"nurse1"}, "role": {"member"}}))
	mustContain(t, p, `<tr class="member" data-user="nurse1" data-role="member">`,
		`hx-confirm="Remove nurse1 from project oncology?`, `action="/projects/oncology/members/nurse1/remove"`)
	p = b.post("/projects/oncology/members/nurse1/remove", b.formOn("/projects/oncology", url.Values{}))
	if p.path != "/projects/oncology?saved=removed&name=nurse1" {
		t.Fatalf("remove a member: %d at %s", p.status, p.path)
	}
	mustContain(t, p, "nurse1 was removed from the project.")
	mustNotContain(t, p, `data-user="nurse1"`)

	// What it holds keeps it, and is named.
	e.waitDisks(2)
	if _, err := e.objects.CreateBucket(ctx, root, pr.ID, "onc-scans"); err != nil {
		t.Fatal(err)
	}
	nf := e.networksService()
	if _, err := nf.CreateSecurityGroup(ctx, root, netfabric.SecurityGroupCreate{Name: "pacs", Project: pr.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := nf.CreateNetwork(ctx, root, netfabric.NetworkCreate{Name: "onc-net", Project: pr.ID, CIDR: "10.60.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	// The default group, stored once a rule is added to it, does not keep
	// the project: it goes with it.
	if _, err := nf.AddRule(ctx, root, netfabric.DefaultGroupID(pr.ID), netfabric.Rule{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: 22, PortMax: 22}); err != nil {
		t.Fatal(err)
	}
	if netfabric.GetSecurityGroup(e.node.Store().ReadTxn(), netfabric.DefaultGroupID(pr.ID)) == nil {
		t.Fatal("the default group was not stored")
	}
	p = b.post("/projects/oncology/delete", b.formOn("/projects/oncology", url.Values{}))
	if p.status != formStatus {
		t.Fatalf("delete a project that holds a bucket: %d at %s", p.status, p.path)
	}
	mustContain(t, p, "project oncology still holds 1 buckets (onc-scans), 1 networks (onc-net), 1 security groups (pacs); delete them first")
	// In Chinese, each part of what it holds is said in Chinese.
	b.get("/lang/zh-CN")
	p = b.post("/projects/oncology/delete", b.formOn("/projects/oncology", url.Values{}))
	mustContain(t, p, "冲突：项目 oncology 仍有 1 个“存储桶”（onc-scans）、1 个“网络”（onc-net）、1 个“安全组”（pacs）；请先删除它们")
	b.get("/lang/en")
	if _, err := e.svc.GetProject(root, "oncology"); err != nil {
		t.Fatalf("the refused delete removed the project: %v", err)
	}

	if err := e.objects.DeleteBucket(ctx, root, "onc-scans"); err != nil {
		t.Fatal(err)
	}
	if _, err := nf.DeleteSecurityGroup(ctx, root, "pacs"); err != nil {
		t.Fatal(err)
	}
	if _, err := nf.DeleteNetwork(ctx, root, "onc-net"); err != nil {
		t.Fatal(err)
	}
	p = b.post("/projects/oncology/delete", b.formOn("/projects/oncology", url.Values{}))
	if p.status != http.StatusOK || p.path != "/projects?deleted=oncology" {
		t.Fatalf("delete an empty project: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Project oncology was deleted.")
	if _, err := e.svc.GetProject(root, "oncology"); err == nil {
		t.Fatal("the project is still there")
	}
	if g := netfabric.GetSecurityGroup(e.node.Store().ReadTxn(), netfabric.DefaultGroupID(pr.ID)); g != nil {
		t.Fatalf("the project's default group is left behind: %+v", g)
	}
	if p := b.get("/projects/oncology"); p.status != http.StatusNotFound || !strings.Contains(p.body, "No project “oncology” was found.") {
		t.Fatalf("the deleted project's page: %d", p.status)
	}
}
