package ui

import (
	"testing"

	"github.com/a-h/templ"

	"github.com/cairnhq/cairn/appliance/federation"
)

func goldenSites() sitesData {
	ok := federation.SiteStatus{Site: federation.Site{ID: "a1", Name: "ward-east", Group: "city"}, Role: federation.HubAdmin, Connected: true,
		LastContact: goldenTime, AgeSeconds: 3, Health: "ok", Version: "v1.4.0", Nodes: 3, VMs: 48, Volumes: 52, FreeStoragePercent: 61}
	degraded := federation.SiteStatus{Site: federation.Site{ID: "b2", Name: "ward-north", Group: "city"}, Role: federation.HubOperator, Connected: true,
		LastContact: goldenTime, AgeSeconds: 1, Health: "degraded", Alerts: 2, Version: "v1.4.0", Nodes: 3, VMs: 51, Volumes: 60, DegradedVolumes: 1, FreeStoragePercent: 14}
	away := federation.SiteStatus{Site: federation.Site{ID: "c3", Name: "clinic-hill"}, Role: federation.HubReadOnly,
		LastContact: goldenTime, AgeSeconds: 7260, Health: "ok", Version: "v1.3.2", Nodes: 1, VMs: 6, FreeStoragePercent: 80}
	return sitesData{Sites: []federation.SiteStatus{away, ok, degraded}, Groups: []string{"", "city"}}
}

func goldenSite() *federation.SiteDetail {
	return &federation.SiteDetail{SiteStatus: goldenSites().Sites[2], Inventory: &federation.Inventory{
		Version: "v1.4.0", Health: "degraded", Leader: "node1",
		Alerts: []federation.Alert{{Kind: "degraded_volumes", Severity: "critical", Count: 1, Text: "1 volumes are below full redundancy"},
			{Kind: "no_room", Severity: "warning", Node: "node3", Names: []string{"pacs"}, Text: "losing node3, pacs finds no room"}},
		Nodes:    []federation.InvNode{{Name: "node1", Role: "voter", Healthy: true, Leader: true, VMs: 20}, {Name: "node2", Role: "voter", Healthy: true, VMs: 18}, {Name: "node3", Role: "voter", VMs: 13}},
		Capacity: federation.InvCapacity{VCPUs: 96, UsedVCPUs: 70, RAMMiB: 384 << 10, UsedRAMMiB: 200 << 10, StorageBytes: 12 << 40, StorageFree: 1700 << 30},
		Projects: []federation.InvProject{{Name: "radiology", VMs: 30, VCPUs: 50, VolumeBytes: 4 << 40, BucketBytes: 2 << 40}},
		VMs:      []federation.InvVM{{Name: "pacs", Project: "radiology", State: "running", Node: "node1", VCPUs: 8, RAMMiB: 32768}},
		Images:   []federation.InvImage{{Name: "debian-12", Project: "radiology", Size: 400 << 20}},
	}}
}

func goldenPushes() pushesData {
	s := goldenSites()
	return pushesData{Sites: s.Sites, Groups: s.Groups,
		Images: []federation.HubImage{{SHA256: "5e8f", Name: "golden", Size: 11 << 20}},
		Pushes: []federation.Distribution{
			{Name: "golden", Site: "ward-east", State: federation.DistDone, Size: 11 << 20, Received: 11 << 20},
			{Name: "golden", Site: "ward-north", State: federation.DistPending, Size: 11 << 20, Received: 4 << 20, Resumes: 1, Note: "link_broke", Message: "the link broke; the push goes on from what the site holds"},
		}}
}

func TestGoldenHubPages(t *testing.T) {
	hub := func(lang, nav string) *view {
		v := goldenView(lang, true, nav)
		v.hub = true
		return v
	}
	withForm := goldenPushes()
	withForm.Form = pushForm{Image: "5e8f", Target: "group:city", Project: "imaging", Rate: "x", Err: "速率上限须为数字"}
	checkGolden(t, map[string]templ.Component{
		"sites_en":       sitesPage(hub(langEN, "sites"), goldenSites()),
		"sites_zh":       sitesPage(hub(langZH, "sites"), goldenSites()),
		"sites_en_none":  sitesPage(hub(langEN, "sites"), sitesData{}),
		"site_zh":        sitePage(hub(langZH, "sites"), goldenSite()),
		"pushes_en":      pushesPage(hub(langEN, "pushes"), goldenPushes()),
		"pushes_zh_form": pushesPage(hub(langZH, "pushes"), withForm),
	})
}

func TestGoldenFederationPages(t *testing.T) {
	site := func(lang string) *view {
		v := goldenView(lang, true, "federation")
		v.fed = true
		return v
	}
	member := federation.Status{Member: true, HubURL: "https://hub.example.org:8450", SiteID: "a1", SiteName: "ward-east", Connected: true, Node: "node2", Since: goldenTime}
	away := member
	away.Connected, away.LastError = false, "dial the hub: i/o timeout"
	checkGolden(t, map[string]templ.Component{
		"federation_en_join": federationPage(site(langEN), federation.Status{}, joinForm{HubURL: "https://hub.example.org:8450", Err: "The enrolment token is unknown, used or expired."}),
		"federation_zh":      federationPage(site(langZH), member, joinForm{}),
		"federation_en_away": federationPage(site(langEN), away, joinForm{}),
	})
}
