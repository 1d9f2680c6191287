package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
)

// config is the benchmark's flags.
type config struct {
	clients      []int
	round        time.Duration
	rounds       int
	warmup       time.Duration
	idle         time.Duration
	failovers    int
	etcdFailover bool
	cairnBin     string
	logStore     string
	etcdBin      string
	out          string
	verbose      bool
	profile      string
}

func parseFlags(args []string) (config, error) {
	cfg := config{}
	fs := flag.NewFlagSet("bench-consensus", flag.ContinueOnError)
	clients := fs.String("clients", "1,16,64", "comma-separated concurrencies to measure")
	fs.DurationVar(&cfg.round, "round", 4*time.Second, "length of one measured round of one side")
	fs.IntVar(&cfg.rounds, "rounds", 3, "measured rounds per side and concurrency, interleaved between the sides")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured load per side before each concurrency")
	fs.DurationVar(&cfg.idle, "idle", 5*time.Second, "how long the clusters idle before resident memory is read")
	fs.IntVar(&cfg.failovers, "failovers", 10, "leader kills per side")
	fs.BoolVar(&cfg.etcdFailover, "etcd-failover", true, "measure etcd's failover too, for reference")
	fs.StringVar(&cfg.cairnBin, "cairn", "", "cairn binary (default: build ./appliance/cmd/cairn)")
	fs.StringVar(&cfg.logStore, "raft-log-store", "wal", "Cairn's Raft log store: wal or boltdb (passed to the agents as --raft-log-store)")
	fs.StringVar(&cfg.etcdBin, "etcd", "etcd", "etcd binary")
	fs.StringVar(&cfg.out, "out", "", "also write the markdown report to this file")
	fs.BoolVar(&cfg.verbose, "v", false, "show the harness's log (node command lines)")
	fs.StringVar(&cfg.profile, "profile", "", "write CPU profiles of the Cairn nodes, taken during the first measured round at the highest concurrency, to this directory")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	for f := range strings.SplitSeq(*clients, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			return cfg, fmt.Errorf("-clients: %q is not a positive number", f)
		}
		cfg.clients = append(cfg.clients, c)
	}
	if cfg.round <= 0 || cfg.rounds < 1 || cfg.failovers < 0 {
		return cfg, fmt.Errorf("-round, -rounds and -failovers must be positive")
	}
	return cfg, nil
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench-consensus: ")
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := benchrun.New("bench-consensus", cfg.verbose)
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

// run measures and prints the report. It fails only when it cannot measure;
// missed targets are part of the report.
func run(ctx context.Context, t *benchrun.Runner, cfg config) error {
	rep := &report{cfg: cfg, started: time.Now(), machine: readMachine(cfg.etcdBin)}
	bin := cfg.cairnBin
	if bin == "" {
		benchrun.Progress("building cairn")
		bin = harness.BuildCairn(t)
	}
	benchrun.Progress("starting 3 Cairn nodes")
	cairn, err := startCairn(ctx, t, bin, cfg.logStore, slices.Max(cfg.clients), cfg.profile != "")
	if err != nil {
		return err
	}
	benchrun.Progress("starting 3 etcd members")
	etcd, err := startEtcd(ctx, t, cfg.etcdBin)
	if err != nil {
		return err
	}
	rep.sides = [2]system{cairn, etcd}

	// Once interrupted, every step below is skipped.
	pause(ctx, cfg.idle)
	rep.memory = append(rep.memory, readMemory("idle after start", rep.sides))
	for _, c := range cfg.clients {
		if ctx.Err() == nil {
			rep.levels = append(rep.levels, measureLevel(ctx, rep.sides, c, cfg))
		}
	}
	pause(ctx, cfg.idle)
	rep.memory = append(rep.memory, readMemory("idle after load", rep.sides))
	if cfg.profile != "" {
		benchrun.Heap(ctx, cairn.nodes(), cfg.profile, "idle-after-load-")
	}
	for i, sys := range rep.sides {
		if ctx.Err() == nil && (sys != etcd || cfg.etcdFailover) {
			rep.failovers[i], rep.failoverErr[i] = measureFailovers(ctx, sys, cfg.failovers)
			if rep.failoverErr[i] != nil {
				t.Fail() // a node that did not come back: keep the node logs
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	rep.took = time.Since(rep.started)

	md := rep.markdown()
	fmt.Print(md)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		benchrun.Progress("report written to %s", cfg.out)
	}
	return nil
}

// measureLevel measures both sides at one concurrency: a warm-up each, then
// rounds alternating between them, the side going first swapping every round
// (ABBA), so drift in the machine's speed hits both alike.
func measureLevel(ctx context.Context, sides [2]system, clients int, cfg config) level {
	lv := level{clients: clients, s: [2]*sample{{}, {}}}
	if cfg.warmup > 0 {
		for _, sys := range sides {
			drive(ctx, sys, clients, 0, cfg.warmup)
		}
	}
	for r := range cfg.rounds {
		if ctx.Err() != nil {
			break
		}
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			var profiled func()
			if p, ok := sides[i].(profiler); ok && cfg.profile != "" && r == 0 && clients == slices.Max(cfg.clients) {
				profiled = p.profile(ctx, cfg.round, cfg.profile)
			}
			s := drive(ctx, sides[i], clients, r, cfg.round)
			if profiled != nil {
				profiled()
			}
			benchrun.Progress("%s, round %d/%d, %s: %.0f writes/s, p50 %s, p99 %s, CPU/write %s, %d errors",
				plural(clients, "client"), r+1, cfg.rounds, sides[i].name(), s.Rate(), benchrun.Millis(s.Percentile(50)), benchrun.Millis(s.Percentile(99)), benchrun.Micros(s.cpuPerWrite()), s.Errors)
			lv.s[i].add(&s)
		}
	}
	return lv
}

// readMemory reads every node's resident memory.
func readMemory(phase string, sides [2]system) memory {
	m := memory{phase: phase}
	for i, sys := range sides {
		for _, n := range sys.nodes() {
			b, file, comm, err := rss(n.PID())
			if err == nil && !strings.EqualFold(comm, sys.name()) {
				err = fmt.Errorf("pid %d is %q, not the node", n.PID(), comm)
			}
			if err != nil {
				benchrun.Progress("%s %s: %v", sys.name(), n.Name, err)
				b, file = -1, -1
			}
			m.bytes[i] = append(m.bytes[i], b)
			m.file[i] = append(m.file[i], file)
		}
	}
	benchrun.Progress("resident memory, %s: Cairn %s, etcd %s", phase, mibList(m.bytes[0]), mibList(m.bytes[1]))
	return m
}
