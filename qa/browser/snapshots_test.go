package browser_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
)

// snapshotsInBrowser is TestVolumesInBrowser's second half: on the page
// of data volume "scans" (attached to a VM) the user takes a snapshot,
// makes volume "scans-restored" from it on the volumes page, clones
// "scans" as "scans-copy", and deletes the snapshot; each page says what
// the new volumes were made from.
func snapshotsInBrowser(t *testing.T, ctx context.Context, api *cairntest.Client, base string) {
	t.Helper()
	const snap = "scans-before-upgrade"
	row := `#snapshot-list tr.snapshot[data-name="` + snap + `"]`
	scansPage := func() {
		t.Helper()
		if err := chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS("#nav-volumes")),
			chromedp.WaitVisible(chromedp.CSS(`#volumes tr.volume[data-name="scans"] a`)),
			chromedp.Click(chromedp.CSS(`#volumes tr.volume[data-name="scans"] a`)),
			chromedp.WaitVisible(chromedp.CSS("#volume-snapshot-form")),
		); err != nil {
			screenshot(t, ctx, "snapshots-volume-page-failed")
			t.Fatalf("open the page of volume scans: %v", err)
		}
	}

	// Take the snapshot. The page says a running VM's guest is frozen
	// for a moment; this VM has not run, so it is not.
	scansPage()
	if hint, _ := textOf(ctx, "#volume-snapshot-freeze"); !strings.Contains(hint, "frozen for a moment") {
		t.Errorf("the snapshot form does not say the guest is frozen: %q", hint)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#volume-snapshot-name"), snap)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "snapshots-form")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#volume-snapshot")),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-state="available"]`)),
	); err != nil {
		screenshot(t, ctx, "snapshots-take-failed")
		t.Fatalf("take the snapshot: %v", err)
	}
	text, _ := textOf(ctx, row)
	for _, want := range []string{"scans", "1 GiB", "Ready", "no: as after a sudden power cut"} {
		if !strings.Contains(text, want) {
			t.Errorf("the snapshot's row does not say %q: %q", want, text)
		}
	}
	if flash, _ := textOf(ctx, "#flash"); !strings.Contains(flash, "Snapshot "+snap+" was taken") {
		t.Errorf("message after the snapshot: %q", flash)
	}
	screenshot(t, ctx, "snapshots-taken")
	var snaps []struct {
		Name, State, Of string
	}
	if err := api.Call("GET", "/api/v1/snapshots", nil, 200, &snaps); err != nil || len(snaps) != 1 || snaps[0].Name != snap || snaps[0].State != "available" {
		t.Fatalf("snapshots in the API: %+v %v", snaps, err)
	}

	// A new volume from it, on the volumes page.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(row+" details.snapshot-new summary")),
		chromedp.WaitVisible(chromedp.CSS(row+" .snapshot-volume-name")),
		chromedp.SendKeys(chromedp.CSS(row+" .snapshot-volume-name"), "scans-restored"),
	); err != nil {
		screenshot(t, ctx, "snapshots-restore-failed")
		t.Fatalf("open the snapshot's new-volume form: %v", err)
	}
	screenshot(t, ctx, "snapshots-restore-form")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(row+" .snapshot-volume-create")),
		chromedp.WaitVisible(chromedp.CSS("#volume-origin")),
	); err != nil {
		screenshot(t, ctx, "snapshots-restore-failed")
		t.Fatalf("make a volume from the snapshot: %v", err)
	}
	if origin, _ := textOf(ctx, "#volume-origin"); origin != "copy of snapshot "+snap+" of volume scans" {
		t.Errorf("the restored volume's origin: %q", origin)
	}
	waitText(t, ctx, "#volume-redundancy", "3 copies, all up to date")
	screenshot(t, ctx, "snapshots-restored")

	// A clone of scans, on its page.
	scansPage()
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#volume-clone-name"), "scans-copy"),
		chromedp.Click(chromedp.CSS("#volume-clone")),
		chromedp.WaitVisible(chromedp.CSS("#volume-origin")),
	); err != nil {
		screenshot(t, ctx, "snapshots-clone-failed")
		t.Fatalf("clone volume scans: %v", err)
	}
	if origin, _ := textOf(ctx, "#volume-origin"); !strings.HasPrefix(origin, "copy of volume scans as it was at ") {
		t.Errorf("the clone's origin: %q", origin)
	}
	screenshot(t, ctx, "snapshots-clone")

	// Delete the snapshot, confirming; the volume made from it stays.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-volumes")),
		chromedp.WaitVisible(chromedp.CSS(row+" .snapshot-delete")),
	); err != nil {
		t.Fatal(err)
	}
	confirmed, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`window.confirmed = "", window.confirm = m => (window.confirmed = m, true), ""`))
	if err != nil {
		t.Fatal(err, confirmed)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(row+" .snapshot-delete")),
		chromedp.WaitVisible(chromedp.CSS("#snapshots-empty")),
	); err != nil {
		screenshot(t, ctx, "snapshots-delete-failed")
		t.Fatalf("delete the snapshot: %v", err)
	}
	if asked, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`window.confirmed || ""`)); !strings.Contains(asked, "Delete snapshot "+snap+"?") ||
		!strings.Contains(asked, "keep their data") {
		t.Errorf("the confirmation asked %q", asked)
	}
	waitText(t, ctx, `#volumes tr.volume[data-name="scans-restored"]`, "copy of volume scans as it was at")
	screenshot(t, ctx, "snapshots-deleted")
}

// waitText waits until the element sel's text contains want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	testutil.WaitFor(t, 15*time.Second, fmt.Sprintf("%s to say %q", sel, want), func() error {
		got, err := textOf(ctx, sel)
		if err != nil || !strings.Contains(got, want) {
			return fmt.Errorf("%q %v", got, err)
		}
		return nil
	})
}
