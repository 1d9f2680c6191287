package ui

import (
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Chinese pages (every zh golden page, kept current by
// TestGoldenPages) say all of their own words in Chinese: no run of three
// English words and no raw error code in what the reader sees. Names,
// addresses and code samples are data, and so is what the cluster's users
// wrote or other software said; the few such strings in the pages'
// fixtures are listed here, each with its reason.
func TestNoEnglishOnChinesePages(t *testing.T) {
	data := map[string]string{
		"web stays: it is paused":                         "a drain recorded before drains had keys",
		"the guest shut itself down":                      "a history line written before lines had keys",
		"QEMU guest agent":                                "a product's name",
		"copy of snapshot before-upgrade of volume scans": "the fixture's origin text, made in English",
	}
	hidden := regexp.MustCompile(`(?s)<(script|style|code|pre|textarea|title)[^>]*>.*?</(script|style|code|pre|textarea|title)>|<[^>]+>`)
	english := regexp.MustCompile(`[A-Za-z][A-Za-z'’]+(?:[ ,;:]+[A-Za-z][A-Za-z'’]+){2,}`)
	codes := regexp.MustCompile(`\b(invalid_argument|already_exists|not_found|quota_exceeded|precondition_failed|unauthenticated|forbidden|conflict|unavailable)\b`)
	files, err := filepath.Glob("testdata/*zh*.golden.html")
	if err != nil || len(files) < 10 {
		t.Fatalf("%d Chinese golden pages (%v)", len(files), err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := html.UnescapeString(hidden.ReplaceAllString(string(b), " "))
		for d := range data {
			text = strings.ReplaceAll(text, d, " ")
		}
		for _, m := range english.FindAllString(text, -1) {
			t.Errorf("%s shows English: %q", filepath.Base(f), m)
		}
		for _, m := range codes.FindAllString(text, -1) {
			t.Errorf("%s shows an error code: %q", filepath.Base(f), m)
		}
	}
}
