// Package testutil holds the one retry helper Cairn's tests use instead of
// sleeping: WaitFor (for tests) and Eventually (for benchmarks and other non-test
// code). Both poll a condition with a short, growing interval until it holds or a
// deadline passes, and report the condition's last error. LogWriter sends the
// code under test's log to t.Log, and stops when the test is over.
//
// Anything under qa/ and any _test.go file may import testutil; production code
// must not.
package testutil
