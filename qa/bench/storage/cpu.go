package main

import (
	"syscall"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// cpuUse is the CPU time (user and system) the nodes and this process spent
// in one phase. On two shared cores, MiB/s alone hides where the time went;
// CPU seconds per GiB moved does not depend on how fast the host's cache was.
type cpuUse struct{ nodes, client time.Duration }

// perGiB returns CPU seconds per GiB of n bytes.
func (c cpuUse) perGiB(n int64) (nodes, client float64) {
	if n <= 0 {
		return 0, 0
	}
	gib := float64(n) / (1 << 30)
	return c.nodes.Seconds() / gib, c.client.Seconds() / gib
}

// cpuMeter starts measuring the CPU of pids and of this process; calling the
// result stops it.
func cpuMeter(pids []int) func() cpuUse {
	n0, c0 := benchrun.ProcCPU(pids...), selfCPU()
	return func() cpuUse { return cpuUse{nodes: benchrun.ProcCPU(pids...) - n0, client: selfCPU() - c0} }
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
