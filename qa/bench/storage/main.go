package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"

	"github.com/cairnhq/cairn/qa/harness"
)

// rawRounds is how many times the raw disk speed is measured; the report
// uses the medians.
const rawRounds = 3

// config is the benchmark's flags.
type config struct {
	quick        bool
	sizes        []int64
	clients      []int
	smallClients []int
	smallRounds  int
	smallWarmup  time.Duration
	round        time.Duration
	quietCores   float64
	quietWait    time.Duration
	budget       int64 // bytes per phase
	rawSize      int64
	rssLimit     int64
	idle         time.Duration
	cairnBin     string
	out          string
	verbose      bool
	profile      string
	inlineMiB    int64 // the pool's inline budget for small objects; 0 keeps the default
}

func parseFlags(args []string) (config, error) {
	var cfg config
	var budgetMiB, rssMiB int64
	fs := flag.NewFlagSet("bench-storage", flag.ContinueOnError)
	fs.BoolVar(&cfg.quick, "quick", false, "short run: 64 MiB objects at 1 and 8 clients, one round of the small objects, 2 s rounds")
	fs.DurationVar(&cfg.round, "round", 3*time.Second, "time limit of one PUT or GET phase (operations started before it finish)")
	fs.Int64Var(&budgetMiB, "budget", 2048, "MiB limit of one PUT or GET phase")
	fs.Float64Var(&cfg.quietCores, "quiet-cores", 0.25, "before each phase, wait until the rest of the machine keeps at most this many cores busy")
	fs.DurationVar(&cfg.quietWait, "quiet-wait", 10*time.Second, "longest wait for a quiet machine before a phase (0: do not wait)")
	fs.IntVar(&cfg.smallRounds, "small-rounds", 3, "rounds of each small-object load (Raft write, 4 KiB PUT, 4 KiB GET) per concurrency")
	fs.Int64Var(&rssMiB, "rss-limit", 1024, "MiB of resident memory per node the load must stay under")
	fs.DurationVar(&cfg.idle, "idle", 5*time.Second, "idle time before resident memory is read after the load")
	fs.StringVar(&cfg.cairnBin, "cairn", "", "cairn binary (default: build ./appliance/cmd/cairn)")
	fs.StringVar(&cfg.out, "out", "", "also write the markdown report to this file")
	fs.BoolVar(&cfg.verbose, "v", false, "show the harness's log (node command lines)")
	fs.StringVar(&cfg.profile, "profile", "", "write CPU profiles of the nodes during the PUT and GET phases of the largest objects to this directory")
	fs.Int64Var(&cfg.inlineMiB, "inline-budget-mib", 0, "set the pool's inline budget for small objects to this many MiB first (1 measures the erasure-coded path of small objects; 0 keeps the default)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.sizes = []int64{1 << 20, 64 << 20}
	cfg.clients = []int{1, 8, 32}
	cfg.smallClients = []int{1, 32, 128}
	cfg.smallWarmup = time.Second
	cfg.rawSize = 512 << 20
	if cfg.quick {
		cfg.sizes = []int64{64 << 20}
		cfg.clients = []int{1, 8}
		cfg.round = min(cfg.round, 2*time.Second)
		cfg.smallRounds = 1
		cfg.smallWarmup = time.Second / 2
		budgetMiB = min(budgetMiB, 1024)
	}
	cfg.budget, cfg.rssLimit = budgetMiB<<20, rssMiB<<20
	if cfg.round <= 0 || cfg.budget <= 0 || cfg.rssLimit <= 0 || cfg.smallRounds < 1 || cfg.inlineMiB < 0 {
		return cfg, errors.New("-round, -budget, -rss-limit and -small-rounds must be positive, -inline-budget-mib not negative")
	}
	return cfg, nil
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench-storage: ")
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := benchrun.New("bench-storage", cfg.verbose)
	err = run(ctx, r, cfg)
	if err != nil {
		log.Print(err)
		if ctx.Err() == nil {
			r.Fail() // so the harness shows and keeps the node logs
		}
	}
	r.RunCleanups()
	if err != nil {
		os.Exit(1)
	}
}

const bucket = "bench"

// bench is what the phases of one run share.
type bench struct {
	cfg     config
	cl      *cluster
	disk    *rawDisk // the raw write goes on between the PUT phases
	gate    *quietGate
	mem     *rssSampler
	payload []byte // random; every object is a prefix of it
	pids    []int  // the nodes'
}

// run measures and prints the report. It fails only when it cannot measure;
// missed targets are part of the report.
func run(ctx context.Context, t harness.T, cfg config) error {
	rep := &report{cfg: cfg, started: time.Now()}
	bin := cfg.cairnBin
	if bin == "" {
		benchrun.Progress("building cairn")
		bin = harness.BuildCairn(t)
	}
	benchrun.Progress("starting 3 Cairn nodes with 2 disks each")
	cl, err := startCluster(ctx, t, bin, bucket, cfg.profile != "")
	if err != nil {
		return err
	}
	if cfg.inlineMiB > 0 {
		if err := cl.call(ctx, "PUT", "/api/v1/storage/inline", cl.raft.Token, map[string]int64{"inline_budget": cfg.inlineMiB << 20}, nil, 200); err != nil {
			return fmt.Errorf("set the inline budget: %w", err)
		}
		benchrun.Progress("inline budget for small objects set to %d MiB", cfg.inlineMiB)
	}
	var pids []int
	for _, n := range cl.c.Nodes {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n.PID()))
		if err != nil || strings.TrimSpace(string(comm)) != "cairn" {
			return fmt.Errorf("%s: pid %d is %q, not cairn (%v)", n.Name, n.PID(), comm, err)
		}
		pids = append(pids, n.PID())
	}
	rep.rssStart = readRSS(pids)

	benchrun.Progress("raw sequential write and read of %d MiB next to the disks, %d rounds", cfg.rawSize>>20, rawRounds)
	rep.gate = &quietGate{pids: pids, cores: cfg.quietCores, limit: cfg.quietWait}
	rep.disk, err = measureDisk(ctx, cl.c.Nodes[0].DataDir, cfg.rawSize, rawRounds, rep.gate)
	defer rep.disk.remove()
	if err != nil {
		return fmt.Errorf("raw disk: %w", err)
	}
	benchrun.Progress("raw disk: write %.0f MiB/s %.0f (fsync's share %.2f), read %.0f MiB/s %.0f, O_DIRECT write %.0f MiB/s %.0f on %s",
		rep.disk.write, rep.disk.writes, rep.disk.fsyncs, rep.disk.read, rep.disk.reads, rep.disk.direct, rep.disk.directs, rep.disk.device)
	if rep.encode, err = measureEncode(time.Second); err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	benchrun.Progress("reedsolomon 4+2 encode: %.0f MiB/s", rep.encode)
	rep.ceilingN = min(8, slices.Max(cfg.clients))
	rep.gate.wait(ctx)
	if rep.ceiling, rep.ceilingCPU, err = measureTLSCeiling(ctx, cfg.sizes[len(cfg.sizes)-1], rep.ceilingN, 2*time.Second); err != nil {
		return fmt.Errorf("HTTPS ceiling: %w", err)
	}
	benchrun.Progress("HTTPS GET ceiling (loopback, from memory, %d clients): %.0f MiB/s", rep.ceilingN, rep.ceiling)

	b := &bench{cfg: cfg, cl: cl, disk: rep.disk, gate: rep.gate, mem: newRSSSampler(ctx, pids), pids: pids}
	b.payload = make([]byte, cfg.sizes[len(cfg.sizes)-1])
	_, _ = rand.Read(b.payload)
	if err := cl.raft.Create(ctx, slices.Max(cfg.smallClients), "raft"); err != nil {
		return fmt.Errorf("projects for the Raft writes: %w", err)
	}
	for _, c := range cfg.smallClients {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		rep.small = append(rep.small, b.measureSmall(ctx, c, "small"))
	}
	if cfg.inlineMiB == 0 {
		// The same loads past the inline budget, as in a pool whose small
		// objects outgrew it: shards.
		var was inlineUsage
		if err := cl.call(ctx, "GET", "/api/v1/storage/inline", cl.raft.Token, nil, &was, 200); err != nil {
			return fmt.Errorf("read the inline budget: %w", err)
		}
		// A budget of one byte: no object fits, whatever is inline already.
		if err := cl.call(ctx, "PUT", "/api/v1/storage/inline", cl.raft.Token, map[string]int64{"inline_budget": 1}, nil, 200); err != nil {
			return fmt.Errorf("set the inline budget: %w", err)
		}
		benchrun.Progress("small objects again past the inline budget (set to 1 byte, %d MiB used)", was.Bytes>>20)
		for _, c := range cfg.smallClients {
			if ctx.Err() != nil {
				break
			}
			rep.smallPast = append(rep.smallPast, b.measureSmall(ctx, c, "past"))
		}
		if err := cl.call(context.WithoutCancel(ctx), "PUT", "/api/v1/storage/inline", cl.raft.Token, map[string]int64{"inline_budget": was.Budget}, nil, 200); err != nil {
			return fmt.Errorf("restore the inline budget: %w", err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
	}
	for _, size := range cfg.sizes {
		for _, c := range cfg.clients {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
			row := b.measure(ctx, size, c)
			benchrun.Progress("%s, %d clients: PUT %.1f MiB/s (%d ops, %d errors), GET %.1f MiB/s (%d ops, %d errors), peak RSS %s",
				sizeName(size), c, row.put.mibps(), row.put.Ops(), row.put.Errors, row.get.mibps(), row.get.Ops(), row.get.Errors, mib(row.peakRSS))
			for _, e := range []error{row.put.FirstErr, row.get.FirstErr} {
				if e != nil {
					benchrun.Progress("  first error: %v", e)
				}
			}
			rep.rows = append(rep.rows, row)
		}
	}
	rep.rssPeak = b.mem.overall()
	pause(ctx, cfg.idle)
	rep.rssAfter = readRSS(pids)
	rep.took = time.Since(rep.started)

	md := rep.markdown()
	fmt.Print(md)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		benchrun.Progress("report written to %s", cfg.out)
	}
	return rep.unmeasured()
}

func readRSS(pids []int) []int64 {
	var out []int64
	for _, pid := range pids {
		b, err := rss(pid)
		if err != nil {
			b = -1
		}
		out = append(out, b)
	}
	return out
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
