package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
)

// config is the benchmark's flags.
type config struct {
	quick        bool
	runs         int
	burst        int
	bootTimeout  time.Duration
	burstTimeout time.Duration
	cairnBin     string
	out          string
	verbose      bool
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench-compute", flag.ContinueOnError)
	fs.BoolVar(&cfg.quick, "quick", false, "short run: 3 boots of each kind and a 5-VM burst (unless -runs or -burst say otherwise)")
	fs.IntVar(&cfg.runs, "runs", 10, "boots of each kind (Cairn and bare QEMU), alternating")
	fs.IntVar(&cfg.burst, "burst", 30, "VMs created at once on the one node")
	fs.DurationVar(&cfg.bootTimeout, "boot-timeout", 3*time.Minute, "how long one boot may take to its hostname line")
	fs.DurationVar(&cfg.burstTimeout, "burst-timeout", 10*time.Minute, "how long the burst may take until every VM runs and has printed its hostname line")
	fs.StringVar(&cfg.cairnBin, "cairn", "", "cairn binary (default: build ./appliance/cmd/cairn)")
	fs.StringVar(&cfg.out, "out", "", "also write the markdown report to this file")
	fs.BoolVar(&cfg.verbose, "v", false, "show the harness's log (node command lines) and both QEMU command lines")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["runs"] {
			cfg.runs = 3
		}
		if !set["burst"] {
			cfg.burst = 5
		}
	}
	if cfg.runs < 1 || cfg.burst < 0 {
		return cfg, errors.New("-runs must be at least 1 and -burst not negative")
	}
	return cfg, nil
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench-compute: ")
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := benchrun.New("bench-compute", cfg.verbose)
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
func run(ctx context.Context, t harness.T, cfg config) error {
	rep := &report{cfg: cfg, started: time.Now(), accel: hypervisor.Accel(), qemu: qemuVersion()}
	bin := cfg.cairnBin
	if bin == "" {
		benchrun.Progress("building cairn")
		bin = harness.BuildCairn(t)
	}
	guest := harness.GuestImage(t)
	if st, err := os.Stat(guest); err == nil {
		rep.guestSize = st.Size()
	}
	benchrun.Progress("starting one Cairn node with 2 disks; uploading the guest")
	nd, err := startNode(ctx, t, bin, guest, cfg.burst)
	if err != nil {
		return err
	}
	// Short: QEMU's sockets live here (108 bytes at most).
	runDir := fmt.Sprintf("/run/cairn-bench-compute-%d", os.Getpid())
	t.Cleanup(func() { os.RemoveAll(runDir) })
	qlog := slog.New(slog.DiscardHandler) // the driver's "vm stopped" lines
	if cfg.verbose {
		qlog = slog.Default()
	}
	bw, err := newBare(t.TempDir(), guest, runDir, qlog)
	if err != nil {
		return err
	}
	rep.cache = bw.cache

	// The first VM on the node fetches the image into the node's cache;
	// it is reported apart, and so is the first bare launch.
	benchrun.Progress("first boots (Cairn's image cache is cold)")
	c, err := nd.boot(ctx, "boot-first", cfg.bootTimeout)
	if err != nil {
		return fmt.Errorf("first Cairn boot: %w", err)
	}
	rep.cairnFirst = c
	b, err := bw.boot(ctx, "bare-first", cfg.bootTimeout)
	if err != nil {
		return fmt.Errorf("first bare boot: %w", err)
	}
	rep.bareFirst = b
	benchrun.Progress("first: Cairn %s / %s, bare %s / %s (first line / hostname line)",
		secs(c.m.first), secs(c.m.hello), secs(b.m.first), secs(b.m.hello))
	rep.argvDiff = argvDiff(normalize(c.argv, c.id, nd.vmDir(c.id)), normalize(b.argv, "bare-first", filepath.Join(bw.work, "vms", "bare-first")))
	if cfg.verbose {
		benchrun.Progress("Cairn's QEMU: %s", strings.Join(c.argv, " "))
		benchrun.Progress("bare QEMU:    %s", strings.Join(b.argv, " "))
	}

	// Alternate, swapping the order every run, so drift and any after-
	// effect of the previous boot hit both kinds alike.
	for i := range cfg.runs {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		cairnFirst := i%2 == 0
		for k := range 2 {
			if (k == 0) == cairnFirst {
				c, err := nd.boot(ctx, fmt.Sprintf("boot-%02d", i+1), cfg.bootTimeout)
				if err != nil {
					rep.bootFailures = append(rep.bootFailures, "Cairn: "+err.Error())
					benchrun.Progress("Cairn boot %d: %v", i+1, err)
					continue
				}
				rep.cairn = append(rep.cairn, c)
				benchrun.Progress("run %d/%d Cairn: first line %s, hostname line %s (answered %s, QEMU log open %s, running %s)",
					i+1, cfg.runs, secs(c.m.first), secs(c.m.hello), ms(c.m.posted), ms(c.m.log), ms(c.m.running))
			} else {
				b, err := bw.boot(ctx, fmt.Sprintf("bare-%02d", i+1), cfg.bootTimeout)
				if err != nil {
					rep.bootFailures = append(rep.bootFailures, "bare: "+err.Error())
					benchrun.Progress("bare boot %d: %v", i+1, err)
					continue
				}
				rep.bare = append(rep.bare, b)
				benchrun.Progress("run %d/%d bare:  first line %s, hostname line %s (QEMU log open %s)",
					i+1, cfg.runs, secs(b.m.first), secs(b.m.hello), ms(b.m.log))
			}
		}
	}

	if cfg.burst > 0 {
		benchrun.Progress("burst: creating %d VMs at once", cfg.burst)
		res := nd.burst(ctx, cfg.burst, cfg.burstTimeout)
		rep.burst = &res
		benchrun.Progress("burst: last running %s, last hostname line %s, %d failures, deleted in %s, %d leftovers",
			secs(res.lastRunning()), secs(res.lastHello()), len(res.failures), secs(res.deleted), len(res.leftovers))
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
	return rep.unmeasured()
}

func qemuVersion() string {
	out, err := exec.Command("qemu-system-x86_64", "--version").Output()
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(line, "QEMU emulator version ")
}
