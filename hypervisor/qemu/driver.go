package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DriverConfig configures a Driver.
type DriverConfig struct {
	// QEMU is the argv prefix that runs qemu-system-x86_64: the binary, or
	// in the appliance a dynamic loader, its options and the binary.
	QEMU []string
	// RunDir is the parent of the per-VM run directories; it should be on
	// a tmpfs such as /run, since nothing in it outlives a reboot.
	RunDir string
	Logger *slog.Logger
	// StartTimeout bounds QEMU's set-up and the QMP connection in Start
	// and Attach.
	StartTimeout time.Duration
	// QuitGrace is how long Quit waits for QEMU to exit after QMP quit
	// before it sends SIGKILL.
	QuitGrace time.Duration
	// Unconfined runs QEMU as root without a seccomp filter: only for
	// reproducing a problem by hand, never on a box with patient data.
	Unconfined bool
	// UIDBase and UIDCount reserve the VMs' users: UIDBase+1 to
	// UIDBase+UIDCount, with no passwd entries (QEMU takes numbers).
	UIDBase, UIDCount int
	// CgroupRoot is where the cgroup hierarchies are mounted; each VM gets
	// a group with limits from its flavor. NoCgroups turns that off.
	CgroupRoot string
	NoCgroups  bool
	// SerialLogMax caps a VM's serial log while it runs: past it, the log
	// is rotated to serial.log.1 (so at most twice this is on disk).
	SerialLogMax int64
}

// DefaultConfig is the Driver's configuration unless told otherwise.
func DefaultConfig() DriverConfig {
	return DriverConfig{
		QEMU:         []string{"qemu-system-x86_64"},
		RunDir:       "/run/cairn/vm",
		Logger:       slog.Default(),
		StartTimeout: 30 * time.Second,
		QuitGrace:    10 * time.Second,
		// Above systemd's container range (up to 0x6fffffff), below 2^31.
		UIDBase:      0x70000000,
		UIDCount:     1 << 16,
		CgroupRoot:   "/sys/fs/cgroup",
		SerialLogMax: 8 << 20,
	}
}

// ErrAlreadyRunning is returned by Start when the VM's QEMU is running.
var ErrAlreadyRunning = errors.New("vm already running")

// Driver starts, finds and stops the QEMU processes of one run directory.
// It holds no per-VM state: everything it knows about a VM is in the VM's
// run directory and process, which is what lets a restarted caller attach.
type Driver struct {
	cfg DriverConfig
	log *slog.Logger

	// starting holds the names Start is working on, so a second Start of
	// the same VM, or a Cleanup, cannot take its half-made run directory
	// for a stale one.
	mu       sync.Mutex
	starting map[string]bool
	uids     map[string]int // VM users picked by Starts under way

	cgroups   *Cgroups // nil with NoCgroups
	cgroupErr error    // why detection failed: Start refuses to run a VM unlimited
}

// NewDriver returns a Driver; zero fields of cfg take DefaultConfig's values.
func NewDriver(cfg DriverConfig) *Driver {
	def := DefaultConfig()
	if len(cfg.QEMU) == 0 {
		cfg.QEMU = def.QEMU
	}
	if cfg.RunDir == "" {
		cfg.RunDir = def.RunDir
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = def.StartTimeout
	}
	if cfg.QuitGrace <= 0 {
		cfg.QuitGrace = def.QuitGrace
	}
	if cfg.UIDBase <= 0 || cfg.UIDCount <= 0 {
		cfg.UIDBase, cfg.UIDCount = def.UIDBase, def.UIDCount
	}
	if cfg.SerialLogMax <= 0 {
		cfg.SerialLogMax = def.SerialLogMax
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = def.CgroupRoot
	}
	d := &Driver{cfg: cfg, log: cfg.Logger.With("component", "qemu"), starting: map[string]bool{}, uids: map[string]int{}}
	if !cfg.NoCgroups {
		d.cgroups, d.cgroupErr = DetectCgroups(cfg.CgroupRoot, CgroupParent(cfg.RunDir))
		if d.cgroupErr == nil {
			d.log.Info("vm cgroups", "version", d.cgroups.Version(), "dir", d.cgroups.Dir("memory", ""))
		}
	}
	return d
}

// Dir is the run directory of the VM called name.
func (d *Driver) Dir(name string) string { return filepath.Join(d.cfg.RunDir, name) }

// Command is the full argv Start runs for m (for logs and for reproducing
// a VM by hand); m.Dir is filled in as Start would.
func (d *Driver) Command(m Machine) []string {
	if m.Dir == "" {
		m.Dir = d.Dir(m.Name)
	}
	return append(append([]string{}, d.cfg.QEMU...), m.Args()...)
}

// Start launches m's QEMU and returns it connected. QEMU runs in its own
// session, so the VM keeps running if the caller dies. On failure the
// error carries QEMU's own message, and nothing is left: no process, no run
// directory, no UEFI vars file that Start created.
func (d *Driver) Start(ctx context.Context, m Machine) (_ *Instance, err error) {
	dir := d.Dir(m.Name)
	if m.Dir != "" && m.Dir != dir {
		return nil, fmt.Errorf("start vm %s: run directory must be %s, not %s", m.Name, dir, m.Dir)
	}
	m.Dir = dir
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
	}
	if !d.begin(m.Name) {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, ErrAlreadyRunning)
	}
	defer d.end(m.Name)
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	var r reverter
	defer r.fail()

	if d.cgroupErr != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, d.cgroupErr)
	}
	if !d.cfg.Unconfined {
		if m.Confine, err = d.confinement(m); err != nil {
			return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
		}
	}
	if err := d.claimDir(m.Name); err != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
	}
	r.add(func() { os.RemoveAll(dir) })
	if err := prepareVars(m.Firmware, &r); err != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
	}
	// A serial log kept elsewhere is linked from beside the run directory
	// (in RunDir, which only root writes; the run directory is the VM
	// user's), which is how an attaching Driver finds it again.
	if m.SerialLog != "" {
		link := serialLink(dir)
		os.Remove(link)
		if err := os.Symlink(m.SerialLog, link); err != nil {
			return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
		}
		r.add(func() { os.Remove(link) })
	}

	if err := handOver(m, m.Confine); err != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
	}
	if d.cgroups != nil {
		if err := d.cgroups.Create(m.Name, LimitsFor(m, diskDevice(firstDiskPath(m)))); err != nil {
			return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
		}
		r.add(func() { d.cgroups.Remove(m.Name) })
	}

	files, err := openPassed(m)
	if err != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
	}
	argv := d.Command(m)
	d.log.Info("starting vm", "vm", m.Name, "argv", strings.Join(argv, " "))
	p, err := d.launch(dir, argv, m.Confine.credential(), files)
	closeAll(files)
	if err != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
	}
	r.add(func() {
		p.kill()
		wctx, cancel := context.WithTimeout(context.Background(), killWait)
		p.wait(wctx)
		cancel()
		p.close()
	})
	// Into its cgroup before it has set the guest up, let alone run it.
	if d.cgroups != nil {
		// ESRCH: QEMU has already exited (a disk it could not open);
		// waitReady reports why, in its words.
		if err := d.cgroups.Place(m.Name, p.pid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
		}
	}
	q, err := d.waitReady(ctx, dir, p)
	if err != nil {
		return nil, fmt.Errorf("start vm %s: %w", m.Name, err)
	}
	r.success()
	d.log.Info("vm started", "vm", m.Name, "pid", p.pid, "uid", m.Confine.UID, "sandbox", m.Confine.Sandbox)
	return d.instance(m.Name, dir, p, q), nil
}

// begin marks name as being started; false if it already is.
func (d *Driver) begin(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.starting[name] {
		return false
	}
	d.starting[name] = true
	return true
}

func (d *Driver) end(name string) {
	d.mu.Lock()
	delete(d.starting, name)
	delete(d.uids, name)
	d.mu.Unlock()
}

func (d *Driver) isStarting(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.starting[name]
}

// claimDir creates the VM's run directory. One left by a VM whose QEMU is
// gone is cleared; one whose QEMU runs means the VM is already running.
func (d *Driver) claimDir(name string) error {
	// Traversable, not listable: each VM's user reaches its own directory.
	if err := os.MkdirAll(d.cfg.RunDir, 0o711); err != nil {
		return err
	}
	if err := os.Chmod(d.cfg.RunDir, 0o711); err != nil {
		return err
	}
	dir := d.Dir(name)
	err := os.Mkdir(dir, 0o750)
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if p, err := findProcess(dir, name); err == nil {
		p.close()
		return ErrAlreadyRunning
	}
	d.log.Info("removing stale run directory", "vm", name)
	if err := removeRunDir(dir); err != nil {
		return err
	}
	return os.Mkdir(dir, 0o750)
}

// prepareVars gives a fresh UEFI VM its own copy of the variable store.
func prepareVars(f Firmware, r *reverter) error {
	if f.Type != "uefi" || f.VarsTemplate == "" || f.Vars == "" {
		return nil
	}
	if _, err := os.Stat(f.Vars); err == nil {
		return nil
	}
	src, err := os.Open(f.VarsTemplate)
	if err != nil {
		return fmt.Errorf("uefi vars: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(f.Vars, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("uefi vars: %w", err)
	}
	r.add(func() { os.Remove(f.Vars) })
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("uefi vars: %w", err)
	}
	return nil
}

// launch starts QEMU in its own session as cred (nil: as the caller), with
// files as its descriptors 3, 4, ..., its output (start-up errors, later
// warnings) going to qemu.log in the run directory. QEMU is not told
// to -daemonize: it would fork and setsid after installing its seccomp
// filter, which spawn=deny and elevateprivileges=deny forbid. It is the
// caller's child instead, reaped by a goroutine; if the caller dies it is
// inherited by init like a daemon, and found again through its pidfile.
func (d *Driver) launch(dir string, argv []string, cred *syscall.Credential, files []*os.File) (*process, error) {
	out, err := os.OpenFile(filepath.Join(dir, qemuLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	// Not CommandContext: the VM outlives the request that started it.
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out
	// Its own session from the start, so no signal aimed at the caller's
	// process group or terminal reaches QEMU.
	// Credential: the child drops to the VM's user before exec, so QEMU
	// never runs a line as root and needs no setuid of its own.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	// The pidfd first, then the reaper: the pid cannot be recycled while
	// the exited child is unreaped, so it needs no check that it is ours.
	p, err := pinProcess(cmd.Process.Pid)
	go cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("qemu: %s: %w", startOutput(dir), err)
	}
	return p, nil
}

// waitReady connects to QMP once QEMU has set the VM up (it accepts the
// monitor connection from its main loop). If QEMU exits first, the error
// carries what it printed.
func (d *Driver) waitReady(ctx context.Context, dir string, p *process) (*qmpClient, error) {
	sock := filepath.Join(dir, qmpSocket)
	for {
		if p.exited() {
			return nil, fmt.Errorf("qemu: %s: exited during start-up", startOutput(dir))
		}
		q, err := dialQMP(ctx, sock, d.log)
		if err == nil {
			if out := startOutput(dir); out != "no output" {
				d.log.Warn("qemu start output", "dir", dir, "output", out)
			}
			return q, nil
		}
		if p.exited() {
			return nil, fmt.Errorf("qemu: %s: exited during start-up", startOutput(dir))
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qemu not ready: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startOutput is what QEMU printed so far.
func startOutput(dir string) string {
	b, _ := readNoFollow(filepath.Join(dir, qemuLog), 64<<10)
	if text := strings.TrimSpace(string(b)); text != "" {
		return text
	}
	return "no output"
}

// Running says whether a QEMU of the VM is alive, whether or not its
// monitor answers (Attach needs it to).
func (d *Driver) Running(name string) bool {
	if !nameRE.MatchString(name) {
		return false
	}
	p, err := findProcess(d.Dir(name), name)
	if err != nil {
		return false
	}
	p.close()
	return true
}

// Kill ends the named VM's QEMU at once: SIGKILL to exactly that process
// (found as Attach finds it, pinned by a pidfd), then it waits until the
// process is gone. The run directory stays for whoever handles the exit.
// A VM that is not running is no error.
func (d *Driver) Kill(ctx context.Context, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("kill vm %q: bad name", name)
	}
	p, err := findProcess(d.Dir(name), name)
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kill vm %s: %w", name, err)
	}
	defer p.close()
	if err := p.kill(); err != nil {
		return fmt.Errorf("kill vm %s: %w", name, err)
	}
	if err := p.wait(ctx); err != nil {
		return fmt.Errorf("kill vm %s: %w", name, err)
	}
	d.log.Warn("vm killed", "vm", name, "pid", p.pid)
	return nil
}

// Attach connects to the running VM called name, e.g. after the caller
// restarted. The process must be the QEMU this driver started for that run
// directory. QEMU serves one QMP client at a time: while another Instance
// of the VM is open, Attach waits for the greeting until StartTimeout.
func (d *Driver) Attach(ctx context.Context, name string) (*Instance, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("attach vm %q: bad name", name)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	dir := d.Dir(name)
	p, err := findProcess(dir, name)
	if err != nil {
		return nil, fmt.Errorf("attach vm %s: %w", name, err)
	}
	q, err := dialQMP(ctx, filepath.Join(dir, qmpSocket), d.log)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("attach vm %s: %w", name, err)
	}
	return d.instance(name, dir, p, q), nil
}

// instance wraps a found QEMU; its Quit also removes the VM's cgroup.
func (d *Driver) instance(name, dir string, p *process, q *qmpClient) *Instance {
	i := newInstance(name, dir, p, q, d.cfg.QuitGrace, d.cfg.SerialLogMax, d.log)
	if d.cgroups != nil {
		i.release = func() error { return d.cgroups.Remove(name) }
	}
	return i
}

// firstDiskPath is the first local disk of m: its device is the one the
// VM's I/O is throttled on.
func firstDiskPath(m Machine) string {
	for _, dk := range m.Disks {
		if dk.Path != "" && !dk.ReadOnly {
			return dk.Path
		}
	}
	return ""
}

// List returns the names of the VMs that have a run directory, running or
// not.
func (d *Driver) List() ([]string, error) {
	entries, err := os.ReadDir(d.cfg.RunDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && nameRE.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Cleanup stops every VM that keep does not want (QMP quit, then SIGKILL of
// the verified process) and removes its run directory; it also removes the
// run directories of VMs whose QEMU is gone. A pidfile naming any other
// process leaves that process alone. Callers run it at start to remove
// what a crash left behind.
func (d *Driver) Cleanup(ctx context.Context, keep func(name string) bool) error {
	names, err := d.List()
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	var errs []error
	for _, name := range names {
		if d.isStarting(name) {
			continue
		}
		dir := d.Dir(name)
		p, err := findProcess(dir, name)
		switch {
		case err == nil && keep != nil && keep(name):
			p.close()
			continue
		case err == nil:
			d.log.Info("stopping orphan vm", "vm", name, "pid", p.pid)
			// The monitor may be unreachable (hung QEMU, another client):
			// then Quit goes straight to SIGKILL.
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			q, qerr := dialQMP(qctx, filepath.Join(dir, qmpSocket), d.log)
			cancel()
			if qerr != nil {
				d.log.Warn("orphan vm: no qmp", "vm", name, "err", qerr)
			}
			if err := d.instance(name, dir, p, q).Quit(ctx); err != nil {
				errs = append(errs, err)
			}
			continue
		case !errors.Is(err, ErrNotRunning):
			errs = append(errs, fmt.Errorf("cleanup %s: %w", name, err))
			continue
		}
		d.log.Info("removing run directory of stopped vm", "vm", name)
		if err := removeRunDir(dir); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %s: %w", name, err))
		}
	}
	errs = append(errs, d.cleanupCgroups(keep))
	return errors.Join(errs...)
}

// cleanupCgroups removes the groups of VMs that no longer run here (a crash
// between a VM's exit and the removal of its group leaves one).
func (d *Driver) cleanupCgroups(keep func(name string) bool) error {
	if d.cgroups == nil {
		return nil
	}
	names, err := d.cgroups.List()
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	var errs []error
	for _, name := range names {
		if d.isStarting(name) {
			continue
		}
		if p, err := findProcess(d.Dir(name), name); err == nil {
			p.close()
			continue
		}
		d.log.Info("removing cgroup of stopped vm", "vm", name)
		errs = append(errs, d.cgroups.Remove(name))
	}
	d.cgroups.Prune()
	return errors.Join(errs...)
}

// readNoFollow reads at most limit bytes of a file in a VM's run directory
// (which the VM's user owns) without following a link planted there.
func readNoFollow(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// serialLink is where a VM whose serial log lives elsewhere links to it: in
// RunDir beside its run directory, not inside it, because the run
// directory belongs to the VM's user, and the agent (root) rotates the file
// the link names.
func serialLink(dir string) string {
	return filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".serial-log")
}

// removeRunDir removes a VM's run directory and its serial-log link.
func removeRunDir(dir string) error {
	if err := os.Remove(serialLink(dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.RemoveAll(dir)
}
