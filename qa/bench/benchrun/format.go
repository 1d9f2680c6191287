package benchrun

import (
	"fmt"
	"time"
)

// Millis formats d in milliseconds for a report: two decimals below 10 ms,
// one above.
func Millis(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	if v < 10 {
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

// Micros formats d in whole microseconds for a report.
func Micros(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// Ratio formats a/b as "1.23×", or "–" when b is zero.
func Ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}
