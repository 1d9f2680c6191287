package agent

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// gcPercent is the agent's GOGC unless the environment sets one. A write
// allocates tens of KiB (TLS, JSON, go-memdb's copied tree nodes); at the
// default of 100 a node with a small live heap collects several times a
// second under load, and those collections were the slowest 1% of writes.
// At 200 the collector runs half as often: p99 of 1-client writes fell from
// 1.9–2.4 ms to 1.6–1.9 ms in bench-consensus (docs/benchmarks.md), for a
// heap that may grow to three times what is live while busy.
const gcPercent = 200

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// releaseWhenIdle gives memory back when a burst of work ends. At rest
// nothing triggers the next collection (Go forces one every two minutes), so
// the heap a burst grew would otherwise stay resident, and the box's memory
// is better spent on its VMs. A burst is a period allocating at least
// 4 MiB/s (an idle node allocates well under 1 MiB/s: heartbeats, gossip);
// it ends at the first period under 2 MiB/s.
func releaseWhenIdle(ctx context.Context, every time.Duration) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},              // allocated since start
		{Name: "/gc/heap/live:bytes"},                // live after the last collection
		{Name: "/memory/classes/heap/objects:bytes"}, // live and not yet collected
		{Name: "/memory/classes/heap/free:bytes"},    // free, not returned to the OS
	}
	var lastAllocs uint64
	busy := false
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		allocs := samples[0].Value.Uint64()
		live, held := samples[1].Value.Uint64(), samples[2].Value.Uint64()+samples[3].Value.Uint64()
		rate := float64(allocs-lastAllocs) / every.Seconds()
		lastAllocs = allocs
		switch {
		case rate >= 4<<20:
			busy = true
		case busy && rate < 2<<20:
			busy = false
			if held > live+8<<20 {
				debug.FreeOSMemory()
			}
		}
	}
}
