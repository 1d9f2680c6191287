package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	s := &sample{elapsed: 2 * time.Second}
	for i := 100; i >= 1; i-- {
		s.lat = append(s.lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := s.percentile(c.p); got != c.want {
			t.Errorf("p%v = %s, want %s", c.p, got, c.want)
		}
	}
	if got := s.rate(); got != 50 {
		t.Errorf("rate = %v, want 50", got)
	}
	if got := (&sample{}).percentile(99); got != 0 {
		t.Errorf("p99 of nothing = %s, want 0", got)
	}
}

func TestFailoverStats(t *testing.T) {
	fs := []failover{{took: 3 * time.Second}, {took: time.Second}, {took: 2 * time.Second}, {took: 4 * time.Second}}
	med, worst := failoverStats(fs)
	if med != 2500*time.Millisecond || worst != 4*time.Second {
		t.Errorf("median %s worst %s, want 2.5s 4s", med, worst)
	}
	med, worst = failoverStats(fs[:3])
	if med != 2*time.Second || worst != 3*time.Second {
		t.Errorf("median %s worst %s, want 2s 3s", med, worst)
	}
}
