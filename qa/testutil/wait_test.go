package testutil

import (
	"errors"
	"testing"
	"time"
)

func TestEventuallySucceeds(t *testing.T) {
	calls := 0
	err := Eventually(5*time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Eventually: %v", err)
	}
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3", calls)
	}
}

func TestEventuallyReturnsLastError(t *testing.T) {
	errLast := errors.New("still down")
	calls := 0
	start := time.Now()
	err := Eventually(100*time.Millisecond, func() error {
		calls++
		return errLast
	})
	if !errors.Is(err, errLast) {
		t.Fatalf("Eventually error = %v, want it to wrap %v", err, errLast)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("Eventually took %s with a 100ms timeout", elapsed)
	}
	if calls < 2 {
		t.Fatalf("cond called %d times, want it retried", calls)
	}
}

func TestEventuallyCallsOnceWithZeroTimeout(t *testing.T) {
	calls := 0
	_ = Eventually(0, func() error { calls++; return errors.New("no") })
	if calls != 1 {
		t.Fatalf("cond called %d times, want 1", calls)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 5*time.Second, "counter to reach 2", func() error {
		n++
		if n < 2 {
			return errors.New("counter below 2")
		}
		return nil
	})
}
