package testutil

import (
	"fmt"
	"testing"
	"time"
)

const (
	firstInterval = 20 * time.Millisecond
	maxInterval   = 250 * time.Millisecond
)

// WaitFor polls cond until it returns nil, and fails t with what and cond's last
// error if that has not happened within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Eventually(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Eventually polls cond until it returns nil and returns nil, or returns cond's
// last error (wrapped, so errors.Is and errors.As see it) once timeout has passed.
// cond is always called at least once.
func Eventually(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	for {
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		time.Sleep(min(interval, left))
		interval = min(interval*3/2, maxInterval)
	}
}
