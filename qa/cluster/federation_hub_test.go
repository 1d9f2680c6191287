package cluster_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A hub of three nodes outlives the one its sites joined at and hold
// their sessions with. An image uploaded to that node is copied to the
// other two before it goes; once it is killed, the site dials the other
// hub nodes (the hub told it of them), the hub's remaining two show it
// connected, carry remote calls, and push it the image from their own
// copies.
func TestHubOfThreeNodes(t *testing.T) {
	hub, ha := cairntest.StartHubN(t, 3)
	site := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"}})
	sa := cairntest.Admin(t, site.Node(1))
	cairntest.WaitHealthyDisks(t, sa, 2, 0)
	if _, err := sa.CreateProject("imaging"); err != nil {
		t.Fatal(err)
	}
	site.BehindNAT(hub) // the way a branch reaches central IT
	// Central IT makes the token on the hub, the site's admin joins with
	// it: both with the CLI (cairn federation join HUB --token T, the
	// enrolment token in the flag that elsewhere is the API token's).
	hx := adminCLI(t, hub.Node(1))
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(hx.ok("", "federation", "token", "create", "ward-west", "-o", "json")), &tok); err != nil {
		t.Fatal(err)
	}
	sx := adminCLI(t, site.Node(1))
	sx.ok("", "federation", "join", cairntest.HubURL(hub), "--token", tok.Token)
	type siteOnHub struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		HubNode   string `json:"hub_node"`
	}
	siteOn := func(a *cairntest.Client) siteOnHub {
		t.Helper()
		var s siteOnHub
		if err := a.Call("GET", "/api/v1/federation/sites/ward-west", nil, 200, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	testutil.WaitFor(t, time.Minute, "ward-west connected to hub1", func() error {
		if s := siteOn(ha); !s.Connected || s.HubNode != "hub1" {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})

	sha := cairntest.UploadHubImage(t, ha, "golden")
	ha2 := cairntest.Admin(t, hub.Node(2))
	testutil.WaitFor(t, 2*time.Minute, "the image on every hub node", func() error {
		var ims []struct {
			SHA256  string   `json:"sha256"`
			Holders []string `json:"holders"`
		}
		if err := ha2.Call("GET", "/api/v1/federation/images", nil, 200, &ims); err != nil {
			return err
		}
		if len(ims) != 1 || ims[0].SHA256 != sha || len(ims[0].Holders) != 3 {
			return fmt.Errorf("%+v", ims)
		}
		return nil
	})

	// The node the site joined at, and holds its session with, dies.
	hub.Node(1).Kill()
	killed := time.Now()
	testutil.WaitFor(t, 2*time.Minute, "ward-west connected to another hub node", func() error {
		if s := siteOn(ha2); !s.Connected || s.HubNode == "hub1" || s.HubNode == "" {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	t.Logf("hub1 killed: ward-west connected to %s %s later", siteOn(ha2).HubNode, time.Since(killed).Round(time.Millisecond))
	ha3 := cairntest.Admin(t, hub.Node(3))
	var projects []struct {
		Name string `json:"name"`
	}
	if err := ha3.Call("GET", "/api/v1/federation/sites/ward-west/api/v1/projects", nil, 200, &projects); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(projects, func(p struct {
		Name string `json:"name"`
	}) bool {
		return p.Name == "imaging"
	}) {
		t.Fatalf("ward-west's projects through the hub: %+v", projects)
	}
	if err := ha3.Call("POST", "/api/v1/federation/images/golden/push", map[string]any{"sites": []string{"ward-west"}, "project": "imaging"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 3*time.Minute, "the image at ward-west", func() error {
		var ds []pushView // read from another node: the push may not be there yet
		if err := ha2.Call("GET", "/api/v1/federation/pushes?image=golden", nil, 200, &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Site != "ward-west" || ds[0].State != "done" {
			return fmt.Errorf("%+v", ds)
		}
		return nil
	})
	var imgs []struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
	}
	if err := sa.Call("GET", "/api/v1/images?project=imaging", nil, 200, &imgs); err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != "golden" || imgs[0].SHA256 != sha {
		t.Fatalf("ward-west's images: %+v, want golden %s", imgs, sha)
	}

	// A bulk operation through the two hub nodes left, and its progress
	// with the CLI.
	x3 := adminCLI(t, hub.Node(3))
	spec := `{"sites":["ward-west"],"steps":[{"method":"POST","path":"/api/v1/projects","body":{"name":"tele"}}]}`
	var in struct {
		ID string `json:"id"`
	}
	if err := ha3.Call("POST", "/api/v1/federation/intents", json.RawMessage(spec), 201, &in); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the intent done at ward-west", func() error {
		var page struct {
			Intents []struct {
				ID    string `json:"id"`
				State string `json:"state"`
				Total int    `json:"sites_total"`
				Done  int    `json:"sites_done"`
			} `json:"intents"`
		}
		if err := json.Unmarshal([]byte(x3.ok("", "federation", "intent", "list", "-o", "json")), &page); err != nil {
			return err
		}
		if len(page.Intents) != 1 || page.Intents[0].ID != in.ID || page.Intents[0].State != "done" || page.Intents[0].Total != 1 || page.Intents[0].Done != 1 {
			return fmt.Errorf("%+v", page)
		}
		return nil
	})
	if err := sa.Call("GET", "/api/v1/projects/tele", nil, 200, nil); err != nil {
		t.Fatalf("the intent's project at ward-west: %v", err)
	}
}
