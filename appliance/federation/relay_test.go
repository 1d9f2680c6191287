package federation

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// On a hub of three nodes, a call reaches a site through whichever hub
// node holds the site's session: a call taken by another node is relayed
// to it over the hub's cluster port, and follows the session when the
// site reconnects to another node.
func TestCallRelayedToTheNodeWithTheSession(t *testing.T) {
	hubs := make([]*Hub, 3)
	c := consensustest.StartWith(t, 3, func(r *consensus.Registry) {
		identity.Register(r)
		Register(r)
	}, func(i int, nd *consensus.Node) {
		nd.HandleRPC(RPCPrefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hubs[i].RPCHandler().ServeHTTP(w, r) }))
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ids := make([]*identity.Service, 3)
	urls := make([]string, 3)
	srvs := make([]*http.Server, 3)
	for i, n := range c.Nodes {
		ids[i] = identity.NewService(n, identity.DefaultConfig())
		hubs[i] = NewHub(n, ids[i], slog.New(slog.DiscardHandler))
	}
	if _, err := ids[0].CreateFirstAdmin(ctx, "it-central", "hub-root-7373"); err != nil {
		t.Fatal(err)
	}
	if err := EnsureCA(ctx, c.Nodes[0]); err != nil {
		t.Fatal(err)
	}
	for i := range hubs {
		testutil.WaitFor(t, 10*time.Second, "the CA on every node", func() error { _, err := hubs[i].ca(); return err })
		cfg, err := hubs[i].ServerTLS([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := hubs[i].Server(ctx)
		go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
		t.Cleanup(func() { _ = srv.Close() })
		urls[i] = "https://" + ln.Addr().String()
		srvs[i] = srv
	}
	admin := login(t, ids[0], "it-central", "hub-root-7373")
	token, _, err := hubs[0].CreateToken(ctx, admin, "ward-east", 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Join(ctx, urls[0], token)
	if err != nil {
		t.Fatal(err)
	}
	api := &delegatedAPI{}
	session := func(hubURL string) context.CancelFunc {
		sctx, stop := context.WithCancel(ctx)
		at := *m
		at.HubURL = hubURL
		go Run(sctx, func() *Membership { return &at }, api, nil, slog.New(slog.DiscardHandler))
		return stop
	}
	call := func(via int) (string, error) {
		res, err := hubs[via].Call(ctx, admin, "ward-east", "GET", "/api/v1/vms", "", nil, http.Header{})
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b), nil
	}
	through := func(holder, via int) {
		t.Helper()
		testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("a call through hub node %d reaching the site by node %d", via+1, holder+1), func() error {
			if !hubs[holder].Connected(m.SiteID) {
				return fmt.Errorf("node %d holds no session yet", holder+1)
			}
			got, err := call(via)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(got, "GET /fed/v1/api/v1/vms as hub:it-central it-central@hub admin") {
				return fmt.Errorf("the site answered %q", got)
			}
			return nil
		})
	}
	stop := session(urls[0])
	through(0, 1)
	through(0, 2)
	if hubs[1].Connected(m.SiteID) || hubs[2].Connected(m.SiteID) {
		t.Fatal("a session on more than one hub node")
	}
	// The site comes back to another hub node: calls follow it.
	stop()
	testutil.WaitFor(t, 10*time.Second, "the session ended", func() error {
		if hubs[0].Connected(m.SiteID) {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	stop = session(urls[2])
	defer stop()
	through(2, 0)
	through(2, 1)
	// A POST with a body goes through whole.
	res, err := hubs[0].Call(ctx, admin, "ward-east", "POST", "/api/v1/projects", "", strings.NewReader(`{"name":"tele"}`), http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.HasPrefix(string(b), "POST /fed/v1/api/v1/projects as hub:it-central") {
		t.Fatalf("a relayed POST: %q", b)
	}

	// A node asked to relay for a session it does not hold says so as its
	// own error, which the first node takes as an error, not as the
	// site's answer.
	rec := httptest.NewRecorder()
	hubs[1].RPCHandler().ServeHTTP(rec, httptest.NewRequest("GET", relayPath+m.SiteID+"/fed/v1/api/v1/vms", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get(headerRelayError) == "" {
		t.Fatalf("a relay without the session: %d %q", rec.Code, rec.Header())
	}
	tr := relayTransport{next: roundTripFunc(func(*http.Request) (*http.Response, error) { return rec.Result(), nil }), base: "https://peer" + relayPath + m.SiteID}
	if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://site/fed/v1/api/v1/vms", nil)); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("the relay's own error through the transport: %v", err)
	}

	// The hub's nodes announce where sites reach them; the hello tells the
	// site, which keeps them. When the node it joined at is gone, it
	// dials the others.
	stop()
	for i, h := range hubs {
		h.Announce(ctx, urls[i])
	}
	var mu sync.Mutex
	kept := *m
	kept.HubURL = urls[2]
	sctx, end := context.WithCancel(ctx)
	defer end()
	go Run(sctx, func() *Membership { mu.Lock(); defer mu.Unlock(); c := kept; return &c }, api, func(h Hello) {
		mu.Lock()
		kept.CAPEM, kept.HubURLs = h.CAPEM, h.HubURLs
		mu.Unlock()
	}, slog.New(slog.DiscardHandler))
	testutil.WaitFor(t, 20*time.Second, "the site told of every hub node", func() error {
		mu.Lock()
		defer mu.Unlock()
		if want := slices.Sorted(slices.Values(urls)); !slices.Equal(kept.HubURLs, want) || !hubs[2].Connected(m.SiteID) {
			return fmt.Errorf("the site knows %v, want %v", kept.HubURLs, want)
		}
		return nil
	})
	_ = srvs[2].Close()
	hubs[2].drop(m.SiteID) // the node's end: its sessions go with it
	holder := -1
	testutil.WaitFor(t, 20*time.Second, "the site back on another hub node", func() error {
		for i := range 2 {
			if hubs[i].Connected(m.SiteID) {
				holder = i
				return nil
			}
		}
		return fmt.Errorf("on no node")
	})
	through(holder, 1-holder)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
