package browser_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
)

// A user creates a bucket and uploads a file through the browser (the real
// file input, with the progress bar); the object lands in the cluster.
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
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nodes")),
		chromedp.Click(chromedp.CSS("#nav-buckets")),
		chromedp.WaitVisible(chromedp.CSS("#bucket-form")),
		chromedp.SendKeys(chromedp.CSS("#bucket-name"), "scans"),
		chromedp.SetValue(chromedp.CSS("#bucket-project"), pr.ID),
		chromedp.Click(chromedp.CSS("#bucket-submit")),
	); err != nil {
		screenshot(t, ctx, "buckets-failed")
		t.Fatalf("create a bucket: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "the bucket in the list", func() error {
		n, err := count(ctx, `#buckets tr.bucket[data-name="scans"]`)
		if err != nil || n != 1 {
			return fmt.Errorf("%d rows, %v", n, err)
		}
		return nil
	})
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/buckets/scans"),
		chromedp.WaitVisible(chromedp.CSS("#upload-file")),
		chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{file}),
		chromedp.Click(chromedp.CSS("#upload-submit")),
	); err != nil {
		t.Fatalf("upload: %v", err)
	}
	err := testutil.Eventually(60*time.Second, func() error {
		n, err := count(ctx, `tr.object[data-key="ct-scan.bin"]`)
		if err != nil || n != 1 {
			status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("upload-status")||{}).textContent||""`))
			return fmt.Errorf("%d rows, %v, upload status %q", n, err, status)
		}
		return nil
	})
	if err != nil {
		screenshot(t, ctx, "bucket-upload-failed")
		t.Fatalf("the uploaded object in the listing: %v", err)
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
}
