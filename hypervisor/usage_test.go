package hypervisor

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
)

func TestUsageSeriesRatesAndMeans(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var s usageSeries
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * UsageStep) }
	// Two vCPUs, one of them busy; 1 MiB/s read, 512 KiB/s written, 100
	// B/s each way on the network; memory growing by a MiB a step.
	for i := range 61 {
		s.add(usageSample{Counters: qemu.Counters{At: at(i), PID: 7, CPU: time.Duration(i) * UsageStep,
			Memory: int64(100+i) << 20, DiskRead: int64(i) * 10 << 20, DiskWritten: int64(i) * 5 << 20},
			NetIn: int64(i) * 1000, NetOut: int64(i) * 1000, VCPUs: 2})
	}
	hour := s.points(SpanHour, at(60))
	if len(hour) != 60 {
		t.Fatalf("%d points for 61 samples, want 60 (the first only sets the counters)", len(hour))
	}
	p := hour[len(hour)-1]
	if p.CPU != 50 || p.DiskRead != 1<<20 || p.DiskWrite != 512<<10 || p.NetIn != 100 || p.NetOut != 100 || p.Memory != 160<<20 || !p.At.Equal(at(60)) {
		t.Fatalf("last point %+v", p)
	}
	// Day: five-minute means, the one in progress last.
	day := s.points(SpanDay, at(60))
	if len(day) != 3 { // 10:00-10:05, 10:05-10:10, and 10:10 itself
		t.Fatalf("day points %+v", day)
	}
	if want := float64(100+(1+29)/2) * (1 << 20); math.Abs(float64(day[0].Memory)-want) > 1<<20 || day[0].CPU != 50 || !day[0].At.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("first five minutes %+v, want memory about %.0f", day[0], want)
	}

	// A new QEMU (say, after a restart) starts its counters again: no
	// point comes from the old one's; the next reading makes one.
	s.add(usageSample{Counters: qemu.Counters{At: at(61), PID: 8, CPU: time.Second, Memory: 50 << 20}, VCPUs: 2})
	if n := len(s.points(SpanHour, at(61))); n != 60 {
		t.Fatalf("a restart made a point: %d", n)
	}
	// A tap made again counts from zero: no negative rate.
	s.add(usageSample{Counters: qemu.Counters{At: at(62), PID: 8, CPU: 6 * time.Second, Memory: 50 << 20}, VCPUs: 2, NetIn: -1})
	if p := s.points(SpanHour, at(62)); p[len(p)-1].NetIn != 0 || p[len(p)-1].CPU != 25 {
		t.Fatalf("after the restart %+v", p[len(p)-1])
	}

	// An hour keeps an hour: old points age out, and the ring holds no more.
	for i := 63; i < 63+400; i++ {
		s.add(usageSample{Counters: qemu.Counters{At: at(i), PID: 8, CPU: time.Duration(i) * time.Second}, VCPUs: 2})
	}
	if n := len(s.points(SpanHour, at(462))); n != usageHourPoints || len(s.hour) != usageHourPoints {
		t.Fatalf("hour: %d points shown, %d kept; want %d", n, len(s.hour), usageHourPoints)
	}
	if n := len(s.points(SpanHour, at(462).Add(2*time.Hour))); n != 0 {
		t.Fatalf("two hours later the hour still shows %d points", n)
	}
}

// The tap counters come from this process's network namespace, where
// loopback always is; the header lines are no interfaces.
func TestNetDevCounters(t *testing.T) {
	c := netDevCounters()
	if _, ok := c["lo"]; !ok || len(c) == 0 {
		t.Fatalf("no lo in %v", c)
	}
	for name := range c {
		if strings.ContainsAny(name, "| ") {
			t.Fatalf("a header line read as interface %q", name)
		}
	}
}

// A tap not read makes no network spike: the steps on either side of the
// reading without it say no traffic, and the CPU still counts.
func TestUsageTapNotRead(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var s usageSeries
	add := func(i int, net int64, unknown bool) {
		s.add(usageSample{Counters: qemu.Counters{At: t0.Add(time.Duration(i) * UsageStep), PID: 1, CPU: time.Duration(i) * UsageStep}, VCPUs: 1,
			NetIn: net, NetOut: net, NetUnknown: unknown})
	}
	add(0, 1000, false)
	add(1, 0, true) // the tap was not read
	add(2, 1_000_000_000, false)
	add(3, 1_000_001_000, false)
	pts := s.points(SpanHour, t0.Add(3*UsageStep))
	if len(pts) != 3 || pts[0].NetIn != 0 || pts[1].NetIn != 0 || pts[2].NetIn != 100 || pts[1].CPU != 100 {
		t.Fatalf("points %+v", pts)
	}
}
