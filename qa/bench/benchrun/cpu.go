package benchrun

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// ProcCPU sums the user and system CPU time of pids from /proc/PID/stat, in
// clock ticks of 10 ms (phases last seconds: fine enough). A pid that cannot
// be read counts as zero.
func ProcCPU(pids ...int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces: count from its ')'.
		fields := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(string(fields[11]), 10, 64)
		stime, _ := strconv.ParseInt(string(fields[12]), 10, 64)
		total += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return total
}

// MachineCPU is the CPU time the whole machine has spent busy (user, nice,
// system, irq and softirq, over all CPUs) and the time the hypervisor gave
// its CPUs to others (steal), from /proc/stat, in ticks of 10 ms. Less the
// benchmark's own processes, busy is what else ran on the machine: on a
// shared VM that moves every figure. Zero when /proc/stat cannot be read.
func MachineCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, 0
	}
	tick := func(i int) time.Duration {
		n, _ := strconv.ParseInt(string(f[i]), 10, 64)
		return time.Duration(n) * 10 * time.Millisecond
	}
	// cpu user nice system idle iowait irq softirq steal ...
	return tick(1) + tick(2) + tick(3) + tick(6) + tick(7), tick(8)
}

// SelfCPU is this process's CPU time, user and system.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Elsewhere is the CPU time the machine spent outside pids and this process,
// busy or stolen, since the last call; the first call starts it.
type Elsewhere struct {
	pids       []int
	busy, ours time.Duration
}

// NewElsewhere starts counting what the machine does outside pids and this
// process.
func NewElsewhere(pids []int) *Elsewhere {
	e := &Elsewhere{pids: pids}
	e.Next()
	return e
}

// Next returns the CPU time spent elsewhere since the last call.
func (e *Elsewhere) Next() time.Duration {
	busy, steal := MachineCPU()
	busy += steal
	ours := ProcCPU(e.pids...) + SelfCPU()
	d := (busy - e.busy) - (ours - e.ours)
	e.busy, e.ours = busy, ours
	return max(0, d)
}

// quietWindow is the span over which WaitQuiet judges the machine: long
// enough for /proc/stat's 10 ms ticks, short enough to add little to a run.
const quietWindow = 500 * time.Millisecond

// WaitQuiet waits until the rest of the machine kept at most cores CPUs busy
// over quietWindow, or until limit has passed, and returns how long it waited
// and whether the machine was quiet at the end. On a VM shared with other
// people's builds and tests, that is the difference between measuring Cairn
// and measuring them.
func WaitQuiet(ctx context.Context, pids []int, cores float64, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	e := NewElsewhere(pids)
	t := time.NewTicker(quietWindow)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case now := <-t.C:
			if e.Next().Seconds()/now.Sub(last).Seconds() <= cores {
				return time.Since(start), true
			}
			last = now
			if now.Sub(start) >= limit {
				return time.Since(start), false
			}
		}
	}
}
