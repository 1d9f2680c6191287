package main

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// writeTimeout bounds one write under load; a healthy cluster answers in
// milliseconds, so hitting it is an error worth reporting.
const writeTimeout = 10 * time.Second

// sample accumulates what one side measured at one concurrency, over rounds.
type sample struct {
	elapsed  time.Duration   // summed over rounds
	lat      []time.Duration // of successful writes
	errors   int
	firstErr error
	cpu      time.Duration // the side's node processes' CPU time (user+system), summed over rounds
	sorted   bool
}

// rate is successful writes per second.
func (s *sample) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(len(s.lat)) / s.elapsed.Seconds()
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of the
// latencies, or 0 without any.
func (s *sample) percentile(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	if !s.sorted {
		slices.Sort(s.lat)
		s.sorted = true
	}
	rank := int(p/100*float64(len(s.lat))+0.999999) - 1
	return s.lat[min(max(rank, 0), len(s.lat)-1)]
}

// drive runs clients closed-loop writers against sys for d and returns what
// they measured. Client i writes key i through node (i+shift) mod the number
// of nodes: rounds shift by one, so over three rounds even a single client
// has written through the leader and through both followers.
func drive(outer context.Context, sys system, clients, shift int, d time.Duration) sample {
	ctx, cancel := context.WithTimeout(outer, d)
	defer cancel()
	n := len(sys.nodes())
	results := make([]sample, clients)
	cpu0 := cpuTime(sys)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			r := &results[c]
			for ctx.Err() == nil {
				// Not ctx: a write in flight at the deadline completes and counts.
				wctx, wcancel := context.WithTimeout(outer, writeTimeout)
				t0 := time.Now()
				err := sys.write(wctx, (c+shift)%n, c)
				lat := time.Since(t0)
				wcancel()
				if err == nil {
					r.lat = append(r.lat, lat)
					continue
				}
				r.errors++
				if r.firstErr == nil {
					r.firstErr = err
				}
				pause(ctx, 10*time.Millisecond) // don't spin on a failing node
			}
		})
	}
	wg.Wait()
	// The round lasts until the last write in flight at the deadline is in.
	s := sample{elapsed: time.Since(start), cpu: cpuTime(sys) - cpu0}
	for i := range results {
		s.add(&results[i])
	}
	return s
}

// add merges o's writes and errors into s; elapsed adds up too, as rounds
// follow each other.
func (s *sample) add(o *sample) {
	s.elapsed += o.elapsed
	s.cpu += o.cpu
	s.lat = append(s.lat, o.lat...)
	s.errors += o.errors
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
	s.sorted = false
}

// cpuPerWrite is the servers' CPU time per successful write.
func (s *sample) cpuPerWrite() time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	return s.cpu / time.Duration(len(s.lat))
}

// cpuTime is the CPU time of a side's node processes.
func cpuTime(sys system) time.Duration {
	var pids []int
	for _, n := range sys.nodes() {
		pids = append(pids, n.PID())
	}
	return benchrun.ProcCPU(pids...)
}

// pause sleeps for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
