// Package browser drives the real web UI of a real three-node Cairn cluster
// with Debian's chromium through chromedp. The tests are in _test.go files;
// screenshots are saved under qa/artifacts/browser/.
package browser
