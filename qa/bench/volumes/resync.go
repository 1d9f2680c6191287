package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// resyncResult is what a replica's outage cost.
type resyncResult struct {
	written   int64   // bytes written while the replica's node was down
	writeMiBs float64 // the writes' speed, on two replicas
	victim    string  // the node killed
	stale     bool    // its replica was seen stale while it was down
	copied    int64   // bytes the writer copied back into it
	ready     time.Duration
	inSync    time.Duration // from the restart until every replica is in sync
	err       error
}

// measureResync kills a replica's node (SIGKILL to its process group, as the
// qa harness does), writes n bytes from off in 1 MiB writes (each extent
// once), restarts the node and waits until every replica is in sync. What
// was copied back is the writer's cairn_volume_resync_bytes_total.
func measureResync(ctx context.Context, cl *cluster, v volume, vol target, off, n int64) resyncResult {
	victim := cl.c.Nodes[2]
	r := resyncResult{written: n, victim: victim.Name}
	before, err := cl.resyncBytes(ctx, 0, v.ID)
	if err != nil {
		r.err = err
		return r
	}
	benchrun.Progress("resync: killing %s, writing %d MiB", victim.Name, n>>20)
	victim.Kill()
	if r.writeMiBs, err = fill(ctx, vol, off, n); err != nil {
		r.err = fmt.Errorf("write with %s down: %w", victim.Name, err)
		victim.Start()
		return r
	}
	for range 60 {
		if v, err := cl.getVolume(ctx, 0, volName); err == nil && replicaState(v, victim.Name) == "stale" {
			r.stale = true
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	benchrun.Progress("resync: wrote %d MiB at %.0f MiB/s on two replicas; restarting %s", n>>20, r.writeMiBs, victim.Name)
	start := time.Now()
	victim.Start()
	var last string
	for {
		if ctx.Err() != nil {
			r.err = ctx.Err()
			return r
		}
		if time.Since(start) > 10*time.Minute {
			r.err = fmt.Errorf("replicas not in sync 10 min after %s restarted: %s", victim.Name, last)
			return r
		}
		if r.ready == 0 && cl.call(ctx, 2, "GET", "/readyz", nil, nil, 200) == nil {
			r.ready = time.Since(start)
		}
		if v, err := cl.getVolume(ctx, 0, volName); err == nil {
			ok, why := v.inSync()
			if ok {
				r.inSync = time.Since(start)
				break
			}
			last = why
		}
		time.Sleep(200 * time.Millisecond)
	}
	after, err := cl.resyncBytes(ctx, 0, v.ID)
	if err != nil {
		r.err = err
		return r
	}
	r.copied = after - before
	if r.copied <= 0 {
		r.err = errors.New("the writer reports nothing copied back")
	}
	benchrun.Progress("resync: %s ready after %s, in sync after %s, %.1f MiB copied back", victim.Name,
		r.ready.Round(time.Millisecond), r.inSync.Round(time.Millisecond), float64(r.copied)/(1<<20))
	return r
}

func replicaState(v volume, node string) string {
	for _, r := range v.Replicas {
		if r.Node == node {
			return r.State
		}
	}
	return ""
}
