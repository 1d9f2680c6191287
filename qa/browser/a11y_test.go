package browser_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// axe-core, from the npm registry, checked against the registry's
// integrity hash and kept under qa/.cache: injected into the pages by the
// accessibility test only, never served by the appliance.
const (
	axeVersion   = "4.14.1"
	axeTarball   = "https://registry.npmjs.org/axe-core/-/axe-core-" + axeVersion + ".tgz"
	axeIntegrity = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)

// axeSource returns axe.min.js from the package, fetched once and kept
// under qa/.cache; the package's integrity is checked on every read.
func axeSource(t *testing.T) string {
	t.Helper()
	cache := filepath.Join("..", ".cache", "axe-core-"+axeVersion+".tgz")
	tgz, err := os.ReadFile(cache)
	if err != nil || !axeIntact(tgz) {
		for attempt := range 3 {
			if tgz, err = fetch(axeTarball); err == nil {
				break
			}
			t.Logf("fetch axe-core (attempt %d): %v", attempt+1, err)
			time.Sleep(2 * time.Second)
		}
		if err != nil {
			t.Fatalf("axe-core from the npm registry: %v", err)
		}
		if !axeIntact(tgz) {
			t.Fatalf("axe-core %s from %s does not match its integrity %s", axeVersion, axeTarball, axeIntegrity)
		}
		if err := os.MkdirAll(filepath.Dir(cache), 0o755); err == nil {
			tmp := cache + ".tmp"
			if os.WriteFile(tmp, tgz, 0o644) == nil {
				_ = os.Rename(tmp, cache)
			}
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("axe.min.js not in the package: %v", err)
		}
		if h.Name == "package/axe.min.js" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

func axeIntact(tgz []byte) bool {
	sum := sha512.Sum512(tgz)
	return "sha512-"+base64.StdEncoding.EncodeToString(sum[:]) == axeIntegrity
}

func fetch(url string) ([]byte, error) {
	c := &http.Client{Timeout: time.Minute}
	res, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, res.Status)
	}
	return io.ReadAll(res.Body)
}

// a11yPages runs axe-core's WCAG 2 A and AA rules on each page (paths on
// base) and fails on every violation, naming the rule and the elements.
func a11yPages(t *testing.T, ctx context.Context, base string, paths []string) {
	t.Helper()
	axe := axeSource(t)
	for _, path := range paths {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+path), chromedp.WaitReady(chromedp.CSS("#content"))); err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](axe+";true")); err != nil {
			t.Fatalf("inject axe-core into %s: %v", path, err)
		}
		found, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}).then(r =>
			r.violations.map(v => v.id + " (" + v.impact + "): " + v.help + " — " + v.nodes.slice(0, 4).map(n => n.target.join(" ")).join("; ")))`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("axe-core on %s: %v", path, err)
		}
		for _, v := range found {
			t.Errorf("%s: %s", path, v)
		}
	}
}
