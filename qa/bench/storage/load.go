package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"

	"github.com/minio/minio-go/v7"
)

// result is one phase (PUT or GET) of one size at one concurrency.
type result struct {
	benchrun.Sample
	size int64
	cpu  cpuUse
}

func (r result) bytes() int64 { return int64(r.Ops()) * r.size }

func (r result) mibps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.bytes()) / (1 << 20) / r.Elapsed.Seconds()
}

// drive runs clients closed-loop workers, worker w on node w mod 3, each
// calling op with a fresh operation number until the round is over or maxOps
// operations have started. An operation started before the end finishes and
// counts.
func drive(ctx context.Context, clients, maxOps int, round time.Duration, size int64, op func(ctx context.Context, w, i int) error) result {
	s := benchrun.Closed{Workers: clients, Round: round}.Run(ctx, func(ctx context.Context, w, i int) error {
		if i >= maxOps {
			return benchrun.ErrStop
		}
		return op(ctx, w, i)
	})
	return result{Sample: s, size: size}
}

// row is one size at one concurrency.
type row struct {
	size     int64
	clients  int
	put, get result
	peakRSS  int64 // highest VmRSS of any node during the row
	dropped  bool  // page cache dropped before GET
}

// measure PUTs objects of size, drops the page cache, GETs them back (cycling
// over those written when the GET phase outlasts them) and deletes them.
// Before a PUT of the largest size it measures the raw write again, so that
// the reference and the PUT it is compared with sample the same minutes.
func (b *bench) measure(ctx context.Context, size int64, clients int) row {
	cl, cfg, mem := b.cl, b.cfg, b.mem
	r := row{size: size, clients: clients}
	maxOps := max(int(cfg.budget/size), clients)
	prefix := fmt.Sprintf("s%d-c%d/", size, clients)
	key := func(i int) string { return prefix + strconv.Itoa(i) }
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	if size > 16<<20 {
		opts.PartSize = 128 << 20 // one PUT, not multipart
	}

	mem.reset()
	var written sync.Map
	profiled := func(phase string) func() {
		if cfg.profile == "" || size != slices.Max(cfg.sizes) {
			return func() {}
		}
		return benchrun.Profile(ctx, cl.c.Nodes, cfg.round, cfg.profile, fmt.Sprintf("%s-c%d-", phase, clients))
	}
	// The raw write round waits for settle itself and frees nothing after.
	if size != slices.Max(cfg.sizes) {
		pause(ctx, settle)
	} else if _, err := b.disk.writeRound(ctx); err != nil {
		benchrun.Progress("raw write before the PUT phase: %v", err)
	} else {
		benchrun.Progress("raw write before the PUT phase: %.0f MiB/s; median of all rounds %.0f MiB/s", b.disk.writes[len(b.disk.writes)-1], b.disk.write)
	}
	b.gate.wait(ctx)
	wait := profiled("put")
	cpu := cpuMeter(mem.pids)
	r.put = drive(ctx, clients, maxOps, cfg.round, size, func(ctx context.Context, w, i int) error {
		_, err := cl.s3[w%3].PutObject(ctx, bucket, key(i), bytes.NewReader(b.payload[:size]), size, opts)
		if err == nil {
			written.Store(i, true)
		}
		return err
	})
	r.put.cpu = cpu()
	wait()
	var keys []string
	written.Range(func(k, _ any) bool { keys = append(keys, key(k.(int))); return true })

	if len(keys) > 0 {
		b.gate.wait(ctx)
		r.dropped = dropCaches() == nil
		wait := profiled("get")
		cpu := cpuMeter(mem.pids)
		r.get = drive(ctx, clients, maxOps, cfg.round, size, func(ctx context.Context, w, i int) error {
			obj, err := cl.s3[w%3].GetObject(ctx, bucket, keys[i%len(keys)], minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			defer obj.Close()
			n, err := drain(obj)
			if err == nil && n != size {
				err = fmt.Errorf("GET %s: %d bytes, want %d", keys[i%len(keys)], n, size)
			}
			return err
		})
		r.get.cpu = cpu()
		wait()
	}
	r.peakRSS = mem.peak()

	// One DELETE per key, as clients that clean up one by one do.
	var failed atomic.Int64
	keyc := make(chan string)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for k := range keyc {
				if err := cl.s3[w%3].RemoveObject(ctx, bucket, k, minio.RemoveObjectOptions{}); err != nil && failed.Add(1) == 1 {
					benchrun.Progress("delete %s: %v", k, err)
				}
			}
		})
	}
	for _, k := range keys {
		keyc <- k
	}
	close(keyc)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		benchrun.Progress("%d of %d deletes failed; the objects stay", n, len(keys))
	}
	return r
}

// dropCaches writes back dirty pages and drops the page cache, so reads come
// from the disk.
func dropCaches() error {
	syncFS()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// rssSampler records the highest VmRSS of each pid every 100 ms.
type rssSampler struct {
	pids []int
	mu   sync.Mutex
	max  []int64 // since the last reset
	all  []int64 // over the whole run
}

func newRSSSampler(ctx context.Context, pids []int) *rssSampler {
	s := &rssSampler{pids: pids, max: make([]int64, len(pids)), all: make([]int64, len(pids))}
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for ctx.Err() == nil {
			s.sample()
			<-t.C
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	for i, pid := range s.pids {
		b, err := rss(pid)
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.max[i] = max(s.max[i], b)
		s.all[i] = max(s.all[i], b)
		s.mu.Unlock()
	}
}

func (s *rssSampler) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.max)
}

// peak is the highest VmRSS of any pid since the last reset.
func (s *rssSampler) peak() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m int64
	for _, b := range s.max {
		m = max(m, b)
	}
	return m
}

// overall is each pid's highest VmRSS over the run.
func (s *rssSampler) overall() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.all...)
}

// rss returns the VmRSS of pid in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}
