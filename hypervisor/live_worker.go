package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/leafca"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage/volume"
)

// The two workers of a live migration (live.go). Each runs its side as a
// loop that reads the replicated state and its QEMU afresh at every turn,
// so an agent that restarts picks its side up from what it finds.

// The migration policy, after Nova, Proxmox and KubeVirt: a small downtime
// limit first, raised step by step whenever an iteration over the guest's
// memory leaves as much to send as the one before (a stall); after
// repeated stalls the guest is slowed down (auto-converge) so that it
// dirties less than the link carries. The migration is given up, the
// guest running on where it was, when it takes longer than a budget per
// GiB of memory, or when what is left to send has not reached a new low
// for progressTimeout.
const (
	downtimeStartMS  = 30
	downtimeMaxMS    = 500
	stallsToConverge = 3
	budgetPerGiB     = 800 * time.Second
	minBudget        = 2 * time.Minute
	progressTimeout  = 150 * time.Second
	// pausedProgressTimeout is progressTimeout for a guest paused for
	// the copy (pausedCopy): what is left to send only shrinks then,
	// unless the link is stuck, and the guest waits all the while.
	pausedProgressTimeout = 30 * time.Second
	// switchWait bounds how long the source's guest stays paused waiting
	// for the target to take over; then the source ends the migration and
	// the guest resumes where it is (if the end commits: a source cut off
	// from the quorum keeps it paused, as the target may have taken it).
	switchWait = 5 * time.Second
	// prepareTimeout bounds the target's preparation.
	prepareTimeout = 2 * time.Minute
	// silenceTimeout bounds how long the target waits without news from
	// the source: for the stream to begin, or, once switched over, for
	// its guest to run (then it boots the VM afresh).
	silenceTimeout = time.Minute
	// postCopySilence bounds how long a target whose guest runs in
	// post-copy waits without a report from the source (which sends one
	// a second): a source that lost its power or the cluster leaves the
	// guest waiting for memory that will not come, so it boots afresh.
	postCopySilence = 15 * time.Second
	// migrationBandwidth is no limit at all on these links (QEMU's own
	// default is 128 MiB/s).
	migrationBandwidth = 1 << 34
	certTTL            = 2 * time.Hour
)

// outgoing is the source's own view of a migration it streams.
type outgoing struct {
	id         string
	started    time.Time
	limitMS    int64
	iter       int64 // QEMU's dirty-sync count at the last iteration seen
	remaining  int64 // what was left then
	stalls     int
	converging bool
	best       int64 // the least left to send so far, and when
	bestAt     time.Time
	reported   time.Time
	pausedAt   time.Time
	// guestPausedAt: when this node paused the guest for the whole copy
	// (pausedCopy); zero if it runs while its memory is sent.
	guestPausedAt time.Time
	gaveUp        time.Time // when this node last asked to end it (giveUp)
	// postCopyAsked: QEMU was told it may go post-copy; postCopyAt is
	// when this node first saw it in post-copy.
	postCopyAsked bool
	postCopyAt    time.Time
	// switchedAt, continuedAt: when this node saw the switch, and when
	// it had let go and told QEMU to send the rest (the switchover's
	// costs, logged at the end).
	switchedAt, continuedAt time.Time
	// varsWrites is how many writes the VM's UEFI settings volume had
	// had here when the stream started (varsChanged).
	varsWrites volume.WriteCount
}

// firstSeen is when this worker first saw migration id, by its own clock
// (the record's StartedAt is another node's).
func (w *worker) firstSeen(id string) time.Time {
	if w.seenID != id {
		w.seenID, w.seenAt = id, time.Now()
	}
	return w.seenAt
}

// involved says whether this node has a part in the VM's live migration.
func (w *worker) involved(vm *VM) bool {
	m := vm.Migration
	return m != nil && (m.Source == w.n.cfg.Name || m.Target == w.n.cfg.Name)
}

// turn is how long a migrating worker waits for news: short around the
// switchover, where every millisecond is the guest's pause.
func (w *worker) turn(m *Migration) time.Duration {
	if m != nil && m.PostCopy && m.Phase == PhaseSwitched {
		// Post-copy, once the guest runs on the target (the source has
		// sent the rest on its way, or is an agent that restarted since):
		// the rest of the memory may take a while, and QEMU's events say
		// when it is in.
		if m.Source == w.n.cfg.Name && (w.continued == m.ID || w.out == nil) || m.Target == w.n.cfg.Name && !w.runningAt.IsZero() {
			return 250 * time.Millisecond
		}
	}
	paused := w.out != nil && !w.out.pausedAt.IsZero()
	if paused || m != nil && (m.Phase == PhaseSwitching || m.Phase == PhaseSwitched) {
		return 20 * time.Millisecond
	}
	return 250 * time.Millisecond
}

// await waits for a change: the state (a kick), the QEMU (an event or its
// exit), or the turn's end; it answers a source's question meanwhile.
func (w *worker) await(ctx context.Context, m *Migration) {
	var exited <-chan struct{}
	if w.inst != nil {
		exited = w.inst.Exited()
	}
	select {
	case <-ctx.Done():
	case <-w.stop:
	case <-w.wake:
	case <-w.migEvents:
	case <-exited:
	case q := <-w.asks:
		q.reply <- w.readyFor(q.id)
	case <-time.After(w.turn(m)):
	}
}

// step moves the migration on; a refusal (the migration ended, or the
// other side moved it meanwhile) is seen at the next read of the state.
func (w *worker) step(ctx context.Context, vm *VM, c migrationCmd) error {
	c.VM, c.ID, c.Node, c.At = vm.ID, vm.Migration.ID, w.n.cfg.Name, time.Now().UTC()
	_, err := w.n.c.Apply(ctx, MsgMigrationStep, c, nil)
	if err != nil && ctx.Err() == nil {
		w.log.Warn("live migration step", "phase", c.Phase, "err", err)
	}
	return err
}

// endMigration gives the migration up (before its switchover) or, on the
// target after it, records how it ended.
func (w *worker) endMigration(ctx context.Context, vm *VM, why error) {
	c := endMigrationCmd{VM: vm.ID, ID: vm.Migration.ID, Node: w.n.cfg.Name, At: time.Now().UTC()}
	if why != nil {
		c.Error, c.ErrorSaid = why.Error(), said(why)
	}
	if _, err := w.n.c.Apply(ctx, MsgEndMigration, c, nil); err != nil && ctx.Err() == nil {
		w.log.Warn("end live migration", "why", why, "err", err)
	} else if why != nil {
		w.log.Warn("live migration ended", "why", why)
	}
}

// migrateOut is the source's side; it returns when there is nothing left
// for it to do until the state changes.
func (w *worker) migrateOut(ctx context.Context) error {
	for ctx.Err() == nil {
		vm := getVM(w.n.c.Store().ReadTxn(), w.id)
		if vm == nil {
			return nil
		}
		m := vm.Migration
		if m == nil || m.Source != w.n.cfg.Name {
			// Ended. Before the switchover (the VM is still ours): take
			// the guest back. The committed end is final: no switch can
			// follow it.
			if vm.Node == w.n.cfg.Name {
				return w.takeBack(ctx)
			}
			return nil
		}
		if w.inst == nil {
			if m.Phase != PhaseSwitched {
				w.endMigration(ctx, vm, consensus.Errorf("", "the VM's QEMU is not running on %s", w.n.cfg.Name))
			}
			return nil
		}
		info, err := w.inst.QueryMigrate(ctx)
		if err != nil {
			select {
			case <-w.inst.Exited():
				w.log.Warn("QEMU exited during a live migration")
				if m.Phase != PhaseSwitched {
					w.endMigration(ctx, vm, consensus.Errorf("", "the VM's QEMU exited on %s", w.n.cfg.Name))
				}
				return nil // the run loop handles the exit
			default:
			}
			return err
		}
		// (QEMU also says postcopy-active for a moment before its pause
		// before the switchover: not post-copy yet.)
		if info.Status == "postcopy-active" && m.Phase == PhaseSwitched && w.out != nil && w.out.id == m.ID && w.out.postCopyAt.IsZero() {
			w.out.postCopyAt = time.Now()
			w.log.Info("live migration is post-copy: the guest runs on the target", "remaining", info.RAM.Remaining)
		}
		switch m.Phase {
		case PhasePlanning:
			if err := w.plan(ctx, vm); err != nil {
				w.endMigration(ctx, vm, err)
			}
		case PhasePreparing:
			if time.Since(w.firstSeen(m.ID)) > prepareTimeout {
				w.endMigration(ctx, vm, consensus.Errorf("", "%s did not get ready to receive the VM within %s", m.Target, prepareTimeout))
			}
		case PhaseTransferring:
			switch {
			case w.out == nil || w.out.id != m.ID:
				if info.Status == "setup" || info.Status == "active" || info.Status == "pre-switchover" {
					// An earlier run of this agent started it: this one
					// knows neither its policy nor its budget.
					w.endMigration(ctx, vm, consensus.Errorf("", "the sending node's agent restarted during the migration"))
					break
				}
				if err := w.send(ctx, vm); err != nil {
					w.endMigration(ctx, vm, err)
				}
			case info.Status == "pre-switchover":
				// The guest is paused, its writes flushed: hand it over
				// once the target says it is ready to take it.
				if w.out.pausedAt.IsZero() {
					w.out.pausedAt = time.Now()
				}
				if time.Since(w.out.pausedAt) > switchWait {
					w.giveUp(ctx, vm, consensus.Errorf("", "%s did not take the VM over within %s", m.Target, switchWait))
					break
				}
				if why := w.varsChanged(vm); why != nil {
					w.giveUp(ctx, vm, why)
					break
				}
				err := w.askTarget(ctx, vm)
				var no targetNo
				switch {
				case errors.Is(err, errOldTarget):
					// An agent from before the one-step switchover: the
					// two-step one (the target switches when it sees
					// this).
					_ = w.step(ctx, vm, migrationCmd{Phase: PhaseSwitching, Progress: w.progress(info)})
				case errors.As(err, &no):
					w.giveUp(ctx, vm, err)
				case err != nil:
					w.log.Warn("ask the target to take the VM over; again", "err", err)
				default:
					if err := w.switchOver(ctx, vm, info); err != nil {
						break // its outcome is read from the state at the next turn
					}
					if err := w.handOff(ctx, vm); err != nil {
						return err
					}
				}
			case info.Status == "failed" || info.Status == "cancelled":
				w.endMigration(ctx, vm, qemuStreamError(info.ErrorDesc, info.Status))
			default:
				if why := w.police(ctx, vm, info); why != nil {
					w.endMigration(ctx, vm, why)
				}
			}
		case PhaseSwitching:
			switch {
			case info.Status != "pre-switchover":
				w.giveUp(ctx, vm, qemuStreamError(info.ErrorDesc, info.Status))
			case w.out == nil || time.Since(w.out.pausedAt) > switchWait:
				w.giveUp(ctx, vm, consensus.Errorf("", "%s did not take the VM over within %s", m.Target, switchWait))
			}
		case PhaseSwitched:
			// The target has the VM: its volumes fence this node. Send it
			// the rest, then go.
			switch info.Status {
			case "pre-switchover":
				if err := w.handOff(ctx, vm); err != nil {
					return err
				}
			case "postcopy-active":
				// The guest runs on the target, which hears from this
				// node once a second that it is still here to send the
				// rest (postCopySilence).
				if time.Since(w.postCopyReport) >= time.Second {
					w.postCopyReport = time.Now()
					p := w.progress(info)
					if p.PostCopyAt.IsZero() { // (an agent that restarted since)
						p.PostCopyAt = orNow(m.Progress.PostCopyAt)
					}
					_ = w.step(ctx, vm, migrationCmd{Progress: p})
				}
			case "completed":
				// QEMU says completed a moment before it has worked out
				// its figures.
				for i := 0; i < 50 && info.TotalTime == 0; i++ {
					time.Sleep(10 * time.Millisecond)
					if again, err := w.inst.QueryMigrate(ctx); err == nil {
						info = again
					}
				}
				w.finishOut(ctx, vm, info)
				return nil
			case "failed", "cancelled", "postcopy-paused":
				// (Post-copy's pause waits for a recovery Cairn does not
				// attempt: the guest's memory is split between the two
				// nodes, and the target boots it afresh instead.)
				w.log.Warn("the migration stream broke after the switchover; the target boots the VM afresh", "status", info.Status, "err", info.ErrorDesc)
				w.quitSource(ctx)
				return nil
			}
		}
		w.await(ctx, m)
	}
	return ctx.Err()
}

// abandon, when this agent stops (ctx ended) while its QEMU still copies
// a guest it paused for the copy, cancels the stream and resumes the
// guest, which would otherwise wait paused for the agent's return. No
// switch can come meanwhile: the source proposes it, after QEMU's pause
// before the switchover, and this agent is going; it ends the migration
// on its way out if it can (else its successor does, as for any restart).
func (w *worker) abandon(ctx context.Context) {
	if ctx.Err() == nil || w.out == nil || w.out.guestPausedAt.IsZero() || w.inst == nil || w.continued == w.out.id {
		return
	}
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	info, err := w.inst.QueryMigrate(bg)
	if err != nil || (info.Status != "setup" && info.Status != "active") {
		return
	}
	if err := w.inst.MigrateCancel(bg); err != nil {
		w.log.Warn("cancel the copy of a paused guest as the agent stops", "err", err)
		return
	}
	for bg.Err() == nil {
		if info, err := w.inst.QueryMigrate(bg); err == nil && info.Status != "cancelling" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w.inst.Resume(bg); err != nil {
		w.log.Warn("resume a guest paused for its copy as the agent stops", "err", err)
		return
	}
	w.log.Info("the agent stops: the copy cancelled, the guest resumed")
	if vm := getVM(w.n.c.Store().ReadTxn(), w.id); vm != nil && vm.Migration != nil && vm.Migration.ID == w.out.id {
		w.endMigration(bg, vm, consensus.Errorf("", "the sending node's agent stopped during the migration"))
	}
}

// varsChanged says why the VM may not switch over if its firmware wrote
// its UEFI settings since the stream started, or "". QEMU copies the
// flash chip that holds them as memory, but its writes to the chip are
// not tracked as dirty memory, so one made after its pages were sent is
// not sent again, and the target would write the older chip back to the
// volume when it resumes. The volume, written through before each write
// returns to the guest, counts them. Such writes are rare (an OS adding a
// boot entry): the move is called off and may be tried again.
func (w *worker) varsChanged(vm *VM) error {
	if vm.Spec.VarsVolume == "" || w.out == nil {
		return nil
	}
	n, ok := w.n.cfg.Block.Writes(vm.Spec.VarsVolume)
	switch {
	case !ok:
		return consensus.Errorf("", "the VM's UEFI settings volume is no longer served on %s", w.n.cfg.Name)
	case n != w.out.varsWrites:
		// (Or its writer here was opened again since: it cannot tell.)
		return consensus.Errorf("", "the guest changed its UEFI settings while its memory was copied, which QEMU does not copy again: the move was called off; try it again")
	}
	return nil
}

// switchOver hands the VM to the target in one command; if some node
// would not know that command (a cluster halfway through an upgrade), it
// takes the two steps older agents take instead.
func (w *worker) switchOver(ctx context.Context, vm *VM, info qemu.MigrationInfo) error {
	c := migrationCmd{VM: vm.ID, ID: vm.Migration.ID, Node: w.n.cfg.Name, Progress: w.progress(info), At: time.Now().UTC()}
	_, err := w.n.c.Apply(ctx, MsgSwitchMigration, c, nil)
	if consensus.ErrorReason(err) == consensus.ReasonProtocol {
		w.log.Info("switching over in two steps", "why", err)
		_ = w.step(ctx, vm, migrationCmd{Phase: PhaseSwitching, Progress: c.Progress})
		return err
	}
	if err != nil && ctx.Err() == nil {
		w.log.Warn("switch a live migration over", "err", err)
	}
	return err
}

// giveUp ends a migration before its switchover, asking once a second at
// most: the guest is paused, and a refusal (the switch won) or an answer
// that never comes (this node is cut off) is read from the state.
func (w *worker) giveUp(ctx context.Context, vm *VM, why error) {
	if w.out != nil {
		if time.Since(w.out.gaveUp) < time.Second {
			return
		}
		w.out.gaveUp = time.Now()
	}
	w.endMigration(ctx, vm, why)
}

// handOff sends the rest of the stream once the VM is the target's.
// QEMU resumes the guest here by itself if the rest of the stream fails:
// first this node lets go of its volumes, so that such a guest writes
// nowhere until it is killed; its taps go while the rest is sent (the
// guest is still paused then, and the port is the target's already: this
// node's port security lets nothing of it through).
func (w *worker) handOff(ctx context.Context, vm *VM) error {
	if w.continued == vm.Migration.ID {
		return nil // told already; QEMU moves on in a moment
	}
	seen := time.Now()
	w.letGo(ctx, vm)
	if err := w.inst.MigrateContinue(ctx); err != nil {
		return err
	}
	w.continued = vm.Migration.ID
	if w.out != nil {
		w.out.switchedAt, w.out.continuedAt = seen, time.Now()
	}
	w.removeTaps(vm)
	return nil
}

func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().UTC()
	}
	return t
}

// qemuStreamError says why QEMU's migration stream failed: its own words,
// or the state the stream ended in.
func qemuStreamError(desc, status string) error {
	if desc != "" {
		return consensus.Errorf("", "QEMU: %s", desc)
	}
	return consensus.Errorf("", "QEMU: the migration stream %s", status)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// letGo waits (a while) until this node's volume server has closed the
// VM's volumes.
func (w *worker) letGo(ctx context.Context, vm *VM) {
	vols := volume.AttachedToVM(w.n.c.Store().ReadTxn(), vm.ID)
	for deadline := time.Now().Add(2 * time.Second); w.n.cfg.Block != nil; {
		held := ""
		for _, v := range vols {
			if w.n.cfg.Block.Holds(v.ID) {
				held = v.ID
			}
		}
		if held == "" {
			break
		}
		if time.Now().After(deadline) {
			w.log.Warn("this node still holds a volume of a VM switched over to another", "volume", held)
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// removeTaps removes the taps of a VM that switched over to another node.
func (w *worker) removeTaps(vm *VM) {
	for _, nic := range vm.NICs {
		if err := w.n.cfg.Net.RemoveTap(w.n.cfg.Net.TapName(nic.ID)); err != nil {
			w.log.Warn("remove the tap of a VM switched over to another node", "err", err)
		}
	}
}

// plan records what the source's QEMU runs, for the target to match.
func (w *worker) plan(ctx context.Context, vm *VM) error {
	l, err := w.inst.Layout(ctx)
	if err != nil {
		return err
	}
	if l.Grown != "" {
		return fmt.Errorf("VM %s was given %s while it ran: stop and start it once, then move it", vm.Name, l.Grown)
	}
	ports := map[string]string{}
	for _, v := range volume.AttachedToVM(w.n.c.Store().ReadTxn(), vm.ID) {
		if id := volumeDiskID(v); l.Ports[id] != "" {
			ports[id] = l.Ports[id]
		}
	}
	return w.step(ctx, vm, migrationCmd{Phase: PhasePreparing, VCPUs: int64(l.VCPUs), MaxVCPUs: int64(l.MaxVCPUs), RAMMiB: int64(l.MemoryMiB), Ports: ports})
}

// send starts the stream to the target.
func (w *worker) send(ctx context.Context, vm *VM) error {
	m := vm.Migration
	ca, err := loadMigrationCA(w.n.c.Store().ReadTxn())
	if err != nil {
		return err
	}
	cert, key, err := ca.Issue(leafca.Leaf{CN: migrationClient(m.ID), Client: true, TTL: certTTL, Backdate: 5 * time.Minute})
	if err != nil {
		return err
	}
	if err := w.inst.SetMigrationTLS(ctx, qemu.MigrationTLS{CA: ca.PEM, Cert: cert, Key: key, Peer: migrationHost(m.ID)}); err != nil {
		return err
	}
	if err := w.inst.SetMigrationCapabilities(ctx, map[string]bool{"events": true, "pause-before-switchover": true, "auto-converge": true, "postcopy-ram": m.PostCopy}); err != nil {
		return err
	}
	bw := int64(migrationBandwidth)
	if cap := settings(w.n.c.Store().ReadTxn()).MigrationMiBps; cap > 0 {
		bw = cap << 20
	}
	// Auto-converge is held at 1% until the policy lets it loose.
	if err := w.inst.SetMigrationParameters(ctx, map[string]any{"downtime-limit": downtimeStartMS, "max-bandwidth": bw, "max-postcopy-bandwidth": bw,
		"cpu-throttle-initial": 1, "cpu-throttle-increment": 1, "max-cpu-throttle": 1}); err != nil {
		return err
	}
	now := time.Now()
	out := &outgoing{id: m.ID, started: now, limitMS: downtimeStartMS, best: math.MaxInt64, bestAt: now}
	if vm.Spec.VarsVolume != "" {
		n, ok := w.n.cfg.Block.Writes(vm.Spec.VarsVolume)
		if !ok {
			return fmt.Errorf("the VM's UEFI settings volume %s is not served on %s", vm.Spec.VarsVolume, w.n.cfg.Name)
		}
		out.varsWrites = n
	}
	if w.pausedCopy() {
		if err := w.targetTakesPausedCopy(ctx, vm); err != nil {
			return err
		}
		// The question may have taken seconds: is it still on?
		if cur := getVM(w.n.c.Store().ReadTxn(), w.id); cur == nil || cur.Migration == nil || cur.Migration.ID != m.ID {
			return nil // ended meanwhile; the next turn sees it
		}
		if err := w.inst.Pause(ctx); err != nil {
			return err
		}
		out.guestPausedAt = time.Now()
		w.out = out // (abandon resumes it should the agent stop now)
	}
	if err := w.inst.Migrate(ctx, m.Addr); err != nil {
		if !out.guestPausedAt.IsZero() {
			// No stream, no switch: the guest runs on at once.
			if rerr := w.inst.Resume(context.WithoutCancel(ctx)); rerr != nil {
				w.log.Warn("resume the guest after the stream did not start", "err", rerr)
			}
		}
		w.out = nil
		return err
	}
	w.out = out
	w.warm(ctx, vm)
	w.log.Info("live migration started", "to", m.Target, "addr", m.Addr, "guest_paused", !out.guestPausedAt.IsZero())
	return nil
}

// pausedCopy says whether this node pauses the guest of a VM it moves
// live for the whole copy of its memory. It does under TCG: there QEMU
// 7.2 loses memory writes of a running guest across the copy's passes
// (seen on this QEMU in 5 of 5 runs: the guest on the target oopses), as
// its software dirty-page tracking misses some writes. A paused guest
// writes nothing, so the first pass sends every page as it stays; QEMU
// then resumes neither side by itself (the guest was not running; QEMU
// 7.2 starts a post-copy target by itself all the same), and the target
// resumes it once it has all of it (targetTakesPausedCopy: older agents
// do not, and are not sent such a guest). The move still keeps the
// guest's memory, connections and devices; it is paused for seconds
// instead of milliseconds, unless it goes post-copy, which then starts
// at once and pauses it only until the target has its devices.
// UnsafeTCGPrecopy turns this off, for benchmarks of the path KVM nodes
// take (KVM tracks dirty pages in the kernel).
func (w *worker) pausedCopy() bool {
	return w.n.cfg.Accel != "kvm" && !w.n.cfg.UnsafeTCGPrecopy
}

// police applies the policy at each look at a running stream; it returns
// why the migration is to be given up, or "".
func (w *worker) police(ctx context.Context, vm *VM, info qemu.MigrationInfo) error {
	o := w.out
	now := time.Now()
	if vm.Migration.PostCopy && !o.postCopyAsked && (info.RAM.DirtySyncCount >= 2 || !o.guestPausedAt.IsZero()) {
		// The first pass is over: the admin let the migration go
		// post-copy (libvirt's postcopy-after-precopy). QEMU still ends
		// in pre-copy if what is left fits in the pause; otherwise it
		// switches over now and the target fetches the rest, which ends
		// whatever the guest does. A guest paused for the copy
		// (pausedCopy) goes post-copy at once: it is paused only until
		// the target has its devices.
		if err := w.inst.MigrateStartPostcopy(ctx); err != nil {
			return consensus.Errorf("", "QEMU would not go post-copy: %v", err)
		}
		o.postCopyAsked = true
		w.log.Info("live migration may go post-copy", "passes", max(info.RAM.DirtySyncCount-1, 0), "guest_paused", !o.guestPausedAt.IsZero(), "remaining", info.RAM.Remaining)
	}
	d := o.judge(now, info, vm.Spec.RAMMiB, vm.Migration.Target)
	if d.raiseLimit {
		if err := w.inst.SetMigrationParameters(ctx, map[string]any{"downtime-limit": o.limitMS}); err != nil {
			w.log.Warn("raise the downtime limit", "err", err)
		}
	}
	if d.converge {
		if err := w.inst.SetMigrationParameters(ctx, map[string]any{"max-cpu-throttle": 99, "cpu-throttle-initial": 20, "cpu-throttle-increment": 10}); err != nil {
			w.log.Warn("let auto-converge slow the guest", "err", err)
		}
		w.log.Info("live migration stalls: slowing the guest down", "stalls", o.stalls)
	}
	if d.fail != nil {
		return d.fail
	}
	if now.Sub(o.reported) >= time.Second {
		o.reported = now
		_ = w.step(ctx, vm, migrationCmd{Progress: w.progress(info)})
		w.warm(ctx, vm)
	}
	return nil
}

// policy is what one look at a migration's progress decides.
type policy struct {
	raiseLimit bool  // the downtime limit went up (to o.limitMS)
	converge   bool  // start auto-converge: the guest is slowed down
	fail       error // give up, and why; nil to go on
}

// judge applies the migration policy to what QEMU says now: at each
// iteration boundary, a pass that left at least 90% of what the one before
// it left is a stall; each stall doubles the downtime limit (up to
// downtimeMaxMS), and stallsToConverge of them start auto-converge. It
// gives up past the budget for the VM's memory, or when the least left to
// send has not dropped for progressTimeout (pausedProgressTimeout when
// the guest is paused for its copy).
func (o *outgoing) judge(now time.Time, info qemu.MigrationInfo, ramMiB int64, target string) policy {
	var d policy
	if r := info.RAM.Remaining; r > 0 && r < o.best {
		o.best, o.bestAt = r, now
	}
	if info.RAM.DirtySyncCount > o.iter {
		// An iteration boundary: did this pass leave less to send?
		if o.iter > 0 && o.remaining > 0 && info.RAM.Remaining*10 >= o.remaining*9 {
			o.stalls++
			if o.limitMS < downtimeMaxMS {
				o.limitMS = min(o.limitMS*2, downtimeMaxMS)
				d.raiseLimit = true
			}
			if o.stalls >= stallsToConverge && !o.converging {
				o.converging, d.converge = true, true
			}
		}
		o.iter, o.remaining = info.RAM.DirtySyncCount, info.RAM.Remaining
	}
	budget := max(minBudget, time.Duration(float64(budgetPerGiB)*float64(ramMiB)/1024))
	switch {
	case now.Sub(o.started) > budget:
		d.fail = consensus.Errorf("", "not done within %s (%s per GiB of memory)", budget, budgetPerGiB)
	case o.guestPausedAt.IsZero() && now.Sub(o.bestAt) > progressTimeout:
		d.fail = consensus.Errorf("", "no progress for %s: the guest writes to its memory faster than it can be sent", progressTimeout)
	case !o.guestPausedAt.IsZero() && now.Sub(o.bestAt) > pausedProgressTimeout:
		d.fail = consensus.Errorf("", "no progress for %s while the guest was paused for its copy: the link to %s carries nothing", pausedProgressTimeout, target)
	}
	return d
}

func (w *worker) progress(info qemu.MigrationInfo) *MigrationProgress {
	p := &MigrationProgress{RAMTotal: info.RAM.Total, RAMTransferred: info.RAM.Transferred, RAMRemaining: info.RAM.Remaining,
		DirtyRate: info.DirtyRate(), Mbps: info.RAM.Mbps, Iterations: info.RAM.DirtySyncCount,
		ExpectedDowntimeMS: info.ExpectedDowntime, ThrottlePercent: info.CPUThrottlePercentage, UpdatedAt: time.Now().UTC()}
	if w.out != nil {
		p.DowntimeLimitMS, p.Stalls, p.PostCopyAt = w.out.limitMS, w.out.stalls, w.out.postCopyAt
	}
	return p
}

// takeBack ends the source's side of a migration that ended before its
// switchover: QEMU's stream is cancelled, and the guest, paused or not,
// runs on here.
func (w *worker) takeBack(ctx context.Context) error {
	continued := w.out != nil && w.continued == w.out.id
	settle := time.Now().Add(2 * time.Second)
	w.out = nil
	if w.inst == nil {
		return nil
	}
	for ctx.Err() == nil {
		info, err := w.inst.QueryMigrate(ctx)
		if err != nil {
			return err
		}
		status := info.Status
		if status == "completed" || status == "failed" {
			// A stream of this QEMU's that got as far as its devices
			// leaves it postmigrate: the guest went, or began to go,
			// after the switch. Else the status is another stream's (a
			// QEMU that arrived by live migration says completed of it
			// for ever) or one that failed with the guest still whole.
			st, err := w.inst.Status(ctx)
			if err != nil {
				return err
			}
			if st.State != "postmigrate" && st.State != "finish-migrate" {
				status = "none"
			}
		}
		switch status {
		case "setup", "active", "pre-switchover":
			if err := w.inst.MigrateCancel(ctx); err != nil {
				return err
			}
		case "postcopy-active":
			// QEMU says so for a moment before its pause before the
			// switchover too, and then the guest is still this node's:
			// wait for the pause, unless this node sent the rest already
			// (or it lasts: an agent that restarted after doing so).
			if continued || time.Now().After(settle) {
				w.afterSwitch(ctx, info.Status)
				return nil
			}
		case "device", "completed", "failed", "postcopy-paused", "postcopy-recover":
			// (device: QEMU sends the devices once told to continue,
			// after the switch.)
			w.afterSwitch(ctx, info.Status)
			return nil
		case "cancelling":
		default:
			st, err := w.inst.Status(ctx)
			if err != nil {
				return err
			}
			// (A stop asked meanwhile is done by the ACPI button, which a
			// paused guest would not hear.)
			vm := getVM(w.n.c.Store().ReadTxn(), w.id)
			resume := vm != nil && vm.Desired != DesiredPaused && vm.Desired != DesiredDeleted
			if !st.Running && (st.State != "paused" || resume) {
				// QEMU resumes a guest that ran before the migration by
				// itself; one it left stopped (postmigrate after a cancel
				// in its pause before the switchover), or paused for the
				// copy (pausedCopy), is resumed here.
				if err := w.inst.Resume(ctx); err != nil {
					return err
				}
			}
			w.log.Info("live migration given up; the VM runs on here", "status", info.Status)
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return ctx.Err()
}

// afterSwitch ends the source's QEMU of a VM that came back to this node
// after its switchover (its target was lost): the guest may have run on
// the target, its disks written since, so it boots afresh from its
// volumes, never from this memory.
func (w *worker) afterSwitch(ctx context.Context, status string) {
	w.log.Warn("the VM came back after its switchover; booting it afresh, not from the old memory", "status", status)
	w.quitSource(ctx)
	w.kick() // (the run loop has no QEMU left to wake it)
}

// finishOut records how the stream went and stops the source's QEMU.
func (w *worker) finishOut(ctx context.Context, vm *VM, info qemu.MigrationInfo) {
	args := []any{"to", vm.Migration.Target, "total_ms", info.TotalTime, "downtime_ms", info.Downtime}
	if o := w.out; o != nil && !o.pausedAt.IsZero() && !o.continuedAt.IsZero() {
		// From QEMU's pause (as this node saw it) to the switch committed
		// (the target's word and the commit), and the letting go.
		args = append(args, "to_switch_ms", o.switchedAt.Sub(o.pausedAt).Milliseconds(), "let_go_ms", o.continuedAt.Sub(o.switchedAt).Milliseconds())
	}
	w.log.Info("live migration completed", args...)
	p := w.progress(info)
	p.DowntimeMS, p.TotalMS = max(info.Downtime, 1), info.TotalTime
	if o := w.out; o != nil && !o.guestPausedAt.IsZero() && !o.pausedAt.IsZero() {
		// QEMU counts from its own stop; the guest was paused before.
		p.DowntimeMS += o.pausedAt.Sub(o.guestPausedAt).Milliseconds()
	}
	if p.PostCopyAt.IsZero() {
		p.PostCopyAt = vm.Migration.Progress.PostCopyAt // (an agent that restarted since)
	}
	_ = w.step(ctx, vm, migrationCmd{Progress: p})
	w.quitSource(ctx)
}

// quitSource ends the source's QEMU, whose guest now lives elsewhere:
// killed, as it has nothing to flush and its volumes are no longer
// served here.
func (w *worker) quitSource(ctx context.Context) {
	if w.inst == nil {
		return
	}
	if err := w.inst.Kill(ctx); err != nil {
		w.log.Warn("stop the source's QEMU", "err", err)
	}
	w.inst, w.out = nil, nil
}

// migrateIn is the target's side.
func (w *worker) migrateIn(ctx context.Context) error {
	deadline := time.Now().Add(prepareTimeout)
	for ctx.Err() == nil {
		vm := getVM(w.n.c.Store().ReadTxn(), w.id)
		if vm == nil || vm.Migration == nil || vm.Migration.Target != w.n.cfg.Name {
			if w.in != "" && (vm == nil || vm.Node != w.n.cfg.Name) && w.inst != nil {
				// Ended before the switch: the QEMU waiting here goes at
				// once, so that a new migration finds nothing left.
				_ = w.inst.Kill(ctx)
				w.inst = nil
			}
			w.resetIn()
			return nil // the run loop removes the rest
		}
		m := vm.Migration
		if w.in != "" && w.in != m.ID && vm.Node != w.n.cfg.Name && w.inst != nil {
			// The QEMU of an earlier migration that ended before this
			// worker noticed: it goes before this one is prepared.
			_ = w.inst.Kill(ctx)
			w.inst = nil
			w.resetIn()
		}
		var exited bool
		if w.inst != nil {
			select {
			case <-w.inst.Exited():
				exited = true
			default:
			}
		}
		switch m.Phase {
		case PhasePlanning:
			if time.Since(w.firstSeen(m.ID)) > prepareTimeout {
				w.endMigration(ctx, vm, consensus.Errorf("", "%s did not plan the migration within %s", m.Source, prepareTimeout))
				return nil
			}
		case PhasePreparing:
			if w.in == m.ID {
				// Listening already; the step that says so did not go
				// through: again.
				_ = w.step(ctx, vm, migrationCmd{Phase: PhaseTransferring, Addr: w.inAddr})
				break
			}
			if w.inst != nil || w.n.cfg.Driver.Running(vm.ID) {
				w.endMigration(ctx, vm, consensus.Errorf("", "the receiving node's agent restarted during the migration"))
				return nil
			}
			addr, err := w.receive(ctx, vm)
			if err != nil {
				var nr notReady
				if (errors.As(err, &nr) || errors.Is(err, netfabric.ErrSegmentMissing)) && time.Now().Before(deadline) {
					// A volume's standby socket is on its way, or the
					// segment of a port's network (this node carries it
					// once it sees the VM arriving): again soon.
					break
				}
				w.endMigration(ctx, vm, consensus.Errorf("", "%s could not receive the VM: %v", w.n.cfg.Name, err))
				return nil
			}
			w.in, w.inAddr, w.heard = m.ID, addr, time.Now()
			_ = w.step(ctx, vm, migrationCmd{Phase: PhaseTransferring, Addr: addr})
		case PhaseTransferring, PhaseSwitching:
			// Heard is this node's own clock: when the source's report
			// last changed, not the time the source wrote in it.
			if !m.Progress.UpdatedAt.Equal(w.lastReport) {
				w.lastReport, w.heard = m.Progress.UpdatedAt, time.Now()
			}
			switch {
			case w.in != m.ID:
				w.endMigration(ctx, vm, consensus.Errorf("", "the receiving node's agent restarted during the migration"))
				return nil
			case exited || w.inst == nil:
				w.endMigration(ctx, vm, consensus.Errorf("", "the QEMU receiving the VM on %s exited", w.n.cfg.Name))
				return nil
			case m.Phase == PhaseSwitching:
				// The guest is paused on the source, its writes flushed:
				// take it, with its volumes' writer epoch and its ports.
				if w.step(ctx, vm, migrationCmd{Phase: PhaseSwitched}) == nil {
					w.switchedAt = time.Now()
				}
			case time.Since(w.heard) > silenceTimeout:
				w.endMigration(ctx, vm, consensus.Errorf("", "no word from %s for %s", m.Source, silenceTimeout))
				return nil
			}
		case PhaseSwitched:
			// The VM is ours. Its guest runs once the rest of the stream
			// is in; if the stream broke (or never ends), it boots afresh
			// from its volumes.
			if w.switchedAt.IsZero() {
				w.switchedAt = time.Now() // (an earlier run of this agent switched)
			}
			if m.PostCopy && w.inst != nil && !exited {
				// The source's word is read before QEMU is asked: a QEMU
				// whose main thread waits for a page that will not come
				// answers no QMP.
				if !m.Progress.UpdatedAt.Equal(w.lastReport) || w.heard.Before(w.switchedAt) {
					w.lastReport, w.heard = m.Progress.UpdatedAt, time.Now()
				}
				if w.completedAt.IsZero() && time.Since(w.heard) > postCopySilence {
					w.postCopyBroke(ctx, vm, consensus.Errorf("", "no word from %s for %s during post-copy", m.Source, postCopySilence))
					return nil
				}
			}
			if w.runningAt.IsZero() && time.Since(w.switchedAt) > silenceTimeout && w.inst != nil {
				w.log.Warn("the rest of the live stream did not come; booting the VM afresh", "after", silenceTimeout)
				_ = w.inst.Kill(ctx)
				exited = true
			}
			if exited || w.inst == nil {
				if w.inst != nil {
					_ = w.inst.Quit(ctx)
					w.inst = nil
				}
				w.endMigration(ctx, vm, consensus.Errorf("", "the live stream broke after the switchover; the VM boots afresh on %s", w.n.cfg.Name))
				w.resetIn()
				return nil
			}
			st, err := w.inst.Status(ctx)
			if err != nil {
				return err
			}
			if !st.Running && st.State == "paused" && vm.Desired == DesiredRunning {
				// All of it is here from a source that had paused its
				// guest for the copy (pausedCopy): QEMU leaves it paused,
				// as it was there.
				if err := w.inst.Resume(ctx); err != nil {
					return err
				}
				st.Running = true
				w.log.Info("resumed the guest paused for its copy")
			}
			if st.Running && w.runningAt.IsZero() {
				w.runningAt = time.Now()
			}
			if m.PostCopy {
				// The guest may run here on memory still on the source:
				// the migration ends (and the source's QEMU goes) only
				// once all of it has come. A stream broken meanwhile
				// leaves the guest waiting for pages that may never come:
				// it boots afresh from its volumes.
				in, err := w.inst.QueryMigrate(ctx)
				if err != nil {
					return err
				}
				switch in.Status {
				case "completed":
					if w.completedAt.IsZero() {
						w.completedAt = time.Now()
					}
				case "failed", "cancelled", "postcopy-paused":
					w.postCopyBroke(ctx, vm, consensus.Errorf("", "the post-copy stream broke (%s)", orDefault(in.ErrorDesc, in.Status)))
					return nil
				}
				if w.completedAt.IsZero() {
					w.await(ctx, m)
					continue
				}
			}
			// Ended once the source has reported QEMU's figures (or has
			// had time enough to, from the guest's start here or, in
			// post-copy, from the last of its memory).
			since := w.runningAt
			if m.PostCopy {
				since = w.completedAt
			}
			if st.Running && (m.Progress.DowntimeMS > 0 || time.Since(since) > 3*time.Second) {
				w.resetIn()
				w.endMigration(ctx, vm, nil)
				return nil
			}
		}
		w.await(ctx, m)
	}
	return ctx.Err()
}

// postCopyBroke gives up a post-copy migration whose guest runs here:
// the memory still on the source will not come, so the VM boots afresh
// from its volumes. (A kill needs no QMP, which a QEMU waiting for a
// page may not answer.)
func (w *worker) postCopyBroke(ctx context.Context, vm *VM, why error) {
	w.log.Warn("post-copy failed; booting the VM afresh", "why", why)
	_ = w.inst.Kill(ctx) // (and removes its run directory)
	w.inst = nil
	w.endMigration(ctx, vm, consensus.Errorf("", "%v; the VM boots afresh on %s", why, w.n.cfg.Name))
	w.resetIn()
}

// resetIn forgets the migration this node was receiving.
func (w *worker) resetIn() {
	w.in, w.inAddr = "", ""
	w.switchedAt, w.runningAt, w.completedAt = time.Time{}, time.Time{}, time.Time{}
}

// receive starts the QEMU that takes the VM in, waiting for the stream,
// and returns where it listens.
func (w *worker) receive(ctx context.Context, vm *VM) (string, error) {
	m := vm.Migration
	if w.n.cfg.MigrationIP == "" {
		return "", errors.New("this node has no address for migration streams")
	}
	ca, err := loadMigrationCA(w.n.c.Store().ReadTxn())
	if err != nil {
		return "", err
	}
	var vols []Disk
	vars := ""
	for _, v := range volume.AttachedToVM(w.n.c.Store().ReadTxn(), vm.ID) {
		id := volumeDiskID(v)
		if !v.Attachment.Boot && !v.Attachment.Firmware && m.Ports[id] == "" {
			continue // not plugged on the source: plugged here once it runs
		}
		sock, _, ok := w.n.cfg.Block.Standby(v.ID)
		if !ok {
			return "", notReady{consensus.Errorf("", "volume %s is not served here yet", v.Name)}
		}
		source := "nbd+unix:///" + v.ID + "?socket=" + sock
		if v.Attachment.Firmware {
			// The flash's contents come with the stream; its standby
			// answers QEMU's first read before that with zeroes.
			vars = source
			continue
		}
		vols = append(vols, Disk{ID: id, Source: source, Format: FormatRaw, Media: "disk", Serial: v.ID, Port: m.Ports[id]})
	}
	mach, err := w.prepare(ctx, vm, vols, vars)
	if err != nil {
		return "", err
	}
	mach.VCPUs, mach.MaxVCPUs = int(m.VCPUs), int(m.MaxVCPUs)
	mach.MemoryMiB, mach.MaxMemoryMiB = int(m.RAMMiB), int(2*m.RAMMiB)
	mach.Incoming = true
	inst, err := w.n.cfg.Driver.Start(ctx, mach)
	if err != nil {
		return "", err
	}
	w.adopt(inst)
	fail := func(err error) (string, error) {
		_ = inst.Quit(context.WithoutCancel(ctx))
		w.inst = nil
		return "", err
	}
	cert, key, err := ca.Issue(leafca.Leaf{CN: migrationHost(m.ID), DNS: []string{migrationHost(m.ID)}, TTL: certTTL, Backdate: 5 * time.Minute})
	if err != nil {
		return fail(err)
	}
	if err := inst.SetMigrationTLS(ctx, qemu.MigrationTLS{Server: true, CA: ca.PEM, Cert: cert, Key: key, Peer: "CN=" + migrationClient(m.ID)}); err != nil {
		return fail(err)
	}
	if err := inst.SetMigrationCapabilities(ctx, map[string]bool{"events": true, "postcopy-ram": m.PostCopy}); err != nil {
		if m.PostCopy {
			err = postCopyRefused(err)
		}
		return fail(err)
	}
	addr, err := inst.MigrateIncoming(ctx, w.n.cfg.MigrationIP)
	if err != nil {
		return fail(err)
	}
	w.log.Info("waiting for the VM's live migration", "from", m.Source, "addr", addr)
	return addr, nil
}

// postCopyRefused explains QEMU's refusal of post-copy on a target. The
// VM's QEMU, an unprivileged user, fetches the memory still on the source
// by handling its own page faults (userfaultfd), which Debian's kernel
// allows such users only with vm.unprivileged_userfaultfd=1 (QEMU 7.2
// has no /dev/userfaultfd). Cairn does not turn it on by itself: it
// opens that kernel interface to every local user.
func postCopyRefused(err error) error {
	b, rerr := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	if rerr != nil || strings.TrimSpace(string(b)) != "0" {
		return fmt.Errorf("post-copy: %w", err)
	}
	return fmt.Errorf("post-copy needs vm.unprivileged_userfaultfd=1 on this node (the VM's QEMU runs as an unprivileged user), and it is 0: move the VM without post-copy, or have a cluster admin allow it on every node (sysctl -w vm.unprivileged_userfaultfd=1) (%w)", err)
}
