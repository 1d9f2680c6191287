package ui

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
)

// A cluster admin edits, disables, enables and deletes a user from the
// users pages. Disabling signs the user out at once and the login page
// says why; an edit made against an old copy of the user is refused and
// changes nothing; the admin's own row offers no disable or delete.
func TestUsersEditDisableDelete(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	ctx := context.Background()
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse1", DisplayName: "Li Na", Password: "on-nights-4412"}); err != nil {
		t.Fatal(err)
	}
	admin := e.browser()
	admin.login("root", "correct horse")
	nurse := e.browser()
	nurse.login("nurse1", "on-nights-4412")

	p := admin.get("/users")
	mustContain(t, p, `data-name="nurse1" data-admin="false" data-disabled="false"`, `href="/users/nurse1"`,
		`action="/users/nurse1/disable"`, `action="/users/nurse1/delete"`, `hx-confirm="Delete user nurse1?`)
	mustNotContain(t, p, `action="/users/root/disable"`, `action="/users/root/delete"`)
	// Not for other users.
	if p := nurse.get("/users/root"); p.status != http.StatusForbidden {
		t.Fatalf("a user opens another's page: %d", p.status)
	}
	if p := nurse.post("/users/root/disable", nurse.formOn("/users", url.Values{})); p.status != formStatus || e.user(root, "root").Disabled {
		t.Fatalf("a user disables an admin: %d", p.status)
	}

	// Disable: the session ends at once; the login page says why.
	p = admin.post("/users/nurse1/disable", admin.formOn("/users", url.Values{}))
	if p.status != http.StatusOK || p.path != "/users?done=disable&name=nurse1" || !e.user(root, "nurse1").Disabled {
		t.Fatalf("disable: %d at %s", p.status, p.path)
	}
	mustContain(t, p, "nurse1 was disabled", `data-name="nurse1" data-admin="false" data-disabled="true"`, `action="/users/nurse1/enable"`)
	if p := nurse.get("/dashboard"); !strings.HasPrefix(p.path, "/login") {
		t.Fatalf("the disabled user's session still opens the dashboard: %d at %s", p.status, p.path)
	}
	p = nurse.post("/login", nurse.formOn("/login", url.Values{"username": {"nurse1"}, "password": {"on-nights-4412"}}))
	mustContain(t, p, "This account is disabled. Ask a cluster administrator to enable it.")
	p = nurse.post("/login", nurse.formOn("/login", url.Values{"username": {"nurse1"}, "password": {"wrong-password-1"}}))
	mustNotContain(t, p, "disabled")
	mustContain(t, admin.get("/users/nurse1"), `id="user-disabled"`)

	p = admin.post("/users/nurse1/enable", admin.formOn("/users", url.Values{}))
	if p.path != "/users?done=enable&name=nurse1" || e.user(root, "nurse1").Disabled {
		t.Fatalf("enable: %d at %s", p.status, p.path)
	}
	nurse.login("nurse1", "on-nights-4412")

	// Edit: against the version the page showed. Someone else's change in
	// between makes the form's save refused, with nothing changed.
	form := admin.formOn("/users/nurse1", url.Values{"display_name": {"Li Na (ICU)"}, "cluster_admin": {"true"}})
	form.Set("version", uitoa(e.user(root, "nurse1").Version))
	other := "Li Na, nights"
	if _, err := e.svc.UpdateUser(ctx, root, "nurse1", identity.UserUpdate{DisplayName: &other}, 0); err != nil {
		t.Fatal(err)
	}
	p = admin.post("/users/nurse1/edit", form)
	if u := e.user(root, "nurse1"); p.status != formStatus || u.DisplayName != other || u.ClusterAdmin {
		t.Fatalf("a stale edit: %d, the user is now %+v", p.status, u)
	}
	form = admin.formOn("/users/nurse1", url.Values{"display_name": {"Li Na (ICU)"}, "cluster_admin": {"true"}})
	form.Set("version", uitoa(e.user(root, "nurse1").Version))
	p = admin.post("/users/nurse1/edit", form)
	if u := e.user(root, "nurse1"); p.path != "/users/nurse1?saved=1" || u.DisplayName != "Li Na (ICU)" || !u.ClusterAdmin {
		t.Fatalf("edit: %d at %s, the user is now %+v", p.status, p.path, u)
	}
	mustContain(t, p, "The changes to nurse1 were saved.", `value="Li Na (ICU)"`)

	// Delete, in Chinese.
	admin.get("/lang/zh-CN")
	p = admin.post("/users/nurse1/delete", admin.formOn("/users", url.Values{}))
	if p.path != "/users?done=delete&name=nurse1" {
		t.Fatalf("delete: %d at %s", p.status, p.path)
	}
	mustContain(t, p, "已删除用户 nurse1。")
	if _, err := e.svc.GetUser(root, "nurse1"); err == nil {
		t.Fatal("nurse1 still exists")
	}
	if p := nurse.get("/dashboard"); !strings.HasPrefix(p.path, "/login") {
		t.Fatalf("the deleted user's session: %d at %s", p.status, p.path)
	}
}

func (e *env) user(p *identity.Principal, name string) *identity.User {
	e.t.Helper()
	u, err := e.svc.GetUser(p, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}
