package ui

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenView is a view with nothing random in it: a fixed form token, UTC.
func goldenView(lang string, admin bool, nav string) *view {
	v := &view{tr: &translator{lang: lang, msgs: catalogs()[lang]}, csrf: "CSRF-TOKEN", path: "/" + nav, nav: nav, loc: time.UTC}
	if nav != "" {
		v.p = &identity.Principal{User: identity.User{Name: "root", ClusterAdmin: admin}}
	}
	return v
}

var goldenTime = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

func goldenStatus() consensus.Status {
	return consensus.Status{Self: "node1", Leader: "node1", Voters: 3, GossipHealth: 1, Nodes: []consensus.NodeStatus{
		{Name: "node1", Address: "10.0.0.1:8444", Role: "voter", Gossip: "alive", Leader: true, Healthy: true},
		{Name: "node2", Address: "10.0.0.2:8444", Role: "voter", Gossip: "suspect"},
		{Name: "node3", Address: "10.0.0.3:8444", Role: "nonvoter", Gossip: "alive", Healthy: true},
	}}
}

// TestGoldenPages pins the rendered HTML of the main pages, in both
// languages, so a change to markup the browser tests rely on is deliberate.
// Run with -update to accept a change, then read the diff.
func TestGoldenPages(t *testing.T) {
	q := &identity.Quota{Limits: identity.DefaultQuota, Usage: identity.Resources{Instances: 2, VCPUs: 4, RAMMiB: 8192, DiskGiB: 40}, Version: 7}
	q.Limits.FloatingIPs = identity.Unlimited
	project := projectData{
		Project:   identity.Project{Name: "radiology", Description: "PACS & viewers <b>"},
		Members:   []identity.MemberView{{UserName: "nurse1", Role: identity.RoleMember}, {UserName: "dr-wang", Role: identity.RoleAdmin}},
		Quota:     quotaRows(q),
		QuotaVer:  q.Version,
		UserNames: []string{"dr-wang", "nurse1"},
		CanManage: true,
		Member:    memberForm{Role: "member"},
	}
	flavors := []identity.Flavor{{Name: "m1.small", VCPUs: 1, RAMMiB: 2048, DiskGiB: 20}, {Name: "m1.large", VCPUs: 4, RAMMiB: 8192, DiskGiB: 80}}
	audit := auditData{Action: "project.", Entries: []identity.AuditEntry{
		{Time: goldenTime, UserName: "root", Action: "project.create", Resource: "radiology", Result: "success", RemoteAddr: "10.0.0.9:51234", Node: "node1"},
		{Time: goldenTime, UserName: "nurse1", Action: "project.create", Resource: "mine", Result: "forbidden", Message: "not allowed to create projects", Node: "node2"},
	}}
	withErr := func(v *view, msg string) *view { v.err = msg; return v }

	pages := map[string]templ.Component{
		"login_en":       loginPage(goldenView(langEN, false, ""), "", "/dashboard"),
		"setup_zh":       setupPage(withErr(goldenView(langZH, false, ""), "禁止"), setupForm{Code: "ABCD-EFGH", Username: "root"}),
		"dashboard_en":   dashboardPage(goldenView(langEN, true, "dashboard"), dashboardData{Status: goldenStatus(), HasStatus: true, JoinToken: "join-secret"}),
		"dashboard_zh":   dashboardPage(goldenView(langZH, false, "dashboard"), dashboardData{Status: goldenStatus(), HasStatus: true}),
		"projects_en":    projectsPage(goldenView(langEN, true, "projects"), []identity.Project{{Name: "radiology", Description: "PACS", CreatedAt: goldenTime}}, projectForm{}),
		"project_en":     projectPage(goldenView(langEN, true, "projects"), project),
		"project_reader": projectPage(goldenView(langEN, false, "projects"), projectData{Project: project.Project, Members: project.Members, Quota: project.Quota}),
		"users_en":       usersPage(goldenView(langEN, true, "users"), []identity.User{{Name: "root", ClusterAdmin: true, CreatedAt: goldenTime}}, userForm{}),
		"flavors_zh":     flavorsPage(goldenView(langZH, true, "flavors"), flavors, flavorForm{}),
		"audit_en":       auditPage(goldenView(langEN, true, "audit"), audit),
	}
	for name, c := range pages {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := c.Render(context.Background(), &buf); err != nil {
				t.Fatal(err)
			}
			got := readable(buf.String())
			path := filepath.Join("testdata", name+".golden.html")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./ui -run TestGoldenPages -update)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from %s; if the change is intended, rerun with -update and review the diff.\ngot:\n%s", name, path, got)
			}
		})
	}
}

// readable breaks the rendered HTML between tags, so golden diffs show the
// line that changed instead of one enormous line.
func readable(html string) string {
	return strings.ReplaceAll(html, "><", ">\n<") + "\n"
}
