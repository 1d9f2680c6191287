package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// Targets from the issue.
const (
	failoverMedianTarget = time.Second
	failoverWorstTarget  = 2 * time.Second
	rssTarget            = 100 << 20
)

// report is everything one run measured. Arrays indexed by side hold Cairn
// first, etcd second.
type report struct {
	cfg         config
	started     time.Time
	took        time.Duration
	machine     machine
	sides       [2]system
	levels      []level
	memory      []memory
	failovers   [2][]failover
	failoverErr [2]error
}

// level is both sides at one concurrency.
type level struct {
	clients int
	s       [2]*sample
}

// memory is every node's resident memory at one point of the run, -1 where it
// could not be read.
type memory struct {
	phase string
	bytes [2][]int64
	file  [2][]int64 // the file-backed part of bytes
}

type machine struct {
	cpus                   int
	cpuModel, kernel, etcd string
}

func readMachine(etcdBin string) machine {
	m := machine{cpus: runtime.NumCPU(), cpuModel: "unknown CPU", kernel: "unknown", etcd: "unknown"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := exec.Command(etcdBin, "--version").Output(); err == nil {
		first, _, _ := strings.Cut(string(b), "\n")
		if _, v, ok := strings.Cut(first, ":"); ok {
			m.etcd = strings.TrimSpace(v)
		}
	}
	return m
}

// markdown renders the report; it is printed and written to -out as is.
func (r *report) markdown() string {
	var b strings.Builder
	for _, section := range []func(p func(string, ...any)){r.setup, r.writes, r.memoryTable, r.failoverTable, r.targetTable} {
		section(func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) })
	}
	return b.String()
}

func (r *report) setup(p func(string, ...any)) {
	c := r.cfg
	p("## Consensus benchmark: Cairn vs etcd")
	p("")
	p("- Machine: %d CPUs (%s), Linux %s, %s; etcd %s (Debian etcd-server).", r.machine.cpus, r.machine.cpuModel, r.machine.kernel, runtime.Version(), r.machine.etcd)
	p("- Run: %s, took %s.", r.started.Format("2006-01-02 15:04 MST"), r.took.Round(time.Second))
	p("- Topology: per system 3 nodes, each in its own network namespace on one bridge; both clusters run at once and the load generator runs on the same machine, in the root namespace.")
	p("- Workload: closed-loop clients, client i on node (i + round) mod 3 (so over 3 rounds every client has used the leader and both followers), each writing its own key (64 random bytes, hex) over its own keep-alive HTTP/1.1 connection.")
	p("- Schedule: per concurrency, %s warm-up per side, then %d × %s rounds per side, interleaved Cairn/etcd (ABBA).", c.warmup, c.rounds, c.round)
	p("")
	p("| System | Write | Client TLS | Peer TLS |")
	p("|---|---|---|---|")
	ops := [2]string{"`PATCH /api/v1/projects/{id}` (Raft commit with audit record), Raft log in " + c.logStore + ", fsync on", "`POST /v3/kv/put` (gRPC gateway), fsync on"}
	for i, sys := range r.sides {
		sec := sys.security()
		p("| %s | %s | %s | %s |", sys.name(), ops[i], sec.client, sec.peer)
	}
}

func (r *report) writes(p func(string, ...any)) {
	p("")
	p("### Writes")
	p("")
	p("| Clients | Cairn writes/s | etcd writes/s | ratio | Cairn p50 | etcd p50 | Cairn p99 | etcd p99 | p99 ratio | server CPU/write Cairn / etcd | errors Cairn / etcd |")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, lv := range r.levels {
		a, e := lv.s[0], lv.s[1]
		p("| %d | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s / %s | %d / %d |", lv.clients, a.Rate(), e.Rate(),
			benchrun.Ratio(a.Rate(), e.Rate()), benchrun.Millis(a.Percentile(50)), benchrun.Millis(e.Percentile(50)),
			benchrun.Millis(a.Percentile(99)), benchrun.Millis(e.Percentile(99)), benchrun.Ratio(float64(a.Percentile(99)), float64(e.Percentile(99))),
			benchrun.Micros(a.cpuPerWrite()), benchrun.Micros(e.cpuPerWrite()), a.Errors, e.Errors)
	}
	p("")
	p("Server CPU/write: user+system CPU time of the side's three node processes during the rounds, per acknowledged write (all three nodes' work for one write).")
	for _, lv := range r.levels {
		for i, s := range lv.s {
			if s.FirstErr != nil {
				p("\n%s, %d clients, first error: `%v`", r.sides[i].name(), lv.clients, s.FirstErr)
			}
		}
	}
}

func (r *report) memoryTable(p func(string, ...any)) {
	p("")
	p("### Idle resident memory (VmRSS), after %s idle", r.cfg.idle)
	p("")
	p("| When | Cairn | etcd |")
	p("|---|---|---|")
	for _, m := range r.memory {
		p("| %s | %s | %s |", m.phase, mibList(m.bytes[0]), mibList(m.bytes[1]))
		p("| %s, of which mapped files | %s | %s |", m.phase, mibList(m.file[0]), mibList(m.file[1]))
	}
	var total [2]int
	for _, lv := range r.levels {
		for i, s := range lv.s {
			total[i] += s.Ops()
		}
	}
	p("")
	p("In between, the load committed %d writes to Cairn and %d to etcd (measured rounds; warm-ups add a little more).", total[0], total[1])
}

func (r *report) failoverTable(p func(string, ...any)) {
	p("")
	p("### Failover: leader SIGKILLed → first acknowledged write on a survivor")
	p("")
	p("From the kill, a write attempt starts every %s, alternating between the two survivors, each with a %s timeout; the time is to the first acknowledgement. The killed node is restarted and the cluster healthy again before the next run.", failoverStagger, failoverAttempt)
	p("")
	p("| System | runs | median | worst | all runs |")
	p("|---|---:|---:|---:|---|")
	for i, fs := range r.failovers {
		if len(fs) == 0 && r.failoverErr[i] == nil {
			continue
		}
		med, worst := failoverStats(fs)
		p("| %s | %d | %s | %s | %s |", r.sides[i].name(), len(fs), secs(med), secs(worst), failoverList(fs))
	}
	for i, err := range r.failoverErr {
		if err != nil {
			p("\n%s failover stopped: `%v`", r.sides[i].name(), err)
		}
	}
}

func (r *report) targetTable(p func(string, ...any)) {
	p("")
	p("### Targets")
	p("")
	p("| Target | Measured | Result |")
	p("|---|---|---|")
	for _, t := range r.targets() {
		p("| %s | %s | %s |", t.what, t.measured, passMiss(t.pass))
	}
}

type target struct {
	what, measured string
	pass           bool
}

func (r *report) targets() []target {
	var ts []target
	for _, lv := range r.levels {
		a, e := lv.s[0], lv.s[1]
		ts = append(ts, target{
			what:     "Throughput ≥ etcd at " + plural(lv.clients, "client"),
			measured: fmt.Sprintf("%s (%.0f vs %.0f writes/s)", benchrun.Ratio(a.Rate(), e.Rate()), a.Rate(), e.Rate()),
			pass:     a.Ops() > 0 && a.Rate() >= e.Rate(),
		}, target{
			what:     "p99 ≤ etcd at " + plural(lv.clients, "client"),
			measured: fmt.Sprintf("%s (%s vs %s)", benchrun.Ratio(float64(a.Percentile(99)), float64(e.Percentile(99))), benchrun.Millis(a.Percentile(99)), benchrun.Millis(e.Percentile(99))),
			pass:     a.Ops() > 0 && a.Percentile(99) <= e.Percentile(99),
		})
	}
	fs := r.failovers[0]
	med, worst := failoverStats(fs)
	measured := func(d time.Duration) string {
		if len(fs) == 0 {
			return "not measured"
		}
		return fmt.Sprintf("%s over %d runs", secs(d), len(fs))
	}
	complete := len(fs) == r.cfg.failovers && r.failoverErr[0] == nil && len(fs) > 0
	ts = append(ts,
		target{"Failover median ≤ 1 s", measured(med), complete && med <= failoverMedianTarget},
		target{"Failover worst ≤ 2 s", measured(worst), complete && worst <= failoverWorstTarget})
	for _, m := range r.memory {
		most, readable := int64(0), len(m.bytes[0]) > 0
		for _, b := range m.bytes[0] {
			readable = readable && b >= 0
			most = max(most, b)
		}
		ts = append(ts, target{"Idle RSS < 100 MiB per Cairn node, " + m.phase,
			fmt.Sprintf("%s at most", mib(most)), readable && most < rssTarget})
	}
	return ts
}

// failoverStats returns the median and the worst time; a run that timed out
// counts as failoverLimit.
func failoverStats(fs []failover) (median, worst time.Duration) {
	if len(fs) == 0 {
		return 0, 0
	}
	ds := make([]time.Duration, len(fs))
	for i, f := range fs {
		ds[i] = f.took
	}
	slices.Sort(ds)
	n := len(ds)
	median = ds[n/2]
	if n%2 == 0 {
		median = (ds[n/2-1] + ds[n/2]) / 2
	}
	return median, ds[n-1]
}

func failoverList(fs []failover) string {
	var parts []string
	for _, f := range fs {
		s := secs(f.took)
		if f.timedOut {
			s = "> " + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// plural returns "1 client", "16 clients".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func passMiss(ok bool) string {
	if ok {
		return "**PASS**"
	}
	return "**MISS**"
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mib(b int64) string {
	if b < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func mibList(bs []int64) string {
	var parts []string
	for _, b := range bs {
		parts = append(parts, mib(b))
	}
	return strings.Join(parts, ", ")
}
