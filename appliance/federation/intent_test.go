package federation

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// testSite is a site of its own consensus, joined to the hub; its
// session runs while run is called, until stop.
type testSite struct {
	m    *Member
	api  *delegatedAPI
	stop context.CancelFunc
}

func joinSite(t *testing.T, e *hubEnv, name string) *testSite {
	t.Helper()
	ctx := context.Background()
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		RegisterSite(r)
	})
	id := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	if _, err := id.CreateFirstAdmin(ctx, "site-admin", "site-root-5151"); err != nil {
		t.Fatal(err)
	}
	s := &testSite{api: &delegatedAPI{}, stop: func() {}}
	s.m = NewMember(c.Nodes[0], "node1", id, slog.New(slog.DiscardHandler))
	s.m.Handler = s.api
	token, _, err := e.hub.CreateToken(ctx, e.admin, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.m.Join(ctx, login(t, id, "site-admin", "site-root-5151"), e.url, token); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *testSite) run() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.m.Run(ctx)
}

func (s *testSite) calls(path string) int {
	s.api.mu.Lock()
	defer s.api.mu.Unlock()
	n := 0
	for _, c := range s.api.calls {
		if c == path {
			n++
		}
	}
	return n
}

func siteState(in *Intent, site string) IntentSite {
	for _, s := range in.Sites {
		if s.Site == site {
			return s
		}
	}
	return IntentSite{}
}

// A bulk operation runs its steps in order on every site, as its maker:
// at once on a connected site, and on one that is away when it comes
// back. Each step runs once on a site however often it is sent (a step
// answered before is replayed, one begun and not ended is not run
// again); a refused step ends the site's run; what a site did not get
// before the intent expired, it never gets. The same key makes no second
// intent; a user without a role, or read-only, queues nothing.
func TestIntentsRunOnceAndWait(t *testing.T) {
	e := startHub(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.hub.RunIntents(ctx)
	east, west := joinSite(t, e, "ward-east"), joinSite(t, e, "ward-west")
	east.run()
	testutil.WaitFor(t, 10*time.Second, "ward-east connected", func() error {
		if !e.hub.Connected(east.m.membership().SiteID) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	steps := []IntentStep{{Method: "POST", Path: "/api/v1/projects", Body: []byte(`{"name":"tele"}`)}, {Method: "PUT", Path: "/api/v1/projects/tele/quota", Body: []byte(`{}`)}}
	for name, bad := range map[string]IntentSpec{
		"a GET step":       {Sites: []string{"ward-east"}, Steps: []IntentStep{{Method: "GET", Path: "/api/v1/vms"}}},
		"a path elsewhere": {Sites: []string{"ward-east"}, Steps: []IntentStep{{Method: "POST", Path: "/fed/v1/leave"}}},
		"no site":          {Steps: steps},
		"an unknown site":  {Sites: []string{"ward-nowhere"}, Steps: steps},
		"a long expiry":    {Sites: []string{"ward-east"}, Steps: steps, ExpiresIn: "900h"},
	} {
		if _, err := e.hub.CreateIntent(ctx, e.admin, bad); err == nil {
			t.Fatalf("an intent with %s was queued", name)
		}
	}
	if _, err := e.hub.CreateIntent(ctx, e.user, IntentSpec{Sites: []string{"ward-east"}, Steps: steps}); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("an intent by a user without a role: %v", err)
	}
	if _, err := e.hub.SetGrant(ctx, e.admin, GrantSpec{User: "viewer", Site: "ward-east", Role: HubReadOnly}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.CreateIntent(ctx, e.user, IntentSpec{Sites: []string{"ward-east"}, Steps: steps}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("an intent by a read-only user: %v", err)
	}
	if n := len(e.hub.Intents(e.admin, 0, 0).Intents); n != 0 {
		t.Fatalf("refused intents queued %d", n)
	}

	in, err := e.hub.CreateIntent(ctx, e.admin, IntentSpec{Key: "tele-rollout", Sites: []string{"ward-east", "ward-west"}, Steps: steps})
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.hub.CreateIntent(ctx, e.admin, IntentSpec{Key: "tele-rollout", Sites: []string{"ward-east"}, Steps: steps[:1]})
	if err != nil || again.ID != in.ID || len(e.hub.Intents(e.admin, 0, 0).Intents) != 1 {
		t.Fatalf("the same key again: %+v %v", again, err)
	}
	wait := func(site, state string) *Intent {
		t.Helper()
		var cur *Intent
		testutil.WaitFor(t, 30*time.Second, site+" "+state, func() error {
			cur, _ = e.hub.GetIntent(e.admin, in.ID)
			if s := siteState(cur, site); s.State != state {
				return fmt.Errorf("%s is %+v", site, s)
			}
			return nil
		})
		return cur
	}
	cur := wait("ward-east", IntentDone)
	if s := siteState(cur, "ward-east"); len(s.Results) != 2 || s.Results[0].Status != 200 || !strings.Contains(s.Results[0].Body, "as hub:it-central it-central@hub admin") {
		t.Fatalf("ward-east's answers: %+v", s)
	}
	if cur.State() != IntentPending || siteState(cur, "ward-west").State != IntentPending {
		t.Fatalf("ward-west, away, is %+v", siteState(cur, "ward-west"))
	}
	west.run()
	wait("ward-west", IntentDone)
	if got, _ := e.hub.GetIntent(e.admin, in.ID); got.State() != IntentDone {
		t.Fatalf("the intent is %s", got.State())
	}
	for _, s := range []*testSite{east, west} {
		if n, m := s.calls("POST /fed/v1/api/v1/projects"), s.calls("PUT /fed/v1/api/v1/projects/tele/quota"); n != 1 || m != 1 {
			t.Fatalf("a site ran the steps %d and %d times", n, m)
		}
	}

	// Sent again, a step answered before is replayed, not run.
	send := func(s *testSite, step string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/fed/v1/api/v1/projects", strings.NewReader(`{"name":"tele"}`))
		req.Header.Set(HeaderUser, "it-central")
		req.Header.Set(HeaderRole, string(HubAdmin))
		req.Header.Set(HeaderIntent, step)
		rec := httptest.NewRecorder()
		s.m.hubHandler().ServeHTTP(rec, req)
		return rec
	}
	if rec := send(east, in.ID+"/0"); rec.Code != 200 || !strings.Contains(rec.Body.String(), "POST /fed/v1/api/v1/projects as hub:it-central") || east.calls("POST /fed/v1/api/v1/projects") != 1 {
		t.Fatalf("a step sent again: %d %q, run %d times", rec.Code, rec.Body, east.calls("POST /fed/v1/api/v1/projects"))
	}
	// Begun by another attempt and not ended: not run, and said so.
	if _, err := east.m.c.Apply(ctx, MsgLedgerBegin, ledgerBeginCmd{ID: "cafe/0", Nonce: "another", At: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if rec := send(east, "cafe/0"); rec.Code != http.StatusConflict || rec.Header().Get(HeaderIntentState) != intentBegun || east.calls("POST /fed/v1/api/v1/projects") != 1 {
		t.Fatalf("a step begun elsewhere: %d %q", rec.Code, rec.Header())
	}

	// Begun long ago and never ended (cut short by a restart): the
	// outcome is unknown, said so, and the step is not run.
	if _, err := east.m.c.Apply(ctx, MsgLedgerBegin, ledgerBeginCmd{ID: "dead/0", Nonce: "crashed", At: time.Now().Add(-time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	if rec := send(east, "dead/0"); rec.Code != http.StatusConflict || rec.Header().Get(HeaderIntentState) != intentUnknown || !strings.Contains(rec.Body.String(), "audit log") || east.calls("POST /fed/v1/api/v1/projects") != 1 {
		t.Fatalf("a step begun long ago: %d %q %s", rec.Code, rec.Header(), rec.Body)
	}

	// A site that cannot run steps yet (starting) begins none: the step
	// waits and runs once when it can; a later intent waits behind it.
	e.hub.retry.unanswered, e.hub.retry.begun = 200*time.Millisecond, 100*time.Millisecond
	var ready atomic.Bool
	east.m.Ready = ready.Load
	first, err := e.hub.CreateIntent(ctx, e.admin, IntentSpec{Sites: []string{"ward-east"}, Steps: []IntentStep{{Method: "POST", Path: "/api/v1/projects", Body: []byte(`{"name":"first"}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.hub.CreateIntent(ctx, e.admin, IntentSpec{Sites: []string{"ward-east"}, Steps: []IntentStep{{Method: "DELETE", Path: "/api/v1/projects/first"}}})
	if err != nil {
		t.Fatal(err)
	}
	in = first
	testutil.WaitFor(t, 10*time.Second, "the step waiting for the site", func() error {
		cur, _ := e.hub.GetIntent(e.admin, first.ID)
		if s := siteState(cur, "ward-east"); s.State != IntentPending || !strings.Contains(s.Message, "starting") {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	if cur, _ := e.hub.GetIntent(e.admin, second.ID); siteState(cur, "ward-east").State != IntentPending || east.calls("DELETE /fed/v1/api/v1/projects/first") != 0 {
		t.Fatalf("a later intent overtook one waiting: %+v", siteState(cur, "ward-east"))
	}
	ready.Store(true)
	wait("ward-east", IntentDone)
	in = second
	wait("ward-east", IntentDone)
	if east.calls("POST /fed/v1/api/v1/projects") != 2 || east.calls("DELETE /fed/v1/api/v1/projects/first") != 1 {
		t.Fatalf("the site ran %v", east.api.calls)
	}

	// A refused step ends the site's run: the next is not sent.
	bad, err := e.hub.CreateIntent(ctx, e.admin, IntentSpec{Sites: []string{"ward-east"}, Steps: []IntentStep{
		{Method: "POST", Path: "/api/v1/forbidden"}, {Method: "DELETE", Path: "/api/v1/projects/tele"}}})
	if err != nil {
		t.Fatal(err)
	}
	in = bad
	if s := siteState(wait("ward-east", IntentFailed), "ward-east"); s.Done != 1 || s.Results[0].Status != 403 || !strings.Contains(s.Message, "answered 403") || east.calls("DELETE /fed/v1/api/v1/projects/tele") != 0 {
		t.Fatalf("a refused step: %+v", s)
	}

	// Away until it expired: never sent.
	west.stop()
	testutil.WaitFor(t, 10*time.Second, "ward-west away", func() error {
		if e.hub.Connected(west.m.membership().SiteID) {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	late, err := e.hub.CreateIntent(ctx, e.admin, IntentSpec{Sites: []string{"ward-west"}, Steps: []IntentStep{{Method: "DELETE", Path: "/api/v1/projects/tele"}}, ExpiresIn: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := e.hub.ExpireIntents(ctx); err != nil {
		t.Fatal(err)
	}
	in = late
	if s := siteState(wait("ward-west", IntentExpired), "ward-west"); !strings.Contains(s.Message, "expired") {
		t.Fatalf("expired: %+v", s)
	}
	west.run()
	testutil.WaitFor(t, 10*time.Second, "ward-west back", func() error {
		if !e.hub.Connected(west.m.membership().SiteID) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // a dispatcher round
	if n := west.calls("DELETE /fed/v1/api/v1/projects/tele"); n != 0 {
		t.Fatalf("an expired intent reached the site %d times", n)
	}
}

// Intents list newest first, in pages, each with its sites' counts; one
// intent shows every site's row, in the order it named them.
func TestIntentPages(t *testing.T) {
	e := startHub(t)
	ctx := context.Background()
	joinSite(t, e, "ward-east")
	joinSite(t, e, "ward-west")
	steps := []IntentStep{{Method: "POST", Path: "/api/v1/projects", Body: []byte(`{"name":"tele"}`)}}
	var made []string
	for range 5 {
		in, err := e.hub.CreateIntent(ctx, e.admin, IntentSpec{Sites: []string{"ward-west", "ward-east"}, Steps: steps})
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, in.ID)
	}
	var got []string
	before := uint64(0)
	for pages := 0; ; pages++ {
		page := e.hub.Intents(e.admin, before, 2)
		if len(page.Intents) > 2 || pages > 3 {
			t.Fatalf("page %d: %d intents", pages, len(page.Intents))
		}
		for _, in := range page.Intents {
			if in.Total != 2 || in.Pending != 2 || in.Done != 0 || in.Failed != 0 || in.State() != IntentPending || len(in.Sites) != 0 {
				t.Fatalf("listed %+v", in)
			}
			got = append(got, in.ID)
		}
		if page.Next == 0 {
			break
		}
		before = page.Next
	}
	slices.Reverse(made)
	if !slices.Equal(got, made) {
		t.Fatalf("listed %v, want newest first %v", got, made)
	}
	if n := len(e.hub.Intents(e.user, 0, 0).Intents); n != 0 {
		t.Fatalf("another user lists %d of the admin's intents", n)
	}
	in, err := e.hub.GetIntent(e.admin, made[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Sites) != 2 || in.Sites[0].Site != "ward-west" || in.Sites[1].Site != "ward-east" || in.Sites[0].State != IntentPending {
		t.Fatalf("the intent's sites: %+v", in.Sites)
	}
}
