package hypervisor

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"golang.org/x/sys/unix"
)

// Watchdog resets the box unless it is petted in time: a hardware
// watchdog (/dev/watchdog), so a box whose agent hangs is reset before
// its lease can be judged lost with its VMs still running.
type Watchdog interface {
	Pet() error
}

// errFenced keeps HA VMs from starting on a node that cannot renew its
// lease: they may be starting elsewhere.
var errFenced = consensus.NewError("", "this node has lost contact with the cluster: its HA VMs start again once it is back, here or elsewhere")

// fenced says whether this node has stopped its HA VMs for want of a
// lease.
func (n *NodeAgent) fenced() bool { return n.isFenced.Load() }

// KeepLease renews this node's lease every HATiming.Renew, kills its HA
// VMs once it has not renewed for HATiming.Fence, and pets the watchdog
// while either holds: renewed lately, or nothing left to kill. It runs
// from the agent's start (before the VM agent catches up) until ctx ends,
// and returns only then: the watchdog may be disarmed after it.
func (n *NodeAgent) KeepLease(ctx context.Context) {
	t := n.cfg.HA
	tick := time.NewTicker(t.Renew / 4)
	defer tick.Stop()
	// The last renewal that went through, by when it was sent: whoever
	// judges the lease saw it applied after that. A restarted agent
	// starts from what the one before it saved (or, on a fresh boot, now:
	// no VM runs yet).
	lastOK := n.loadLastRenewal()
	var sentAt time.Time
	type result struct {
		at    time.Time
		index uint64
	}
	results := make(chan result, 8)
	// wantApplied: the node unfences only once its own state has caught up
	// with its renewal, so that a restart elsewhere committed meanwhile is
	// seen before any of its VMs is started here again.
	var wantApplied uint64
	for {
		now := time.Now()
		if now.Sub(sentAt) >= t.Renew {
			// One every Renew, whether or not the last has answered: a
			// renewal stuck on a leader that died must not hold back the
			// next, which goes to the new one.
			sentAt = now
			go func(at time.Time) {
				rctx, cancel := context.WithTimeout(ctx, 2*t.Renew)
				defer cancel()
				cmd := renewLeaseCmd{Node: n.cfg.Name, At: at.UTC(), Applied: n.c.Store().AppliedIndex()}
				idx, err := n.c.Apply(rctx, MsgRenewLease, cmd, nil)
				if err != nil {
					if ctx.Err() == nil {
						n.log.Warn("renew this node's lease", "err", err)
					}
					return
				}
				select {
				case results <- result{at, idx}:
				case <-ctx.Done():
				}
			}(now)
		}
		select {
		case <-ctx.Done():
			return
		case r := <-results:
			if r.at.After(lastOK) {
				lastOK = r.at
				wantApplied = max(wantApplied, r.index)
				n.saveLastRenewal(lastOK)
			}
		case <-tick.C:
		}
		if ctx.Err() != nil {
			return
		}
		fresh := time.Since(lastOK) < t.Fence
		clear := true
		switch {
		case !fresh:
			clear = n.fence(ctx, lastOK)
		case n.isFenced.Load() && n.c.Store().AppliedIndex() >= wantApplied:
			n.isFenced.Store(false)
			n.log.Warn("lease renewed: HA VMs placed here start again")
			n.kickAll()
		}
		if n.cfg.Watchdog != nil && (fresh || clear) {
			if err := n.cfg.Watchdog.Pet(); err != nil {
				n.log.Error("pet the watchdog", "err", err)
			}
		}
	}
}

// lastRenewalFile keeps, across agent restarts (not reboots: it is in the
// run directory), when this node last renewed its lease, on the system's
// monotonic clock.
func (n *NodeAgent) lastRenewalFile() string {
	return filepath.Join(filepath.Dir(n.cfg.Driver.Dir("x")), ".lease-renewed")
}

func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// saveLastRenewal records at (a renewal's send time) for a successor.
func (n *NodeAgent) saveLastRenewal(at time.Time) {
	mono := monotonicNow() - time.Since(at)
	f := n.lastRenewalFile()
	err := os.MkdirAll(filepath.Dir(f), 0o711) // as the QEMU driver makes it
	if err == nil {
		err = os.WriteFile(f+".tmp", []byte(strconv.FormatInt(int64(mono), 10)), 0o600)
	}
	if err == nil {
		err = os.Rename(f+".tmp", f)
	}
	if err != nil {
		n.log.Warn("save the lease's last renewal", "err", err)
	}
}

// loadLastRenewal is when the agent before this one last renewed, or now
// if none did since the box booted.
func (n *NodeAgent) loadLastRenewal() time.Time {
	b, err := os.ReadFile(n.lastRenewalFile())
	if err != nil {
		return time.Now()
	}
	mono, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || mono <= 0 || time.Duration(mono) > monotonicNow() {
		return time.Now()
	}
	last := time.Now().Add(-(monotonicNow() - time.Duration(mono)))
	n.log.Info("lease last renewed by the agent before this one", "ago", time.Since(last).Round(time.Millisecond))
	return last
}

// fence kills every QEMU here whose VM may be restarted elsewhere (an HA
// VM, or one the state no longer places here), and keeps such VMs from
// starting until the lease is renewed. A node alone in its cluster has
// nobody to restart them and leaves them be: alone means no other node
// has ever held a lease or reported as a host of VMs (both are kept in
// the state, so a node cut off early still knows its peers). It reports
// whether nothing of theirs is left running.
func (n *NodeAgent) fence(ctx context.Context, lastOK time.Time) bool {
	txn := n.c.Store().ReadTxn()
	others := false
	if it, err := txn.Get(tLeases, "id"); err == nil {
		for o := it.Next(); o != nil; o = it.Next() {
			others = others || o.(*Lease).Node != n.cfg.Name
		}
	}
	if it, err := txn.Get(tHosts, "id"); err == nil {
		for o := it.Next(); o != nil; o = it.Next() {
			others = others || o.(*Host).Name != n.cfg.Name
		}
	}
	if !others {
		return true
	}
	if !n.isFenced.Swap(true) {
		n.log.Error("no lease renewal for too long: killing this node's HA VMs, they may be restarted elsewhere",
			"last_renewal", lastOK.UTC().Format(time.RFC3339Nano))
	}
	names, err := n.cfg.Driver.List()
	if err != nil {
		n.log.Error("fence: list VMs", "err", err)
		return false
	}
	// All at once: a QEMU with much memory may take a while to go.
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, name := range names {
		vm := getVM(txn, name)
		if vm == nil || vm.Node == n.cfg.Name && Protected(txn, vm) != nil {
			continue // not restarted anywhere else: it keeps running
		}
		if m := vm.Migration; m != nil && m.PostCopy && !m.Progress.PostCopyAt.IsZero() && m.Phase == PhaseSwitched && m.Source == n.cfg.Name {
			// The source of a migration gone post-copy: its guest runs on the
			// target, which may still need memory only this QEMU has. It
			// cannot write (its volumes are closed here and fenced by
			// the writer epoch, its taps gone, and a post-copy source
			// never resumes); the target gives up on it if it stops
			// hearing from this node.
			continue
		}
		if !n.cfg.Driver.Running(name) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			kctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := n.cfg.Driver.Kill(kctx, name); err != nil {
				n.log.Error("fence: kill VM", "vm", name, "err", err)
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	return !failed.Load()
}

// kickAll wakes every worker.
func (n *NodeAgent) kickAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, w := range n.workers {
		w.kick()
	}
}

// fencedStart says why a VM may not start here now, or nil.
func (n *NodeAgent) fencedStart(vm *VM) error {
	if n.fenced() && Protected(n.c.Store().ReadTxn(), vm) == nil {
		return notReady{errFenced}
	}
	return nil
}
