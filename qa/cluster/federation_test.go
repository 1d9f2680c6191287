package cluster_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

type siteView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	From      string `json:"from"`
	RevokedBy string `json:"revoked_by"`
}

type memberView struct {
	Member    bool   `json:"member"`
	SiteID    string `json:"site_id"`
	SiteName  string `json:"site_name"`
	Connected bool   `json:"connected"`
	LastError string `json:"last_error"`
}

// A three-node site behind a NAT that lets only outbound connections
// through enrols with a hub and keeps a session with it: dialled out by
// the site's leader, reached by the hub through it (the hub cannot open a
// connection to the site itself). The session comes back by itself when
// the site's leader dies and when the hub restarts. A used or forged
// token is refused and changes nothing; a revoked site is cut off and
// told why, and enrols again after leaving. Two more sites, one node each
// behind NATs of their own, join for what the hub does with its sites
// (federatedSites), and all three come back after the hub restarts.
func TestFederationThroughNAT(t *testing.T) {
	hub, ha := cairntest.StartHub(t)
	site := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1"}})
	sa := cairntest.Admin(t, site.Node(1))
	cairntest.WaitShape(t, sa, 3, 0)
	wan := site.BehindNAT(hub)
	hubURL := cairntest.HubURL(hub)

	// Nothing on the hub's side opens a connection to the site, even
	// with a route to it through the NAT.
	hn := hub.Node(1)
	siteNet := site.Node(1).IP[:strings.LastIndex(site.Node(1).IP, ".")] + ".0/24"
	if out, err := hn.Command("ip", "route", "replace", siteNet, "via", wan).CombinedOutput(); err != nil {
		t.Fatalf("route: %v %s", err, out)
	}
	if out, err := hn.Command("timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+site.Node(1).IP+"/8443").CombinedOutput(); err == nil {
		t.Fatalf("the hub's side opened a connection to the site behind the NAT: %s", out)
	}

	site1 := func() siteView {
		t.Helper()
		var sites []siteView
		if err := ha.Call("GET", "/api/v1/federation/sites", nil, 200, &sites); err != nil {
			t.Fatal(err)
		}
		for _, s := range sites {
			if s.Name == "ward-east" {
				return s
			}
		}
		return siteView{}
	}
	newTokenFor := func(site string) string {
		t.Helper()
		var tok struct {
			Token string `json:"token"`
		}
		if err := ha.Call("POST", "/api/v1/federation/tokens", map[string]string{"site": site}, 201, &tok); err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	newToken := func() string { return newTokenFor("ward-east") }
	token := newToken()
	var e cairntest.HTTPError
	parts := strings.Split(token, ".")
	forged := strings.Join([]string{parts[0], parts[1], parts[2] + "A", parts[3]}, ".")
	if err := sa.Call("POST", "/api/v1/federation/join", map[string]string{"hub_url": hubURL, "token": forged}, 409, &e); err != nil || !strings.Contains(e.Msg, "unknown, used or expired") {
		t.Fatalf("join with a forged token: %v %+v", err, e)
	}
	var st memberView
	if err := sa.Call("GET", "/api/v1/federation", nil, 200, &st); err != nil || st.Member || site1().ID != "" {
		t.Fatalf("a refused join changed something: site says %+v (%v), hub says %+v", st, err, site1())
	}

	// Enrolled: connected within seconds, from the NAT's address.
	began := time.Now()
	if err := sa.Call("POST", "/api/v1/federation/join", map[string]string{"hub_url": hubURL, "token": token}, 200, &st); err != nil {
		t.Fatal(err)
	}
	connected := func(within time.Duration, what string) siteView {
		t.Helper()
		var s siteView
		testutil.WaitFor(t, within, what, func() error {
			if s = site1(); !s.Connected {
				return fmt.Errorf("hub says %+v", s)
			}
			return nil
		})
		return s
	}
	s := connected(10*time.Second, "the site connected")
	t.Logf("connected %v after the join", time.Since(began).Round(time.Millisecond))
	if host, _, _ := net.SplitHostPort(s.From); host != wan {
		t.Fatalf("the session comes from %s, not the NAT's %s", s.From, wan)
	}
	sa2 := cairntest.Admin(t, site.Node(2))
	if err := sa2.Call("POST", "/api/v1/federation/join", map[string]string{"hub_url": hubURL, "token": token}, 409, &e); err != nil || !strings.Contains(e.Msg, "already") {
		t.Fatalf("a second join: %v %+v", err, e)
	}

	// The hub asks the site, through the session: the site's own nodes.
	ask := func(within time.Duration) {
		t.Helper()
		testutil.WaitFor(t, within, "the hub asks the site", func() error {
			var remote cairntest.ClusterStatus
			if err := ha.Call("GET", "/api/v1/federation/sites/ward-east/status", nil, 200, &remote); err != nil {
				return err
			}
			local, err := sa.Status()
			if err != nil {
				return err
			}
			if len(remote.Nodes) != 3 || remote.Leader != local.Leader {
				return fmt.Errorf("the hub sees %+v, the site %+v", remote, local)
			}
			return nil
		})
	}
	ask(10 * time.Second)

	// Two more sites of one node, each behind a NAT of its own.
	north := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"}})
	na := cairntest.Admin(t, north.Node(1))
	computeSetup(t, na, 2)
	south := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"}})
	so := cairntest.Admin(t, south.Node(1))
	cairntest.WaitHealthyDisks(t, so, 2, 0)
	cairntest.WaitHealthyDisks(t, sa, 3, 0)
	for name, sc := range map[string]*harness.Cluster{"ward-north": north, "ward-south": south} {
		sc.BehindNAT(hub)
		if err := cairntest.Admin(t, sc.Node(1)).Call("POST", "/api/v1/federation/join", map[string]string{"hub_url": hubURL, "token": newTokenFor(name)}, 200, nil); err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
	}
	federatedSites(t, hub, ha, map[string]*cairntest.Client{"ward-east": sa, "ward-north": na, "ward-south": so}, north)

	// The site's leader dies: the next one dials.
	st0, err := sa.Status()
	if err != nil {
		t.Fatal(err)
	}
	var leader *harness.Node
	for _, n := range site.Nodes {
		if n.Name == st0.Leader {
			leader = n
		}
	}
	leader.Kill()
	var other *harness.Node
	for _, n := range site.Nodes {
		if n != leader {
			other = n
		}
	}
	oa := cairntest.Admin(t, other)
	testutil.WaitFor(t, time.Minute, "a new leader at the site", func() error {
		st, err := oa.Status()
		if err != nil || st.Leader == "" || st.Leader == leader.Name {
			return fmt.Errorf("leader %q: %v", st.Leader, err)
		}
		return nil
	})
	testutil.WaitFor(t, time.Minute, "the session from the new leader", func() error {
		var remote cairntest.ClusterStatus
		if err := ha.Call("GET", "/api/v1/federation/sites/ward-east/status", nil, 200, &remote); err != nil {
			return err
		}
		if remote.Leader == "" || remote.Leader == leader.Name {
			return fmt.Errorf("the site's leader as the hub hears it: %q", remote.Leader)
		}
		return nil
	})
	leader.Start()

	// The hub restarts: the site comes back by itself.
	hn.Restart()
	ha = cairntest.Admin(t, hn)
	connected(time.Minute, "the site back after the hub restarted")
	testutil.WaitFor(t, time.Minute, "every site back after the hub restarted", func() error {
		var sites []siteView
		if err := ha.Call("GET", "/api/v1/federation/sites", nil, 200, &sites); err != nil {
			return err
		}
		for _, s := range sites {
			if !s.Connected {
				return fmt.Errorf("%s is not back", s.Name)
			}
		}
		if len(sites) != 3 {
			return fmt.Errorf("%d sites", len(sites))
		}
		return nil
	})

	// Revoked: cut off, and told why.
	if err := ha.Call("POST", "/api/v1/federation/sites/ward-east/revoke", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the site cut off and told why", func() error {
		if err := oa.Call("GET", "/api/v1/federation", nil, 200, &st); err != nil {
			return err
		}
		if st.Connected || !strings.Contains(st.LastError, "revoked") || site1().Connected {
			return fmt.Errorf("site says %+v; hub says %+v", st, site1())
		}
		return nil
	})
	// It leaves (the hub cannot be told: it refuses the site), and
	// enrols again with a new token, as the same site; the used token
	// stays refused.
	if err := oa.Call("POST", "/api/v1/federation/leave", nil, 204, nil); err != nil {
		t.Fatal(err)
	}
	if err := oa.Call("POST", "/api/v1/federation/join", map[string]string{"hub_url": hubURL, "token": token}, 409, &e); err != nil || !strings.Contains(e.Msg, "unknown, used or expired") {
		t.Fatalf("join with a used token: %v %+v", err, e)
	}
	if err := oa.Call("POST", "/api/v1/federation/join", map[string]string{"hub_url": hubURL, "token": newToken()}, 200, &st); err != nil {
		t.Fatal(err)
	}
	if again := connected(30*time.Second, "the site enrolled again"); again.ID != s.ID {
		t.Fatalf("enrolled again as %s, was %s", again.ID, s.ID)
	}
}
