package main

import (
	"context"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// writeTimeout bounds one write under load; a healthy cluster answers in
// milliseconds, so hitting it is an error worth reporting.
const writeTimeout = 10 * time.Second

// sample accumulates what one side measured at one concurrency, over rounds.
type sample struct {
	benchrun.Sample
	cpu time.Duration // the side's node processes' CPU time (user+system), summed over rounds
}

// drive runs clients closed-loop writers against sys for d and returns what
// they measured. Client i writes key i through node (i+shift) mod the number
// of nodes: rounds shift by one, so over three rounds even a single client
// has written through the leader and through both followers.
func drive(ctx context.Context, sys system, clients, shift int, d time.Duration) sample {
	n := len(sys.nodes())
	cpu0 := cpuTime(sys)
	s := benchrun.Closed{Workers: clients, Round: d}.Run(ctx, func(ctx context.Context, c, _ int) error {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		err := sys.write(wctx, (c+shift)%n, c)
		if err != nil {
			pause(ctx, 10*time.Millisecond) // don't spin on a failing node
		}
		return err
	})
	return sample{Sample: s, cpu: cpuTime(sys) - cpu0}
}

// add merges o's writes, errors and CPU into s.
func (s *sample) add(o *sample) {
	s.Sample.Add(&o.Sample)
	s.cpu += o.cpu
}

// cpuPerWrite is the servers' CPU time per successful write.
func (s *sample) cpuPerWrite() time.Duration {
	if s.Ops() == 0 {
		return 0
	}
	return s.cpu / time.Duration(s.Ops())
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
