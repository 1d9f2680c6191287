//go:build linux

package initd

import (
	"os/exec"
	"testing"
)

// A command run by output gets its own exit status while the reaper
// collects every child it can (here, as for PID 1): it used to take the
// command's exit first now and then (ECHILD).
func TestOutputKeepsItsExitFromTheReaper(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	go reap(done)
	for i := range 200 {
		if _, err := output(exec.Command("true")); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if _, err := output(exec.Command("false")); err == nil {
			t.Fatalf("run %d: false succeeded", i)
		}
	}
}
