package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// row is one job on both sides.
type row struct {
	job           job
	local, volume result
	cached        result // write jobs: the local file through the page cache
	noisy         bool   // the machine was not quiet before one of the runs
}

type report struct {
	cfg        config
	started    time.Time
	took       time.Duration
	fio        string
	device     string
	rtt        time.Duration // HTTPS round trip to a peer node
	fillLocal  float64       // MiB/s of the initial sequential write
	fillVolume float64
	rows       []row
	resync     resyncResult
}

// check is one PASS/MISS line.
type check struct {
	name, measured string
	ok, measuredOK bool
}

func (r *report) find(rw string, depth int) (row, bool) {
	for _, w := range r.rows {
		if w.job.rw == rw && w.job.depth == depth {
			return w, w.local.ok() && w.volume.ok()
		}
	}
	return row{}, false
}

func ratioCheck(name string, w row, ok bool, share float64, by func(result) float64, unit string) check {
	v, l := by(w.volume), by(w.local)
	return check{name: name, measuredOK: ok && l > 0,
		measured: fmt.Sprintf("%.0f of %.0f %s (%.0f%%)", v, l, unit, pct(v, l)),
		ok:       v >= share*l}
}

func iops(r result) float64 { return r.iops }
func mibs(r result) float64 { return r.mibs }

func (r *report) checks() []check {
	var cs []check
	w, ok := r.find("randwrite", 32)
	cs = append(cs, ratioCheck("4 KiB random write QD32 ≥ 50% of local IOPS", w, ok, 0.5, iops, "IOPS"))
	w, ok = r.find("randread", 32)
	cs = append(cs, ratioCheck("4 KiB random read QD32 ≥ 70% of local IOPS", w, ok, 0.7, iops, "IOPS"))
	w, ok = r.find("randwrite", 1)
	l, v := w.local.p50+w.local.sync50, w.volume.p50+w.volume.sync50
	bound := l + r.rtt
	cs = append(cs, check{name: "4 KiB QD1 durable write (write + flush) p50 ≤ local write + local fdatasync + one round trip",
		measuredOK: ok && r.rtt > 0,
		measured: fmt.Sprintf("%s ≤ %s + %s + %s = %s", benchrun.Micros(v), benchrun.Micros(w.local.p50),
			benchrun.Micros(w.local.sync50), benchrun.Micros(r.rtt), benchrun.Micros(bound)),
		ok: v <= bound})
	w, ok = r.find("read", 8)
	cs = append(cs, ratioCheck("1 MiB sequential read ≥ 70% of local MiB/s", w, ok, 0.7, mibs, "MiB/s"))
	w, ok = r.find("write", 8)
	cs = append(cs, ratioCheck("1 MiB sequential write ≥ 70% of local MiB/s", w, ok, 0.7, mibs, "MiB/s"))
	rs := r.resync
	cs = append(cs, check{name: fmt.Sprintf("resync after %s written with a replica down ≤ %s copied", gib(rs.written), gib(rs.written*11/10)),
		measuredOK: rs.err == nil && rs.copied > 0,
		measured:   fmt.Sprintf("%s copied, in sync %.1f s after the restart", gib(rs.copied), rs.inSync.Seconds()),
		ok:         rs.copied <= rs.written*11/10})
	return cs
}

// unmeasured is an error when a target could not be measured at all.
func (r *report) unmeasured() error {
	var missing []string
	for _, c := range r.checks() {
		if !c.measuredOK {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not measured: %s", strings.Join(missing, "; "))
	}
	return nil
}

func (r *report) markdown() string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# bench-volumes, %s\n\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "%s, %d cores, %s, %s; files on %s. Took %s.\n\n", host, runtime.NumCPU(), benchrun.MemTotal(),
		r.fio, r.device, r.took.Round(time.Second))
	fmt.Fprintf(&b, "A %d GiB volume with three replicas (one per node, all on this machine's one disk), attached to node1's host "+
		"and driven by fio's nbd engine over its unix socket; beside it the same jobs on a %d GiB raw file on the same "+
		"filesystem through libaio with O_DIRECT. The jobs touch the first %d MiB of each, written beforehand "+
		"(local %.0f MiB/s, volume %.0f MiB/s); each runs %s after a %s ramp, local then volume. The page cache is "+
		"dropped before every read job. Writes flush (NBD FLUSH, fdatasync) at the same points on both sides.\n\n",
		r.cfg.sizeGiB, r.cfg.sizeGiB, r.cfg.span>>20, r.fillLocal, r.fillVolume, r.cfg.runtime, r.cfg.ramp)

	b.WriteString("| job | local IOPS | local MiB/s | local p50 / p99 | volume IOPS | volume MiB/s | volume p50 / p99 | volume / local | nodes' CPU per I/O | CPU: nodes, rest of machine (cores) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range r.rows {
		by := iops
		if w.job.bs >= 1<<20 {
			by = mibs
		}
		note := ""
		if w.noisy {
			note = " (machine busy before a run)"
		}
		perIO := "–"
		if w.volume.ok() {
			perIO = benchrun.Micros(time.Duration(w.volume.nodes / w.volume.iops * float64(time.Second)))
		}
		fmt.Fprintf(&b, "| %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f, %.2f / %.2f, %.2f |\n", w.job.name, note,
			num(w.local, w.local.iops, "%.0f"), num(w.local, w.local.mibs, "%.1f"), lat(w.local),
			num(w.volume, w.volume.iops, "%.0f"), num(w.volume, w.volume.mibs, "%.1f"), lat(w.volume),
			benchrun.Ratio(by(w.volume), by(w.local)), perIO,
			w.local.nodes, w.local.elsewhere, w.volume.nodes, w.volume.elsewhere)
	}
	b.WriteString("\nLatency is per I/O, submission to completion. Nodes' CPU per I/O is the three nodes' CPU time during the volume's run " +
		"over its I/Os (idle nodes use some too). The last column is local run / volume run; the rest of the machine counts everything " +
		"but the nodes and fio (other users' work, and kernel threads writing back for either side).\n\n")
	b.WriteString("Flushes (p50 / p99):\n\n")
	for _, w := range r.rows {
		if w.job.syncEvery > 0 {
			fmt.Fprintf(&b, "- %s: local fdatasync %s / %s, volume NBD FLUSH %s / %s\n", w.job.name,
				benchrun.Micros(w.local.sync50), benchrun.Micros(w.local.sync99),
				benchrun.Micros(w.volume.sync50), benchrun.Micros(w.volume.sync99))
		}
	}
	b.WriteString("\nWrites to the local file through the page cache instead (informational; on this VM a write into pages the " +
		"cache does not hold costs far more CPU than on bare metal, and the replicas always write that way):\n\n")
	b.WriteString("| job | IOPS | MiB/s | p50 / p99 | fdatasync p50 | volume / this |\n|---|---|---|---|---|---|\n")
	for _, w := range r.rows {
		if !w.job.write() {
			continue
		}
		by := iops
		if w.job.bs >= 1<<20 {
			by = mibs
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", w.job.name, num(w.cached, w.cached.iops, "%.0f"),
			num(w.cached, w.cached.mibs, "%.1f"), lat(w.cached), benchrun.Micros(w.cached.sync50), benchrun.Ratio(by(w.volume), by(w.cached)))
	}
	fmt.Fprintf(&b, "\nOne round trip: %s, the median HTTPS GET /healthz to node2 on a kept-alive connection "+
		"(TCP, TLS and a Go server across the cluster's bridge, as a replica write takes them, less the payload).\n\n", benchrun.Micros(r.rtt))

	rs := r.resync
	fmt.Fprintf(&b, "Resync: %s killed (SIGKILL), %s written in 1 MiB writes at %.0f MiB/s on the other two replicas "+
		"(its replica seen stale: %v), restarted: ready after %.1f s, every replica in sync %.1f s after the restart, "+
		"%s copied back (cairn_volume_resync_bytes_total on node1).", rs.victim, gib(rs.written), rs.writeMiBs, rs.stale,
		rs.ready.Seconds(), rs.inSync.Seconds(), gib(rs.copied))
	if rs.err != nil {
		fmt.Fprintf(&b, " Error: %v.", rs.err)
	}
	b.WriteString("\n\n## Targets\n\n")
	for _, c := range r.checks() {
		verdict := "MISS"
		switch {
		case !c.measuredOK:
			verdict = "NOT MEASURED"
		case c.ok:
			verdict = "PASS"
		}
		fmt.Fprintf(&b, "- **%s** %s: %s\n", verdict, c.name, c.measured)
	}
	return b.String()
}

func num(r result, v float64, format string) string {
	if !r.ok() {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

func lat(r result) string {
	if !r.ok() {
		return "error"
	}
	return benchrun.Micros(r.p50) + " / " + benchrun.Micros(r.p99)
}

func pct(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * a / b
}

func gib(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}
