package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/testutil"
)

const (
	failoverAttempt = 500 * time.Millisecond // per-write timeout while there is no leader
	failoverStagger = 50 * time.Millisecond  // a new write attempt starts this often
	failoverLimit   = 30 * time.Second       // a failover slower than this is recorded as this
	recoverLimit    = 90 * time.Second       // for the killed node to rejoin
)

// failover is one leader kill.
type failover struct {
	took     time.Duration // from the kill to the first acknowledged write
	timedOut bool          // no write succeeded within failoverLimit
	attempts int
}

// measureFailovers kills sys's leader runs times with SIGKILL and times each
// from the kill to the first write a surviving node acknowledges. After each,
// the killed node is started again and the cluster must be healthy before the
// next.
func measureFailovers(ctx context.Context, sys system, runs int) ([]failover, error) {
	var out []failover
	nodes := sys.nodes()
	for run := range runs {
		li, err := sys.leader(ctx)
		if err != nil {
			return out, fmt.Errorf("%s failover %d: %w", sys.name(), run+1, err)
		}
		var survivors []int
		for i := range nodes {
			if i != li {
				survivors = append(survivors, i)
			}
		}
		start := time.Now()
		nodes[li].Kill()
		f := firstWrite(ctx, sys, survivors, start)
		if err := ctx.Err(); err != nil {
			return out, err
		}
		out = append(out, f)
		benchrun.Progress("%s failover %d/%d: killed leader %s, first write after %s (%d attempts)",
			sys.name(), run+1, runs, nodes[li].Name, f.took.Round(time.Millisecond), f.attempts)

		nodes[li].Start()
		if err := testutil.Eventually(recoverLimit, func() error { return sys.healthy(ctx) }); err != nil {
			return out, fmt.Errorf("%s failover %d: %s did not rejoin: %w", sys.name(), run+1, nodes[li].Name, err)
		}
	}
	return out, nil
}

// firstWrite writes through the survivors, alternating, until one write is
// acknowledged, and returns the time from start to that acknowledgement. A
// write waiting for a leader can hang until its timeout, so attempts overlap:
// a new one starts every failoverStagger, which bounds the error of the
// measurement by that rather than by the timeout.
func firstWrite(ctx context.Context, sys system, survivors []int, start time.Time) failover {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	acked := make(chan time.Duration, 1)
	tick := time.NewTicker(failoverStagger)
	defer tick.Stop()
	f := failover{}
	for {
		node := survivors[f.attempts%len(survivors)]
		f.attempts++
		wg.Go(func() {
			wctx, wcancel := context.WithTimeout(ctx, failoverAttempt)
			defer wcancel()
			if sys.write(wctx, node, 0) == nil {
				select {
				case acked <- time.Since(start):
				default: // another attempt was first
				}
			}
		})
		select {
		case f.took = <-acked:
			return f
		case <-ctx.Done():
			return f
		case <-tick.C:
		}
		if time.Since(start) > failoverLimit {
			f.took, f.timedOut = failoverLimit, true
			return f
		}
	}
}

// rss returns the resident memory of process pid in bytes (VmRSS in
// /proc/pid/status), the part of it that is mapped files (RssFile: for
// both sides mostly bbolt's memory-mapped database, pages the kernel can
// drop), and the process's name, so a caller can tell it measured the node
// and not a wrapper such as `ip netns exec`.
func rss(pid int) (total, file int64, name string, err error) {
	if pid == 0 {
		return 0, 0, "", fmt.Errorf("rss: process not running")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, "", fmt.Errorf("rss: %w", err)
	}
	defer f.Close()
	kb := func(v string) (int64, error) {
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return n << 10, err
	}
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Name:"); ok {
			name = strings.TrimSpace(v)
		} else if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if total, err = kb(v); err != nil {
				return 0, 0, name, fmt.Errorf("rss of pid %d: %q: %w", pid, v, err)
			}
			found++
		} else if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			if file, err = kb(v); err != nil {
				return 0, 0, name, fmt.Errorf("rss of pid %d: %q: %w", pid, v, err)
			}
			found++
		}
	}
	if found < 2 {
		return 0, 0, name, fmt.Errorf("rss of pid %d: no VmRSS or RssFile line", pid)
	}
	return total, file, name, nil
}
