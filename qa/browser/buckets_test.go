package browser_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
)

// A user creates a bucket and uploads a file through the browser (the real
// file input, with the progress bar); the object lands in the cluster. Then
// S3 keys from the page, used by real clients (s3KeysInBrowser).
func TestBucketBrowserUpload(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"}})
	api := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, api, 3, 0)
	cairntest.WaitHealthyDisks(t, api, 6, 0)
	var pr cairntest.Project
	if err := api.Call("POST", "/api/v1/projects", map[string]string{"name": "imaging"}, 201, &pr); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ct-scan.bin")
	data := make([]byte, 3<<20+5)
	_, _ = rand.Read(data)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	base := "https://" + c.Node(2).IP + ":8443"
	ctx := newBrowser(t, c)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nodes")),
		chromedp.Click(chromedp.CSS("#nav-buckets")),
		chromedp.WaitVisible(chromedp.CSS("#bucket-form")),
	); err != nil {
		t.Fatalf("the buckets page: %v", err)
	}
	// A name the browser itself refuses: its bubble says the field's rule
	// in the page's words, not "Please match the requested format"; typing
	// anew lets the browser judge again.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#bucket-name"), "Scans_2026")); err != nil {
		t.Fatal(err)
	}
	said, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
		const el = document.getElementById("bucket-name");
		const valid = el.form.reportValidity();
		return [String(valid), el.validationMessage, el.dataset.rule];
	})()`))
	if err != nil || said[0] != "false" || said[1] != said[2] || !strings.HasPrefix(said[1], "A bucket name is 3–63 lowercase letters") {
		t.Fatalf("the browser says %q for a bad bucket name (%v)", said, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("bucket-name").value = ""`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#bucket-name"), "scans"),
		chromedp.SetValue(chromedp.CSS("#bucket-project"), pr.ID),
		chromedp.Click(chromedp.CSS("#bucket-submit")),
	); err != nil {
		screenshot(t, ctx, "buckets-failed")
		t.Fatalf("create a bucket: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "the new bucket's page, then the bucket in the list", func() error {
		at, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname`))
		if err != nil || at != "/buckets/scans" {
			return fmt.Errorf("at %q, %v", at, err)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/buckets"), chromedp.WaitVisible(chromedp.CSS("#buckets"))); err != nil {
			return err
		}
		n, err := count(ctx, `#buckets tr.bucket[data-name="scans"]`)
		if err != nil || n != 1 {
			return fmt.Errorf("%d rows, %v", n, err)
		}
		return nil
	})
	// Upload through the real file input. The bucket form above was an htmx
	// request; wait until none is in flight so no late navigation aborts the
	// upload. If the page itself reports the upload failed, try once more
	// (logged); a second failure fails the test.
	upload := func() error {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/buckets/scans"),
			chromedp.WaitVisible(chromedp.CSS("#upload-file")),
		); err != nil {
			return err
		}
		if err := testutil.Eventually(10*time.Second, func() error {
			busy, err := count(ctx, ".htmx-request")
			if err != nil || busy != 0 {
				return fmt.Errorf("%d htmx requests in flight, %v", busy, err)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{file})); err != nil {
			return err
		}
		// The picker names the file in the page's words, not the browser's.
		if name, _ := textOf(ctx, ".filepick-name"); name != "ct-scan.bin" {
			return fmt.Errorf("the file picker says %q", name)
		}
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#upload-submit"))); err != nil {
			return err
		}
		return testutil.Eventually(60*time.Second, func() error {
			n, err := count(ctx, `tr.object[data-key="ct-scan.bin"]`)
			if err == nil && n == 1 {
				return nil
			}
			status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("upload-status")||{}).textContent||""`))
			if status != "" && !strings.Contains(status, "…") {
				return fmt.Errorf("the page reports: %q", status)
			}
			return fmt.Errorf("%d rows, %v", n, err)
		})
	}
	if err := upload(); err != nil {
		t.Logf("first upload attempt: %v; trying once more", err)
		if err := upload(); err != nil {
			screenshot(t, ctx, "bucket-upload-failed")
			t.Fatalf("upload through the browser: %v", err)
		}
	}
	screenshot(t, ctx, "bucket")

	// The object is in the cluster, as another node's API sees it.
	var bs []struct {
		Name    string `json:"name"`
		Objects int64  `json:"objects"`
		Bytes   int64  `json:"bytes"`
	}
	if err := api.On(c.Node(3)).Call("GET", "/api/v1/buckets?consistent=true", nil, 200, &bs); err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Objects != 1 || bs[0].Bytes != int64(len(data)) {
		t.Fatalf("bucket after the upload: %+v", bs)
	}

	s3KeysInBrowser(t, ctx, base, pr.ID, "scans", "ct-scan.bin", data)
}
