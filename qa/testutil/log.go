package testutil

import (
	"io"
	"strings"
	"sync"
	"testing"
)

// LogWriter returns a writer for a test's slog handler that sends each line
// to t.Log until the test is over. Goroutines of the code under test (gossip
// probes, QMP readers) may still log while they wind down, and t.Log after a
// test has completed panics. Create it before anything whose cleanup may
// log: the writer stops in a cleanup registered here, so it runs after
// theirs.
func LogWriter(t testing.TB) io.Writer {
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
