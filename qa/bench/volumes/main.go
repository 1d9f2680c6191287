package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
)

// config is the benchmark's flags.
type config struct {
	sizeGiB    int
	span       int64 // bytes the jobs touch
	resync     int64 // bytes written while a replica is down
	runtime    time.Duration
	ramp       time.Duration
	quietCores float64
	quietWait  time.Duration
	cairnBin   string
	out        string
	verbose    bool
	profile    string
}

func parseFlags(args []string) (config, error) {
	var cfg config
	var spanMiB, resyncMiB int64
	var quick bool
	fs := flag.NewFlagSet("bench-volumes", flag.ContinueOnError)
	fs.BoolVar(&quick, "quick", false, "short run: 3 s jobs over 512 MiB, 256 MiB written while a replica is down")
	fs.IntVar(&cfg.sizeGiB, "size", 10, "GiB of the volume and of the local reference file")
	fs.Int64Var(&spanMiB, "span", 2048, "MiB at the start of the volume and of the file that the jobs touch (written first)")
	fs.Int64Var(&resyncMiB, "resync", 1024, "MiB written while a replica's node is down")
	fs.DurationVar(&cfg.runtime, "runtime", 10*time.Second, "measured time of each fio job")
	fs.DurationVar(&cfg.ramp, "ramp", 2*time.Second, "unmeasured time before it")
	fs.Float64Var(&cfg.quietCores, "quiet-cores", 0.25, "before each job, wait until the rest of the machine keeps at most this many cores busy")
	fs.DurationVar(&cfg.quietWait, "quiet-wait", 10*time.Second, "longest wait for a quiet machine before a job (0: do not wait)")
	fs.StringVar(&cfg.cairnBin, "cairn", "", "cairn binary (default: build ./appliance/cmd/cairn)")
	fs.StringVar(&cfg.out, "out", "", "also write the markdown report to this file")
	fs.BoolVar(&cfg.verbose, "v", false, "show the harness's log (node command lines)")
	fs.StringVar(&cfg.profile, "profile", "", "write CPU profiles of the nodes during the volume's jobs at queue depth above 1 to this directory")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if quick {
		cfg.runtime, cfg.ramp = min(cfg.runtime, 3*time.Second), min(cfg.ramp, time.Second)
		spanMiB, resyncMiB = min(spanMiB, 512), min(resyncMiB, 256)
	}
	cfg.span, cfg.resync = spanMiB<<20, resyncMiB<<20
	if cfg.sizeGiB < 1 || cfg.span < 1<<20 || cfg.resync < 1<<20 || cfg.runtime <= 0 || cfg.ramp < 0 {
		return cfg, errors.New("-size, -span, -resync and -runtime must be positive")
	}
	if cfg.span+cfg.resync > int64(cfg.sizeGiB)<<30 {
		return cfg, errors.New("-span and -resync must fit in the volume side by side")
	}
	return cfg, nil
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench-volumes: ")
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			log.Print(err)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := benchrun.New("bench-volumes", cfg.verbose)
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

// volName is the benchmark's volume.
const volName = "bench"

// run measures and prints the report. It fails only when it cannot measure;
// missed targets are part of the report.
func run(ctx context.Context, t harness.T, cfg config) error {
	rep := &report{cfg: cfg, started: time.Now(), fio: fioVersion()}
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
			return err
		}
	}
	bin := cfg.cairnBin
	if bin == "" {
		benchrun.Progress("building cairn")
		bin = harness.BuildCairn(t)
	}
	benchrun.Progress("starting 3 Cairn nodes with a disk each")
	cl, err := startCluster(ctx, t, bin, cfg.profile != "")
	if err != nil {
		return err
	}
	var pids []int
	for _, n := range cl.c.Nodes {
		pids = append(pids, n.PID())
	}
	writer := cl.c.Nodes[0]
	v, err := cl.createVolume(ctx, volName, cfg.sizeGiB)
	if err != nil {
		return err
	}
	uri, err := cl.attach(ctx, volName, writer)
	if err != nil {
		return err
	}
	benchrun.Progress("volume %s (%d GiB, 3 replicas) served on %s at %s", v.ID, cfg.sizeGiB, writer.Name, uri)

	// Beside the nodes' data dirs: the filesystem their disks are on.
	dir := filepath.Dir(writer.DataDir)
	rep.device = device(dir)
	path, err := localFile(dir, int64(cfg.sizeGiB)<<30)
	if err != nil {
		return fmt.Errorf("local file: %w", err)
	}
	defer os.Remove(path)
	vol, local, cached := volumeTarget(uri), localTarget(path), pageCacheTarget(path)

	if rep.rtt, err = cl.roundTrip(ctx, 1, 200); err != nil {
		return err
	}
	benchrun.Progress("HTTPS round trip to %s: %s", cl.c.Nodes[1].Name, benchrun.Micros(rep.rtt))

	benchrun.Progress("writing the first %d MiB of the local file and of the volume", cfg.span>>20)
	if rep.fillLocal, err = fill(ctx, local, 0, cfg.span); err != nil {
		return fmt.Errorf("fill the local file: %w", err)
	}
	if rep.fillVolume, err = fill(ctx, vol, 0, cfg.span); err != nil {
		return fmt.Errorf("fill the volume: %w", err)
	}
	benchrun.Progress("filled: local %.0f MiB/s, volume %.0f MiB/s", rep.fillLocal, rep.fillVolume)

	s := settings{span: cfg.span, runtime: cfg.runtime, ramp: cfg.ramp}
	for _, j := range jobs {
		row := row{job: j}
		// Local first (for writes also through the page cache), then the
		// volume, job by job: noise from the rest of the machine then
		// falls on both sides of a ratio alike.
		type leg struct {
			t   target
			out *result
		}
		sides := []leg{{local, &row.local}, {vol, &row.volume}}
		if j.write() {
			sides = []leg{{local, &row.local}, {cached, &row.cached}, {vol, &row.volume}}
		}
		for _, side := range sides {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
			if _, quiet := benchrun.WaitQuiet(ctx, pids, cfg.quietCores, cfg.quietWait); !quiet {
				row.noisy = true
			}
			wait := func() {}
			if cfg.profile != "" && side.t.label == "volume" && j.depth > 1 {
				wait = profile(ctx, cl, cfg, "volume-"+j.rw+"-")
			}
			*side.out = s.run(ctx, j, side.t, pids)
			wait()
			if err := side.out.err; err != nil {
				benchrun.Progress("%s, %s: %v", j.name, side.t.label, err)
				continue
			}
			benchrun.Progress("%s, %s: %.0f IOPS, %.1f MiB/s, p50 %s p99 %s", j.name, side.t.label,
				side.out.iops, side.out.mibs, benchrun.Micros(side.out.p50), benchrun.Micros(side.out.p99))
		}
		rep.rows = append(rep.rows, row)
	}

	rep.resync = measureResync(ctx, cl, v, vol, cfg.span, cfg.resync)
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

// profile starts CPU profiles of the nodes over a job's measured time, after
// its ramp, and returns a function that waits for them.
func profile(ctx context.Context, cl *cluster, cfg config, prefix string) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			return
		case <-time.After(cfg.ramp):
		}
		benchrun.Profile(ctx, cl.c.Nodes, cfg.runtime-time.Second, cfg.profile, prefix)()
	}()
	return func() { <-done }
}
