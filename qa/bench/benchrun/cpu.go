package benchrun

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
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
