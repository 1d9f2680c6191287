package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// burstResult is what happened to -burst VMs created at once.
type burstResult struct {
	n          int
	lastPost   time.Duration   // the slowest create call answered
	running    []time.Duration // per VM, first seen running; 0 = never
	hello      []time.Duration // per VM, its hostname line; 0 = never
	failures   []string
	deleted    time.Duration // from the first DELETE to none left in the API
	leftovers  []string
	memUsedMiB int64 // the host's MemTotal - MemAvailable with all of them running
}

func (b burstResult) lastRunning() time.Duration { return slices.Max(b.running) }
func (b burstResult) lastHello() time.Duration   { return slices.Max(b.hello) }

// burst creates n VMs of the burst flavor with concurrent calls, waits up
// to timeout for every one to run and print its hostname line, then
// deletes them all and looks for anything left behind.
func (nd *node) burst(ctx context.Context, n int, timeout time.Duration) burstResult {
	res := burstResult{n: n, running: make([]time.Duration, n), hello: make([]time.Duration, n)}
	names := make([]string, n)
	ids := make([]string, n)
	postErr := make([]error, n)
	failed := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("burst-%02d", i+1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		wg.Go(func() {
			v, err := nd.createVM(ctx, names[i], burstFlavor)
			mu.Lock()
			defer mu.Unlock()
			ids[i], postErr[i] = v.ID, err
			res.lastPost = max(res.lastPost, time.Since(t0))
		})
	}
	wg.Wait()
	benchrun.Progress("burst: %d create calls answered in %s", n, secs(res.lastPost))
	for i, err := range postErr {
		if err != nil {
			failed[i] = "create: " + err.Error()
		}
	}

	deadline := t0.Add(timeout)
	lastLog := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		vs, err := nd.listVMs(ctx)
		now := time.Since(t0)
		if err == nil {
			state := map[string]vmView{}
			for _, v := range vs {
				state[v.Name] = v
			}
			for i, name := range names {
				v, ok := state[name]
				switch {
				case !ok || failed[i] != "":
				case v.Status.State == "running" && res.running[i] == 0:
					res.running[i] = now
				case v.Status.State == "error":
					failed[i] = "state error: " + v.Status.Error
				}
			}
		}
		if res.memUsedMiB == 0 && !slices.Contains(res.running, 0) {
			res.memUsedMiB = memUsedMiB()
		}
		pending := 0
		for i, id := range ids {
			if failed[i] != "" || id == "" {
				continue
			}
			if res.hello[i] == 0 {
				b, _ := os.ReadFile(filepath.Join(nd.vmDir(id), "serial.log"))
				if strings.Contains(string(b), helloMarker) {
					res.hello[i] = time.Since(t0)
				}
			}
			if res.hello[i] == 0 || res.running[i] == 0 {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Since(lastLog) > 15*time.Second {
			benchrun.Progress("burst: %s: %d of %d running, %d hostname lines, %d still booting", secs(time.Since(t0)),
				count(res.running), n, count(res.hello), pending)
			lastLog = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range names {
		switch {
		case failed[i] != "":
		case res.running[i] == 0:
			failed[i] = fmt.Sprintf("not running after %s", timeout)
		case res.hello[i] == 0:
			failed[i] = fmt.Sprintf("no hostname line after %s", timeout)
		}
		if failed[i] != "" {
			res.failures = append(res.failures, names[i]+": "+failed[i])
		}
	}
	benchrun.Progress("burst: %d running, %d hostname lines, %d failures; deleting", count(res.running), count(res.hello), len(res.failures))

	t1 := time.Now()
	for i := range n {
		if ids[i] == "" {
			continue
		}
		wg.Go(func() {
			if err := nd.call(ctx, "DELETE", "/api/v1/vms/"+names[i], nil, nil, 202); err != nil {
				mu.Lock()
				res.leftovers = append(res.leftovers, names[i]+": delete: "+err.Error())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for time.Since(t1) < 5*time.Minute && ctx.Err() == nil {
		vs, err := nd.listVMs(ctx)
		if err == nil && len(vs) == 0 {
			res.deleted = time.Since(t1)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res.deleted == 0 {
		res.leftovers = append(res.leftovers, "VMs still listed by the API 5 minutes after the DELETEs")
	}
	res.leftovers = append(res.leftovers, nd.leftovers(ids)...)
	return res
}

// leftovers lists what of the VMs ids remains on the node: directories,
// QEMU processes, taps.
func (nd *node) leftovers(ids []string) []string {
	var left []string
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, err := os.Stat(nd.vmDir(id)); err == nil {
			left = append(left, id+": disk directory")
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, id := range ids {
			if id != "" && strings.Contains(string(b), "guest="+id) {
				left = append(left, id+": QEMU "+filepath.Base(filepath.Dir(p)))
			}
		}
	}
	if out, _ := nd.n.Command("ip", "-o", "link", "show", "type", "tun").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "taps: "+strings.TrimSpace(string(out)))
	}
	return left
}

func count(ds []time.Duration) int {
	n := 0
	for _, d := range ds {
		if d > 0 {
			n++
		}
	}
	return n
}

// memUsedMiB is the host's MemTotal - MemAvailable.
func memUsedMiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var total, avail int64
	for line := range strings.SplitSeq(string(b), "\n") {
		fmt.Sscanf(line, "MemTotal: %d kB", &total)
		fmt.Sscanf(line, "MemAvailable: %d kB", &avail)
	}
	return (total - avail) >> 10
}
