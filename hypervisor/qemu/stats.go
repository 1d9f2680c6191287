package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Counters are a running VM's cumulative resource use, as its node sees it:
// what usage graphs are drawn from (rates come from two readings).
type Counters struct {
	At  time.Time
	PID int // a new process starts every counter again
	// CPU is the time QEMU's threads (vCPUs and I/O) have run.
	CPU time.Duration
	// Memory is QEMU's resident memory: what the guest has touched, plus
	// QEMU's own.
	Memory int64
	// DiskRead and DiskWritten are the bytes the guest moved through its
	// disks (query-blockstats, all devices).
	DiskRead, DiskWritten int64
}

// userHZ is the unit of /proc/PID/stat's CPU times: fixed at 100 in the
// kernel's ABI on every architecture Cairn runs on.
const userHZ = 100

// Counters reads the instance's CPU time and resident memory from /proc,
// and its disk traffic from QEMU.
func (i *Instance) Counters(ctx context.Context) (Counters, error) {
	c := Counters{At: time.Now(), PID: i.proc.pid}
	cpu, rss, err := procUsage(i.proc.pid)
	if err != nil {
		return c, fmt.Errorf("usage of vm %s: %w", i.name, err)
	}
	c.CPU, c.Memory = cpu, rss
	var devs []struct {
		Stats struct {
			RdBytes int64 `json:"rd_bytes"`
			WrBytes int64 `json:"wr_bytes"`
		} `json:"stats"`
	}
	if err := i.run(ctx, "block stats", "query-blockstats", nil, &devs); err != nil {
		return c, err
	}
	for _, d := range devs {
		c.DiskRead += d.Stats.RdBytes
		c.DiskWritten += d.Stats.WrBytes
	}
	return c, nil
}

// procUsage is a process's CPU time (all its threads, user and system)
// and resident memory.
func procUsage(pid int) (time.Duration, int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'. utime and stime are fields 14 and 15 of the
	// line, so 12 and 13 after it.
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[end+1:]))
	if len(f) < 14 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad CPU times %q %q", pid, f[11], f[12])
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var rss int64
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, v)
			}
			rss = kb << 10
		}
	}
	return time.Duration(utime+stime) * time.Second / userHZ, rss, nil
}
