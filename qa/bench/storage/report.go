package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

type report struct {
	cfg        config
	started    time.Time
	took       time.Duration
	disk       *rawDisk
	gate       *quietGate
	encode     float64 // MiB/s
	ceiling    float64 // MiB/s of HTTPS over loopback from memory (measureTLSCeiling)
	ceilingN   int     // clients of that measurement
	ceilingCPU float64 // CPU s per GiB of that measurement (server and clients)
	small      []smallRow
	smallPast  []smallRow // the same past the inline budget
	rows       []row
	rssStart   []int64 // per node, after start
	rssPeak    []int64 // per node, highest sampled during the load
	rssAfter   []int64 // per node, after the load and -idle
}

// target is one PASS/MISS line.
type target struct {
	name, measured string
	ok, measuredOK bool
}

func (r *report) targets() []target {
	large := int64(64 << 20)
	var put, get float64
	var seen bool
	for _, w := range r.rows {
		if w.size == large {
			seen = true
			put, get = max(put, w.put.mibps()), max(get, w.get.mibps())
		}
	}
	ideal, idealOK := r.idealGet()
	ts := append(r.smallTargets(),
		target{name: "64 MiB PUT ≥ 80% of raw write", measuredOK: seen && put > 0 && r.disk.write > 0,
			measured: fmt.Sprintf("%.0f of %.0f MiB/s (%.0f%%)", put, r.disk.write, pct(put, r.disk.write)),
			ok:       put >= 0.8*r.disk.write},
		target{name: "64 MiB GET ≥ 80% of the GET bound", measuredOK: seen && get > 0 && idealOK,
			measured: fmt.Sprintf("%.0f of %.0f MiB/s (%.0f%%)", get, ideal.mibs, pct(get, ideal.mibs)),
			ok:       get >= 0.8*ideal.mibs})
	var peak int64
	for _, b := range r.rssPeak {
		peak = max(peak, b)
	}
	ts = append(ts, target{name: fmt.Sprintf("resident memory under load < %s per node", mib(r.cfg.rssLimit)),
		measuredOK: peak > 0, measured: "peak " + mib(peak), ok: peak < r.cfg.rssLimit})
	return ts
}

// best is the 64 MiB row where by is highest.
func (r *report) best(by func(row) float64) (row, bool) {
	var best row
	var found bool
	for _, w := range r.rows {
		if w.size == 64<<20 && (!found || by(w) > by(best)) {
			best, found = w, true
		}
	}
	return best, found
}

// remoteShare is the least share of an object a node serving a GET must
// fetch from its peers: at 4+2 with at most 2 shards per node it holds at
// most 2 of the 4 shards it reads.
const remoteShare = float64(4-2) / 4

// idealGet is a lower bound on the CPU a large GET costs on this machine and
// the throughput that allows: one disk read and one TLS hop (the ceiling's
// measured cost) per byte, plus a second hop for remoteShare of the bytes,
// and nothing else. It says whether the run measured what it needs.
func (r *report) idealGet() (ideal struct{ cpu, mibs float64 }, ok bool) {
	if r.ceilingCPU <= 0 || r.disk.readCPU <= 0 {
		return ideal, false
	}
	ideal.cpu = r.disk.readCPU + (1+remoteShare)*r.ceilingCPU
	ideal.mibs = float64(runtime.NumCPU()) / ideal.cpu * 1024
	return ideal, true
}

// unmeasured is an error when a target or a row could not be measured.
func (r *report) unmeasured() error {
	var errs []error
	for _, t := range r.targets() {
		if !t.measuredOK {
			errs = append(errs, fmt.Errorf("not measured: %s", t.name))
		}
	}
	for _, w := range r.rows {
		if w.put.Ops() == 0 || w.get.Ops() == 0 {
			errs = append(errs, fmt.Errorf("%s at %d clients: no successful PUT or GET", sizeName(w.size), w.clients))
		}
	}
	for _, w := range slices.Concat(r.small, r.smallPast) {
		for k := range w.phase {
			if w.phase[k].all.Ops() == 0 {
				errs = append(errs, fmt.Errorf("%s at %d clients: no successful operation", smallKind(k), w.clients))
			}
		}
	}
	return errors.Join(errs...)
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	host, _ := os.Hostname()
	p("# Cairn object storage benchmark")
	p("")
	p("%s on %s: %d CPUs, %s, Go %s; took %s.", r.started.UTC().Format(time.RFC3339), host, runtime.NumCPU(), benchrun.MemTotal(), runtime.Version(), r.took.Round(time.Second))
	p("3 `cairn agent` nodes in network namespaces on this machine, 2 directory disks each (4+2 erasure coding), all on %s.", r.disk.device)
	p("S3 through minio-go over HTTPS, clients spread over the 3 nodes; each phase runs until %s or %s have been started, whichever first.", r.cfg.round, mib(r.cfg.budget))
	if r.cfg.quick {
		p("Quick run (-quick).")
	}
	if r.cfg.inlineMiB > 0 {
		p("The pool's inline budget for small objects was set to %d MiB first (-inline-budget-mib), so past it small objects are erasure-coded like large ones.", r.cfg.inlineMiB)
	}
	if g := r.gate; g != nil && g.limit > 0 {
		p("This VM is shared: before each phase the run waited until the rest of the machine kept at most %.2f cores busy over %s, for at most %s. It waited %s in all, and %d of %d phases started with the machine still busy; the tables say how busy.",
			g.cores, "0.5 s", g.limit, g.waited.Round(time.Second), g.busy, g.phases)
	}
	p("")
	p("## Physical limits (same run)")
	p("")
	p("| what | MiB/s | how |")
	p("|---|---:|---|")
	p("| raw sequential write | %.0f | median of %d rounds (%s), %d at the start and one before each 64 MiB PUT phase: %s in 4 MiB writes then fsync, next to the node disks, %s after anything freed memory; fsync took %.0f%% of the time (median), and the round %.2f CPU s per GiB |",
		r.disk.write, len(r.disk.writes), spread(r.disk.writes), r.disk.writesAtStart, mib(r.cfg.rawSize), settle, 100*benchrun.Median(r.disk.fsyncs), benchrun.Median(r.disk.writeCPU))
	p("| device write (O_DIRECT) | %.0f | median of %d rounds (%s): the same past the page cache, what the device itself takes |", r.disk.direct, len(r.disk.directs), spread(r.disk.directs))
	p("| raw sequential read | %.0f | median of %d rounds (%s): the same file, %s; %.2f CPU s per GiB |", r.disk.read, len(r.disk.reads), spread(r.disk.reads), cacheNote(r.disk.dropped), r.disk.readCPU)
	p("| reedsolomon encode 4+2 | %.0f | 1 MiB stripes, one goroutine, MiB/s of input |", r.encode)
	p("| HTTPS GET ceiling | %.0f | a Go HTTPS server on loopback serving %s from memory to %d Go HTTPS clients: TLS and loopback TCP alone, no disk, on the same cores |", r.ceiling, sizeName(r.cfg.sizes[len(r.cfg.sizes)-1]), r.ceilingN)
	p("")
	p("On this VM a write through the page cache goes as fast as the host gives the guest memory back, not as fast as the device takes it (compare the O_DIRECT row): the guest returns the memory it frees to the host over the next seconds (free page reporting), and the host faults it in again when it is next used. "+
		"Memory freed a moment ago is written at 1.3–1.9 GiB/s, memory freed 10 s ago at a sixth of that; so the raw write and every PUT phase start %s after anything the benchmark freed (a dropped page cache, deleted objects) and both write into returned memory, as a PUT of gigabytes mostly does. "+
		"Raw write rounds, in order: %s MiB/s.", settle, rounds(r.disk.writes))
	p("")
	r.smallSection(p)
	p("## S3 throughput, large objects")
	p("")
	p("| size | clients | PUT MiB/s | PUT ops | GET MiB/s | GET ops | errors | PUT / raw write | GET / raw read | GET / HTTPS ceiling | peak RSS (max node) |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	dropped := true
	for _, w := range r.rows {
		dropped = dropped && w.dropped
		p("| %s | %d | %.1f | %d | %.1f | %d | %d | %.0f%% | %.0f%% | %.0f%% | %s |", sizeName(w.size), w.clients,
			w.put.mibps(), w.put.Ops(), w.get.mibps(), w.get.Ops(), w.put.Errors+w.get.Errors,
			pct(w.put.mibps(), r.disk.write), pct(w.get.mibps(), r.disk.read), pct(w.get.mibps(), r.ceiling), mib(w.peakRSS))
	}
	p("")
	p("Before each GET phase the page cache is %s; a GET phase that outlasts the objects just written reads them again (then partly from the cache).", strings.TrimPrefix(cacheNote(dropped), "page cache "))
	p("Every disk is a directory on the same device, so the cluster's throughput shares the one raw bandwidth above, and a PUT writes 1.5× its size (4+2).")
	p("")
	p("## CPU per GiB moved")
	p("")
	p("CPU seconds (user and system) per GiB of object data, in the 3 nodes together and in the benchmark's S3 clients. The HTTPS ceiling above took %.2f s per GiB, server and clients together.", r.ceilingCPU)
	p("")
	p("| size | clients | PUT: nodes | PUT: clients | GET: nodes | GET: clients | busy elsewhere, cores: PUT / GET |")
	p("|---|---:|---:|---:|---:|---:|---:|")
	for _, w := range r.rows {
		pn, pc := w.put.cpu.perGiB(w.put.bytes())
		gn, gc := w.get.cpu.perGiB(w.get.bytes())
		p("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f / %.2f |", sizeName(w.size), w.clients, pn, pc, gn, gc, w.put.cpu.busyElsewhere(), w.get.cpu.busyElsewhere())
	}
	p("")
	p("Busy elsewhere: the cores, on average over the phase, that the rest of the machine kept busy (other processes, kernel threads) or the hypervisor stole; this VM is shared.")
	p("")
	p("## Resident memory (VmRSS)")
	p("")
	p("| phase | node1 | node2 | node3 |")
	p("|---|---:|---:|---:|")
	p("| after start | %s |", mibCells(r.rssStart))
	p("| peak under load (sampled every 100 ms) | %s |", mibCells(r.rssPeak))
	p("| %s after the load | %s |", r.cfg.idle, mibCells(r.rssAfter))
	p("")
	p("## Targets")
	p("")
	p("| target | measured | result |")
	p("|---|---|---|")
	for _, t := range r.targets() {
		res := "MISS"
		switch {
		case !t.measuredOK:
			res = "NOT MEASURED"
		case t.ok:
			res = "PASS"
		}
		p("| %s | %s | %s |", t.name, t.measured, res)
	}
	p("")
	p("Large-object throughput is the best 64 MiB row over the concurrencies measured. The GET bound is the most any GET could do on these cores (below).")
	if w, ok := r.best(func(w row) float64 { return w.put.mibps() }); ok {
		nodes, clients := w.put.cpu.perGiB(w.put.bytes())
		if total := nodes + clients; total > 0 {
			p("")
			p("What bounds PUT here: the best 64 MiB PUT row (%d clients) took %.2f CPU s per GiB, %.2f in the nodes and %.2f in the clients, all on these %d cores: at that cost the cores take at most %.0f MiB/s, whatever the disk. "+
				"The raw write, through the page cache, cost %.2f CPU s per GiB; the nodes write their shards past it (O_DIRECT, since session 15), and a PUT writes 1.5 times its size (4+2). "+
				"Against the device's own O_DIRECT write the best PUT is %.0f%%.",
				w.clients, total, nodes, clients, runtime.NumCPU(), float64(runtime.NumCPU())/total*1024, benchrun.Median(r.disk.writeCPU), pct(w.put.mibps(), r.disk.direct))
		}
	}
	if w, ok := r.best(func(w row) float64 { return w.get.mibps() }); ok {
		nodes, clients := w.get.cpu.perGiB(w.get.bytes())
		if total := nodes + clients; total > 0 {
			p("")
			p("What bounds GET here: the best 64 MiB GET row (%d clients) took %.2f CPU s per GiB, %.2f in the nodes and %.2f in the clients, all on these %d cores. "+
				"At that cost the cores serve at most %.0f MiB/s, whatever the disk; reading the disk itself took %.2f CPU s per GiB.",
				w.clients, total, nodes, clients, runtime.NumCPU(), float64(runtime.NumCPU())/total*1024, r.disk.readCPU)
		}
	}
	if ideal, ok := r.idealGet(); ok {
		p("")
		p("The most any GET could do on these cores: every byte is read from a disk once (%.2f CPU s per GiB) and crosses one TLS hop to its client, and at 4+2 with at most 2 shards per node at least %.0f%% of it also crosses a TLS hop between nodes. "+
			"At the HTTPS ceiling's cost per hop (%.2f CPU s per GiB, no disk, no HTTP handler, no erasure coding) that is %.2f CPU s per GiB, so even such a server would serve at most %.0f MiB/s here: %.0f%% of the raw read.",
			r.disk.readCPU, 100*remoteShare, r.ceilingCPU, ideal.cpu, ideal.mibs, pct(ideal.mibs, r.disk.read))
	}
	return b.String()
}

func cacheNote(dropped bool) string {
	if dropped {
		return "page cache dropped first (echo 3 > /proc/sys/vm/drop_caches)"
	}
	return "page cache NOT dropped (no permission), so reads may come from memory"
}

// rounds lists v, rounded.
func rounds(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(s, ", ")
}

// spread is "min–max" of v.
func spread(v []float64) string {
	if len(v) == 0 {
		return "none"
	}
	return fmt.Sprintf("%.0f–%.0f", slices.Min(v), slices.Max(v))
}

func pct(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return 100 * a / b
}

func sizeName(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

func mib(b int64) string {
	if b < 0 {
		return "?"
	}
	return fmt.Sprintf("%d MiB", b>>20)
}

func mibCells(bs []int64) string {
	var cells []string
	for _, b := range bs {
		cells = append(cells, mib(b))
	}
	return strings.Join(cells, " | ")
}
