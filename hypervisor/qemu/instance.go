package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// commandTimeout bounds a QMP command whose context has no deadline: a
// wedged QEMU must not hang the caller forever.
const commandTimeout = 30 * time.Second

// killWait is how long a SIGKILLed QEMU may take to go away; longer means
// it is stuck in the kernel (e.g. on a dead NFS or NBD server).
const killWait = 10 * time.Second

// Instance is a connection to one running VM. Closing it leaves the VM
// running; Quit stops it.
type Instance struct {
	name  string
	dir   string
	log   *slog.Logger
	proc  *process
	qmp   *qmpClient // nil only inside Cleanup, when the monitor is unreachable
	grace time.Duration
	// serialLog is resolved once: the link to it goes with the run
	// directory, the file may not.
	serialLog string
	// release frees what the Driver holds for the VM (its cgroup) once
	// QEMU is gone; nil if nothing.
	release func() error
	// plugMu makes disk hot-plugs one at a time, so two cannot pick the
	// same free root port.
	plugMu sync.Mutex

	exited    chan struct{} // closed when the QEMU process has ended
	stopWatch context.CancelFunc
	closeOnce sync.Once
	closed    atomic.Bool
}

// serialMax > 0 caps the serial log (see watchSerial).
func newInstance(name, dir string, p *process, q *qmpClient, grace time.Duration, serialMax int64, log *slog.Logger) *Instance {
	ctx, cancel := context.WithCancel(context.Background())
	i := &Instance{name: name, dir: dir, log: log.With("vm", name), proc: p, qmp: q, grace: grace,
		exited: make(chan struct{}), stopWatch: cancel, serialLog: filepath.Join(dir, serialLog)}
	if target, err := os.Readlink(serialLink(dir)); err == nil {
		i.serialLog = target
	}
	// The pidfd, not the QMP connection, says when QEMU is gone: the
	// connection also ends when someone else closes it, and an EOF cannot
	// tell a crash from a clean exit anyway.
	go func() {
		if p.wait(ctx) == nil {
			close(i.exited)
		}
	}()
	if serialMax > 0 {
		go i.watchSerial(ctx, serialMax)
	}
	return i
}

// Status is what QEMU reports about a VM.
type Status struct {
	// State is QEMU's run state: running, paused, shutdown,
	// guest-panicked, prelaunch, ...
	State   string
	Running bool
	PID     int
}

// Name is the VM's name.
func (i *Instance) Name() string { return i.name }

// PID is the QEMU process id.
func (i *Instance) PID() int { return i.proc.pid }

// VNCSocket is the unix socket of the VM's VNC server (RFB, no auth: the
// socket's permissions are the access control).
func (i *Instance) VNCSocket() string { return filepath.Join(i.dir, vncSocket) }

// SerialSocket is the unix socket of the VM's first serial port; one client
// at a time.
func (i *Instance) SerialSocket() string { return filepath.Join(i.dir, serialSocket) }

// SerialLog is the file QEMU appends all serial output to
// (Machine.SerialLog, or the one in the run directory).
func (i *Instance) SerialLog() string { return i.serialLog }

// Events delivers QMP events until the connection ends (then it is
// closed). Only one consumer should read it; unread events beyond a buffer
// are dropped rather than stalling commands.
func (i *Instance) Events() <-chan Event {
	if i.qmp == nil {
		ch := make(chan Event)
		close(ch)
		return ch
	}
	return i.qmp.events
}

// Exited is closed when the QEMU process has ended, for whatever reason.
// It is not closed after Close.
func (i *Instance) Exited() <-chan struct{} { return i.exited }

// Wait blocks until QEMU has exited or ctx ends.
func (i *Instance) Wait(ctx context.Context) error {
	select {
	case <-i.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for vm %s: %w", i.name, ctx.Err())
	}
}

// run executes one QMP command with a default timeout.
func (i *Instance) run(ctx context.Context, op, cmd string, args, out any) error {
	if err := i.exec(ctx, cmd, args, out, nil); err != nil {
		return fmt.Errorf("%s vm %s: %w", op, i.name, err)
	}
	return nil
}

// exec is run for callers that say what failed themselves, and it passes
// f's descriptor to QEMU along with the command if f is not nil.
func (i *Instance) exec(ctx context.Context, cmd string, args, out any, f *os.File) error {
	if i.qmp == nil {
		return fmt.Errorf("qmp %s: %w", cmd, ErrDisconnected)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	return i.qmp.executeFile(ctx, cmd, args, out, f)
}

// Status queries QEMU's run state.
func (i *Instance) Status(ctx context.Context) (Status, error) {
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := i.run(ctx, "status", "query-status", nil, &st); err != nil {
		return Status{}, err
	}
	return Status{State: st.Status, Running: st.Running, PID: i.proc.pid}, nil
}

// Pause stops the vCPUs; memory and devices stay as they are.
func (i *Instance) Pause(ctx context.Context) error { return i.run(ctx, "pause", "stop", nil, nil) }

// Resume restarts paused vCPUs.
func (i *Instance) Resume(ctx context.Context) error { return i.run(ctx, "resume", "cont", nil, nil) }

// Reset is a hard reboot: the guest gets no chance to shut down.
func (i *Instance) Reset(ctx context.Context) error {
	return i.run(ctx, "reset", "system_reset", nil, nil)
}

// Powerdown presses the ACPI power button. The guest decides what to do
// about it (and one that has no ACPI button handler does nothing): wait on
// Exited, and Quit if it does not come.
func (i *Instance) Powerdown(ctx context.Context) error {
	return i.run(ctx, "powerdown", "system_powerdown", nil, nil)
}

// Quit stops QEMU (QMP quit; SIGKILL if it has not exited after the grace
// period or when ctx ends first) and removes the run directory. It is also
// how a caller cleans up after a VM that exited by itself, and is safe to
// call more than once.
func (i *Instance) Quit(ctx context.Context) error { return i.quit(ctx, true) }

// Kill ends QEMU at once with SIGKILL and cleans up as Quit does: for a
// QEMU whose guest lives on elsewhere (it migrated), which has nothing to
// flush and may be stuck reaching disks it no longer serves.
func (i *Instance) Kill(ctx context.Context) error { return i.quit(ctx, false) }

func (i *Instance) quit(ctx context.Context, ask bool) error {
	select {
	case <-i.exited:
	default:
		if i.closed.Load() {
			return fmt.Errorf("quit vm %s: instance closed, attach again", i.name)
		}
		if i.qmp != nil && ask {
			qctx, cancel := context.WithTimeout(ctx, min(i.grace, 5*time.Second))
			err := i.qmp.execute(qctx, "quit", nil, nil)
			cancel()
			// The connection may end before the reply arrives: QEMU is
			// already going then.
			if err != nil && !errors.Is(err, ErrDisconnected) {
				i.log.Warn("qmp quit failed, killing qemu", "err", err)
			}
		}
		if err := i.waitOrKill(ctx, ask); err != nil {
			return fmt.Errorf("quit vm %s: %w", i.name, err)
		}
		i.log.Info("vm stopped")
	}
	i.Close()
	if err := removeRunDir(i.dir); err != nil {
		return fmt.Errorf("quit vm %s: %w", i.name, err)
	}
	if i.release != nil {
		if err := i.release(); err != nil {
			return fmt.Errorf("quit vm %s: %w", i.name, err)
		}
	}
	return nil
}

// waitOrKill gives QEMU the grace period to exit, then SIGKILLs it. If
// nobody asked it to exit (not asked, or no monitor), there is no grace.
func (i *Instance) waitOrKill(ctx context.Context, asked bool) error {
	wait := i.grace
	if i.qmp == nil || !asked {
		wait = 0
	}
	grace := time.NewTimer(wait)
	defer grace.Stop()
	select {
	case <-i.exited:
		return nil
	case <-grace.C:
	case <-ctx.Done():
	}
	if asked {
		i.log.Warn("qemu did not exit, sending SIGKILL", "pid", i.proc.pid)
	}
	if err := i.proc.kill(); err != nil {
		return err
	}
	select {
	case <-i.exited:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("qemu %d still there %s after SIGKILL", i.proc.pid, killWait)
	}
}

// Close disconnects from QEMU; the VM keeps running.
func (i *Instance) Close() error {
	i.closeOnce.Do(func() {
		i.closed.Store(true)
		if i.qmp != nil {
			i.qmp.close()
		}
		i.stopWatch()
		// Closing the pidfd under a parked wait is safe: the deadline set
		// by stopWatch wakes it first or the close does.
		i.proc.close()
	})
	return nil
}
