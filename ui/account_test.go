package ui

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
)

// A user changes their own password on the account page: the current one is
// needed, the form says what happens, and their other sessions and API
// tokens stop working while this one stays. They list and revoke their
// tokens there; an admin sees everyone's and resets a password on the
// users page, which signs that user out everywhere.
func TestAccountPasswordAndTokens(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	ctx := context.Background()
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse1", Password: "pw-for-nurse-one"}); err != nil {
		t.Fatal(err)
	}
	b, other := e.browser(), e.browser()
	b.login("nurse1", "pw-for-nurse-one")
	other.login("nurse1", "pw-for-nurse-one")
	tok, _, err := e.svc.Login(ctx, "nurse1", "pw-for-nurse-one")
	if err != nil {
		t.Fatal(err)
	}
	np, _ := e.svc.Authenticate(ctx, tok)
	script, st, err := e.svc.CreateAPIToken(ctx, np, "backup-job", 0)
	if err != nil {
		t.Fatal(err)
	}

	p := b.get("/account")
	mustContain(t, p, `id="password-revokes"`, "revokes your API tokens", `data-kind="api"`, "backup-job", "This session",
		`action="/account/tokens/`+st.ID+`/revoke"`)
	if n := strings.Count(p.body, `class="token"`); n != 4 {
		t.Fatalf("%d tokens on the page, want 4 (three sessions and an API token)", n)
	}
	p = b.post("/account/password", b.formOn("/account", url.Values{"current": {"not-my-password"}, "password": {"day-shift-1188"}, "password2": {"day-shift-1188"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("wrong current password: %d", p.status)
	}
	mustContain(t, p, "The current password is wrong.")
	p = b.post("/account/password", b.formOn("/account", url.Values{"current": {"pw-for-nurse-one"}, "password": {"day-shift-1188"}, "password2": {"day-shift-1188"}}))
	if p.status != http.StatusOK || p.path != "/account?done=password" {
		t.Fatalf("change password: %d at %s\n%s", p.status, p.path, p.body)
	}
	if n := strings.Count(p.body, `class="token"`); n != 1 {
		t.Fatalf("%d tokens left after the change, want this session only", n)
	}
	if p := other.get("/dashboard"); !strings.HasPrefix(p.path, "/login") {
		t.Fatalf("the other session after the change ended at %s", p.path)
	}
	if _, err := e.svc.Authenticate(ctx, script); !identity.IsCode(err, identity.CodeUnauthenticated) {
		t.Fatalf("the API token after the change: %v", err)
	}

	// Revoking a token of one's own.
	_, st, err = e.svc.CreateAPIToken(ctx, mustAuth(t, e, b), "monitor", 0)
	if err != nil {
		t.Fatal(err)
	}
	p = b.post("/account/tokens/"+st.ID+"/revoke", b.formOn("/account", url.Values{}))
	if p.status != http.StatusOK || p.path != "/account?done=revoked" || strings.Contains(p.body, st.ID) {
		t.Fatalf("revoke: %d at %s", p.status, p.path)
	}

	// The admin sees the nurse's session and resets the password.
	a := e.browser()
	a.login("root", "correct horse")
	mustContain(t, a.get("/account"), `data-user="nurse1"`, `id="lifetime-days" name="days" type="number" min="1" max="3650" step="1" required value="90"`)
	mustNotContain(t, b.get("/account"), `id="lifetime-form"`)
	form := a.formOn("/account", url.Values{"days": {"30"}})
	form.Set("version", "0")
	if p := a.post("/account/token-lifetime", form); p.status != http.StatusOK || p.path != "/account?done=lifetime" {
		t.Fatalf("token lifetime: %d at %s\n%s", p.status, p.path, p.body)
	}
	if got := e.svc.Settings().MaxTokenLifetime(); got != 30*24*time.Hour {
		t.Fatalf("maximum token lifetime %s, want 30 days", got)
	}
	p = a.post("/users/password", a.formOn("/users", url.Values{"user": {"nurse1"}, "password": {"reset-by-admin-77"}, "password2": {"reset-by-admin-77"}}))
	if p.status != http.StatusOK || p.path != "/users?reset=nurse1" {
		t.Fatalf("reset: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `id="reset-revokes"`)
	if p := b.get("/dashboard"); !strings.HasPrefix(p.path, "/login") {
		t.Fatalf("the nurse's session after the reset ended at %s", p.path)
	}
	b.login("nurse1", "reset-by-admin-77")
}

// mustAuth returns the principal of a browser's session.
func mustAuth(t *testing.T, e *env, b *browser) *identity.Principal {
	t.Helper()
	p, err := e.svc.Authenticate(context.Background(), b.cookie(sessionCookie).Value)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
