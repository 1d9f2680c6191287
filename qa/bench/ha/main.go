// Command bench-ha measures live migration on three Cairn nodes beside a
// bare QEMU-to-QEMU migration of the same guest on the same machine, over
// the same TLS (x509 with a verified peer) and with QEMU's defaults:
// QEMU's downtime, the gap in the guest's TCP answers (Cairn's), and the
// total time from asking to the guest running on the new node. Under TCG
// here; on a box with KVM run it as is (hypervisor.Accel picks KVM).
//
//	make bench-ha [BENCH_ARGS="-runs 10 -out report.md"]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
)

type config struct {
	runs     int
	cairnBin string
	out      string
	verbose  bool
}

// run is one migration's figures.
type run struct {
	downtime time.Duration // as QEMU measures it (the source's pause)
	total    time.Duration // asked → the guest runs on the new node
	gap      time.Duration // Cairn: the longest gap in the guest's TCP answers
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench-ha: ")
	var cfg config
	fs := flag.NewFlagSet("bench-ha", flag.ExitOnError)
	fs.IntVar(&cfg.runs, "runs", 10, "migrations of each kind, alternating")
	quick := fs.Bool("quick", false, "3 migrations of each kind")
	fs.StringVar(&cfg.cairnBin, "cairn", "", "cairn binary (default: build ./appliance/cmd/cairn)")
	fs.StringVar(&cfg.out, "out", "", "also write the markdown report to this file")
	fs.BoolVar(&cfg.verbose, "v", false, "show the harness's log")
	_ = fs.Parse(os.Args[1:])
	if *quick {
		cfg.runs = 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := benchrun.New("bench-ha", cfg.verbose)
	err := measure(ctx, r, cfg)
	if err != nil {
		log.Print(err)
		if ctx.Err() == nil {
			r.Fail()
		}
	}
	r.RunCleanups()
	if err != nil {
		os.Exit(1)
	}
}

func measure(ctx context.Context, t harness.T, cfg config) error {
	started := time.Now()
	bin := cfg.cairnBin
	if bin == "" {
		benchrun.Progress("building cairn")
		bin = harness.BuildCairn(t)
	}
	guest := harness.GuestImage(t)
	benchrun.Progress("starting three Cairn nodes; uploading the guest; booting it")
	cl, err := startCluster(ctx, t, bin, guest)
	if err != nil {
		return err
	}
	vm, err := cl.bootVM(ctx, "mover")
	if err != nil {
		return err
	}
	benchrun.Progress("booting the same guest under a bare QEMU")
	bw, err := newBare(ctx, t, guest)
	if err != nil {
		return err
	}
	var cairn, bare []run
	for i := range cfg.runs {
		for k := range 2 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if (k == 0) == (i%2 == 0) {
				r, err := cl.migrate(ctx, vm)
				if err != nil {
					return fmt.Errorf("Cairn migration %d: %w", i+1, err)
				}
				cairn = append(cairn, r)
				benchrun.Progress("run %d/%d Cairn: downtime %s, total %s, TCP gap %s", i+1, cfg.runs, benchrun.Millis(r.downtime), benchrun.Millis(r.total), benchrun.Millis(r.gap))
			} else {
				r, err := bw.migrate(ctx)
				if err != nil {
					return fmt.Errorf("bare migration %d: %w", i+1, err)
				}
				bare = append(bare, r)
				benchrun.Progress("run %d/%d bare:  downtime %s, total %s", i+1, cfg.runs, benchrun.Millis(r.downtime), benchrun.Millis(r.total))
			}
		}
	}
	md := report(cfg, cairn, bare, time.Since(started))
	fmt.Print(md)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func median(rs []run, f func(run) time.Duration) time.Duration {
	if len(rs) == 0 {
		return 0
	}
	d := make([]time.Duration, len(rs))
	for i, r := range rs {
		d[i] = f(r)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

func worst(rs []run, f func(run) time.Duration) time.Duration {
	var w time.Duration
	for _, r := range rs {
		w = max(w, f(r))
	}
	return w
}

func report(cfg config, cairn, bare []run, took time.Duration) string {
	var b strings.Builder
	dt := func(r run) time.Duration { return r.downtime }
	tt := func(r run) time.Duration { return r.total }
	gp := func(r run) time.Duration { return r.gap }
	fmt.Fprintf(&b, "\n## bench-ha: live migration, %d runs each (%s, %s, %s)\n\n", len(cairn), hypervisor.Accel(), benchrun.MemTotal(), took.Round(time.Second))
	fmt.Fprintf(&b, "| | downtime (QEMU) median / worst | total median / worst | guest's TCP gap median / worst |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| Cairn (3 nodes, volumes, TLS, switchover moves the writer epoch) | %s / %s | %s / %s | %s / %s |\n",
		benchrun.Millis(median(cairn, dt)), benchrun.Millis(worst(cairn, dt)), benchrun.Millis(median(cairn, tt)), benchrun.Millis(worst(cairn, tt)),
		benchrun.Millis(median(cairn, gp)), benchrun.Millis(worst(cairn, gp)))
	fmt.Fprintf(&b, "| bare QEMU to QEMU (same machine, same TLS, QEMU's defaults) | %s / %s | %s / %s | — |\n\n",
		benchrun.Millis(median(bare, dt)), benchrun.Millis(worst(bare, dt)), benchrun.Millis(median(bare, tt)), benchrun.Millis(worst(bare, tt)))
	extra := median(cairn, dt) - median(bare, dt)
	ratio := float64(median(cairn, tt)) / float64(max(median(bare, tt), 1))
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(&b, "- Downtime: Cairn %+d ms against bare (target ≤ +20 ms): %s.\n", extra.Milliseconds(), verdict(extra <= 20*time.Millisecond))
	fmt.Fprintf(&b, "- Total time: Cairn %.2f× bare (target ≤ 1.2×): %s.\n", ratio, verdict(ratio <= 1.2))
	fmt.Fprintf(&b, "- Cairn's total runs from the API call to the guest running on the new node with the migration recorded as done; bare's from starting the receiving QEMU to the guest running in it.\n")
	return b.String()
}

var errNoFigures = errors.New("QEMU gave no figures")
