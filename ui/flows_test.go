package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/qa/testutil"
)

func TestSetupCreatesFirstAdmin(t *testing.T) {
	e := newEnv(t)
	b := e.browser()

	p := b.get("/")
	if p.path != "/setup" {
		t.Fatalf("/ went to %s, want /setup while no admin exists", p.path)
	}
	mustContain(t, p, `id="setup-form"`, `id="setup-code"`, `id="username"`, `id="password"`, `id="password2"`)
	if p := b.get("/login"); p.path != "/setup" {
		t.Fatalf("/login went to %s during setup", p.path)
	}

	form := func(code, pw2 string) url.Values {
		return b.formOn("/setup", url.Values{"code": {code}, "username": {"root"}, "password": {"correct horse"}, "password2": {pw2}})
	}
	p = b.post("/setup", form("WRNG-CODE", "correct horse"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("wrong code: status %d", p.status)
	}
	mustContain(t, p, "wrong setup code", `value="root"`)
	p = b.post("/setup", form(e.svc.SetupCode(), "another horse"))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("mismatched passwords: status %d", p.status)
	}
	mustContain(t, p, "The two passwords do not match.")
	if !e.svc.SetupNeeded() {
		t.Fatal("a refused setup created an admin")
	}

	// A lower-case code with spaces is what people type off a console.
	p = b.post("/setup", form("  "+strings.ToLower(e.svc.SetupCode())+" ", "correct horse"))
	if p.status != http.StatusOK || p.path != "/dashboard" {
		t.Fatalf("setup: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `id="whoami">root<`)
	if e.svc.SetupNeeded() {
		t.Fatal("setup did not create the admin")
	}
	// Once done, the setup page is gone for everyone.
	if p := e.browser().get("/setup"); p.path != "/login" {
		t.Fatalf("/setup after setup went to %s, want /login", p.path)
	}
}

func TestLoginSetsSessionCookie(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()

	if p := b.get("/projects"); p.path != "/login?next=%2Fprojects" {
		t.Fatalf("unauthenticated /projects went to %s", p.path)
	}
	p := b.post("/login", b.formOn("/login", url.Values{"username": {"root"}, "password": {"wrong password"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("wrong password: status %d", p.status)
	}
	mustContain(t, p, "Wrong username or password.", `value="root"`)

	nf := b.noFollow()
	p = nf.post("/login", b.formOn("/login?next=/flavors", url.Values{"username": {"root"}, "password": {"correct horse"}, "next": {"/flavors"}}))
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/flavors" {
		t.Fatalf("login: %d to %q", p.status, p.header.Get("Location"))
	}
	var session *http.Cookie
	for _, line := range p.header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatal(err)
		}
		if c.Name == sessionCookie {
			session = c
		}
	}
	if session == nil {
		t.Fatalf("no session cookie in %q", p.header.Values("Set-Cookie"))
	}
	if !session.HttpOnly || !session.Secure || session.SameSite != http.SameSiteLaxMode || session.Path != "/" {
		t.Fatalf("session cookie attributes: %+v", session)
	}
	if session.Expires.Before(time.Now().Add(time.Hour)) {
		t.Fatalf("session cookie expires %v, want the session's lifetime", session.Expires)
	}
	if _, err := e.svc.Authenticate(context.Background(), session.Value); err != nil {
		t.Fatalf("cookie does not hold a valid token: %v", err)
	}

	// An open redirect through ?next= is not possible.
	fresh := e.browser()
	p = fresh.noFollow().post("/login", fresh.formOn("/login", url.Values{"username": {"root"}, "password": {"correct horse"}, "next": {"//evil.example/"}}))
	if loc := p.header.Get("Location"); loc != "/dashboard" {
		t.Fatalf("next=//evil.example/ redirected to %q", loc)
	}

	// Logging out revokes the token on the cluster, not only in the browser.
	// b is still signed in by the login above: noFollow shares its cookie jar.
	token := b.cookie(sessionCookie).Value
	p = b.post("/logout", b.formOn("/dashboard", url.Values{}))
	if p.path != "/login?done=signed_out" {
		t.Fatalf("logout ended at %s", p.path)
	}
	mustContain(t, p, "You are signed out.")
	if _, err := e.svc.Authenticate(context.Background(), token); !identity.IsCode(err, identity.CodeUnauthenticated) {
		t.Fatalf("token still valid after logout: %v", err)
	}
}

// A missing page keeps a signed-in user's navigation and name; a stranger
// gets the bare page, and neither is sent to log in.
func TestNotFoundKeepsTheNavigation(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	b.login("root", "correct horse")
	p := b.get("/no/such/page")
	if p.status != http.StatusNotFound {
		t.Fatalf("missing page: %d", p.status)
	}
	mustContain(t, p, `id="nav-vms"`, ">root<", `action="/logout"`)
	p = e.browser().get("/no/such/page")
	if p.status != http.StatusNotFound || strings.Contains(p.body, `id="nav-vms"`) {
		t.Fatalf("missing page without a session: %d, navigation shown: %v", p.status, strings.Contains(p.body, `id="nav-vms"`))
	}
}

func TestDashboardShowsNode(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	testutil.WaitFor(t, 10*time.Second, "the node to be healthy", func() error {
		st := e.node.Status()
		if len(st.Nodes) != 1 || !st.Nodes[0].Healthy {
			return fmt.Errorf("nodes: %+v", st.Nodes)
		}
		return nil
	})
	b := e.browser()
	b.login("root", "correct horse")

	p := b.get("/dashboard")
	name := e.node.Name()
	mustContain(t, p,
		`id="nodes"`,
		`<tr class="node" data-name="`+name+`" data-role="voter" data-healthy="true" data-leader="true">`,
		`id="voters">1<`,
		`id="leader">`+name+`<`,
		`id="gossip-health">0<`,
		`id="join-token" class="secret">`+e.node.JoinToken()+`<`,
		`hx-get="/dashboard/cluster"`,
		`id="nav-dashboard" href="/dashboard" class="active"`,
		`id="capacity"`,
	)

	// The htmx refresh gets the panel alone.
	p = b.get("/dashboard/cluster")
	if p.status != http.StatusOK || strings.Contains(p.body, "<html") || !strings.HasPrefix(p.body, `<section id="cluster"`) {
		t.Fatalf("fragment: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, `data-name="`+name+`"`)

	// Once the session is gone, htmx is told to load the login page rather
	// than swapping it into the panel.
	anon := e.browser().noFollow()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/dashboard/cluster", nil)
	req.Header.Set("HX-Request", "true")
	p = anon.do(req)
	if p.status != http.StatusUnauthorized || !strings.HasPrefix(p.header.Get("HX-Redirect"), "/login") {
		t.Fatalf("htmx without session: %d, HX-Redirect %q", p.status, p.header.Get("HX-Redirect"))
	}
}

func TestCreateProjectFlavorUserThroughForms(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	b.login("root", "correct horse")

	// Project: plain POST, then redirect to the new project's own page
	// with a message; the list has it.
	p := b.post("/projects", b.formOn("/projects", url.Values{"name": {"radiology"}, "description": {"PACS and viewers"}}))
	if p.status != http.StatusOK || p.path != "/projects/radiology?created=radiology" {
		t.Fatalf("create project: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Project radiology was created.", `id="member-form"`)
	mustContain(t, b.get("/projects"), `<tr class="project" data-name="radiology">`, "PACS and viewers")
	mustNotContain(t, b.get("/projects/radiology"), "was created")
	if ps := e.svc.ListProjects(adminPrincipal(t, e)); len(ps) != 1 || ps[0].Name != "radiology" {
		t.Fatalf("projects in the service: %+v", ps)
	}
	// A duplicate is refused with the service's reason, and the form keeps its input.
	p = b.post("/projects", b.formOn("/projects", url.Values{"name": {"radiology"}, "description": {"again"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("duplicate project: %d", p.status)
	}
	mustContain(t, p, "A project named “radiology” already exists.", `value="again"`)
	mustNotContain(t, p, "Already exists:")

	// Flavor, including a typo in a number.
	p = b.post("/flavors", b.formOn("/flavors", url.Values{"name": {"m1.small"}, "vcpus": {"two"}, "ram_mib": {"2048"}, "disk_gib": {"20"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("flavor with vcpus=two: %d", p.status)
	}
	mustContain(t, p, "Virtual CPUs must be a whole number", `value="two"`)
	p = b.post("/flavors", b.formOn("/flavors", url.Values{"name": {"m1.small"}, "vcpus": {"2"}, "ram_mib": {"2048"}, "disk_gib": {"20"}}))
	if p.status != http.StatusOK || p.path != "/flavors?created=m1.small" {
		t.Fatalf("create flavor: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `<tr class="flavor" data-name="m1.small">`, `<td class="num">2048</td>`)
	if fl := e.svc.ListFlavors(); len(fl) != 1 || fl[0].RAMMiB != 2048 {
		t.Fatalf("flavors in the service: %+v", fl)
	}
	// Refusals beside their field: a taken name, a size that is no number.
	p = b.post("/flavors", b.formOn("/flavors", url.Values{"name": {"m1.small"}, "vcpus": {"2"}, "ram_mib": {"2048"}, "disk_gib": {"20"}}))
	mustContain(t, p, `id="flavor-name-error" role="alert">A size named “m1.small” already exists.`)
	p = b.post("/flavors", b.formOn("/flavors", url.Values{"name": {"m1.big"}, "vcpus": {"two"}, "ram_mib": {"2048"}, "disk_gib": {"20"}}))
	mustContain(t, p, `id="flavor-vcpus-error" role="alert">`, `value="m1.big"`)

	// A weak password is refused with the rule it breaks, in the reader's language.
	p = b.post("/users", b.formOn("/users", url.Values{"name": {"nurse1"}, "password": {"too-short"}, "password2": {"too-short"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("user with a short password: %d", p.status)
	}
	mustContain(t, p, `id="user-password-error" role="alert">The password is too short: it needs at least 12 characters.`)
	p = b.post("/users", b.formOn("/users", url.Values{"name": {"nurse1"}, "password": {"pw-for-nurse-one"}, "password2": {"pw-for-nurse-two"}}))
	mustContain(t, p, `id="user-password2-error" role="alert">The two passwords do not match.`, `value="nurse1"`)
	p = b.post("/users", b.formOn("/users", url.Values{"name": {"root"}, "password": {"pw-for-nurse-one"}, "password2": {"pw-for-nurse-one"}}))
	mustContain(t, p, `id="user-name-error" role="alert">A user named “root” already exists.`)
	b.get("/lang/zh-CN")
	p = b.post("/users", b.formOn("/users", url.Values{"name": {"nurse1"}, "password": {"NURSE1-on-nights"}, "password2": {"NURSE1-on-nights"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("user with the name in the password: %d", p.status)
	}
	mustContain(t, p, `id="user-password-error" role="alert">密码不能包含用户名。`)
	b.get("/lang/en")

	// A user, then make them a member of the project.
	p = b.post("/users", b.formOn("/users", url.Values{"name": {"nurse1"}, "display_name": {"Li Na"}, "password": {"pw-for-nurse-one"}, "password2": {"pw-for-nurse-one"}}))
	if p.status != http.StatusOK || p.path != "/users/nurse1?created=nurse1" {
		t.Fatalf("create user: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "User nurse1 was created.")
	mustContain(t, b.get("/users"), `<tr class="user" data-name="nurse1" data-admin="false" data-disabled="false">`, "Li Na")

	p = b.post("/projects/radiology/members", b.formOn("/projects/radiology", url.Values{"user": {"nurse1"}, "role": {"member"}}))
	if p.status != http.StatusOK || p.path != "/projects/radiology?saved=member" {
		t.Fatalf("set member: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `<tr class="member" data-user="nurse1" data-role="member">`)

	// Quota: the defaults are shown, and a cluster admin can change them.
	quota := url.Values{"instances": {"4"}, "vcpus": {"8"}, "ram_mib": {"16384"}, "disk_gib": {"-1"}, "object_gib": {"100"}, "floating_ips": {"2"}, "objects": {"50000"},
		"volumes": {"3"}, "volume_gib": {"300"}, "snapshots": {"-1"}, "networks": {"5"}, "ports": {"40"}, "routers": {"3"}}
	form := b.formOn("/projects/radiology", quota)
	form.Set("version", versionOn(t, b.get("/projects/radiology")))
	p = b.post("/projects/radiology/quota", form)
	if p.status != http.StatusOK || p.path != "/projects/radiology?saved=quota" {
		t.Fatalf("set quota: %d at %s\n%s", p.status, p.path, p.body)
	}
	q, err := e.svc.GetQuota(adminPrincipal(t, e), "radiology")
	if err != nil || q.Limits.Instances != 4 || q.Limits.DiskGiB != identity.Unlimited || q.Limits.Objects != 50000 || q.Limits.VolumeGiB != 300 || q.Limits.Networks != 5 || q.Limits.Ports != 40 || q.Limits.Routers != 3 {
		t.Fatalf("quota in the service: %+v, %v", q, err)
	}
	// A stale version (someone else saved meanwhile) is refused, not overwritten.
	form.Set("instances", "99")
	p = b.post("/projects/radiology/quota", form)
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("stale quota save: %d", p.status)
	}
	// (This appliance runs no VMs: the instances row is left out, its
	// limit kept in the form.)
	mustContain(t, p, "Someone changed this quota meanwhile.", `<input type="hidden" name="instances" value="4">`)

	// The audit log shows it all, newest first, and filters.
	p = b.get("/audit")
	mustContain(t, p, `data-action="quota.set"`, `data-action="project.create"`)
	if strings.Index(p.body, `data-action="quota.set"`) > strings.Index(p.body, `data-action="project.create"`) {
		t.Error("audit log is not newest first")
	}
	p = b.get("/audit?action=flavor.")
	mustContain(t, p, `data-action="flavor.create"`)
	mustNotContain(t, p, `data-action="project.create"`)
	p = b.get("/audit?user=nobody")
	mustContain(t, p, `id="audit-empty"`)

	// The same pages, the sign-in page and a page that is not there, all
	// said in Chinese.
	b.get("/lang/zh-CN")
	data := map[string]string{"PACS and viewers": "the project's description, as its admin wrote it", "Li Na": "a user's name"}
	for _, path := range []string{"/dashboard", "/projects", "/projects/radiology", "/users", "/users/nurse1", "/flavors", "/account", "/audit", "/no-such-page"} {
		p := b.get(path)
		if p.status != http.StatusOK && path != "/no-such-page" {
			t.Fatalf("%s in Chinese: %d", path, p.status)
		}
		noEnglish(t, path, p.body, data)
	}
	out := e.browser()
	out.lang = "zh-CN"
	p = out.get("/login")
	mustContain(t, p, `<html lang="zh-CN">`)
	noEnglish(t, "/login", p.body, nil)
}

func TestProjectMemberWithoutAdmin(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	ctx := context.Background()
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse1", Password: "pw-for-nurse-one"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: "icu"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: "finance"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetMember(ctx, root, "icu", "nurse1", identity.RoleReader); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.login("nurse1", "pw-for-nurse-one")

	p := b.get("/projects")
	mustContain(t, p, `data-name="icu"`, "Only cluster administrators can create projects.")
	mustNotContain(t, p, `data-name="finance"`, `id="project-form"`)
	// The form is hidden, but the service is what refuses.
	p = b.post("/projects", b.formOn("/projects", url.Values{"name": {"mine"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("non-admin create: %d", p.status)
	}
	mustContain(t, p, "Not allowed: not allowed to create projects")

	p = b.get("/projects/icu")
	// The quota, read-only; this appliance runs no VMs, volumes or
	// networks, so their rows are left out.
	mustContain(t, p, `<table id="quota">`)
	mustNotContain(t, p, `id="quota-form"`, `id="member-form"`, `data-resource="instances"`, `data-resource="floating_ips"`)
	if p := b.get("/projects/finance"); p.status != http.StatusNotFound {
		t.Fatalf("someone else's project: %d", p.status)
	}
	if p := b.get("/audit"); p.status != http.StatusForbidden {
		t.Fatalf("audit as a reader: %d", p.status)
	}
	mustNotContain(t, b.get("/dashboard"), `id="join-token"`)

	// In Chinese the refusal is said in Chinese, on the form and in the
	// audit log, made from the service's English format and parameters.
	b.get("/lang/zh-CN")
	p = b.post("/projects", b.formOn("/projects", url.Values{"name": {"mine"}}))
	mustContain(t, p, "无权操作：无权创建项目")
	mustNotContain(t, p, "not allowed")
	admin := e.browser()
	admin.login("root", "correct horse")
	admin.get("/lang/zh-CN")
	p = admin.get("/audit?user=nurse1")
	mustContain(t, p, ">无权创建项目<")
	mustNotContain(t, p, ">not allowed to create projects<")
}

func TestPostWithoutCSRFTokenIsRefused(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	b.login("root", "correct horse")

	cases := []struct {
		name    string
		form    url.Values
		headers []string
	}{
		{"no token", url.Values{"name": {"p1"}}, nil},
		{"wrong token", url.Values{"name": {"p2"}, "csrf": {"AAAA"}}, nil},
		// A valid token does not help a request the browser marks cross-site.
		{"cross-site", b.formOn("/projects", url.Values{"name": {"p3"}}), []string{"Sec-Fetch-Site", "cross-site"}},
		{"foreign origin", b.formOn("/projects", url.Values{"name": {"p4"}}), []string{"Origin", "https://evil.example"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := b.post("/projects", c.form, c.headers...)
			if p.status != http.StatusForbidden {
				t.Fatalf("status %d, want 403", p.status)
			}
			mustContain(t, p, "Request refused")
		})
	}
	if ps := e.svc.ListProjects(adminPrincipal(t, e)); len(ps) != 0 {
		t.Fatalf("refused requests created projects: %+v", ps)
	}
	// Login needs the token of its own form too.
	anon := e.browser()
	if p := anon.post("/login", url.Values{"username": {"root"}, "password": {"correct horse"}}); p.status != http.StatusForbidden {
		t.Fatalf("login without a token: %d", p.status)
	}
	// And a session's token does not work for another session.
	other := e.browser()
	other.login("root", "correct horse")
	if p := other.post("/projects", b.formOn("/projects", url.Values{"name": {"p5"}})); p.status != http.StatusForbidden {
		t.Fatalf("token of another session: %d", p.status)
	}
}

func TestChinesePages(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")

	// The browser's language is used when nothing was picked.
	b := e.browser()
	b.lang = "zh-CN,zh;q=0.9,en;q=0.8"
	p := b.get("/login")
	mustContain(t, p, `<html lang="zh-CN">`, "用户名", `type="submit">登录<`)
	b.login("root", "correct horse")
	p = b.get("/dashboard")
	mustContain(t, p, "集群健康状况", "投票节点", `id="nav-projects" href="/projects">项目<`)
	// A refused name: the rule, in Chinese, next to the name; no English.
	p = b.post("/projects", b.formOn("/projects", url.Values{"name": {"bad name!"}}))
	mustContain(t, p, `id="project-name-error" role="alert">“bad name!”不能用作名称：名称为 1–63 个字母`)
	mustNotContain(t, p, "must be", "输入无效")

	// The switch overrides the browser and comes back to the same page.
	p = b.get("/lang/en?next=%2Fprojects")
	if p.path != "/projects" {
		t.Fatalf("language switch went to %s", p.path)
	}
	mustContain(t, p, `<html lang="en">`, "New project")
	mustNotContain(t, p, "新建项目")

	en := e.browser()
	p = en.get("/lang/zh-CN?next=%2Flogin")
	mustContain(t, p, "登录")
}

// adminPrincipal signs root in through the service, for checks behind the UI.
func adminPrincipal(t *testing.T, e *env) *identity.Principal {
	t.Helper()
	ctx := context.Background()
	tok, _, err := e.svc.Login(ctx, "root", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.svc.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func versionOn(t *testing.T, p page) string {
	t.Helper()
	const marker = `name="version" value="`
	i := strings.Index(p.body, marker)
	if i < 0 {
		t.Fatalf("no quota version on %s", p.path)
	}
	rest := p.body[i+len(marker):]
	return rest[:strings.IndexByte(rest, '"')]
}
