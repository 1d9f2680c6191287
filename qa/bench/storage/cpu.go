package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	n0, c0 := procsCPU(pids), selfCPU()
	return func() cpuUse { return cpuUse{nodes: procsCPU(pids) - n0, client: selfCPU() - c0} }
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procsCPU sums utime and stime of pids from /proc/PID/stat (fields 14 and
// 15, in clock ticks of 1/100 s on Linux). A pid that is gone counts 0.
func procsCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name may contain spaces; the fields after it do not.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return total
}
