package browser_test

import (
	"strings"
	"testing"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/chromedp/chromedp"
)

// In a real browser: a project network made on the networks page, a
// firewall group with a rule added in its form (the rule shown in words)
// and deleted after the confirmation that names it, and the VM form
// offering the network and the group; then the pages in Chinese.
func TestNetworksInBrowser(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--vms=false"}})
	api := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, api, 1, 0)
	if _, err := api.CreateProject("radiology"); err != nil {
		t.Fatal(err)
	}
	base := "https://" + c.Node(1).IP + ":8443"
	ctx := newBrowser(t, c)
	logConsole(t, ctx)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nav-networks")),
		chromedp.Click(chromedp.CSS("#nav-networks")),
		chromedp.WaitVisible(chromedp.CSS("#network-form")),
		chromedp.SendKeys(chromedp.CSS("#network-name"), "imaging"),
		chromedp.SendKeys(chromedp.CSS("#network-cidr"), "10.50.0.0/24"),
		chromedp.Click(chromedp.CSS("#network-create")),
		chromedp.WaitVisible(chromedp.CSS("#network-facts")),
	); err != nil {
		screenshot(t, ctx, "networks-create-failed")
		t.Fatalf("create a network: %v", err)
	}
	if s, err := textOf(ctx, "#network-cidr"); err != nil || s != "10.50.0.0/24" {
		t.Fatalf("the network's page shows %q %v", s, err)
	}
	screenshot(t, ctx, "network-page")

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/security-groups"),
		chromedp.WaitVisible(chromedp.CSS("#group-form")),
		chromedp.SendKeys(chromedp.CSS("#group-name"), "pacs"),
		chromedp.SendKeys(chromedp.CSS("#group-description"), "the PACS servers"),
		chromedp.Click(chromedp.CSS("#group-create")),
		chromedp.WaitVisible(chromedp.CSS("#rule-form")),
		chromedp.SetValue(chromedp.CSS("#rule-protocol"), "tcp"),
		chromedp.SendKeys(chromedp.CSS("#rule-ports"), "104"),
		chromedp.Click(chromedp.CSS("#rule-remote-cidr-choice")),
		chromedp.SendKeys(chromedp.CSS("#rule-remote-cidr"), "10.0.0.0/8"),
		chromedp.Click(chromedp.CSS("#rule-add")),
		chromedp.WaitVisible(chromedp.CSS("tr.rule")),
	); err != nil {
		screenshot(t, ctx, "networks-group-failed")
		t.Fatalf("a group and a rule: %v", err)
	}
	if s, err := textOf(ctx, "tr.rule"); err != nil || !strings.Contains(s, "TCP port 104") || !strings.Contains(s, "from 10.0.0.0/8") || !strings.Contains(s, "Incoming") {
		t.Fatalf("the rule reads %q %v", s, err)
	}
	screenshot(t, ctx, "group-page")
	// Delete the rule, confirming; the confirmation says what it deletes.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.confirmed = "", window.confirm = m => (window.confirmed = m, true), ""`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("form.rule-delete button")),
		chromedp.WaitVisible(chromedp.CSS("#rules-empty")),
	); err != nil {
		screenshot(t, ctx, "networks-rule-delete-failed")
		t.Fatalf("delete the rule: %v", err)
	}
	if asked, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`window.confirmed || ""`)); !strings.Contains(asked, "TCP port 104 from 10.0.0.0/8") {
		t.Errorf("the confirmation asked %q", asked)
	}

	// The VM form offers the networks and the groups (with no image yet
	// it says where to get one: look at the form's data instead).
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/networks")); err != nil {
		t.Fatal(err)
	}
	if n, err := count(ctx, "tr.network"); err != nil || n != 2 {
		t.Fatalf("%d networks listed (want imaging and the cluster's) %v", n, err)
	}
	screenshot(t, ctx, "networks")

	// A router through the pages: the network connected, the way out
	// through an external network the admin made; a floating IP taken.
	var ext struct {
		ID string `json:"id"`
	}
	if err := api.Call("POST", "/api/v1/networks", map[string]any{"name": "hospital-lan", "external": true, "interface": "eth1",
		"cidr": "192.0.2.0/24", "pools": []map[string]string{{"start": "192.0.2.100", "end": "192.0.2.150"}}}, 201, &ext); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#routers-link")),
		chromedp.WaitVisible(chromedp.CSS("#router-form")),
		chromedp.SendKeys(chromedp.CSS("#router-name"), "edge"),
		chromedp.Click(chromedp.CSS("#router-create")),
		chromedp.WaitVisible(chromedp.CSS("#connect-form")),
		chromedp.Click(chromedp.CSS("#connect-submit")),
		chromedp.WaitVisible(chromedp.CSS(`tr.router-network[data-name="imaging"]`)),
	); err != nil {
		screenshot(t, ctx, "router-failed")
		t.Fatalf("a router: %v", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#gateway-network"), ext.ID),
		chromedp.Click(chromedp.CSS("#gateway-submit")),
	); err != nil {
		screenshot(t, ctx, "router-gateway-failed")
		t.Fatalf("the router's way out: %v", err)
	}
	// Asked from Go, again and again: a poll inside the page dies with
	// it when the form's answer replaces it.
	waitText(t, ctx, "#router-way-out", "hospital-lan")
	if s, err := textOf(ctx, "#router-way-out"); err != nil || s != "hospital-lan" {
		t.Fatalf("the router's way out reads %q %v", s, err)
	}
	screenshot(t, ctx, "router-page")
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/floating-ips"),
		chromedp.WaitVisible(chromedp.CSS("#floating-form")),
		chromedp.Click(chromedp.CSS("#floating-create")),
		chromedp.WaitVisible(chromedp.CSS(`tr.floating-ip[data-ip="192.0.2.100"]`)),
	); err != nil {
		screenshot(t, ctx, "floating-failed")
		t.Fatalf("a floating IP: %v", err)
	}
	screenshot(t, ctx, "floating-ips")
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/topology"),
		chromedp.WaitVisible(chromedp.CSS(`#topology a[data-kind="router"][data-name="edge"]`)),
	); err != nil {
		screenshot(t, ctx, "topology-failed")
		t.Fatalf("the network picture: %v", err)
	}
	screenshot(t, ctx, "topology")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/networks")); err != nil {
		t.Fatal(err)
	}

	// In Chinese.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#lang-zh")),
		chromedp.WaitVisible(chromedp.CSS("#networks")),
	); err != nil {
		t.Fatal(err)
	}
	if s, err := textOf(ctx, "h1"); err != nil || s != "网络" {
		t.Fatalf("the networks page in Chinese is titled %q %v", s, err)
	}
	if s, err := textOf(ctx, "#networks"); err != nil || !strings.Contains(s, "项目网络") || !strings.Contains(s, "集群网络") {
		t.Fatalf("the network list in Chinese: %q %v", s, err)
	}
	screenshot(t, ctx, "networks-zh")
}
