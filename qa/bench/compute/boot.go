package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cairnRun is one boot through the API: the milestones seen on the node's
// disk, and those the VM's history records (node and leader clocks are this
// machine's clock).
type cairnRun struct {
	m                  milestones
	created, scheduled time.Duration // the create and placement events (placement also sets "building")
	argv               []string      // QEMU's command line, from /proc
	id                 string
}

// boot creates VM name, waits for its hostname line or timeout, reads its
// history and command line, and deletes it (waiting until it is gone, so
// the next boot has the node to itself).
func (nd *node) boot(ctx context.Context, name string, timeout time.Duration) (cairnRun, error) {
	var r cairnRun
	vms := filepath.Join(nd.n.DataDir, "vms")
	before := entries(vms)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	done := make(chan milestones, 1)
	go func() { done <- watch(wctx, t0, newEntry(vms, before)) }()
	vm, err := nd.createVM(ctx, name, bootFlavor)
	posted := time.Since(t0)
	if err != nil {
		cancel()
		<-done
		return r, err
	}
	r.id = vm.ID
	r.m = <-done
	r.m.posted = posted

	var errs []string
	if r.m.hello == 0 {
		errs = append(errs, fmt.Sprintf("no %q line within %s", helloMarker, timeout))
	}
	if v, err := nd.getVM(ctx, name); err != nil {
		errs = append(errs, err.Error())
	} else {
		if v.Status.State != "running" {
			errs = append(errs, fmt.Sprintf("state %s %s", v.Status.State, v.Status.Error))
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", v.Status.PID)); err == nil && v.Status.PID > 0 {
			r.argv = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
	}
	if evs, err := nd.events(ctx, name); err == nil {
		for _, e := range evs {
			at := e.Time.Sub(t0)
			switch {
			case e.Kind == "create":
				r.created = at
			case e.Kind == "schedule" && strings.HasPrefix(e.Message, "placed"):
				r.scheduled = at
			case e.Kind == "state" && e.Message == "running" && r.m.running == 0:
				r.m.running = at
			}
		}
	}
	if err := nd.deleteVM(ctx, name, 2*time.Minute); err != nil {
		errs = append(errs, "delete: "+err.Error())
	}
	if len(errs) > 0 {
		return r, fmt.Errorf("%s: %s", name, strings.Join(errs, "; "))
	}
	return r, nil
}
