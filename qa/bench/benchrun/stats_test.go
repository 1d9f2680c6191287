package benchrun

import (
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
