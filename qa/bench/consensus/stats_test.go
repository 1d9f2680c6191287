package main

import (
	"testing"
	"time"
)

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
