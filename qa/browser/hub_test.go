package browser_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
)

// The hub's UI in a real browser: the site's admin joins the hub on the
// site's federation page (a forged token first: refused, nothing
// changes); central IT signs in and lands on the sites, a branch site behind a NAT shown healthy in the overview and the
// table; its page lists its nodes as the site's own API does; an image
// pushed from the pushes page arrives at the site with its progress shown
// as it goes; the pages in Chinese.
func TestHubInBrowser(t *testing.T) {
	hub, ha := cairntest.StartHub(t)
	site := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"}})
	sa := cairntest.Admin(t, site.Node(1))
	cairntest.WaitHealthyDisks(t, sa, 2, 0)
	if _, err := sa.CreateProject("imaging"); err != nil {
		t.Fatal(err)
	}
	site.BehindNAT(hub)
	var tok struct {
		Token string `json:"token"`
	}
	if err := ha.Call("POST", "/api/v1/federation/tokens", map[string]string{"site": "ward-east"}, 201, &tok); err != nil {
		t.Fatal(err)
	}
	siteJoinsInBrowser(t, site, sa, cairntest.HubURL(hub), tok.Token)
	// The image, uploaded to the hub through its API.
	cairntest.UploadHubImage(t, ha, "golden")

	base := "https://" + hub.Node(1).IP + ":8443"
	ctx := newBrowser(t, hub)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#sites-panel")),
	); err != nil {
		screenshot(t, ctx, "hub-login-failed")
		t.Fatalf("log in to the hub: %v", err)
	}
	testutil.WaitFor(t, 30*time.Second, "the site healthy in the overview and the table", func() error {
		tiles, err := count(ctx, `#sites-overview li.site-tile[data-site="ward-east"][data-state="ok"]`)
		if err != nil {
			return err
		}
		rows, err := count(ctx, `#site-table tr.site[data-site="ward-east"][data-state="ok"]`)
		if err != nil || tiles != 1 || rows != 1 {
			return fmt.Errorf("%d tiles, %d rows (%v)", tiles, rows, err)
		}
		return nil
	})
	screenshot(t, ctx, "hub-sites")

	// The site's page: its nodes, as the site's API has them.
	nodes := names(t, sa, "/api/v1/nodes")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#site-table a[href="/sites/ward-east"]`)), chromedp.WaitVisible(chromedp.CSS("#site-nodes"))); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if c, err := count(ctx, `#site-nodes tr.site-node[data-node="`+n+`"]`); err != nil || c != 1 {
			t.Fatalf("node %s on the site's page: %d %v", n, c, err)
		}
	}
	screenshot(t, ctx, "hub-site")

	// A push from the pushes page, at 2 MiB/s: progress shows as it goes.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-pushes")),
		chromedp.WaitVisible(chromedp.CSS("#push-form")),
		chromedp.SetValue(chromedp.CSS("#push-target"), "site:ward-east"),
		chromedp.SendKeys(chromedp.CSS("#push-project"), "imaging"),
		chromedp.SendKeys(chromedp.CSS("#push-rate"), "2048"),
		chromedp.Click(chromedp.CSS("#push-submit")),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	); err != nil {
		screenshot(t, ctx, "hub-push-failed")
		t.Fatal(err)
	}
	progress := func() (state string, received, size int64) {
		attrs, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => { const r = document.querySelector('#push-table tr.push[data-site="ward-east"]');
			return r ? [r.dataset.state, r.dataset.received, r.dataset.size] : ["", "0", "0"]; })()`))
		if err != nil || len(attrs) != 3 {
			return "", 0, 0
		}
		received, _ = strconv.ParseInt(attrs[1], 10, 64)
		size, _ = strconv.ParseInt(attrs[2], 10, 64)
		return attrs[0], received, size
	}
	testutil.WaitFor(t, time.Minute, "the push under way on the page", func() error {
		if state, received, size := progress(); state != "pending" || received == 0 || received >= size {
			return fmt.Errorf("%s %d/%d", state, received, size)
		}
		return nil
	})
	screenshot(t, ctx, "hub-push-progress")
	testutil.WaitFor(t, 2*time.Minute, "the push done on the page", func() error {
		if state, received, size := progress(); state != "done" || received != size {
			return fmt.Errorf("%s %d/%d", state, received, size)
		}
		return nil
	})
	screenshot(t, ctx, "hub-push-done")
	if got := names(t, sa, "/api/v1/images"); len(got) != 1 || got[0] != "golden" {
		t.Fatalf("the site's images: %q", got)
	}

	// In Chinese.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#lang-zh")), chromedp.Click(chromedp.CSS("#nav-sites")), chromedp.WaitVisible(chromedp.CSS("#sites-overview"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#sites-overview", "正常")
	screenshot(t, ctx, "hub-sites-zh")
}

// names lists the names of a site API listing.
func names(t *testing.T, a *cairntest.Client, path string) []string {
	t.Helper()
	var items []struct{ Name string }
	if err := a.Call("GET", path, nil, 200, &items); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range items {
		out = append(out, i.Name)
	}
	return out
}

// siteJoinsInBrowser joins the site to the hub on its federation page, as
// its admin, in a browser on the site's side of the NAT.
func siteJoinsInBrowser(t *testing.T, site *harness.Cluster, sa *cairntest.Client, hubURL, token string) {
	t.Helper()
	ctx := newBrowser(t, site)
	base := "https://" + site.Node(1).IP + ":8443"
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nodes")),
		chromedp.Navigate(base+"/federation"),
		chromedp.WaitVisible(chromedp.CSS("#join-form")),
	); err != nil {
		screenshot(t, ctx, "site-federation-failed")
		t.Fatal(err)
	}
	join := func(tok string) error {
		return chromedp.Do(ctx,
			chromedp.SetValue(chromedp.CSS("#join-hub"), hubURL),
			chromedp.SetValue(chromedp.CSS("#join-token"), tok),
			chromedp.Click(chromedp.CSS("#join-submit")),
		)
	}
	forged := token[:len(token)-70] + "A" + token[len(token)-70:]
	if err := join(forged); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#join-error", "unknown, used or expired")
	if c, err := count(ctx, "#join-form"); err != nil || c != 1 {
		t.Fatalf("a refused join left the form: %d %v", c, err)
	}
	screenshot(t, ctx, "site-federation-refused")
	if err := join(token); err != nil {
		t.Fatal(err)
	}
	// The form's answer first (the site enrols meanwhile): a navigation
	// begun while the form's is pending would never see its page load.
	jctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err := chromedp.Do(jctx, chromedp.WaitVisible(chromedp.CSS("#federation-status")))
	cancel()
	if err != nil {
		screenshot(t, ctx, "site-federation-join-failed")
		t.Fatalf("the page after joining: %v", err)
	}
	testutil.WaitFor(t, 30*time.Second, "the site connected, on its page", func() error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Do(actx, chromedp.Navigate(base+"/federation"), chromedp.WaitVisible(chromedp.CSS("#federation-status"))); err != nil {
			return err
		}
		if c, err := count(ctx, `#federation-status[data-connected="true"]`); err != nil || c != 1 {
			var st map[string]any
			aerr := sa.Call("GET", "/api/v1/federation", nil, 200, &st)
			return fmt.Errorf("not connected yet (%v); the site's API says %v %v", err, st, aerr)
		}
		return nil
	})
	screenshot(t, ctx, "site-federation")
}
