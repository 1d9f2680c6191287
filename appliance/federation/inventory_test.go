package federation

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// delegatedAPI stands in for a site's API behind its hub-facing handler:
// it answers with whom the hub's call says it acts for, and counts calls.
type delegatedAPI struct {
	mu    sync.Mutex
	calls []string
}

func (s *delegatedAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, name, role, ok := Delegation(r)
	s.mu.Lock()
	s.calls = append(s.calls, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "" {
		http.Error(w, "a credential reached the site", 500)
		return
	}
	if strings.Contains(r.URL.Path, "/forbidden") {
		http.Error(w, `{"code":"forbidden"}`, http.StatusForbidden)
		return
	}
	fmt.Fprintf(w, "%s %s as %s %s %s %v", r.Method, r.URL.Path, id, name, role, ok)
}

func (s *delegatedAPI) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// A site's leader keeps the hub's copy of its inventory current: whole on
// each session and on each change, its digest otherwise; the hub keeps it
// with its age when the site goes away. Hub users see and reach only the
// sites their grants (on the site, or on its group) give, with the role
// those give: read-only calls GET only; the site is told the user and the
// role, never the hub's credentials; changing calls are in the hub's
// audit log. The hub's /metrics has every site with a site label.
func TestInventoryAndAccess(t *testing.T) {
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
	api := &delegatedAPI{}
	site := NewMember(n, "node1", id, slog.New(slog.DiscardHandler))
	site.Handler, site.PushEvery = api, 50*time.Millisecond
	var mu sync.Mutex
	inv := &Inventory{Version: "test", Health: "ok", Nodes: []InvNode{{Name: "node1", Healthy: true}},
		VMs: []InvVM{{Name: "pacs", Project: "radiology", State: "running"}}, Capacity: InvCapacity{StorageBytes: 100 << 30, StorageFree: 15 << 30}}
	reads := 0
	site.Inventory = func(context.Context) (*Inventory, error) {
		mu.Lock()
		defer mu.Unlock()
		reads++
		cp := *inv
		return &cp, nil
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go site.Run(rctx)
	token, _, err := e.hub.CreateToken(ctx, e.admin, "ward-east", 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := site.Join(ctx, admin, e.url, token)
	if err != nil {
		t.Fatal(err)
	}
	siteView := func(p *identity.Principal) *SiteStatus {
		for _, s := range e.hub.ListSites(p, SiteFilter{}) {
			if s.ID == st.SiteID {
				return &s
			}
		}
		return nil
	}
	testutil.WaitFor(t, 10*time.Second, "the inventory on the hub", func() error {
		if s := siteView(e.admin); s == nil || !s.Connected || s.VMs != 1 || s.Version != "test" {
			return fmt.Errorf("hub says %+v", s)
		}
		return nil
	})

	// A change at the site shows on the hub in well under 5 s; the
	// queries across sites find it.
	began := time.Now()
	mu.Lock()
	inv.VMs = append(inv.VMs, InvVM{Name: "x-ray", Project: "radiology", State: "stopped"})
	inv.Volumes = []InvVolume{{Name: "scans", Project: "radiology", Degraded: true}}
	mu.Unlock()
	testutil.WaitFor(t, 5*time.Second, "the change on the hub", func() error {
		if vms := e.hub.FindVMs(e.admin, "x-ray", ""); len(vms) != 1 || vms[0].Site != "ward-east" || vms[0].State != "stopped" {
			return fmt.Errorf("found %+v", vms)
		}
		return nil
	})
	t.Logf("a change at the site reached the hub in %v", time.Since(began).Round(time.Millisecond))
	for name, f := range map[string]SiteFilter{"degraded volumes": {DegradedVolumes: true}, "below 20% free": {FreeStorageBelow: 20}} {
		if got := e.hub.ListSites(e.admin, f); len(got) != 1 || got[0].Name != "ward-east" {
			t.Fatalf("%s: %+v", name, got)
		}
	}
	if got := e.hub.ListSites(e.admin, SiteFilter{FreeStorageBelow: 10}); len(got) != 0 {
		t.Fatalf("below 10%% free: %+v", got)
	}
	// Unchanged, it is not sent again; a heartbeat needs the digest the
	// hub holds, and a revoked certificate pushes nothing.
	cur := consensus.First[SiteInventory](e.hub.c.Store().ReadTxn(), tInventory, "id", st.SiteID)
	time.Sleep(300 * time.Millisecond)
	if again := consensus.First[SiteInventory](e.hub.c.Store().ReadTxn(), tInventory, "id", st.SiteID); again.UpdatedAt != cur.UpdatedAt {
		t.Fatal("an unchanged inventory was recorded again")
	}
	serial := consensus.First[Site](e.hub.c.Store().ReadTxn(), tSites, "id", st.SiteID).Serials[0]
	at := time.Now().UTC()
	if _, err := e.hub.c.Apply(ctx, MsgSiteInventory, pushInventoryCmd{SiteID: st.SiteID, Serial: serial, Digest: "stale", At: at}, nil); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("a heartbeat with another digest: %v", err)
	}
	if _, err := e.hub.c.Apply(ctx, MsgSiteInventory, pushInventoryCmd{SiteID: st.SiteID, Serial: serial, Digest: cur.Digest, At: at}, nil); err != nil {
		t.Fatal(err)
	}
	if got := consensus.First[SiteInventory](e.hub.c.Store().ReadTxn(), tInventory, "id", st.SiteID); !got.ContactAt.Equal(at) || got.UpdatedAt != cur.UpdatedAt {
		t.Fatalf("a heartbeat: contact %v updated %v", got.ContactAt, got.UpdatedAt)
	}
	if _, err := e.hub.c.Apply(ctx, MsgSiteInventory, pushInventoryCmd{SiteID: st.SiteID, Serial: "ff", Inventory: &Inventory{}, Digest: "x", At: at}, nil); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a push with a certificate the site is not enrolled with: %v", err)
	}

	// Access. A second site, in another group, for contrast.
	south, _, err := e.hub.CreateToken(ctx, e.admin, "ward-south", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, e.url, south); err != nil {
		t.Fatal(err)
	}
	if s := siteView(e.user); s != nil {
		t.Fatalf("a user without a grant sees a site: %+v", s)
	}
	if _, err := e.hub.SiteDetail(e.user, "ward-east"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("a user without a grant reads a site: %v", err)
	}
	call := func(p *identity.Principal, site, method, path string) (int, string, error) {
		res, err := e.hub.Call(ctx, p, site, method, path, "", strings.NewReader("{}"), http.Header{"Authorization": {"Bearer hub-secret"}, "Content-Type": {"application/json"}})
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), nil
	}
	if _, _, err := call(e.user, "ward-east", "GET", "/api/v1/vms"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("a call without a grant: %v", err)
	}
	if _, err := e.hub.SetGrant(ctx, e.user, GrantSpec{User: "viewer", Group: "north", Role: HubAdmin}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a user gave themselves a role: %v", err)
	}
	for name, bad := range map[string]GrantSpec{
		"no scope":     {User: "viewer", Role: HubReadOnly},
		"two scopes":   {User: "viewer", Site: "ward-east", Group: "north", Role: HubReadOnly},
		"a bad role":   {User: "viewer", Group: "north", Role: "root"},
		"no such user": {User: "ghost", Group: "north", Role: HubReadOnly},
		"no such site": {User: "viewer", Site: "ward-nowhere", Role: HubReadOnly},
		"a bad group":  {User: "viewer", Group: "North!", Role: HubReadOnly},
	} {
		if _, err := e.hub.SetGrant(ctx, e.admin, bad); err == nil {
			t.Fatalf("a grant with %s was made", name)
		}
	}
	if len(e.hub.Grants(e.admin)) != 0 {
		t.Fatalf("refused grants left %+v", e.hub.Grants(e.admin))
	}
	if _, err := e.hub.SetGroup(ctx, e.admin, "ward-east", "north"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.SetGroup(ctx, e.admin, "ward-south", "south"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.SetGrant(ctx, e.admin, GrantSpec{User: "viewer", Group: "north", Role: HubReadOnly}); err != nil {
		t.Fatal(err)
	}
	if s := siteView(e.user); s == nil || s.Role != HubReadOnly {
		t.Fatalf("the read-only user's view: %+v", s)
	}
	if got := e.hub.ListSites(e.user, SiteFilter{}); len(got) != 1 {
		t.Fatalf("the north group's user sees %+v", got)
	}
	code, body, err := call(e.user, "ward-east", "GET", "/api/v1/vms")
	if err != nil || code != 200 || body != "GET /fed/v1/api/v1/vms as hub:viewer viewer@hub reader true" {
		t.Fatalf("a read-only GET: %d %q %v", code, body, err)
	}
	before := api.count()
	if _, _, err := call(e.user, "ward-east", "POST", "/api/v1/vms"); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a read-only POST: %v", err)
	}
	if _, _, err := call(e.user, "ward-south", "GET", "/api/v1/vms"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("a call to another group's site: %v", err)
	}
	for _, path := range []string{"/fed/v1/status", "/api/v1/../../fed/v1/status", "/api/v1/%2e%2e/%2e%2e/fed/v1/status", "/api/v1/vms?all", "/api/v1//vms", "/api/v1/vms/"} {
		if _, _, err := call(e.admin, "ward-east", "GET", path); consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Fatalf("a call of %s: %v", path, err)
		}
	}
	if api.count() != before {
		t.Fatal("a refused call reached the site")
	}
	// Operator on the site itself: more than the group's read-only.
	if _, err := e.hub.SetGrant(ctx, e.admin, GrantSpec{User: "viewer", Site: "ward-east", Role: HubOperator}); err != nil {
		t.Fatal(err)
	}
	code, body, err = call(e.user, "ward-east", "POST", "/api/v1/vms")
	if err != nil || code != 200 || body != "POST /fed/v1/api/v1/vms as hub:viewer viewer@hub member true" {
		t.Fatalf("an operator's POST: %d %q %v", code, body, err)
	}
	code, body, err = call(e.admin, "ward-east", "DELETE", "/api/v1/vms/pacs")
	if err != nil || code != 200 || body != "DELETE /fed/v1/api/v1/vms/pacs as hub:it-central it-central@hub admin true" {
		t.Fatalf("a hub admin's DELETE: %d %q %v", code, body, err)
	}
	audit, err := e.hub.id.ListAudit(e.admin, identity.AuditFilter{Action: "federation.site.call"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, a := range audit {
		seen = append(seen, a.UserName+" "+a.Resource+" "+a.Result)
	}
	for _, want := range []string{"viewer ward-east POST /api/v1/vms success", "viewer ward-east POST /api/v1/vms forbidden", "it-central ward-east DELETE /api/v1/vms/pacs success"} {
		if !strings.Contains(strings.Join(seen, "\n"), want) {
			t.Fatalf("the hub's audit lacks %q: %q", want, seen)
		}
	}
	// Taking the grants away takes the access.
	for _, g := range []GrantSpec{{User: "viewer", Site: "ward-east"}, {User: "viewer", Group: "north"}} {
		if _, err := e.hub.SetGrant(ctx, e.admin, g); err != nil {
			t.Fatal(err)
		}
	}
	if s := siteView(e.user); s != nil {
		t.Fatalf("access after the grants went: %+v", s)
	}

	// /metrics: every site, with a site label.
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.hub.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "site" {
					found[mf.GetName()+"/"+l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	if south, ok := found["cairn_site_up/ward-south"]; !ok || south != 0 || found["cairn_site_up/ward-east"] != 1 || found["cairn_site_degraded_volumes/ward-east"] != 1 {
		t.Fatalf("metrics: %v", found)
	}

	// Enrolled again after a revocation, a site is back in its group.
	if _, err := e.hub.Revoke(ctx, e.admin, "ward-south"); err != nil {
		t.Fatal(err)
	}
	back, _, err := e.hub.CreateToken(ctx, e.admin, "ward-south", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, e.url, back); err != nil {
		t.Fatal(err)
	}
	if d, err := e.hub.SiteDetail(e.admin, "ward-south"); err != nil || d.Group != "south" {
		t.Fatalf("enrolled again: %+v %v", d, err)
	}

	// The site goes away: the hub keeps its inventory, unreachable, and
	// says how old it is.
	stop()
	testutil.WaitFor(t, 10*time.Second, "the site shown unreachable", func() error {
		if s := siteView(e.admin); s == nil || s.Connected || s.VMs != 2 || s.AgeSeconds < 1 {
			return fmt.Errorf("hub says %+v", s)
		}
		return nil
	})
	if got := e.hub.ListSites(e.admin, SiteFilter{Unreachable: true}); len(got) != 2 {
		t.Fatalf("unreachable sites: %+v", got)
	}
}

func TestApprox(t *testing.T) {
	for in, want := range map[int64]int64{0: 0, 7: 7, 999: 999, 1000: 1000, 1234: 1230, 987654321: 987000000} {
		if got := Approx(in); got != want {
			t.Fatalf("Approx(%d) = %d, want %d", in, got, want)
		}
	}
}
