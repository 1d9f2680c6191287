//go:build linux

// Package initd is cairn as init of the appliance image (image-build/).
// Process 1 (PID1) only collects orphans and passes signals on; the box's
// process it starts (Main) mounts the kernel's filesystems, loads the
// kernel modules the image ships, brings up the management network, mounts
// the data disk (formatting it on first boot), shows a status screen on the
// console, runs the agent, and powers the box off or reboots it.
//
// Settings come, each overriding the one before, from the image's own boot
// config (/etc/cairn/boot.json: empty unless the image was built with a site
// key, CAIRN_SITE_TOKEN=1), cairn/boot.json on the EFI system
// partition (editable from any computer before the first boot), the kernel
// command line (cairn.KEY=VALUE, see Boot), and cairn-boot.json on the data
// disk.
package initd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/appliance/agent"
	"golang.org/x/sys/unix"
)

// DataMount is where the data disk is mounted; the agent keeps its state there.
const DataMount = "/var/lib/cairn"

// ImageBootFile is the boot config the image build bakes in.
const ImageBootFile = "/etc/cairn/boot.json"

// Main runs the box, in the process PID1 starts for it. It returns only if
// the power-off itself failed.
func Main() int {
	// The power signals PID1 passes on are this process's from its first
	// moment: before handleSignals runs, one would end it (Go's default).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR2, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP)
	console := openConsole()
	log := slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "init")
	fmt.Fprintln(console, "\nCairn appliance starting")

	if err := mountKernelFS(); err != nil {
		log.Error("mount kernel filesystems", "err", err)
	}
	loadModules(log, "/", "/lib/modules/cairn.load")
	waitForDisks(2 * time.Second)
	boot := DefaultBoot()
	if b, err := ReadBootFile(ImageBootFile); err == nil {
		boot = boot.Merge(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Error("image boot config", "err", err)
	}
	if b, err := readESPBoot(); err == nil {
		boot = boot.Merge(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Error("boot config on the EFI system partition", "err", err)
	}
	cmdline := readFile("/proc/cmdline")
	boot = boot.Merge(ReadBootOnly(cmdline))
	for _, p := range Problems(cmdline) {
		log.Warn("boot setting ignored", "problem", p)
	}

	ctx, stop := context.WithCancel(context.Background())
	action := make(chan string, 1)
	go handleSignals(ctx, log, action, sigs)
	watchPowerButton(ctx, log, action)

	if boot.Debug {
		go debugShell(ctx, log, console)
	}
	addr, err := bringUpNetwork(ctx, log, &boot)
	if err != nil {
		log.Error("management network", "err", err)
	}
	if err := mountData(log, boot); err != nil {
		// The box still works, but forgets everything when it restarts.
		log.Error("data disk: using memory only, nothing survives a reboot", "err", err)
		_ = unix.Mount("tmpfs", DataMount, "tmpfs", 0, "mode=0755")
	}
	hasSystem := false
	if err := mountSystem(log, boot.Slot); err == nil {
		hasSystem = true
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Error("system image: no hypervisor on this box", "err", err)
	}
	if b, err := ReadBootFile(filepath.Join(DataMount, "cairn-boot.json")); err == nil {
		boot = boot.Merge(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Error("boot config file", "err", err)
	}

	if hasSystem {
		// Flags given in a boot config come later and win.
		boot.Extra = append(vmArgs(), boot.Extra...)
		// QEMU's modules (TCG) are in the system image, not where its
		// build looks; QEMU inherits the agent's environment.
		_ = os.Setenv("QEMU_MODULE_DIR", filepath.Join(SystemMount, "usr", "lib", "x86_64-linux-gnu", "qemu"))
	} else {
		boot.Extra = append([]string{"--vms=false"}, boot.Extra...)
	}
	boot.Watchdog = findWatchdog(log)
	agentDone := make(chan string, 1)
	go func() { agentDone <- runAgent(ctx, log, console, boot, addr) }()
	if hasSystem {
		go func() { // KVM and the VM network: for VMs, not for booting
			loadModules(log, SystemMount, filepath.Join(SystemMount, "lib/modules/cairn.later"))
			checkHypervisor(ctx, log)
		}()
	}
	var what string
	select {
	case what = <-agentDone:
	case what = <-action:
		log.Info("shutting down", "then", what)
		stop() // the agent shuts down gracefully on ctx
		select {
		case <-agentDone:
		case <-time.After(15 * time.Second):
			log.Warn("the agent did not stop in time")
		}
	}
	stop()
	unix.Sync()
	_ = unix.Unmount(DataMount, 0)
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if what == "reboot" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		log.Error("power off", "err", err)
		return 1
	}
	return 0
}

// runAgent runs the node until ctx ends and says what to do next: a node
// that cannot start is rebooted after a pause, like a crashed service.
func runAgent(ctx context.Context, log *slog.Logger, console io.Writer, boot Boot, addr string) string {
	args := boot.AgentArgs(DataMount, addr)
	log.Info("starting the agent", "slot", boot.Slot, "args", strings.Join(redactArgs(args), " "))
	cfg, err := agent.ParseFlags(args)
	if err != nil {
		log.Error("agent configuration", "err", err)
		return pauseThen(ctx, "reboot")
	}
	alog := slog.New(consoleHandler{slog.NewTextHandler(console, &slog.HandlerOptions{Level: slog.LevelInfo})})
	a, err := agent.New(cfg, alog, io.Discard)
	if err != nil {
		log.Error("agent", "err", err)
		return pauseThen(ctx, "reboot")
	}
	go statusScreen(ctx, console, a, boot.Debug)
	if err := a.Run(ctx); err != nil {
		log.Error("agent stopped", "err", err)
		return pauseThen(ctx, "reboot")
	}
	return "poweroff"
}

func pauseThen(ctx context.Context, what string) string {
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	return what
}

// handleSignals maps the signals an init receives to power actions:
// SIGUSR2 and SIGTERM power off (as busybox's poweroff sends), SIGINT
// (Ctrl-Alt-Del, with the kernel's own reboot on it turned off) reboots.
func handleSignals(ctx context.Context, log *slog.Logger, action chan<- string, ch <-chan os.Signal) {
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-ch:
			log.Info("signal", "signal", s)
			what := "poweroff"
			if s == syscall.SIGINT {
				what = "reboot"
			}
			select {
			case action <- what:
			default:
			}
		}
	}
}

// output runs a short command to its end, as CombinedOutput. (PID1, not
// this process, collects orphans: the exit status is the command's own.)
func output(cmd *exec.Cmd) ([]byte, error) {
	return cmd.CombinedOutput()
}

// procOptions hide every process from users other than its own: each VM's
// QEMU runs as a user of its own, and an escaped one must not read the
// others' command lines (their disks' paths) or environment.
const procOptions = "hidepid=invisible"

// mountKernelFS mounts what every Linux userland expects.
func mountKernelFS() error {
	mounts := []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, procOptions},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	}
	var errs []error
	for _, m := range mounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s: %w", m.dst, err))
		}
	}
	return errors.Join(errs...)
}

// loadModules loads the kernel modules listed in list, one path per line, in
// dependency order (the image build writes it with modprobe --show-depends).
// A driver for hardware the box does not have may refuse to load (ENODEV,
// as sp5100_tco on an Intel box): that is no problem to report.
func loadModules(log *slog.Logger, root, list string) {
	for line := range strings.Lines(readFile(list)) {
		path := strings.TrimSpace(line)
		if path == "" || strings.HasPrefix(path, "#") {
			continue
		}
		f, err := os.Open(filepath.Join(root, path))
		if err != nil {
			log.Warn("kernel module", "path", path, "err", err)
			continue
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENODEV) {
			log.Warn("kernel module", "module", filepath.Base(path), "err", err)
		}
	}
}

// WatchdogDevice is the hardware watchdog the agent is given: the first one
// the kernel registered (watchdog0).
const WatchdogDevice = "/dev/watchdog"

// findWatchdog returns WatchdogDevice if the boot modules gave the box a
// hardware watchdog, or "": the agent then runs without one. The drivers
// register their device as they load, so after loadModules it is there or
// it never will be.
func findWatchdog(log *slog.Logger) string {
	if _, err := os.Stat(WatchdogDevice); err != nil {
		log.Info("no hardware watchdog", "device", WatchdogDevice)
		return ""
	}
	identity := strings.TrimSpace(readFile("/sys/class/watchdog/watchdog0/identity"))
	log.Info("hardware watchdog", "device", WatchdogDevice, "identity", identity)
	return WatchdogDevice
}

// debugShell runs a shell on the console, again whenever it exits; only with
// cairn.debug=1 on the kernel command line.
func debugShell(ctx context.Context, log *slog.Logger, console *os.File) {
	for ctx.Err() == nil {
		cmd := exec.CommandContext(ctx, "/bbin/gosh")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = console, console, console
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		cmd.Env = []string{"PATH=/bbin:/bin", "HOME=/root", "TERM=linux"}
		if err := cmd.Run(); err != nil {
			log.Warn("debug shell", "err", err)
			time.Sleep(time.Second)
		}
	}
}

func openConsole() *os.File {
	if f, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		return f
	}
	return os.Stdout
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
