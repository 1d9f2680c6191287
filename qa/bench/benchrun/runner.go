// Package benchrun is the harness.T of benchmark programs: a harness failure
// prints, runs every clean-up (killing nodes, deleting namespaces) and exits
// non-zero. Only qa/bench programs import it.
package benchrun

import (
	"log"
	"os"
	"sync"
)

// Runner is a benchmark program's harness.T.
type Runner struct {
	name    string
	verbose bool // show the harness's own log lines (node command lines, ...)

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// New returns the runner of a benchmark; verbose shows the harness's own log lines.
func New(name string, verbose bool) *Runner { return &Runner{name: name, verbose: verbose} }

// Helper is a no-op; it satisfies harness.T.
func (r *Runner) Helper() {}

// Name names the benchmark.
func (r *Runner) Name() string { return r.name }

// Logf prints harness messages with -v, and always once the run has failed, so
// the node logs the harness dumps on failure are seen.
func (r *Runner) Logf(format string, args ...any) {
	if r.verbose || r.Failed() {
		log.Printf(format, args...)
	}
}

// Fatalf prints, runs every clean-up and exits 1.
func (r *Runner) Fatalf(format string, args ...any) {
	log.Printf("fatal: "+format, args...)
	r.Fail()
	r.RunCleanups()
	os.Exit(1)
}

// Cleanup registers f to run at the end, last in first out.
func (r *Runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// TempDir registers the directory's removal at once, so clean-ups registered
// later (killing the nodes that use it) run first.
func (r *Runner) TempDir() string {
	dir, err := os.MkdirTemp("", "cairn-"+r.name+"-")
	if err == nil {
		// Traversable, not listable: VMs' QEMUs run as users of their
		// own and reach their disks and logs under the nodes' data
		// directories here.
		err = os.Chmod(dir, 0o711)
	}
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

// Failed reports whether the run has failed.
func (r *Runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Fail marks the run failed, so the harness keeps and shows the node logs.
func (r *Runner) Fail() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
}

// RunCleanups runs the registered clean-ups last-in first-out. Each is removed
// before it runs, so a Fatalf inside one (the harness reports clean-up errors
// that way) carries on with the rest instead of repeating it.
func (r *Runner) RunCleanups() {
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

// Progress prints one line of the benchmark's progress to stderr; stdout
// carries only the report.
func Progress(format string, args ...any) {
	log.Printf(format, args...)
}
