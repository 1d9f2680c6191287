package main

import (
	"log"
	"os"
	"sync"
)

// runner is the harness.T of this program. A harness failure ends the run: the
// message is printed, clean-ups run (killing every node and deleting every
// namespace) and the program exits non-zero.
type runner struct {
	name    string
	verbose bool // show the harness's own log lines (node command lines, ...)

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

func (r *runner) Helper()      {}
func (r *runner) Name() string { return r.name }

// Logf prints harness messages with -v, and always once the run has failed, so
// the node logs the harness dumps on failure are seen.
func (r *runner) Logf(format string, args ...any) {
	if r.verbose || r.Failed() {
		log.Printf(format, args...)
	}
}

func (r *runner) Fatalf(format string, args ...any) {
	log.Printf("fatal: "+format, args...)
	r.fail()
	r.runCleanups()
	os.Exit(1)
}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// TempDir registers the directory's removal at once, so clean-ups registered
// later (killing the nodes that use it) run first.
func (r *runner) TempDir() string {
	dir, err := os.MkdirTemp("", "cairn-bench-storage-")
	if err != nil {
		r.Fatalf("temp dir: %v", err)
	}
	r.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			log.Printf("remove %s: %v", dir, err)
		}
	})
	return dir
}

func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *runner) fail() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
}

// runCleanups runs the registered clean-ups last-in first-out. Each is removed
// before it runs, so a Fatalf inside one (the harness reports clean-up errors
// that way) carries on with the rest instead of repeating it.
func (r *runner) runCleanups() {
	for {
		r.mu.Lock()
		if len(r.cleanups) == 0 {
			r.mu.Unlock()
			return
		}
		f := r.cleanups[len(r.cleanups)-1]
		r.cleanups = r.cleanups[:len(r.cleanups)-1]
		r.mu.Unlock()
		f()
	}
}

// progress prints one line of the benchmark's progress to stderr; stdout
// carries only the report.
func progress(format string, args ...any) {
	log.Printf(format, args...)
}
