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
	files, err := filepath.Glob("testdata/*zh*.golden.html")
	if err != nil || len(files) < 10 {
		t.Fatalf("%d Chinese golden pages (%v)", len(files), err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		noEnglish(t, filepath.Base(f), string(b), data)
	}
}

var (
	// hiddenText is what a reader does not read as the page's words:
	// scripts, styles, code, titles and the tags themselves. Tooltips
	// (title="…") keep the technical term and the node's own words, in
	// English by design, and are not read.
	hiddenText = regexp.MustCompile(`(?s)<(script|style|code|pre|textarea|title)[^>]*>.*?</(script|style|code|pre|textarea|title)>`)
	// blockTag ends a run of words (a table cell, an option, a heading):
	// names in neighbouring cells are not a sentence.
	blockTag = regexp.MustCompile(`</?(td|th|tr|li|p|div|option|h[1-6]|dd|dt|label|button|select|section|table|ul|ol|nav|header|main|form)\b[^>]*>`)
	anyTag   = regexp.MustCompile(`<[^>]+>`)
	// englishRun: three words with space between them (a MAC or IPv6
	// address, "fe80::a8c:eeff:feaf", has hex letters between colons and
	// is data, not words).
	englishRun = regexp.MustCompile(`[A-Za-z][A-Za-z'’]+(?:[,;:]?\s+[A-Za-z][A-Za-z'’]+){2,}`)
	errorCodes = regexp.MustCompile(`\b(invalid_argument|already_exists|not_found|quota_exceeded|precondition_failed|unauthenticated|forbidden|conflict|unavailable)\b`)
)

// noEnglish fails t if a Chinese page shows a run of three English words
// or a raw error code, once the data strings are taken out.
func noEnglish(t *testing.T, name, page string, data map[string]string) {
	t.Helper()
	text := hiddenText.ReplaceAllString(page, " ")
	text = html.UnescapeString(anyTag.ReplaceAllString(blockTag.ReplaceAllString(text, " | "), " "))
	for d := range data {
		text = strings.ReplaceAll(text, d, " ")
	}
	for _, m := range englishRun.FindAllString(text, -1) {
		t.Errorf("%s shows English: %q", name, m)
	}
	for _, m := range errorCodes.FindAllString(text, -1) {
		t.Errorf("%s shows an error code: %q", name, m)
	}
}
