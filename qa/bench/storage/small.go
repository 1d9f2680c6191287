package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"

	"github.com/minio/minio-go/v7"
)

// smallSize is the size of the small objects.
const smallSize = 4 << 10

// opTimeout bounds one small operation; a healthy cluster answers in
// milliseconds, so hitting it is an error worth reporting.
const opTimeout = 10 * time.Second

// smallKind is one of the three loads of the small-object section.
type smallKind int

const (
	raftWrite smallKind = iota // bench-consensus's Cairn write, the reference
	smallPut
	smallGet
)

func (k smallKind) String() string {
	return [...]string{"Raft write", "4 KiB PUT", "4 KiB GET"}[k]
}

// smallPhase is one load at one concurrency, over its rounds.
type smallPhase struct {
	all   benchrun.Sample // every round's operations: latencies, errors
	rates []float64       // operations/s of each round
	cpu   cpuUse          // summed over the rounds
}

// rate is the median over the rounds.
func (p *smallPhase) rate() float64 { return benchrun.Median(p.rates) }

// cpuPerOp is the nodes' CPU time per successful operation.
func (p *smallPhase) cpuPerOp() time.Duration {
	if p.all.Ops() == 0 {
		return 0
	}
	return p.cpu.nodes / time.Duration(p.all.Ops())
}

// smallRow is the small-object section at one concurrency.
type smallRow struct {
	clients int
	phase   [3]smallPhase // by smallKind
	objects int           // 4 KiB objects written, warm-up included
	dials   int64         // connections the clients opened during the measured rounds
	dropped bool          // page cache dropped before every GET round
	inline  inlineUsage   // the pool's inline bytes and budget after the rounds
	prefix  string        // of the keys written
}

// inlineUsage is GET /api/v1/storage/inline's answer.
type inlineUsage struct {
	Bytes  int64 `json:"inline_bytes"`
	Budget int64 `json:"inline_budget"`
}

// pastBudget reports whether the pool's inline budget was spent when the
// rounds ended: from then on small PUTs are stored as shards.
func (u inlineUsage) pastBudget() bool { return u.Budget > 0 && u.Bytes+smallSize > u.Budget }

// measureSmall measures, at one concurrency (at most cl.raft.Keys()),
// bench-consensus's Raft write and 4 KiB PUT and GET on the same cluster.
// First a warm-up: every worker writes and PUTs once through each node, so
// that it has its connections, then a timed warm-up of both. Then
// cfg.smallRounds rounds, each running the three loads in turn, the order
// rotated every round so drift in the machine's speed hits all three alike.
// Worker w uses node (w + round) mod 3, as bench-consensus's clients do: over
// three rounds even one worker has gone through the leader and both
// followers. The objects stay until the cluster goes: deleting them would
// leave freed inodes that this VM's ext4, which has no journal, walks past on
// every later create.
func (b *bench) measureSmall(ctx context.Context, clients int, prefix string) smallRow {
	cl, cfg := b.cl, b.cfg
	r := smallRow{clients: clients, dropped: true, prefix: prefix}
	var (
		mu   sync.Mutex
		keys []string
		next atomic.Int64
	)
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	bufs := make([][]byte, clients)
	for w := range bufs {
		bufs[w] = make([]byte, 2*smallSize)
	}
	op := func(kind smallKind, shift int) func(ctx context.Context, w, i int) error {
		var do func(ctx context.Context, node, w, i int) error
		switch kind {
		case raftWrite:
			do = func(ctx context.Context, node, w, _ int) error { return cl.raft.Write(ctx, node, w) }
		case smallPut:
			do = func(ctx context.Context, node, _, _ int) error {
				key := fmt.Sprintf("%s-c%d/%d", prefix, clients, next.Add(1))
				_, err := cl.s3[node].PutObject(ctx, bucket, key, bytes.NewReader(b.payload[:smallSize]), smallSize, opts)
				if err == nil {
					mu.Lock()
					keys = append(keys, key)
					mu.Unlock()
				}
				return err
			}
		case smallGet:
			mu.Lock()
			written := keys[:len(keys):len(keys)]
			mu.Unlock()
			do = func(ctx context.Context, node, w, i int) error {
				if len(written) == 0 {
					return fmt.Errorf("GET: no objects written")
				}
				key := written[i%len(written)]
				obj, err := cl.s3[node].GetObject(ctx, bucket, key, minio.GetObjectOptions{})
				if err != nil {
					return err
				}
				defer obj.Close()
				n, err := readAll(obj, bufs[w])
				if err == nil && n != smallSize {
					err = fmt.Errorf("GET %s: %d bytes, want %d", key, n, smallSize)
				}
				return err
			}
		}
		return func(ctx context.Context, w, i int) error {
			ctx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			return do(ctx, (w+shift)%len(cl.s3), w, i)
		}
	}

	load := benchrun.Closed{Workers: clients, Round: cfg.round}
	for _, kind := range []smallKind{raftWrite, smallPut} {
		for node := range cl.s3 { // every worker's connection to every node
			if s := load.Once(ctx, op(kind, node)); s.FirstErr != nil {
				benchrun.Progress("%d clients, warm-up, %s: %d errors, the first: %v", clients, kind, s.Errors, s.FirstErr)
			}
		}
		benchrun.Closed{Workers: clients, Round: cfg.smallWarmup}.Run(ctx, op(kind, 0))
	}
	dials := cl.dials.Load()
	for round := range cfg.smallRounds {
		for k := range 3 {
			if ctx.Err() != nil {
				return r
			}
			kind := smallKind((round + k) % 3)
			b.gate.wait(ctx)
			if kind == smallGet {
				r.dropped = r.dropped && dropCaches() == nil
			} else {
				syncFS()
			}
			wait := func() {}
			if cfg.profile != "" && round == 0 && clients == slices.Max(cfg.smallClients) {
				wait = benchrun.Profile(ctx, cl.c.Nodes, cfg.round, cfg.profile, fmt.Sprintf("%s-%s-c%d-", prefix, []string{"raft", "put", "get"}[kind], clients))
			}
			cpu := cpuMeter(b.pids)
			s := load.Run(ctx, op(kind, round))
			use := cpu()
			wait()
			p := &r.phase[kind]
			p.all.Add(&s)
			p.rates = append(p.rates, s.Rate())
			p.cpu.add(use)
			benchrun.Progress("%d clients, round %d/%d, %s: %.0f/s, p50 %s, p99 %s, nodes' CPU per op %s, %d errors",
				clients, round+1, cfg.smallRounds, kind, s.Rate(), benchrun.Millis(s.Percentile(50)), benchrun.Millis(s.Percentile(99)), benchrun.Micros(use.nodes/time.Duration(max(1, s.Ops()))), s.Errors)
		}
	}
	r.dials = cl.dials.Load() - dials
	if err := cl.call(ctx, "GET", "/api/v1/storage/inline", cl.raft.Token, nil, &r.inline, 200); err != nil {
		benchrun.Progress("%d clients: the pool's inline usage: %v", clients, err)
	}
	mu.Lock()
	r.objects = len(keys)
	mu.Unlock()
	return r
}

// readAll reads r to its end into buf, over and over, and returns how many
// bytes it read: a small GET's body without an allocation per GET.
func readAll(r io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// smallSection is the small objects' table in the report.
func (r *report) smallSection(p func(string, ...any)) {
	if len(r.small) == 0 {
		return
	}
	c := r.cfg
	p("## Small objects (%s) against Cairn's own Raft write (same run, same cluster)", sizeName(smallSize))
	p("")
	p("A small PUT needs at least one Raft commit, so the reference is Cairn's own replicated write, measured as bench-consensus measures it: each worker PATCHes the description of a project of its own (`PATCH /api/v1/projects/{id}`: one Raft commit with its audit record). "+
		"A PUT writes a fresh key of %s through minio-go; a GET reads back the objects written so far at that concurrency, in order, over again when the round outlasts them. "+
		"Per concurrency: a warm-up of %s of the write and of the PUT, then %d round(s) of %s per load, the three loads in turn, the order rotated every round (Raft, PUT, GET; PUT, GET, Raft; GET, Raft, PUT). "+
		"Worker w goes through node (w + round) mod 3, so over three rounds every worker has used the leader and both followers. "+
		"Before each GET round the page cache is %s. Rates are the median of the rounds (their range in brackets); latencies are over all rounds.",
		sizeName(smallSize), c.smallWarmup, c.smallRounds, c.round, cacheState(r.small))
	p("")
	p("Small objects of at most 32 KiB ride in the replicated state while the pool's inline budget lasts; past it they are stored as shards (three whole copies, one on each node). The last column gives the inline bytes used, of the budget, when a concurrency's rounds ended.")
	p("")
	dials := smallTable(p, r.small)
	if len(r.smallPast) > 0 {
		p("")
		p("The same loads again, past the inline budget (set to one byte after the rounds above, and back after these): every small PUT is stored as shards, as in a pool whose small objects outgrew the budget, and every GET reads them back.")
		p("")
		dials += smallTable(p, r.smallPast)
	}
	var objects []string
	for _, w := range slices.Concat(r.small, r.smallPast) {
		objects = append(objects, fmt.Sprintf("%d at %d clients (%s)", w.objects, w.clients, w.prefix))
	}
	p("")
	p("The GETs read from the objects written (warm-ups included): %s.", strings.Join(objects, ", "))
	p("Every worker keeps one keep-alive HTTPS connection per node it uses (pools of up to 256 idle connections per node), opened in the warm-up: the measured rounds opened %d new connections in all, so the figures are what the servers do per request, not TCP and TLS set-up. "+
		"Nodes' CPU per op is the user and system time of the three nodes together per successful operation. "+
		"Busy elsewhere is the most, over the three loads, of the cores the rest of the machine kept busy or the hypervisor stole while they ran (other processes, kernel threads).", dials)
	for _, w := range slices.Concat(r.small, r.smallPast) {
		for k := range w.phase {
			if e := w.phase[k].all.FirstErr; e != nil {
				p("")
				p("%d clients (%s), %s, first error: `%v`", w.clients, w.prefix, smallKind(k), e)
			}
		}
	}
	p("")
}

// smallTable is one table of small-object rows; it returns the
// connections the rows' rounds opened.
func smallTable(p func(string, ...any), rows []smallRow) int64 {
	p("| clients | Raft writes/s | PUT objects/s | GET objects/s | PUT / Raft | GET / Raft | Raft p50 / p99 | PUT p50 / p99 | GET p50 / p99 | nodes' CPU per op: Raft / PUT / GET | errors | new connections | busy elsewhere | inline used / budget |")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var dials int64
	for _, w := range rows {
		ph := &w.phase
		var errs int
		var elsewhere float64
		for k := range ph {
			errs += ph[k].all.Errors
			elsewhere = max(elsewhere, ph[k].cpu.busyElsewhere())
		}
		dials += w.dials
		p("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %d | %d | %.2f | %s / %s |", w.clients,
			rateSpread(&ph[raftWrite]), rateSpread(&ph[smallPut]), rateSpread(&ph[smallGet]),
			benchrun.Ratio(ph[smallPut].rate(), ph[raftWrite].rate()), benchrun.Ratio(ph[smallGet].rate(), ph[raftWrite].rate()),
			latencies(&ph[raftWrite].all), latencies(&ph[smallPut].all), latencies(&ph[smallGet].all),
			benchrun.Micros(ph[raftWrite].cpuPerOp()), benchrun.Micros(ph[smallPut].cpuPerOp()), benchrun.Micros(ph[smallGet].cpuPerOp()), errs, w.dials, elsewhere,
			mib(w.inline.Bytes), budgetName(w.inline.Budget))
	}
	return dials
}

// smallTargets are issue 14's: small PUT at least half the Raft write rate,
// small GET at least the Raft write rate, at every concurrency.
func (r *report) smallTargets() []target {
	var ts []target
	for _, w := range slices.Concat(r.small, r.smallPast) {
		regime := "within the inline budget"
		switch {
		case w.prefix == "past" || r.cfg.inlineMiB > 0:
			regime = "past the inline budget"
		case w.inline.pastBudget():
			regime = "the inline budget spent during the rounds"
		}
		raft := w.phase[raftWrite].rate()
		for _, t := range []struct {
			kind smallKind
			min  float64
		}{{smallPut, 0.5}, {smallGet, 1.0}} {
			got := w.phase[t.kind].rate()
			ts = append(ts, target{
				name:       fmt.Sprintf("%s ≥ %.1f× the Raft write rate at %d clients, %s", t.kind, t.min, w.clients, regime),
				measured:   fmt.Sprintf("%s (%.0f vs %.0f /s)", benchrun.Ratio(got, raft), got, raft),
				measuredOK: raft > 0 && w.phase[t.kind].all.Ops() > 0,
				ok:         got >= t.min*raft,
			})
		}
	}
	return ts
}

// budgetName is an inline budget for the table: MiB, or bytes under one.
func budgetName(b int64) string {
	if b < 1<<20 {
		return fmt.Sprintf("%d B", b)
	}
	return mib(b)
}

func rateSpread(p *smallPhase) string {
	if len(p.rates) < 2 {
		return fmt.Sprintf("%.0f", p.rate())
	}
	return fmt.Sprintf("%.0f (%s)", p.rate(), spread(p.rates))
}

func latencies(s *benchrun.Sample) string {
	return benchrun.Millis(s.Percentile(50)) + " / " + benchrun.Millis(s.Percentile(99))
}

func cacheState(rows []smallRow) string {
	dropped := true
	for _, w := range rows {
		dropped = dropped && w.dropped
	}
	return strings.TrimPrefix(cacheNote(dropped), "page cache ")
}
