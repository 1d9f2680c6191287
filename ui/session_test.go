package ui

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
)

// TestSafeNext keeps ?next= on this site: every way a browser can be talked
// into reading a path as another host falls back to the dashboard.
func TestSafeNext(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/vms", "/vms"},
		{"/vms/abc/console?tab=serial", "/vms/abc/console?tab=serial"},
		{"/buckets/b%20c", "/buckets/b%20c"},
		{"", "/dashboard"},
		{"vms", "/dashboard"},
		{"//evil.com", "/dashboard"},
		{"///evil.com", "/dashboard"},
		{"/\\evil.com", "/dashboard"},
		{"\\\\evil.com", "/dashboard"},
		{"/\t/evil.com", "/dashboard"},
		{"/\n/evil.com", "/dashboard"},
		{"/\r/evil.com", "/dashboard"},
		{"/\x00/evil.com", "/dashboard"},
		{"/\u0085/evil.com", "/dashboard"},
		{"https://evil.com", "/dashboard"},
		{"https:/evil.com", "/dashboard"},
		{"javascript:alert(1)", "/dashboard"},
		{" /vms", "/dashboard"},
		{"/%2F%2Fevil.com", "/dashboard"},
		{"/%2f/evil.com", "/dashboard"},
		{"/%5Cevil.com", "/dashboard"},
		{"/%09/evil.com", "/dashboard"},
		{"/%zz", "/dashboard"},
	} {
		if got := safeNext(c.in); got != c.want {
			t.Errorf("safeNext(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// The login form backs off after repeated failures: 429, Retry-After and a
// message that says how long, in the reader's language.
func TestLoginFormThrottled(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	for range identity.DefaultConfig().LoginFreeFailures + 1 {
		if p := b.post("/login", b.formOn("/login", url.Values{"username": {"root"}, "password": {"wrong password"}})); p.status != http.StatusUnprocessableEntity {
			t.Fatalf("wrong password: status %d", p.status)
		}
	}
	b.get("/lang/zh-CN")
	p := b.post("/login", b.formOn("/login", url.Values{"username": {"root"}, "password": {"correct horse"}}))
	if p.status != http.StatusTooManyRequests || p.header.Get("Retry-After") == "" {
		t.Fatalf("login during the backoff: status %d, Retry-After %q", p.status, p.header.Get("Retry-After"))
	}
	mustContain(t, p, "登录失败次数过多")
}
