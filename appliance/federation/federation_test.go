package federation

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
)

type hubEnv struct {
	hub   *Hub
	url   string
	admin *identity.Principal
	user  *identity.Principal
}

// startHub runs a one-node hub: real Raft, the federation listener on
// loopback with real TLS.
func startHub(t *testing.T) *hubEnv {
	t.Helper()
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		Register(r)
	})
	n := c.Nodes[0]
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	id := identity.NewService(n, identity.DefaultConfig())
	if _, err := id.CreateFirstAdmin(ctx, "it-central", "hub-root-7373"); err != nil {
		t.Fatal(err)
	}
	if _, err := id.CreateUser(ctx, login(t, id, "it-central", "hub-root-7373"), identity.UserSpec{Name: "viewer", Password: "read-only-8181"}); err != nil {
		t.Fatal(err)
	}
	if err := EnsureCA(ctx, n); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	h := NewHub(n, id, log)
	cfg, err := h.ServerTLS([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := h.Server(ctx)
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &hubEnv{hub: h, url: "https://" + ln.Addr().String(), admin: login(t, id, "it-central", "hub-root-7373"), user: login(t, id, "viewer", "read-only-8181")}
}

func login(t *testing.T, id *identity.Service, user, pw string) *identity.Principal {
	t.Helper()
	tok, _, err := id.Login(context.Background(), user, pw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := id.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// siteAPI stands in for a site's own API: it answers with the site's
// name and counts its calls.
type siteAPI struct {
	name  string
	mu    sync.Mutex
	calls int
}

func (s *siteAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	fmt.Fprintf(w, "%s %s from %s", r.Method, r.URL.Path, s.name)
}

// A site enrols with a one-time token and dials out; the hub reaches the
// site's API through the session. A reused, expired, forged or foreign
// token is refused and changes nothing; a hub whose CA is not the one
// the token names is not trusted. A revoked site's session ends and it
// cannot connect again until it enrols anew, with the same identity.
func TestEnrolConnectRevoke(t *testing.T) {
	e := startHub(t)
	ctx := context.Background()
	if _, _, err := e.hub.CreateToken(ctx, e.user, "ward-east", 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a token from a user who is not a hub admin: %v", err)
	}
	if _, _, err := e.hub.CreateToken(ctx, e.admin, "Ward East!", 0); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("a token for a bad site name: %v", err)
	}
	token, rec, err := e.hub.CreateToken(ctx, e.admin, "ward-east", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Hash != "" || strings.Contains(fmt.Sprint(e.hub.tokens()), strings.Split(token, ".")[2]) {
		t.Fatal("the hub shows or keeps the token's secret")
	}

	// Forged secret, an unknown ID, another hub's CA: refused.
	parts := strings.Split(token, ".")
	for name, bad := range map[string]string{
		"a wrong secret":   formatToken(parts[1], parts[2]+"x", parts[3]),
		"an unknown token": formatToken("0123456789abcdef", parts[2], parts[3]),
		"another hub's CA": formatToken(parts[1], parts[2], strings.Repeat("ab", 32)),
		"not a token":      "hello",
	} {
		if _, err := Join(ctx, e.url, bad); err == nil {
			t.Fatalf("%s enrolled", name)
		}
	}
	if len(e.hub.Sites()) != 0 {
		t.Fatalf("refused enrolments recorded sites: %+v", e.hub.Sites())
	}
	m, err := Join(ctx, e.url, token)
	if err != nil {
		t.Fatal(err)
	}
	if m.SiteName != "ward-east" || m.SiteID == "" {
		t.Fatalf("membership %+v", m)
	}
	if _, err := Join(ctx, e.url, token); err == nil || !strings.Contains(err.Error(), "unknown, used or expired") {
		t.Fatalf("a token used twice: %v", err)
	}
	short, _, err := e.hub.CreateToken(ctx, e.admin, "ward-west", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := Join(ctx, e.url, short); err == nil || !strings.Contains(err.Error(), "unknown, used or expired") {
		t.Fatalf("an expired token: %v", err)
	}
	if _, _, err := e.hub.CreateToken(ctx, e.admin, "ward-east", 0); consensus.ErrorCode(err) != consensus.CodeAlreadyExists {
		t.Fatalf("a token for an enrolled site: %v", err)
	}

	// The session: the site dials out, the hub calls in.
	api := &siteAPI{name: "ward-east"}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	cur := m
	go Run(sctx, func() *Membership { mu.Lock(); defer mu.Unlock(); return cur }, api, nil, slog.New(slog.DiscardHandler))
	testutil.WaitFor(t, 10*time.Second, "the site connected", func() error {
		if !e.hub.Connected(m.SiteID) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if got := callSite(t, e.hub, m.SiteID, "/api/v1/vms"); got != "GET /api/v1/vms from ward-east" {
		t.Fatalf("through the session: %q", got)
	}

	// Revoked: the session ends, and the site is refused when it dials
	// again (its certificate's serial is no longer allowed).
	if _, err := e.hub.Revoke(ctx, e.user, "ward-east"); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a revoke by a user who is not a hub admin: %v", err)
	}
	// As another hub node would have it: only the replicated record
	// changes here, and the session, watching it, ends.
	if _, err := e.hub.c.Apply(ctx, MsgRevokeSite, revokeSiteCmd{Site: "ward-east", By: "it-central", At: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the revoked site's session ended", func() error {
		if e.hub.Connected(m.SiteID) {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	if s, err := e.hub.Revoke(ctx, e.admin, "ward-east"); err != nil || s.Active() {
		t.Fatalf("revoke a revoked site: %+v %v", s, err)
	}
	time.Sleep(3 * time.Second) // the site dials again meanwhile
	if e.hub.Connected(m.SiteID) {
		t.Fatal("a revoked site connected again")
	}
	if _, err := e.hub.SiteClient(m.SiteID); consensus.ErrorCode(err) != consensus.CodeUnavailable {
		t.Fatalf("a client for a revoked site: %v", err)
	}

	// Enrolled again with a new token: the same site, a new certificate.
	again, _, err := e.hub.CreateToken(ctx, e.admin, "ward-east", 0)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Join(ctx, e.url, again)
	if err != nil {
		t.Fatal(err)
	}
	if m2.SiteID != m.SiteID || string(m2.CertPEM) == string(m.CertPEM) {
		t.Fatalf("enrolled again: site %s (was %s)", m2.SiteID, m.SiteID)
	}
	mu.Lock()
	cur = m2
	mu.Unlock()
	testutil.WaitFor(t, 45*time.Second, "the site connected again", func() error {
		if !e.hub.Connected(m.SiteID) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if got := callSite(t, e.hub, m.SiteID, "/api/v1/volumes"); got != "GET /api/v1/volumes from ward-east" {
		t.Fatalf("through the new session: %q", got)
	}
	// The old certificate stays refused.
	if err := Connect(ctx, m, api, nil, slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "hello: this site is not enrolled with the hub, or was revoked") {
		t.Fatalf("a session with the revoked certificate: %v", err)
	}
}

func callSite(t *testing.T, h *Hub, siteID, path string) string {
	t.Helper()
	c, err := h.SiteClient(siteID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Get("http://site" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func (h *Hub) tokens() []Token {
	it, _ := h.c.Store().ReadTxn().Get(tTokens, "id")
	var out []Token
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, *o.(*Token))
	}
	return out
}

// A site's cluster admin joins the hub from the site; the membership is
// in the site's replicated state, and the node that leads keeps the
// session. A member joins no second hub; a user who is not a cluster
// admin can do neither. Leaving tells the hub, which shows the site as
// revoked by itself, and the site may enrol again.
func TestSiteJoinsAndLeaves(t *testing.T) {
	e := startHub(t)
	ctx := context.Background()
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		RegisterSite(r)
	})
	n := c.Nodes[0]
	id := identity.NewService(n, identity.DefaultConfig())
	if _, err := id.CreateFirstAdmin(ctx, "ward-admin", "site-root-5151"); err != nil {
		t.Fatal(err)
	}
	admin := login(t, id, "ward-admin", "site-root-5151")
	if _, err := id.CreateUser(ctx, admin, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	nurse := login(t, id, "nurse", "night-shift-9471")
	site := NewMember(n, "node1", id, slog.New(slog.DiscardHandler))
	site.Handler = &siteAPI{name: "ward-north"}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go site.Run(rctx)

	token, _, err := e.hub.CreateToken(ctx, e.admin, "ward-north", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := site.Join(ctx, nurse, e.url, token); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a nurse joined the site to a hub: %v", err)
	}
	st, err := site.Join(ctx, admin, e.url, token)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Member || st.SiteName != "ward-north" {
		t.Fatalf("status %+v", st)
	}
	if st := site.membership(); st == nil || len(st.KeyPEM) == 0 {
		t.Fatal("the site's key is not kept in its state")
	}
	testutil.WaitFor(t, 10*time.Second, "the site connected", func() error {
		if !site.Status().Connected || !e.hub.Connected(st.SiteID) {
			return fmt.Errorf("site says %+v", site.Status())
		}
		return nil
	})
	if got := callSite(t, e.hub, st.SiteID, "/fed/v1/inventory"); got != "GET /fed/v1/inventory from ward-north" {
		t.Fatalf("through the session: %q", got)
	}
	other, _, err := e.hub.CreateToken(ctx, e.admin, "ward-other", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := site.Join(ctx, admin, e.url, other); consensus.ErrorCode(err) != consensus.CodeAlreadyExists {
		t.Fatalf("a second hub: %v", err)
	}

	if err := site.Leave(ctx, nurse); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a nurse made the site leave: %v", err)
	}
	if err := site.Leave(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if site.Status().Member {
		t.Fatal("still a member after leaving")
	}
	var left *Site
	for _, s := range e.hub.Sites() {
		if s.ID == st.SiteID {
			left = &s
		}
	}
	if left == nil || left.Active() || left.RevokedBy != "the site itself" {
		t.Fatalf("the hub's record of the site that left: %+v", left)
	}
	testutil.WaitFor(t, 10*time.Second, "the session ended", func() error {
		if e.hub.Connected(st.SiteID) || site.Status().Connected {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	// Back: a new token admits it again, as the same site.
	again, _, err := e.hub.CreateToken(ctx, e.admin, "ward-north", 0)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := site.Join(ctx, admin, e.url, again)
	if err != nil || st2.SiteID != st.SiteID {
		t.Fatalf("joined again: %+v %v", st2, err)
	}
	testutil.WaitFor(t, 10*time.Second, "the site connected again", func() error {
		if !e.hub.Connected(st.SiteID) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}
