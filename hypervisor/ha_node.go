package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Watchdog resets the box unless it is petted in time: a hardware
// watchdog (/dev/watchdog), so a box whose agent hangs is reset before
// its lease can be judged lost with its VMs still running.
type Watchdog interface {
	Pet() error
}

// errFenced keeps HA VMs from starting on a node that cannot renew its
// lease: they may be starting elsewhere.
var errFenced = errors.New("this node has lost contact with the cluster: its HA VMs start again once it is back, here or elsewhere")

// fenced says whether this node has stopped its HA VMs for want of a
// lease.
func (n *NodeAgent) fenced() bool { return n.isFenced.Load() }

// keepLease renews this node's lease every HATiming.Renew, kills its HA
// VMs once it has not renewed for HATiming.Fence, and pets the watchdog
// while either holds: renewed lately, or nothing left to kill.
func (n *NodeAgent) keepLease(ctx context.Context) {
	t := n.cfg.HA
	tick := time.NewTicker(t.Renew / 4)
	defer tick.Stop()
	// The last renewal that went through, by when it was sent: the leader
	// saw it after that. Until the first, the agent's start (a restarted
	// agent's VMs are killed as late as this if it cannot renew).
	lastOK := time.Now()
	var sentAt time.Time
	results := make(chan time.Time, 1)
	inFlight := false
	for {
		now := time.Now()
		if !inFlight && now.Sub(sentAt) >= t.Renew {
			inFlight, sentAt = true, now
			go func(at time.Time) {
				rctx, cancel := context.WithTimeout(ctx, t.Fence)
				defer cancel()
				_, err := n.c.Apply(rctx, MsgRenewLease, renewLeaseCmd{Node: n.cfg.Name, At: at.UTC()}, nil)
				if err != nil {
					if ctx.Err() == nil {
						n.log.Warn("renew this node's lease", "err", err)
					}
					at = time.Time{}
				}
				results <- at
			}(now)
		}
		select {
		case <-ctx.Done():
			return
		case at := <-results:
			inFlight = false
			if !at.IsZero() && at.After(lastOK) {
				lastOK = at
			}
		case <-tick.C:
		}
		fresh := time.Since(lastOK) < t.Fence
		clear := true
		if !fresh {
			clear = n.fence(ctx, lastOK)
		} else if n.isFenced.Swap(false) {
			n.log.Warn("lease renewed: HA VMs placed here start again", "lost_for", time.Since(lastOK).Round(time.Millisecond))
			n.kickAll()
		}
		if n.cfg.Watchdog != nil && (fresh || clear) {
			if err := n.cfg.Watchdog.Pet(); err != nil {
				n.log.Error("pet the watchdog", "err", err)
			}
		}
	}
}

// fence kills every QEMU here whose VM may be restarted elsewhere (an HA
// VM, or one the state no longer places here), and keeps such VMs from
// starting until the lease is renewed. A node alone in its cluster has
// nobody to restart them and leaves them be. It reports whether nothing
// of theirs is left running.
func (n *NodeAgent) fence(ctx context.Context, lastOK time.Time) bool {
	txn := n.c.Store().ReadTxn()
	others := false
	if it, err := txn.Get(tLeases, "id"); err == nil {
		for o := it.Next(); o != nil; o = it.Next() {
			others = others || o.(*Lease).Node != n.cfg.Name
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
	clear := true
	for _, name := range names {
		vm := getVM(txn, name)
		if vm == nil || vm.Node == n.cfg.Name && Protected(txn, vm) != nil {
			continue // not restarted anywhere else: it keeps running
		}
		if !n.cfg.Driver.Running(name) {
			continue
		}
		kctx, cancel := context.WithTimeout(ctx, time.Second)
		err := n.cfg.Driver.Kill(kctx, name)
		cancel()
		if err != nil {
			n.log.Error("fence: kill VM", "vm", name, "err", err)
			clear = false
		}
	}
	return clear
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
		return notReady{fmt.Errorf("%w", errFenced)}
	}
	return nil
}
