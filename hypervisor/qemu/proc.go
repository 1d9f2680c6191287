package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// QEMU runs daemonized, so it is not our child: we cannot wait(2) for it and
// its pid may be recycled once it exits. A pidfd pins the exact process: it
// is opened first, the process is verified through /proc after that, and
// every later signal and exit check goes through the pidfd, so a verified
// process cannot be swapped for another one with the same pid.

var (
	// ErrNotRunning means the VM's QEMU is not (or no longer) running.
	ErrNotRunning = errors.New("qemu not running")
	// errNotOurs means a pid belongs to some process other than the QEMU
	// of the run directory: it must never be signalled.
	errNotOurs = errors.New("process is not this VM's qemu")
)

// process is a QEMU process proven to belong to one run directory.
type process struct {
	pid  int
	file *os.File // the pidfd, non-blocking, in the runtime poller
}

// readPidfile returns the pid QEMU wrote into dir.
func readPidfile(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pidfile %s: bad pid %q", filepath.Join(dir, pidFile), b)
	}
	return pid, nil
}

// openProcess pins pid and checks it is the live QEMU started for name in
// dir. It returns ErrNotRunning for a gone (or zombie) process and
// errNotOurs for anything else living under that pid.
func openProcess(pid int, dir, name string) (*process, error) {
	p, err := pinProcess(pid)
	if err != nil {
		return nil, err
	}
	if err := verify(pid, dir, name); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// pinProcess opens a pidfd on pid without checking what runs there: for a
// child just started, whose pid cannot be reused before it is reaped, and
// whose /proc cmdline may not be set up yet when exec has only begun.
func pinProcess(pid int) (*process, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return &process{pid: pid, file: os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))}, nil
}

// verify reads /proc/PID: a zombie has exited (and has no cmdline); a live
// process is ours only if its argv carries our -pidfile path and -name
// guest=NAME, which nothing but this driver puts on a command line.
func verify(pid int, dir, name string) error {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
		return fmt.Errorf("pid %d is a zombie: %w", pid, ErrNotRunning)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	if !isOurs(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"), dir, name) {
		return fmt.Errorf("pid %d: %w", pid, errNotOurs)
	}
	return nil
}

func isOurs(argv []string, dir, name string) bool {
	var pidfile, guest bool
	for i := 0; i+1 < len(argv); i++ {
		switch argv[i] {
		case "-pidfile":
			pidfile = pidfile || argv[i+1] == filepath.Join(dir, pidFile)
		case "-name":
			guest = guest || strings.HasPrefix(argv[i+1], "guest="+name+",")
		}
	}
	return pidfile && guest
}

// findProcess locates the QEMU of dir: through its pidfile, or, when that
// is gone or stale, by scanning /proc for our -pidfile argument (a QEMU
// that lost its pidfile must still be found, or it would run forever).
func findProcess(dir, name string) (*process, error) {
	if pid, err := readPidfile(dir); err == nil {
		p, err := openProcess(pid, dir, name)
		if err == nil || !errors.Is(err, errNotOurs) && !errors.Is(err, ErrNotRunning) {
			return p, err
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("find qemu of %s: %w", dir, err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !isOurs(strings.Split(string(raw), "\x00"), dir, name) {
			continue
		}
		if p, err := openProcess(pid, dir, name); err == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("find qemu of %s: %w", dir, ErrNotRunning)
}

// exited reports, without blocking, whether the process has ended. A
// pidfd turns readable when its process exits (zombies included).
func (p *process) exited() bool {
	var done bool
	p.control(func(fd int) { done = pidfdReadable(fd) })
	return done
}

func pidfdReadable(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// control runs f on the pidfd while the file cannot be closed under it.
// (File.Fd would be simpler but switches the fd to blocking mode, which
// takes it out of the runtime poller that waitExit relies on.)
func (p *process) control(f func(fd int)) error {
	rc, err := p.file.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// wait blocks until the process has exited (nil) or ctx ends. It parks in
// the runtime poller, not on a thread; only one wait per process at a time.
func (p *process) wait(ctx context.Context) error {
	rc, err := p.file.SyscallConn()
	if err != nil {
		return err
	}
	// A past read deadline wakes the parked Read when ctx ends.
	p.file.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { p.file.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var done bool
	err = rc.Read(func(fd uintptr) bool {
		done = pidfdReadable(int(fd))
		return done
	})
	if done {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("wait for qemu %d: %w", p.pid, err)
}

// kill sends SIGKILL to exactly the pinned process.
func (p *process) kill() error {
	var err error
	if cerr := p.control(func(fd int) { err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) }); cerr != nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill qemu %d: %w", p.pid, err)
	}
	return nil
}

func (p *process) close() { p.file.Close() }
