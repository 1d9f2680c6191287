package ui

import (
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
)

// The charts: a young history fills the width from its start; a gap (the
// VM off) breaks the line; values sit on the scale, the busiest at the top.
func TestUsageCharts(t *testing.T) {
	v := goldenView(langEN, false, "vms")
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	h := &hypervisor.UsageHistory{Span: hypervisor.SpanHour, StepSeconds: 10, VCPUs: 2, RAMMiB: 1024}
	for _, ago := range []int{600, 590, 580, 200, 190, 0} { // seconds ago; gaps after 580 and 190
		h.Points = append(h.Points, hypervisor.UsagePoint{At: now.Add(-time.Duration(ago) * time.Second), CPU: 50, Memory: 512 << 20,
			DiskRead: 1 << 20, NetIn: float64(ago)})
	}
	charts := usageCharts(v, h, now)
	if len(charts) != 4 {
		t.Fatalf("%d charts", len(charts))
	}
	cpu := charts[0]
	if cpu.From != "10 min ago" || cpu.Top != "100 %" || cpu.Now != "now 50 %" || len(cpu.Lines[0].Runs) != 3 {
		t.Fatalf("cpu chart %+v", cpu)
	}
	// 610 s wide: the first point at x = 600*10/610, half way up.
	if first := strings.Fields(cpu.Lines[0].Runs[0])[0]; first != "9.8,60.0" {
		t.Fatalf("first point at %s", first)
	}
	// A point alone is still drawn: a dot.
	if last := cpu.Lines[0].Runs[2]; last != "600.0,60.0 600.0,60.0" {
		t.Fatalf("last run %q", last)
	}
	if mem := charts[1]; mem.Top != "1.00 GiB" || mem.Now != "now 512 MiB" {
		t.Fatalf("memory chart %+v", mem)
	}
	// The network scale fits its busiest point (600 B/s: 1 KiB at least 8).
	if net := charts[3]; net.Top != "8.00 KiB/s" || !strings.Contains(net.Now, "in 0 B/s") {
		t.Fatalf("network chart %+v", net)
	}
	// No points: said, not drawn.
	if c := usageCharts(v, &hypervisor.UsageHistory{Span: hypervisor.SpanDay, StepSeconds: 300}, now); !c[0].Empty || len(c[0].Lines[0].Runs) != 0 || c[0].From != "24 hours ago" {
		t.Fatalf("empty history %+v", c[0])
	}
}
