package identity

import (
	"fmt"
	"testing"
	"time"
)

// The limiter's table never grows past its size, however many keys an
// attacker makes up, and a running backoff outlives the spray.
func TestLoginLimiterIsBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LoginTableSize = 100
	l := newLoginLimiter(cfg)
	now := time.Unix(1_000_000, 0)
	target := loginKeys("192.0.2.1:1", "admin")
	for range cfg.LoginFreeFailures + 1 {
		l.fail(now, target)
	}
	for i := range 10_000 {
		now = now.Add(time.Microsecond)
		l.fail(now, []string{fmt.Sprintf("user spray-%d", i)})
		if len(l.entries) > cfg.LoginTableSize {
			t.Fatalf("%d entries after %d made-up keys, want at most %d", len(l.entries), i+1, cfg.LoginTableSize)
		}
	}
	if l.wait(now, target) <= 0 {
		t.Fatal("the spray lifted the backoff of the attacked user")
	}
}

// The negative cache stays bounded too.
func TestNegCacheIsBounded(t *testing.T) {
	c := newNegCache(time.Minute, 50)
	now := time.Unix(1_000_000, 0)
	for i := range 1000 {
		c.add(now, fmt.Sprint(i))
		if len(c.m) > 50 {
			t.Fatalf("%d entries, want at most 50", len(c.m))
		}
	}
	c.add(now, "x")
	if !c.has(now, "x") || c.has(now.Add(2*time.Minute), "x") {
		t.Fatal("an entry is not kept for its TTL, or kept past it")
	}
}

func TestSourceOf(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5555":            "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:80":     "192.0.2.7",
		"not-an-address":            "not-an-address",
	} {
		if got := sourceOf(in); got != want {
			t.Errorf("sourceOf(%q) = %q, want %q", in, got, want)
		}
	}
}
