package ui

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
)

// Usage graphs on a VM's page: drawn here, as SVG, from the samples of
// the VM's node (hypervisor.UsageReader). No script and no outside
// service: a page saved or printed shows them too.

// chart is one graph: a few lines over the span, on one scale.
type chart struct {
	ID    string
	Title string
	Now   string // the latest values, in words
	Top   string // the value at the top of the scale
	From  string // the left edge: how long ago
	Lines []chartLine
	Empty bool
}

// chartLine is one series: the polylines of its unbroken runs (a gap
// where the node took no sample, such as while the VM was off).
type chartLine struct {
	Class string // the stroke: line-a or line-b
	Label string
	Runs  []string // SVG points, "x,y x,y …"
}

// The charts' drawing area (the SVG's viewBox); the page stretches it.
const chartW, chartH = 600.0, 120.0

type usageData struct {
	VMID   string
	Span   string
	Charts []chart
	Err    string
}

// usageData builds a VM's charts over span.
func (s *server) usageData(v *view, r *http.Request, vmID, span string) usageData {
	d := usageData{VMID: vmID, Span: span}
	if s.usage == nil {
		d.Err = v.T("usage.unavailable")
		return d
	}
	h, err := s.usage.Usage(r.Context(), v.p, vmID, span)
	if err != nil {
		s.logErr(r, err)
		d.Err = errorText(v.tr, err)
		return d
	}
	d.Charts = usageCharts(v, h, time.Now())
	return d
}

func usageCharts(v *view, h *hypervisor.UsageHistory, now time.Time) []chart {
	length := time.Hour
	if h.Span == hypervisor.SpanDay {
		length = 24 * time.Hour
	}
	step := time.Duration(h.StepSeconds) * time.Second
	pts := h.Points
	// A history younger than the span fills the width from its start (a
	// VM started a minute ago shows that minute, not a sliver at the
	// right), and the left edge says how long ago that was.
	minLength := 5 * time.Minute
	if h.Span == hypervisor.SpanDay {
		minLength = time.Hour
	}
	if len(pts) > 0 {
		length = min(length, max(minLength, now.Sub(pts[0].At)+step))
	}
	from := now.Add(-length)
	ago := v.Tf("usage.ago_minutes", int(length.Round(time.Minute)/time.Minute))
	if length >= 2*time.Hour {
		ago = v.Tf("usage.ago_hours", int(length.Round(time.Hour)/time.Hour))
	}
	val := func(f func(hypervisor.UsagePoint) float64) []float64 {
		out := make([]float64, len(pts))
		for i, p := range pts {
			out[i] = f(p)
		}
		return out
	}
	line := func(class, label string, ys []float64, top float64) chartLine {
		l := chartLine{Class: class, Label: label}
		var run []string
		for i, p := range pts {
			if i > 0 && p.At.Sub(pts[i-1].At) > 5*step/2 && len(run) > 0 {
				l.Runs = append(l.Runs, strings.Join(run, " "))
				run = nil
			}
			x := chartW * float64(p.At.Sub(from)) / float64(length)
			y := chartH * (1 - min(ys[i], top)/top)
			run = append(run, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		if len(run) == 1 {
			run = append(run, run[0]) // one point: still a dot
		}
		if len(run) > 0 {
			l.Runs = append(l.Runs, strings.Join(run, " "))
		}
		return l
	}
	last := func(ys []float64) float64 {
		if len(ys) == 0 {
			return 0
		}
		return ys[len(ys)-1]
	}
	peak := func(ys ...[]float64) float64 {
		m := 0.0
		for _, s := range ys {
			for _, y := range s {
				m = max(m, y)
			}
		}
		return m
	}
	empty := len(pts) == 0

	cpu := val(func(p hypervisor.UsagePoint) float64 { return p.CPU })
	cpuTop := max(100, niceCeil(peak(cpu)))
	mem := val(func(p hypervisor.UsagePoint) float64 { return float64(p.Memory) })
	memTop := niceBytes(max(float64(h.RAMMiB)*(1<<20), peak(mem)))
	rd := val(func(p hypervisor.UsagePoint) float64 { return p.DiskRead })
	wr := val(func(p hypervisor.UsagePoint) float64 { return p.DiskWrite })
	diskTop := niceBytes(max(64<<10, peak(rd, wr)))
	in := val(func(p hypervisor.UsagePoint) float64 { return p.NetIn })
	out := val(func(p hypervisor.UsagePoint) float64 { return p.NetOut })
	netTop := niceBytes(max(8<<10, peak(in, out)))

	return []chart{
		{ID: "usage-cpu", Title: v.Tf("usage.cpu", h.VCPUs), Empty: empty,
			Now: v.Tf("usage.now_percent", math.Round(last(cpu))), Top: fmt.Sprintf("%.0f %%", cpuTop), From: ago,
			Lines: []chartLine{line("line-a", v.T("usage.cpu_line"), cpu, cpuTop)}},
		{ID: "usage-memory", Title: v.Tf("usage.memory", sizeText(h.RAMMiB<<20)), Empty: empty,
			Now: v.Tf("usage.now", sizeText(int64(last(mem)))), Top: sizeText(int64(memTop)), From: ago,
			Lines: []chartLine{line("line-a", v.T("usage.memory_line"), mem, memTop)}},
		{ID: "usage-disk", Title: v.T("usage.disk"), Empty: empty,
			Now: v.Tf("usage.now_two", v.T("usage.read"), rateText(last(rd)), v.T("usage.write"), rateText(last(wr))), Top: rateText(diskTop), From: ago,
			Lines: []chartLine{line("line-a", v.T("usage.read"), rd, diskTop), line("line-b", v.T("usage.write"), wr, diskTop)}},
		{ID: "usage-network", Title: v.T("usage.network"), Empty: empty,
			Now: v.Tf("usage.now_two", v.T("usage.in"), rateText(last(in)), v.T("usage.out"), rateText(last(out))), Top: rateText(netTop), From: ago,
			Lines: []chartLine{line("line-a", v.T("usage.in"), in, netTop), line("line-b", v.T("usage.out"), out, netTop)}},
	}
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// niceBytes rounds up to a power of two: scales read in whole KiB, MiB, GiB.
func niceBytes(x float64) float64 {
	if x <= 1 {
		return 1
	}
	return math.Pow(2, math.Ceil(math.Log2(x)))
}

// rateText shows bytes per second.
func rateText(bps float64) string { return sizeText(int64(bps)) + "/s" }

// vmUsage is the graphs' own refresh, and the span switch.
func (s *server) vmUsage(w http.ResponseWriter, r *http.Request, v *view) {
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	s.render(w, r, http.StatusOK, vmUsagePanel(v, s.usageData(v, r, r.PathValue("vm"), usageSpan(r))))
}

// usageSpan is the span the page asks for: the last hour unless the day.
func usageSpan(r *http.Request) string {
	if r.URL.Query().Get("usage") == hypervisor.SpanDay {
		return hypervisor.SpanDay
	}
	return hypervisor.SpanHour
}
