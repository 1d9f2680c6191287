package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// restart is one HA restart's figures: from the box's death to the
// first byte of the VM's serial console on another box, and that box.
type restart struct {
	took time.Duration
	to   string
}

// failover kills the box running the VM, its agent and QEMU (SIGKILL, the
// "box dies" case), and measures the time to the first output of the
// VM's new boot on another box. Then the box comes back, and the next run
// waits for every copy of the VM's volumes to be in sync again.
func (cl *cluster) failover(ctx context.Context, name string) (restart, error) {
	var r restart
	if err := cl.inSync(ctx); err != nil {
		return r, err
	}
	var cur vmView
	if err := cl.call(ctx, "GET", "/api/v1/vms/"+name, nil, &cur, 200); err != nil {
		return r, err
	}
	var box *harness.Node
	for i, n := range cl.c.Nodes {
		if n.Name == cur.Node {
			box = n
		} else {
			cl.via = i // ask a box that stays
		}
	}
	if box == nil {
		return r, fmt.Errorf("%s is on %q, no node of the cluster", name, cur.Node)
	}
	pids := qemuPIDs(box.Name, cur.ID)
	if len(pids) == 0 {
		return r, fmt.Errorf("no QEMU of %s on %s", name, box.Name)
	}
	t0 := time.Now()
	box.Kill() // the agent's process group
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for ctx.Err() == nil {
		var v vmView
		if err := cl.call(ctx, "GET", "/api/v1/vms/"+name, nil, &v, 200); err == nil && v.Node != box.Name {
			if log, err := cl.serialLog(ctx, name); err == nil && len(log) > 0 {
				r.took, r.to = time.Since(t0), v.Node
				break
			}
		}
		if time.Since(t0) > 3*time.Minute {
			return r, fmt.Errorf("%s not restarted within 3 minutes of %s's death", name, box.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	box.Start()
	return r, ctx.Err()
}

// inSync waits until three hosts report and every copy of every volume is
// in sync: a box killed before would leave the next restart one copy
// short.
func (cl *cluster) inSync(ctx context.Context) error {
	return testutil.Eventually(5*time.Minute, func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var hs []struct {
			Name       string    `json:"name"`
			ReportedAt time.Time `json:"reported_at"`
		}
		if err := cl.call(ctx, "GET", "/api/v1/hosts", nil, &hs, 200); err != nil {
			return err
		}
		for _, h := range hs {
			if time.Since(h.ReportedAt) > time.Minute {
				return fmt.Errorf("%s not reporting", h.Name)
			}
		}
		var vols []struct {
			Name     string `json:"name"`
			Replicas []struct {
				Node  string `json:"node"`
				State string `json:"state"`
			} `json:"replicas"`
		}
		if err := cl.call(ctx, "GET", "/api/v1/volumes?project="+project, nil, &vols, 200); err != nil {
			return err
		}
		for _, v := range vols {
			for _, rp := range v.Replicas {
				if rp.State != "in_sync" {
					return fmt.Errorf("volume %s's copy on %s is %s", v.Name, rp.Node, rp.State)
				}
			}
		}
		return nil
	})
}

// qemuPIDs are the QEMU processes of VM id that node started (its run
// directory names the node).
func qemuPIDs(node, id string) []int {
	out, _ := exec.Command("pgrep", "-f", "/"+node+"/"+id+"/qemu.pid").Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		// QEMU itself, not another pgrep of the same pattern.
		if pid, err := strconv.Atoi(f); err == nil {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
				if argv0, _, _ := strings.Cut(string(b), "\x00"); strings.HasPrefix(filepath.Base(argv0), "qemu-system") {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// restartBare kills the bare guest's QEMU and starts it again on the
// other driver at once: the same guest's boot to its first serial output,
// with nothing to detect and nothing to fence, the floor under Cairn's
// restart.
func (b *bare) restartBare(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	_ = b.inst.Kill(ctx)
	inst, err := b.drivers[1-b.cur].Start(ctx, b.machine(1-b.cur))
	if err != nil {
		return 0, err
	}
	b.inst, b.cur = inst, 1-b.cur
	for deadline := t0.Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, err := os.Stat(inst.SerialLog()); err == nil && st.Size() > 0 {
			return time.Since(t0), nil
		}
	}
	return 0, fmt.Errorf("the bare guest printed nothing within 3 minutes")
}

// drain puts n small VMs on one box (the others cordoned while they are
// placed), drains it and measures the drain: the time from asking to
// done, how many VMs moved live and how many had to restart.
func (cl *cluster) drain(ctx context.Context, n int) (took time.Duration, moved, restarted int, err error) {
	box := cl.c.Nodes[0].Name
	cl.via = 0
	// Ten VMs of one vCPU on one node: more than the default ratio (4
	// vCPUs per core) gives a two-core machine.
	settings := map[string]any{}
	if err := cl.call(ctx, "GET", "/api/v1/compute/settings", nil, &settings, 200); err != nil {
		return 0, 0, 0, err
	}
	settings["cpu_allocation_ratio"] = max(4, float64(n+2)/float64(runtime.NumCPU()))
	if err := cl.call(ctx, "PUT", "/api/v1/compute/settings", settings, nil, 200); err != nil {
		return 0, 0, 0, err
	}
	// And more VMs, volumes and ports than a project's default quota.
	var q struct {
		Limits map[string]any `json:"limits"`
	}
	if err := cl.call(ctx, "GET", "/api/v1/projects/"+project+"/quota", nil, &q, 200); err != nil {
		return 0, 0, 0, err
	}
	for k := range q.Limits {
		q.Limits[k] = -1
	}
	if err := cl.call(ctx, "PUT", "/api/v1/projects/"+project+"/quota", q.Limits, nil, 200); err != nil {
		return 0, 0, 0, err
	}
	for _, o := range cl.c.Nodes[1:] {
		if err := cl.call(ctx, "POST", "/api/v1/hosts/"+o.Name+"/cordon", map[string]string{"reason": "bench"}, nil, 200); err != nil {
			return 0, 0, 0, err
		}
	}
	for i := range n {
		if _, err := cl.bootVM(ctx, fmt.Sprintf("ward-%02d", i)); err != nil {
			return 0, 0, 0, err
		}
	}
	for _, o := range cl.c.Nodes[1:] {
		if err := cl.call(ctx, "POST", "/api/v1/hosts/"+o.Name+"/uncordon", nil, nil, 204); err != nil {
			return 0, 0, 0, err
		}
	}
	t0 := time.Now()
	if err := cl.call(ctx, "POST", "/api/v1/hosts/"+box+"/drain", map[string]bool{}, nil, 200); err != nil {
		return 0, 0, 0, err
	}
	type drainView struct {
		State     string `json:"state"`
		Moved     int    `json:"moved"`
		Restarted int    `json:"restarted"`
	}
	var dr drainView
	err = testutil.Eventually(30*time.Minute, func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var hs []struct {
			Name   string `json:"name"`
			Cordon *struct {
				Drain *drainView `json:"drain"`
			} `json:"cordon"`
		}
		if err := cl.call(ctx, "GET", "/api/v1/hosts", nil, &hs, 200); err != nil {
			return err
		}
		for _, h := range hs {
			if h.Name == box && h.Cordon != nil && h.Cordon.Drain != nil {
				dr = *h.Cordon.Drain
			}
		}
		if dr.State != "done" {
			return fmt.Errorf("%+v", dr)
		}
		return nil
	})
	return time.Since(t0), dr.Moved, dr.Restarted, err
}
