package main

import (
	"context"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// cpuUse is the CPU time (user and system) the nodes and this process spent
// in one phase. On two shared cores, MiB/s alone hides where the time went;
// CPU seconds per GiB moved does not depend on how fast the host's cache was.
// elsewhere is what the rest of the machine (other processes, kernel
// threads) kept busy meanwhile, or the hypervisor stole: this VM is shared,
// and a phase that ran beside someone else's build is slower for it.
type cpuUse struct {
	nodes, client, elsewhere time.Duration
	wall                     time.Duration
}

// perGiB returns CPU seconds per GiB of n bytes.
func (c cpuUse) perGiB(n int64) (nodes, client float64) {
	if n <= 0 {
		return 0, 0
	}
	gib := float64(n) / (1 << 30)
	return c.nodes.Seconds() / gib, c.client.Seconds() / gib
}

// busyElsewhere is how many cores, on average over the phase, were busy
// outside the benchmark or stolen by the hypervisor.
func (c cpuUse) busyElsewhere() float64 {
	if c.wall <= 0 {
		return 0
	}
	return c.elsewhere.Seconds() / c.wall.Seconds()
}

func (c *cpuUse) add(o cpuUse) {
	c.nodes += o.nodes
	c.client += o.client
	c.elsewhere += o.elsewhere
	c.wall += o.wall
}

// cpuMeter starts measuring the CPU of pids, of this process and of the rest
// of the machine; calling the result stops it.
func cpuMeter(pids []int) func() cpuUse {
	n0, c0 := benchrun.ProcCPU(pids...), benchrun.SelfCPU()
	e := benchrun.NewElsewhere(pids)
	start := time.Now()
	return func() cpuUse {
		return cpuUse{nodes: benchrun.ProcCPU(pids...) - n0, client: benchrun.SelfCPU() - c0, elsewhere: e.Next(), wall: time.Since(start)}
	}
}

// quietGate holds back each phase until the rest of the machine is quiet,
// for at most limit (none when limit is 0), and keeps count for the report.
type quietGate struct {
	pids   []int
	cores  float64
	limit  time.Duration
	waited time.Duration
	phases int // phases that waited
	busy   int // phases that started with the machine still busy
}

func (q *quietGate) wait(ctx context.Context) {
	if q == nil || q.limit <= 0 {
		return
	}
	d, quiet := benchrun.WaitQuiet(ctx, q.pids, q.cores, q.limit)
	q.waited += d
	q.phases++
	if !quiet {
		q.busy++
	}
}
