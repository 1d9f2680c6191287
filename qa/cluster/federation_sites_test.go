package cluster_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// hubSite is a site as the hub's API shows it, with its inventory.
type hubSite struct {
	siteView
	Group      string `json:"group"`
	Role       string `json:"role"`
	AgeSeconds int64  `json:"inventory_age_seconds"`
	Health     string `json:"health"`
	Inventory  *struct {
		Nodes    []struct{ Name string } `json:"nodes"`
		Projects []struct{ Name string } `json:"projects"`
		VMs      []struct{ Name string } `json:"vms"`
		Images   []struct{ Name string } `json:"images"`
	} `json:"inventory"`
}

// names lists the names of a site's own API listing (none for a route
// the site does not serve, as one without VMs).
func names(t *testing.T, a *cairntest.Client, path string) []string {
	t.Helper()
	var items []struct{ Name string }
	if err := a.Call("GET", path, nil, 200, &items); err != nil {
		if he, ok := err.(*cairntest.HTTPError); ok && he.Status == 404 {
			return []string{}
		}
		t.Fatal(err)
	}
	out := []string{}
	for _, i := range items {
		out = append(out, i.Name)
	}
	slices.Sort(out)
	return out
}

func nameList[T any](items []T, name func(T) string) []string {
	out := []string{}
	for _, i := range items {
		out = append(out, name(i))
	}
	slices.Sort(out)
	return out
}

// login signs a hub or site user in on node n.
func login(t *testing.T, n *harness.Node, user, pw string) *cairntest.Client {
	t.Helper()
	anon, err := cairntest.NewClient(n, "")
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ Token string }
	if err := anon.Call("POST", "/api/v1/auth/login", map[string]string{"username": user, "password": pw}, 200, &res); err != nil {
		t.Fatal(err)
	}
	c, err := cairntest.NewClient(n, res.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// federatedSites runs what a hub does with three enrolled and connected
// sites (sites, by name, as their admins): the inventory it caches
// matches each site's own API; a hub operator creates a VM on a site of
// their group through the hub and the site's audit names them, and can
// touch no site outside it; a read-only user only reads; a site whose
// link is cut keeps working, shows on the hub as unreachable with the
// age of its data, and catches up when the link is back; the hub's
// /metrics carries every site.
func federatedSites(t *testing.T, hub *harness.Cluster, ha *cairntest.Client, sites map[string]*cairntest.Client, cut *harness.Cluster) {
	detail := func(a *cairntest.Client, site string) hubSite {
		t.Helper()
		var d hubSite
		if err := a.Call("GET", "/api/v1/federation/sites/"+site, nil, 200, &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// The inventory on the hub matches each site's own API.
	for name, sa := range sites {
		testutil.WaitFor(t, 15*time.Second, "the inventory of "+name+" on the hub", func() error {
			d := detail(ha, name)
			if d.Inventory == nil || !d.Connected {
				return fmt.Errorf("hub says %+v", d)
			}
			inv := d.Inventory
			for what, pair := range map[string][2][]string{
				"nodes":    {nameList(inv.Nodes, func(n struct{ Name string }) string { return n.Name }), names(t, sa, "/api/v1/nodes")},
				"projects": {nameList(inv.Projects, func(n struct{ Name string }) string { return n.Name }), names(t, sa, "/api/v1/projects")},
				"vms":      {nameList(inv.VMs, func(n struct{ Name string }) string { return n.Name }), names(t, sa, "/api/v1/vms")},
				"images":   {nameList(inv.Images, func(n struct{ Name string }) string { return n.Name }), names(t, sa, "/api/v1/images")},
			} {
				if !slices.Equal(pair[0], pair[1]) {
					return fmt.Errorf("%s: the hub has %q, the site %q", what, pair[0], pair[1])
				}
			}
			return nil
		})
	}

	// Hub users: an operator of the group "city" (ward-east and
	// ward-north) and an auditor who only reads ward-south.
	for _, g := range [][2]string{{"ward-east", "city"}, {"ward-north", "city"}, {"ward-south", "rural"}} {
		if err := ha.Call("PUT", "/api/v1/federation/sites/"+g[0]+"/group", map[string]string{"group": g[1]}, 200, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"ops", "auditor"} {
		if err := ha.Call("POST", "/api/v1/users", map[string]any{"name": u, "password": "central-it-4242"}, 201, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ha.Call("PUT", "/api/v1/federation/grants", map[string]string{"user": "ops", "group": "city", "role": "operator"}, 200, nil); err != nil {
		t.Fatal(err)
	}
	if err := ha.Call("PUT", "/api/v1/federation/grants", map[string]string{"user": "auditor", "site": "ward-south", "role": "read-only"}, 200, nil); err != nil {
		t.Fatal(err)
	}
	hn := hub.Node(1)
	ops, auditor := login(t, hn, "ops", "central-it-4242"), login(t, hn, "auditor", "central-it-4242")
	var seen []hubSite
	if err := ops.Call("GET", "/api/v1/federation/sites", nil, 200, &seen); err != nil || len(seen) != 2 {
		t.Fatalf("the city operator sees %+v (%v)", seen, err)
	}

	// A VM made on ward-north through the hub, by the operator: the site
	// names them in its audit log, the hub in its own, and the hub's
	// inventory has the VM in seconds.
	north := sites["ward-north"]
	began := time.Now()
	if err := ops.Call("POST", "/api/v1/federation/sites/ward-north/api/v1/vms", map[string]any{"name": "remote-1", "project": "clinic", "image": "guest", "flavor": "tiny"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	var audit []struct {
		User     string `json:"user"`
		Action   string `json:"action"`
		Resource string `json:"resource"`
		Result   string `json:"result"`
	}
	if err := north.Call("GET", "/api/v1/audit?action=vm.create", nil, 200, &audit); err != nil || len(audit) == 0 || audit[0].User != "ops@hub" || audit[0].Result != "success" {
		t.Fatalf("the site's audit of the VM made through the hub: %+v %v", audit, err)
	}
	if err := ha.Call("GET", "/api/v1/audit?action=federation.site.call", nil, 200, &audit); err != nil || len(audit) == 0 || audit[0].User != "ops" || audit[0].Resource != "ward-north POST /api/v1/vms" {
		t.Fatalf("the hub's audit of the call: %+v %v", audit, err)
	}
	testutil.WaitFor(t, 5*time.Second, "the new VM in the hub's inventory", func() error {
		var vms []struct {
			Site string `json:"site"`
		}
		if err := ops.Call("GET", "/api/v1/federation/vms?name=remote-1", nil, 200, &vms); err != nil {
			return err
		}
		if len(vms) != 1 || vms[0].Site != "ward-north" {
			return fmt.Errorf("found %+v", vms)
		}
		return nil
	})
	t.Logf("the VM made through the hub was in its inventory %v later", time.Since(began).Round(time.Millisecond))

	// Outside their grants: nothing reaches the site.
	south := sites["ward-south"]
	projects := names(t, south, "/api/v1/projects")
	if err := ops.Call("POST", "/api/v1/federation/sites/ward-south/api/v1/projects", map[string]string{"name": "intruder"}, 404, nil); err != nil {
		t.Fatalf("the city operator on a rural site: %v", err)
	}
	if err := auditor.Call("POST", "/api/v1/federation/sites/ward-south/api/v1/projects", map[string]string{"name": "intruder"}, 403, nil); err != nil {
		t.Fatalf("the auditor writing: %v", err)
	}
	if err := auditor.Call("GET", "/api/v1/federation/sites/ward-south/api/v1/projects", nil, 200, nil); err != nil {
		t.Fatalf("the auditor reading: %v", err)
	}
	if got := names(t, south, "/api/v1/projects"); !slices.Equal(got, projects) {
		t.Fatalf("refused calls changed the site's projects: %q, were %q", got, projects)
	}
	// Nothing made through the hub outlives its grant: not a token, not
	// a local user, not even by a hub admin.
	if err := ops.Call("POST", "/api/v1/federation/sites/ward-north/api/v1/tokens", map[string]string{"name": "keep"}, 403, nil); err != nil {
		t.Fatalf("a hub user minting a site token: %v", err)
	}
	users := names(t, north, "/api/v1/users")
	if err := ha.Call("POST", "/api/v1/federation/sites/ward-north/api/v1/users", map[string]any{"name": "backdoor", "password": "central-it-4242", "cluster_admin": true}, 403, nil); err != nil {
		t.Fatalf("a hub admin making a site user: %v", err)
	}
	if got := names(t, north, "/api/v1/users"); !slices.Equal(got, users) {
		t.Fatalf("the site's users changed: %q, were %q", got, users)
	}

	// The hub's /metrics: every site, labelled.
	req, _ := http.NewRequest("GET", "https://"+hn.IP+":8443/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+ha.Token())
	res, err := ha.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for name, group := range map[string]string{"ward-east": "city", "ward-north": "city", "ward-south": "rural"} {
		if line := `cairn_site_up{group="` + group + `",site="` + name + `"} 1`; !strings.Contains(string(body), line) {
			t.Fatalf("the hub's metrics lack %s: %s", line, body)
		}
	}

	// An image pushed from the hub to the three sites, at 1 MiB/s each
	// (branch uplinks are thin); ward-north's link is cut part way.
	golden := pushImage(t, ha, sites)
	testutil.WaitFor(t, time.Minute, "part of the image at ward-north", func() error {
		if d := pushTo(t, ha, "ward-north"); d.Received < 2<<20 {
			return fmt.Errorf("%+v", d)
		}
		return nil
	})

	// ward-north's link is cut: it works on by itself, the hub shows it
	// unreachable with its data's age, and it catches up when it is back.
	cut.CutNAT(true)
	testutil.WaitFor(t, 90*time.Second, "ward-north unreachable on the hub", func() error {
		if d := detail(ha, "ward-north"); d.Connected || d.AgeSeconds < 5 || d.Inventory == nil {
			return fmt.Errorf("hub says connected=%v age=%ds", d.Connected, d.AgeSeconds)
		}
		return nil
	})
	if _, err := north.CreateProject("offline-ward"); err != nil {
		t.Fatalf("the cut-off site works by itself: %v", err)
	}
	var off []hubSite
	if err := ha.Call("GET", "/api/v1/federation/sites?unreachable=true", nil, 200, &off); err != nil || len(off) != 1 || off[0].Name != "ward-north" {
		t.Fatalf("unreachable sites: %+v %v", off, err)
	}
	// A bulk operation for the city group, queued meanwhile: ward-east
	// has it at once, ward-north when it is back; the same key queues
	// nothing more.
	type intentView struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Sites []struct {
			Site    string `json:"site"`
			State   string `json:"state"`
			Message string `json:"message"`
		} `json:"sites"`
	}
	spec := map[string]any{"key": "telehealth-rollout", "groups": []string{"city"}, "steps": []map[string]any{
		{"method": "POST", "path": "/api/v1/projects", "body": map[string]string{"name": "telehealth"}},
		{"method": "PUT", "path": "/api/v1/projects/telehealth/quota", "body": map[string]int{"instances": 4, "vcpus": 8, "ram_mib": 16384}},
	}}
	var in, again intentView
	if err := ha.Call("POST", "/api/v1/federation/intents", spec, 201, &in); err != nil {
		t.Fatal(err)
	}
	if err := ha.Call("POST", "/api/v1/federation/intents", spec, 201, &again); err != nil || again.ID != in.ID {
		t.Fatalf("the same key again: %+v %v", again, err)
	}
	intentAt := func(site string) string {
		var cur intentView
		if err := ha.Call("GET", "/api/v1/federation/intents/"+in.ID, nil, 200, &cur); err != nil {
			t.Fatal(err)
		}
		for _, s := range cur.Sites {
			if s.Site == site {
				return s.State + " " + s.Message
			}
		}
		return "absent"
	}
	testutil.WaitFor(t, 30*time.Second, "the bulk operation done on ward-east", func() error {
		if st := intentAt("ward-east"); st != "done " {
			return fmt.Errorf("ward-east: %s", st)
		}
		return nil
	})
	if st := intentAt("ward-north"); !strings.HasPrefix(st, "pending") {
		t.Fatalf("ward-north, cut off: %s", st)
	}
	if !slices.Contains(names(t, sites["ward-east"], "/api/v1/projects"), "telehealth") || slices.Contains(names(t, north, "/api/v1/projects"), "telehealth") {
		t.Fatal("the bulk operation's project is not where it should be")
	}

	cut.CutNAT(false)
	testutil.WaitFor(t, 90*time.Second, "ward-north back, caught up", func() error {
		d := detail(ha, "ward-north")
		if !d.Connected || d.Inventory == nil || !slices.ContainsFunc(d.Inventory.Projects, func(p struct{ Name string }) bool { return p.Name == "offline-ward" }) {
			return fmt.Errorf("hub says connected=%v age=%ds", d.Connected, d.AgeSeconds)
		}
		return nil
	})
	testutil.WaitFor(t, 60*time.Second, "the bulk operation done on ward-north", func() error {
		if st := intentAt("ward-north"); st != "done " {
			return fmt.Errorf("ward-north: %s", st)
		}
		return nil
	})
	var quota struct {
		Limits struct {
			Instances int `json:"instances"`
		} `json:"limits"`
	}
	if err := north.Call("GET", "/api/v1/projects/telehealth/quota", nil, 200, &quota); err != nil || quota.Limits.Instances != 4 {
		t.Fatalf("the bulk operation on ward-north: %+v %v", quota, err)
	}
	if err := north.Call("GET", "/api/v1/audit?action=project.create", nil, 200, &audit); err != nil || len(audit) == 0 || audit[0].User != "admin@hub" {
		t.Fatalf("ward-north's audit of the bulk operation: %+v %v", audit, err)
	}
	// The push went on from where the link broke, not from the start, and
	// every site has the image with the hub's hash.
	for name, a := range sites {
		testutil.WaitFor(t, 2*time.Minute, "the image at "+name, func() error {
			if d := pushTo(t, ha, name); d.State != "done" {
				return fmt.Errorf("%+v", d)
			}
			return nil
		})
		var imgs []struct {
			Name   string `json:"name"`
			SHA256 string `json:"sha256"`
		}
		if err := a.Call("GET", "/api/v1/images", nil, 200, &imgs); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(imgs, func(i struct {
			Name   string `json:"name"`
			SHA256 string `json:"sha256"`
		}) bool {
			return i.Name == "golden" && i.SHA256 == golden
		}) {
			t.Fatalf("%s's images: %+v, want golden %s", name, imgs, golden)
		}
	}
	if d := pushTo(t, ha, "ward-north"); d.Resumes < 1 || d.Sent > d.Size+2<<20 {
		t.Fatalf("the push to ward-north started over: %+v", d)
	} else {
		t.Logf("the push to ward-north resumed %d times; %d bytes sent for %d", d.Resumes, d.Sent, d.Size)
	}
	if err := ops.Call("DELETE", "/api/v1/federation/sites/ward-north/api/v1/vms/remote-1", nil, 202, nil); err != nil {
		t.Fatalf("delete the VM through the hub: %v", err)
	}
}

// pushView is an image push to one site as the hub shows it.
type pushView struct {
	Site     string `json:"site"`
	State    string `json:"state"`
	Size     int64  `json:"size"`
	Received int64  `json:"received"`
	Sent     int64  `json:"sent"`
	Resumes  int    `json:"resumes"`
	Message  string `json:"message"`
}

// pushImage uploads the guest image to the hub and pushes it to every
// site, into a project made there for it, at 1 MiB/s; it returns the
// image's hash.
func pushImage(t *testing.T, ha *cairntest.Client, sites map[string]*cairntest.Client) string {
	t.Helper()
	var names []string
	for name, a := range sites {
		if _, err := a.CreateProject("imaging"); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	sha := cairntest.UploadHubImage(t, ha, "golden")
	if err := ha.Call("POST", "/api/v1/federation/images/golden/push", map[string]any{"sites": names, "project": "imaging", "rate_kib": 1024}, 201, nil); err != nil {
		t.Fatal(err)
	}
	return sha
}

// pushTo is the push of the image to a site.
func pushTo(t *testing.T, ha *cairntest.Client, site string) pushView {
	t.Helper()
	var ds []pushView
	if err := ha.Call("GET", "/api/v1/federation/pushes?image=golden", nil, 200, &ds); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Site == site {
			return d
		}
	}
	t.Fatalf("no push to %s: %+v", site, ds)
	return pushView{}
}
