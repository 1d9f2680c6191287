package benchrun

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("odd count: %v, want 2", got)
	}
	if got := Median([]time.Duration{4, 1, 3, 2}); got != 2 { // (2+3)/2 in integer nanoseconds
		t.Errorf("even count: %v, want 2", got)
	}
	if got := Median([]float64{1, 2}); got != 1.5 {
		t.Errorf("even count: %v, want 1.5", got)
	}
	if got := Median[float64](nil); got != 0 {
		t.Errorf("none: %v, want 0", got)
	}
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 {
		t.Error("Median sorted its argument in place")
	}
}

func TestPercentile(t *testing.T) {
	s := &Sample{Elapsed: 2 * time.Second}
	for i := 100; i >= 1; i-- {
		s.Lat = append(s.Lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := s.Percentile(c.p); got != c.want {
			t.Errorf("p%v = %s, want %s", c.p, got, c.want)
		}
	}
	if got := s.Rate(); got != 50 {
		t.Errorf("rate = %v, want 50", got)
	}
	if got := (&Sample{}).Percentile(99); got != 0 {
		t.Errorf("p99 of nothing = %s, want 0", got)
	}
}

func TestClosedRun(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]bool{}
	s := Closed{Workers: 4, Round: time.Hour}.Run(context.Background(), func(_ context.Context, w, seq int) error {
		mu.Lock()
		defer mu.Unlock()
		if seen[seq] {
			t.Errorf("operation number %d given twice", seq)
		}
		seen[seq] = true
		switch {
		case seq >= 100:
			return ErrStop
		case seq%10 == 0:
			return errors.New("failed")
		}
		return nil
	})
	if s.Ops() != 90 || s.Errors != 10 || s.FirstErr == nil {
		t.Errorf("%d operations, %d errors (first %v), want 90 and 10", s.Ops(), s.Errors, s.FirstErr)
	}
}
