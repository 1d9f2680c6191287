package ui

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
)

func httptestRequest(langCookieValue, accept string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if langCookieValue != "" {
		r.AddCookie(&http.Cookie{Name: langCookie, Value: langCookieValue})
	}
	if accept != "" {
		r.Header.Set("Accept-Language", accept)
	}
	return r
}

func TestNewNeedsIdentity(t *testing.T) {
	if _, err := New(Deps{}); err == nil {
		t.Fatal("New without an identity service succeeded")
	}
}

// offlineHandler is the UI over a service with no cluster behind it: enough
// for what never reaches the service (static files, the language switch).
func offlineHandler(t *testing.T) http.Handler {
	t.Helper()
	h, err := New(Deps{Identity: identity.NewService(nil, identity.DefaultConfig())})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestStaticFilesAreEmbedded(t *testing.T) {
	h := offlineHandler(t)
	for name, ctype := range map[string]string{"htmx.min.js": "javascript", "cairn.css": "text/css"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/static/"+name, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Content-Type"), ctype) || rec.Body.Len() < 1000 {
			t.Fatalf("%s: %d %q, %d bytes", name, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
		}
		etag := rec.Header().Get("ETag")
		req := httptest.NewRequest(http.MethodGet, "/static/"+name, nil)
		req.Header.Set("If-None-Match", etag)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified {
			t.Fatalf("%s with If-None-Match %s: %d", name, etag, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/static/nope.js", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("missing static file: %d", rec.Code)
	}
}

func TestSecurityHeaders(t *testing.T) {
	h := offlineHandler(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/no/such/page", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("status %d", rec.Code)
	}
	for k, want := range map[string]string{
		"Content-Security-Policy": "script-src 'self'",
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
		"Cache-Control":           "no-store",
	} {
		if got := rec.Header().Get(k); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want it to contain %q", k, got, want)
		}
	}
}

func TestLanguageSwitch(t *testing.T) {
	h := offlineHandler(t)
	for target, want := range map[string]string{
		"/lang/zh-CN?next=%2Fprojects%3Fx%3D1": "/projects?x=1",
		"/lang/en?next=https://evil.example":   "/dashboard",
		"/lang/en?next=//evil.example":         "/dashboard",
		"/lang/en?next=/%5Cevil.example":       "/dashboard",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != want {
			t.Errorf("%s: %d to %q, want %q", target, rec.Code, rec.Header().Get("Location"), want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/lang/fr", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("unsupported language: %d", rec.Code)
	}
}

// The one-time message's parameters are taken off the address; the
// page's own stay.
func TestCleanURL(t *testing.T) {
	for in, want := range map[string]string{
		"/vms/vm-1?done=create":                                "/vms/vm-1",
		"/images?done=uploaded&name=debian-12":                 "/images",
		"/buckets/b?prefix=ct%2F2026%2F&uploaded=head.dcm":     "/buckets/b?prefix=ct%2F2026%2F",
		"/hosts?done=drain&node=node1":                         "/hosts",
		"/floating-ips?done=create&ip=203.0.113.5":             "/floating-ips",
		"/vms?deleted=web2":                                    "/vms",
		"/projects?created=radiology":                          "/projects",
		"/dashboard?approved=node4":                            "/dashboard",
		"/storage?done=drain&disk=node1-abc":                   "/storage",
		"/users?reset=nurse1":                                  "/users",
		"/projects/p-1?saved=quota":                            "/projects/p-1",
		"/buckets/b?prefix=a%2F&deleted=x.dcm&after=a%2Fw.dcm": "/buckets/b?after=a%2Fw.dcm&prefix=a%2F",
		"/buckets/x%2Fy?deleted=z":                             "/buckets/x%2Fy",
	} {
		u, _ := url.Parse(in)
		if got, ok := cleanURL(u); !ok || got != want {
			t.Errorf("cleanURL(%s) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"/vms", "/buckets/b?prefix=name%2F", "/hosts?node=node1"} {
		u, _ := url.Parse(in)
		if got, ok := cleanURL(u); ok {
			t.Errorf("cleanURL(%s) = %q: it had no message", in, got)
		}
	}
}

// page.js and the server take the same parameters off the address.
func TestFlashParamsInStep(t *testing.T) {
	js, err := staticFS.ReadFile("static/page.js")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]string{"triggers": flashTriggers, "companions": flashCompanions} {
		m := regexp.MustCompile(`var ` + name + ` = \[([^\]]*)\];`).FindSubmatch(js)
		if m == nil {
			t.Fatalf("page.js has no %s list", name)
		}
		var got []string
		for _, q := range strings.Split(string(m[1]), ",") {
			got = append(got, strings.Trim(strings.TrimSpace(q), `"`))
		}
		if !slices.Equal(got, want) {
			t.Errorf("page.js %s %q, the server's %q", name, got, want)
		}
	}
}

// The tail of a serial log becomes the text serial.js would show: from the
// first whole line when cut, without escape sequences, CRs or bells, and
// valid UTF-8.
func TestPlainSerial(t *testing.T) {
	cut := append([]byte("tail of a line\xe4\xb8"), []byte("\nLinux version 6.1\r\n\x1b[1;32mOK\x1b[0m cairn-guest: ip=10.0.0.5\a\n登录:")...)
	full := append(bytes.Repeat([]byte("x"), recentSerial-len(cut)), cut...)
	if got, want := plainSerial(full), "Linux version 6.1\nOK cairn-guest: ip=10.0.0.5\n登录:"; got != want {
		t.Errorf("a cut tail: %q, want %q", got, want)
	}
	if got, want := plainSerial([]byte("boot\r\nlogin: rooo\bt")), "boot\nlogin: root"; got != want {
		t.Errorf("a whole log: %q, want %q", got, want)
	}
}
