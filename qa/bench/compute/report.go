package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// overheadTarget is the limit on Cairn's boot time over bare QEMU.
const overheadTarget = 300 * time.Millisecond

type report struct {
	cfg          config
	started      time.Time
	took         time.Duration
	accel, qemu  string
	cache        string // QEMU's disk cache mode on this file system
	guestSize    int64
	cairnFirst   cairnRun
	bareFirst    bareRun
	cairn        []cairnRun
	bare         []bareRun
	bootFailures []string
	argvDiff     []string
	burst        *burstResult
}

// of collects one figure over the runs.
func of[R any](rs []R, f func(R) time.Duration) []time.Duration {
	var out []time.Duration
	for _, r := range rs {
		out = append(out, f(r))
	}
	return out
}

// p90 is the nearest-rank 90th percentile.
func p90(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[int(math.Ceil(0.9*float64(len(s))))-1]
}

func (r *report) overhead() (first, hello time.Duration) {
	return benchrun.Median(of(r.cairn, func(c cairnRun) time.Duration { return c.m.first })) - benchrun.Median(of(r.bare, func(b bareRun) time.Duration { return b.m.first })),
		benchrun.Median(of(r.cairn, func(c cairnRun) time.Duration { return c.m.hello })) - benchrun.Median(of(r.bare, func(b bareRun) time.Duration { return b.m.hello }))
}

// unmeasured is an error when a target could not be measured.
func (r *report) unmeasured() error {
	var errs []error
	if len(r.cairn) == 0 || len(r.bare) == 0 {
		errs = append(errs, fmt.Errorf("no successful boot: %d Cairn, %d bare", len(r.cairn), len(r.bare)))
	}
	if r.cfg.burst > 0 && r.burst == nil {
		errs = append(errs, errors.New("burst not run"))
	}
	return errors.Join(errs...)
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	host, _ := os.Hostname()
	p("# Cairn compute benchmark")
	p("")
	p("%s on %s: %d CPUs, %s, Go %s, QEMU %s, accel %s; took %s.", r.started.UTC().Format(time.RFC3339), host, runtime.NumCPU(), benchrun.MemTotal(), runtime.Version(), r.qemu, r.accel, r.took.Round(time.Second))
	p("One `cairn agent` in a network namespace with 2 directory disks. Guest: image-build/out/guest.qcow2 (%.1f MiB; Debian's kernel and a Go init that prints `%s...` after DHCP), flavor %d vCPU, %d MiB, %d GiB.",
		float64(r.guestSize)/(1<<20), helloMarker, bootVCPUs, bootRAMMiB, bootDiskGiB)
	p("Bare QEMU: Cairn's own command line for that VM (package hypervisor/qemu, as the node's worker builds it; disk cache=%s on both) on a fresh qcow2 overlay and cloud-init seed, with QEMU's user network (`-netdev user`) where Cairn has a tap on its bridge; launched daemonized as the driver does, in the root namespace.", r.cache)
	p("Both are timed by polling the serial log QEMU writes itself every %s: Cairn from the `POST /api/v1/vms` call, bare from the exec of QEMU (its overlay and seed are made before, timed apart). The two kinds alternate, the order swapping every run; each Cairn VM is deleted (and gone) before the next boot.", pollEvery)
	if r.cfg.quick {
		p("Quick run (-quick).")
	}
	p("")
	p("## Boot: create call to the guest's first serial line")
	p("")
	cf := of(r.cairn, func(c cairnRun) time.Duration { return c.m.first })
	ch := of(r.cairn, func(c cairnRun) time.Duration { return c.m.hello })
	bf := of(r.bare, func(b bareRun) time.Duration { return b.m.first })
	bh := of(r.bare, func(b bareRun) time.Duration { return b.m.hello })
	oFirst, oHello := r.overhead()
	p("| | runs | first serial line, median | p90 | hostname line (after DHCP), median | p90 |")
	p("|---|---:|---:|---:|---:|---:|")
	p("| Cairn: API create call → | %d | %s | %s | %s | %s |", len(cf), ms(benchrun.Median(cf)), ms(p90(cf)), ms(benchrun.Median(ch)), ms(p90(ch)))
	p("| bare QEMU: exec → | %d | %s | %s | %s | %s |", len(bf), ms(benchrun.Median(bf)), ms(p90(bf)), ms(benchrun.Median(bh)), ms(p90(bh)))
	p("| **Cairn's overhead** (difference of medians) | | **%s** | | %s |", ms(oFirst), ms(oHello))
	p("| first VM on the node (image cache cold), Cairn | 1 | %s | | %s |", ms(r.cairnFirst.m.first), ms(r.cairnFirst.m.hello))
	p("| first bare launch | 1 | %s | | %s |", ms(r.bareFirst.m.first), ms(r.bareFirst.m.hello))
	p("")
	p("Every run (ms, first line / hostname line): Cairn %s; bare %s.", pairs(cf, ch), pairs(bf, bh))
	if len(r.bootFailures) > 0 {
		p("")
		p("Failed boots (not in the figures): %s.", strings.Join(r.bootFailures, "; "))
	}
	p("")
	p("The first newline on the serial port comes from the guest's boot loader, just before its first non-blank line (Cairn `%s`, bare `%s`): SeaBIOS has found the disk and handed over to it.", r.cairnFirst.m.line, r.bareFirst.m.line)
	p("")
	p("### Where Cairn's time goes")
	p("")
	p("Medians over the %d Cairn boots, from the create call; the events are the VM's history (`GET /api/v1/vms/{vm}/events`), the files are polled in the node's `vms/<id>/`.", len(r.cairn))
	p("")
	p("| milestone | median | p90 | step (median of differences) |")
	p("|---|---:|---:|---:|")
	steps := []struct {
		name string
		f    func(cairnRun) time.Duration
	}{
		{"create event (API handler, before the Raft commit)", func(c cairnRun) time.Duration { return c.created }},
		{"create call answered (201)", func(c cairnRun) time.Duration { return c.m.posted }},
		{"placed (schedule event, leader)", func(c cairnRun) time.Duration { return c.scheduled }},
		{"VM directory exists (image in the node's cache)", func(c cairnRun) time.Duration { return c.m.dir }},
		{"root.qcow2 overlay made (qemu-img create)", func(c cairnRun) time.Duration { return c.m.disk }},
		{"seed.iso written", func(c cairnRun) time.Duration { return c.m.seed }},
		{"serial.log opened by QEMU", func(c cairnRun) time.Duration { return c.m.log }},
		{"running (state event, after QMP connects)", func(c cairnRun) time.Duration { return c.m.running }},
		{"first serial line", func(c cairnRun) time.Duration { return c.m.first }},
		{"guest's init starts (`" + initMarker + "`)", func(c cairnRun) time.Duration { return c.m.init }},
		{"guest has read its seed", func(c cairnRun) time.Duration { return c.m.seedOK }},
		{"hostname line (DHCP lease)", func(c cairnRun) time.Duration { return c.m.hello }},
	}
	for i, s := range steps {
		step := ""
		if i > 0 && s.name != "running (state event, after QMP connects)" {
			prev := steps[i-1].f
			if s.name == "first serial line" {
				prev = steps[i-2].f // from the serial log's opening
			}
			step = ms(benchrun.Median(of(r.cairn, func(c cairnRun) time.Duration { return s.f(c) - prev(c) })))
		}
		v := of(r.cairn, s.f)
		p("| %s | %s | %s | %s |", s.name, ms(benchrun.Median(v)), ms(p90(v)), step)
	}
	p("")
	bm := func(f func(bareRun) time.Duration) string { return ms(benchrun.Median(of(r.bare, f))) }
	cm := func(f func(cairnRun) time.Duration) string { return ms(benchrun.Median(of(r.cairn, f))) }
	p("Bare, for comparison (medians over %d): qemu-img create of the overlay %s and the seed ISO %s before the exec (not in the bare figures); exec → serial.log opened %s; exec → QEMU's foreground process exits (VM set up, daemonized) %s; serial.log opened → first line %s.",
		len(r.bare), bm(func(b bareRun) time.Duration { return b.disk }), bm(func(b bareRun) time.Duration { return b.seed }),
		bm(func(b bareRun) time.Duration { return b.m.log }), bm(func(b bareRun) time.Duration { return b.m.launch }),
		bm(func(b bareRun) time.Duration { return b.m.first - b.m.log }))
	p("")
	p("Inside the guest (medians, Cairn / bare): first line → init starts %s / %s; init → seed read %s / %s; seed read → hostname line (DHCP: Cairn's server on the bridge / QEMU's user network) %s / %s.",
		cm(func(c cairnRun) time.Duration { return c.m.init - c.m.first }), bm(func(b bareRun) time.Duration { return b.m.init - b.m.first }),
		cm(func(c cairnRun) time.Duration { return c.m.seedOK - c.m.init }), bm(func(b bareRun) time.Duration { return b.m.seedOK - b.m.init }),
		cm(func(c cairnRun) time.Duration { return c.m.hello - c.m.seedOK }), bm(func(b bareRun) time.Duration { return b.m.hello - b.m.seedOK }))
	p("")
	if len(r.argvDiff) == 0 {
		p("QEMU command lines: identical once names, paths and the UUID are normalised.")
	} else {
		p("QEMU command lines, Cairn's (-) against bare (+), names, paths and the UUID normalised: %s.", "`"+strings.Join(r.argvDiff, "` `")+"`")
	}
	if br := r.burst; br != nil {
		p("")
		p("## Burst: %d VMs created at once on one node", br.n)
		p("")
		p("Flavor 1 vCPU, %d MiB, %d GiB; %d concurrent `POST /api/v1/vms`; cpu_allocation_ratio raised to 16. Times from the first call.", burstRAMMiB, bootDiskGiB, br.n)
		p("")
		run := slices.DeleteFunc(slices.Clone(br.running), func(d time.Duration) bool { return d == 0 })
		hel := slices.DeleteFunc(slices.Clone(br.hello), func(d time.Duration) bool { return d == 0 })
		p("| VMs | last create answered | running: median / last | hostname line: median / last | failures | all deleted in | left behind | host memory used, all running |")
		p("|---:|---:|---:|---:|---:|---:|---:|---:|")
		p("| %d | %s | %s / %s | %s / %s | %d | %s | %d | %s |", br.n, secs(br.lastPost), secs(benchrun.Median(run)), secs(br.lastRunning()),
			secs(benchrun.Median(hel)), secs(br.lastHello()), len(br.failures), secs(br.deleted), len(br.leftovers), mibOrDash(br.memUsedMiB))
		for _, f := range br.failures {
			p("")
			p("- failure: %s", f)
		}
		for _, l := range br.leftovers {
			p("")
			p("- left behind: %s", l)
		}
	}
	p("")
	p("## Targets")
	p("")
	p("| target | measured | result |")
	p("|---|---|---|")
	p("| Cairn's boot overhead over bare QEMU < %s (median, to the first serial line) | %s (%s vs %s) | %s |", ms(overheadTarget), ms(oFirst), ms(benchrun.Median(cf)), ms(benchrun.Median(bf)),
		verdict(len(cf) > 0 && len(bf) > 0, oFirst < overheadTarget))
	if br := r.burst; br != nil {
		p("| %d VMs at once: all running, no failures | %d running, %d failures, last running at %s, nothing left after delete: %v | %s |", br.n,
			count(br.running), len(br.failures), secs(br.lastRunning()), len(br.leftovers) == 0,
			verdict(true, len(br.failures) == 0 && len(br.leftovers) == 0))
	}
	return b.String()
}

func verdict(measured, ok bool) string {
	switch {
	case !measured:
		return "NOT MEASURED"
	case ok:
		return "PASS"
	}
	return "MISS"
}

// normalize replaces in a QEMU argv what differs between any two VMs: the
// run directory, the VM directory, the UUID and the VM's id.
func normalize(argv []string, id, vmDir string) []string {
	run := ""
	if i := slices.Index(argv, "-pidfile"); i >= 0 && i+1 < len(argv) {
		run = filepath.Dir(argv[i+1])
	}
	sum := sha256.Sum256([]byte(id))
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	var out []string
	for _, a := range argv {
		if run != "" {
			a = strings.ReplaceAll(a, run, "RUN")
		}
		a = strings.ReplaceAll(a, vmDir, "VMDIR")
		a = strings.ReplaceAll(a, uuid, "UUID")
		a = strings.ReplaceAll(a, id, "ID")
		out = append(out, a)
	}
	return out
}

// argvDiff is a token diff of two command lines (longest common
// subsequence): "-tok" only in a, "+tok" only in b.
func argvDiff(a, b []string) []string {
	if len(a) == 0 || len(b) == 0 {
		return []string{"(a command line is missing)"}
	}
	l := make([][]int, len(a)+1)
	for i := range l {
		l[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				l[i][j] = l[i+1][j+1] + 1
			} else {
				l[i][j] = max(l[i+1][j], l[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || l[i][j+1] >= l[i+1][j]):
			out = append(out, "+"+b[j])
			j++
		default:
			out = append(out, "-"+a[i])
			i++
		}
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mibOrDash(m int64) string {
	if m <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f GiB", float64(m)/1024)
}

func pairs(a, b []time.Duration) string {
	var out []string
	for i := range a {
		out = append(out, fmt.Sprintf("%d/%d", a[i].Milliseconds(), b[i].Milliseconds()))
	}
	return strings.Join(out, ", ")
}
