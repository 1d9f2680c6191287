package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/storage"
)

type fixture struct {
	t      *testing.T
	srv    *httptest.Server
	svc    *identity.Service
	admin  string // token
	server *api.Server
}

func newFixture(t *testing.T) *fixture {
	c := consensustest.Start(t, 1, func(reg *consensus.Registry) {
		identity.Register(reg)
		storage.Register(reg)
	})
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	s := api.New(api.Deps{Identity: svc, Storage: storage.NewService(c.Nodes[0], svc), Cluster: c.Nodes[0]})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	f := &fixture{t: t, srv: srv, svc: svc, server: s}
	f.call("POST", "/api/v1/setup", "", map[string]string{"setup_code": svc.SetupCode(), "username": "admin", "password": "cluster-root-6161"}, 201, nil)
	f.admin = f.login("admin", "cluster-root-6161")
	return f
}

// call sends a request and checks the status; out receives the JSON body.
func (f *fixture) call(method, path, token string, body any, want int, out any, hdr ...string) http.Header {
	f.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		f.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, raw)
	}
	if res.StatusCode >= 400 {
		var e struct{ Code, Message string }
		if json.Unmarshal(raw, &e) != nil || e.Code == "" || e.Message == "" {
			f.t.Fatalf("%s %s: error body is not {code, message}: %s", method, path, raw)
		}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return res.Header
}

func (f *fixture) login(user, pw string) string {
	var res struct{ Token string }
	f.call("POST", "/api/v1/auth/login", "", map[string]string{"username": user, "password": pw}, 200, &res)
	return res.Token
}

func (f *fixture) projectCount() int {
	var ps []identity.Project
	f.call("GET", "/api/v1/projects", f.admin, nil, 200, &ps)
	return len(ps)
}

func TestAuthorizationMatrix(t *testing.T) {
	f := newFixture(t)
	for _, u := range []string{"alice", "bob", "rita"} {
		f.call("POST", "/api/v1/users", f.admin, map[string]any{"name": u, "password": "pw-of-" + strings.ToUpper(u[:1]) + "-" + u[1:] + "-2026"}, 201, nil)
	}
	var a, b identity.Project
	f.call("POST", "/api/v1/projects", f.admin, map[string]any{"name": "proj-a"}, 201, &a)
	f.call("POST", "/api/v1/projects", f.admin, map[string]any{"name": "proj-b"}, 201, &b)
	f.call("PUT", "/api/v1/projects/proj-a/members/alice", f.admin, map[string]string{"role": "admin"}, 204, nil)
	f.call("PUT", "/api/v1/projects/proj-b/members/bob", f.admin, map[string]string{"role": "member"}, 204, nil)
	f.call("PUT", "/api/v1/projects/proj-a/members/rita", f.admin, map[string]string{"role": "reader"}, 204, nil)
	alice, bob, rita := f.login("alice", "pw-of-A-lice-2026"), f.login("bob", "pw-of-B-ob-2026"), f.login("rita", "pw-of-R-ita-2026")

	// No token, a garbage token, a revoked token: 401.
	f.call("GET", "/api/v1/projects", "", nil, 401, nil)
	f.call("GET", "/api/v1/projects", "cairn_0123456789abcdef_nope", nil, 401, nil)
	tmp := f.login("bob", "pw-of-B-ob-2026")
	f.call("POST", "/api/v1/auth/logout", tmp, nil, 204, nil)
	f.call("GET", "/api/v1/projects", tmp, nil, 401, nil)

	// A member of B cannot read or change A, and A's existence does not leak.
	f.call("GET", "/api/v1/projects/proj-a", bob, nil, 404, nil)
	f.call("PATCH", "/api/v1/projects/proj-a", bob, map[string]string{"description": "x"}, 404, nil)
	f.call("GET", "/api/v1/projects/proj-a/quota", bob, nil, 404, nil)
	var seen []identity.Project
	f.call("GET", "/api/v1/projects", bob, nil, 200, &seen)
	if len(seen) != 1 || seen[0].Name != "proj-b" {
		t.Fatalf("bob sees %+v, want only proj-b", seen)
	}
	// A reader reads but cannot write; a member cannot manage members.
	f.call("GET", "/api/v1/projects/proj-a", rita, nil, 200, nil)
	f.call("PATCH", "/api/v1/projects/proj-a", rita, map[string]string{"description": "x"}, 403, nil)
	f.call("PUT", "/api/v1/projects/proj-b/members/rita", bob, map[string]string{"role": "admin"}, 403, nil)
	// Only cluster admins create projects, users and flavors, and set quotas.
	f.call("POST", "/api/v1/projects", alice, map[string]any{"name": "sneaky"}, 403, nil)
	f.call("POST", "/api/v1/users", alice, map[string]any{"name": "eve", "password": "eavesdrop-2207"}, 403, nil)
	f.call("POST", "/api/v1/flavors", alice, map[string]any{"name": "huge", "vcpus": 64, "ram_mib": 65536, "disk_gib": 100}, 403, nil)
	f.call("PUT", "/api/v1/projects/proj-a/quota", alice, identity.DefaultQuota, 403, nil)
	f.call("PATCH", "/api/v1/users/alice", alice, map[string]any{"cluster_admin": true}, 403, nil)
	// A project admin changes their project and reads its audit log, not others'.
	f.call("PATCH", "/api/v1/projects/proj-a", alice, map[string]string{"description": "radiology"}, 200, nil)
	f.call("GET", "/api/v1/audit?project=proj-a", alice, nil, 200, nil)
	f.call("GET", "/api/v1/audit", alice, nil, 403, nil)
	f.call("GET", "/api/v1/audit?project=proj-b", alice, nil, 404, nil)
	if n := f.projectCount(); n != 2 {
		t.Fatalf("%d projects after refused creates, want 2", n)
	}
}

func TestETagAndIfMatch(t *testing.T) {
	f := newFixture(t)
	var p identity.Project
	h := f.call("POST", "/api/v1/projects", f.admin, map[string]any{"name": "lab"}, 201, &p)
	tag := h.Get("ETag")
	if tag == "" {
		t.Fatal("no ETag on create")
	}
	h = f.call("PATCH", "/api/v1/projects/lab", f.admin, map[string]string{"description": "one"}, 200, nil, "If-Match", tag)
	newTag := h.Get("ETag")
	if newTag == tag || newTag == "" {
		t.Fatalf("ETag did not change: %q -> %q", tag, newTag)
	}
	// The old tag is stale now: 412 and nothing changes.
	f.call("PATCH", "/api/v1/projects/lab", f.admin, map[string]string{"description": "two"}, 412, nil, "If-Match", tag)
	f.call("DELETE", "/api/v1/projects/lab", f.admin, nil, 412, nil, "If-Match", tag)
	var got identity.Project
	h = f.call("GET", "/api/v1/projects/lab?consistent=true", f.admin, nil, 200, &got)
	if got.Description != "one" || h.Get("ETag") != newTag {
		t.Fatalf("stale writes changed the project: %+v %s", got, h.Get("ETag"))
	}
	f.call("PATCH", "/api/v1/projects/lab", f.admin, map[string]string{"description": "x"}, 400, nil, "If-Match", "garbage")
	f.call("DELETE", "/api/v1/projects/lab", f.admin, nil, 204, nil, "If-Match", newTag)
}

func TestBadRequestsChangeNothing(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, method, path, body string
		hdr                      []string
		want                     int
	}{
		{"malformed JSON", "POST", "/api/v1/projects", `{"name":`, nil, 400},
		{"unknown field", "POST", "/api/v1/projects", `{"name":"p1","colour":"red"}`, nil, 400},
		{"unknown field in a nested quota", "POST", "/api/v1/projects", `{"name":"p1","quota":{"instances":1,"colour":2}}`, nil, 400},
		{"two values", "POST", "/api/v1/projects", `{"name":"p1"}{"name":"p2"}`, nil, 400},
		{"empty body", "POST", "/api/v1/projects", ``, nil, 400},
		{"wrong type", "POST", "/api/v1/projects", `{"name":42}`, nil, 400},
		{"bad name", "POST", "/api/v1/projects", `{"name":"../etc"}`, nil, 400},
		{"negative quota", "POST", "/api/v1/projects", `{"name":"p1","quota":{"instances":-5}}`, nil, 400},
		{"oversized", "POST", "/api/v1/projects", `{"name":"p1","description":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, nil, 413},
		{"not JSON", "POST", "/api/v1/projects", `name=p1`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415},
		{"bad flavor", "POST", "/api/v1/flavors", `{"name":"f","vcpus":0,"ram_mib":10,"disk_gib":1}`, nil, 400},
		{"short password", "POST", "/api/v1/users", `{"name":"u1","password":"short"}`, nil, 400},
		{"bad role", "PUT", "/api/v1/projects/nope/members/admin", `{"role":"owner"}`, nil, 404},
		{"unknown route", "GET", "/api/v1/nothing", ``, nil, 404},
		{"wrong method", "PUT", "/api/v1/flavors", `{}`, nil, 405},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.t = t
			f.call(c.method, c.path, f.admin, c.body, c.want, nil, c.hdr...)
		})
	}
	f.t = t
	if n := f.projectCount(); n != 0 {
		t.Fatalf("bad requests created %d projects", n)
	}
	var fl []identity.Flavor
	f.call("GET", "/api/v1/flavors", f.admin, nil, 200, &fl)
	var us []identity.User
	f.call("GET", "/api/v1/users", f.admin, nil, 200, &us)
	if len(fl) != 0 || len(us) != 1 {
		t.Fatalf("bad requests changed state: %d flavors, %d users", len(fl), len(us))
	}
}

// The OpenAPI document lists exactly the routes the server answers, and
// every operation in it is reachable with its documented method.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	f := newFixture(t)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
		Comps   struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	f.call("GET", "/api/v1/openapi.json", "", nil, 200, &doc)
	if doc.OpenAPI != "3.0.3" || len(doc.Paths) < 15 {
		t.Fatalf("bad document: openapi=%q with %d paths", doc.OpenAPI, len(doc.Paths))
	}
	raw, _ := json.Marshal(doc)
	for _, ref := range refRE(string(raw)) {
		if _, ok := doc.Comps.Schemas[ref]; !ok {
			t.Errorf("dangling schema reference %s", ref)
		}
	}
	ops := 0
	for path, methods := range doc.Paths {
		concrete := strings.NewReplacer("{project}", "nope", "{user}", "nope", "{flavor}", "nope", "{token}", "nope", "{disk}", "nope", "{key}", "nope", "{bucket}", "nope").Replace(path)
		for m := range methods {
			ops++
			req, _ := http.NewRequest(strings.ToUpper(m), f.srv.URL+concrete, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+f.admin)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Code string }
			_ = json.NewDecoder(res.Body).Decode(&e)
			res.Body.Close()
			if res.StatusCode == 405 || e.Code == "route_not_found" {
				t.Errorf("documented %s %s is not served (%d %s)", m, path, res.StatusCode, e.Code)
			}
		}
	}
	if ops < 34 {
		t.Errorf("only %d operations documented; routes are missing from the document", ops)
	}
}

func refRE(s string) []string {
	var out []string
	for {
		i := strings.Index(s, `"$ref":"#/components/schemas/`)
		if i < 0 {
			return out
		}
		s = s[i+len(`"$ref":"#/components/schemas/`):]
		out = append(out, s[:strings.Index(s, `"`)])
	}
}

// Repeated failed logins are answered 429 with Retry-After, before any
// password is checked.
func TestLoginThrottled(t *testing.T) {
	f := newFixture(t)
	for range identity.DefaultConfig().LoginFreeFailures + 1 {
		f.call("POST", "/api/v1/auth/login", "", map[string]string{"username": "admin", "password": "not-the-password"}, 401, nil)
	}
	h := f.call("POST", "/api/v1/auth/login", "", map[string]string{"username": "admin", "password": "cluster-root-6161"}, 429, nil)
	if s, err := strconv.Atoi(h.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", h.Get("Retry-After"))
	}
}
