package qemu

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
	"golang.org/x/sys/unix"
)

// diskCache is "none" unless the test directory cannot do O_DIRECT (tmpfs).
func diskCache(t *testing.T, dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		return "writeback"
	}
	return "none"
}

func TestLifecycle(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	kernel, initrd := testGuest(t)
	d := newTestDriver(t)
	disk := filepath.Join(vmTempDir(t), "data.raw")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	m := Machine{
		Name: "life", UUID: "7d1c2f4e-0b7a-4c55-8a43-3f2e9d1b6a01",
		VCPUs: 1, MaxVCPUs: 2, MemoryMiB: 256, MaxMemoryMiB: 512, Accel: "tcg",
		Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 quiet panic=-1",
		Disks:     []Disk{{ID: "data", Path: disk, Cache: diskCache(t, disk)}},
		SerialLog: filepath.Join(filepath.Dir(disk), "serial.log"),
	}
	t.Logf("command: %s", strings.Join(d.Command(m), " "))
	ctx := context.Background()
	start := time.Now()
	inst, err := d.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %s, pid %d", time.Since(start), inst.PID())
	if inst.SerialLog() != m.SerialLog {
		t.Errorf("serial log at %s, want %s", inst.SerialLog(), m.SerialLog)
	}
	ev := collectEvents(inst)
	serial := func() string { b, _ := os.ReadFile(inst.SerialLog()); return string(b) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serial console:\n%s", serial())
		}
	})
	markers := func(n int) func() error {
		return func() error {
			if c := strings.Count(serial(), guestMarker); c < n {
				return errors.New("marker seen " + strconv.Itoa(c) + " times")
			}
			return nil
		}
	}
	testutil.WaitFor(t, 90*time.Second, "the guest's marker on the serial log", markers(1))
	t.Logf("guest up after %s", time.Since(start))

	// Not our child, in its own session: it survives us.
	ours, _ := unix.Getsid(0)
	if sid, _ := unix.Getsid(inst.PID()); sid == ours {
		t.Errorf("qemu is in our session %d", sid)
	}
	if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(inst.PID()) + "/comm"); !strings.HasPrefix(string(cmdline), "cairn-vm-life") {
		t.Errorf("process name %q", cmdline)
	}

	wantState := func(state string) {
		t.Helper()
		st, err := inst.Status(ctx)
		if err != nil || st.State != state || st.PID != inst.PID() {
			t.Fatalf("status = %+v, %v; want %s", st, err, state)
		}
	}
	wantState("running")
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	wantState("paused")
	if err := inst.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	wantState("running")

	// Hot-plug: one more vCPU, then a decrease is refused.
	if err := inst.SetVCPUs(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n, err := inst.VCPUs(ctx); err != nil || n != 2 {
		t.Fatalf("vcpus = %d, %v; want 2", n, err)
	}
	if err := inst.SetVCPUs(ctx, 1); !errors.Is(err, ErrUnplugUnsupported) {
		t.Fatalf("decrease: %v, want ErrUnplugUnsupported", err)
	}
	if err := inst.SetVCPUs(ctx, 3); err == nil {
		t.Fatal("3 vcpus above a maximum of 2 accepted")
	}
	// Memory: 128 MiB more as a DIMM, then the balloon below boot memory.
	ch, err := inst.SetMemory(ctx, 384)
	if err != nil || ch.PluggedMiB != 128 || ch.BalloonMiB != 384 {
		t.Fatalf("set memory 384: %+v, %v", ch, err)
	}
	if mem, err := inst.Memory(ctx); err != nil || mem.BootMiB != 256 || mem.PluggedMiB != 128 {
		t.Fatalf("memory = %+v, %v", mem, err)
	}
	if ch, err := inst.SetMemory(ctx, 200); err != nil || ch.PluggedMiB != 0 || ch.BalloonMiB != 200 {
		t.Fatalf("set memory 200: %+v, %v", ch, err)
	}
	if _, err := inst.SetMemory(ctx, 1024); err == nil {
		t.Fatal("memory above the maximum accepted")
	}

	// The guest ignores the power button, but QEMU reports the press.
	if err := inst.Powerdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 90*time.Second, "the guest to boot again after reset", markers(2))
	for _, name := range []string{"STOP", "RESUME", "POWERDOWN", "RESET"} {
		testutil.WaitFor(t, 5*time.Second, name+" event", func() error { return ev.seen(name) })
	}

	pid := inst.PID()
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Exited():
	default:
		t.Error("Exited not closed after Quit")
	}
	testutil.WaitFor(t, 5*time.Second, "qemu gone", func() error { return gone(pid) })
	if _, err := os.Stat(d.Dir("life")); !os.IsNotExist(err) {
		t.Errorf("run directory left: %v", err)
	}
	if got := strings.Count(serial(), guestMarker); got != 2 {
		t.Errorf("serial log kept outside the run directory has %d markers after quit, want 2", got)
	}
	if err := ev.seen("SHUTDOWN"); err != nil {
		t.Error(err)
	}
	if err := inst.Quit(ctx); err != nil {
		t.Errorf("second quit: %v", err)
	}
	t.Logf("lifecycle took %s", time.Since(start))
}

func TestStartFailureLeavesNothing(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	m := testMachine("broken")
	missing := filepath.Join(vmTempDir(t), "no-such-disk.qcow2")
	m.Disks = []Disk{{ID: "root", Path: missing, Format: "qcow2"}}
	vars := filepath.Join(vmTempDir(t), "vars.fd")
	if _, err := os.Stat("/usr/share/OVMF/OVMF_VARS_4M.fd"); err == nil {
		m.Firmware = Firmware{Type: "uefi", Code: "/usr/share/OVMF/OVMF_CODE_4M.fd", Vars: vars,
			VarsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd"}
	}
	_, err := d.Start(context.Background(), m)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "No such file") {
		t.Fatalf("start with a missing disk: %v; want QEMU's message naming %s", err, missing)
	}
	t.Logf("error: %v", err)
	if _, err := os.Stat(d.Dir("broken")); !os.IsNotExist(err) {
		t.Errorf("run directory left: %v", err)
	}
	if _, err := os.Stat(vars); !os.IsNotExist(err) {
		t.Errorf("uefi vars copy left: %v", err)
	}
	if p, err := findProcess(d.Dir("broken"), "broken"); err == nil {
		t.Errorf("qemu %d left running", p.pid)
	}

	bad := testMachine("bad,name")
	if _, err := d.Start(context.Background(), bad); err == nil {
		t.Error("bad name accepted")
	}
}

// TestSurvivesAgentKill starts a VM from a helper process, kills that with
// -9, and takes the VM over from a fresh Driver.
func TestSurvivesAgentKill(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+filepath.Dir(d.Dir("x")))
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "STARTED ") {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("helper: %q, %v", line, err)
	}
	helper.Process.Signal(syscall.SIGKILL)
	helper.Wait()

	ctx := context.Background()
	inst, err := d.Attach(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(strings.TrimPrefix(line, "STARTED ")); strconv.Itoa(inst.PID()) != want {
		t.Errorf("attached pid %d, helper started %s", inst.PID(), want)
	}
	if st, err := inst.Status(ctx); err != nil || !st.Running {
		t.Fatalf("status after agent kill: %+v, %v", st, err)
	}
	if _, err := d.Start(ctx, testMachine("survivor")); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second start: %v, want ErrAlreadyRunning", err)
	}
	// A QEMU whose monitor does not answer (frozen with SIGSTOP here)
	// cannot be attached to, and still runs.
	if !d.Running("survivor") {
		t.Fatal("Running: false for a running QEMU")
	}
	inst.Close()
	pid := inst.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = d.Attach(actx, "survivor")
	cancel()
	running := d.Running("survivor")
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err == nil || !running {
		t.Fatalf("a frozen QEMU: attach %v, running %v; want an error and true", err, running)
	}
	// Detach and attach again: the VM does not notice.
	inst, err = d.Attach(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := inst.Status(ctx); err != nil || st.State != "paused" {
		t.Fatalf("status = %+v, %v; want paused", st, err)
	}
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Attach(ctx, "survivor"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("attach after quit: %v, want ErrNotRunning", err)
	}
	if d.Running("survivor") {
		t.Error("Running: true after quit")
	}
}

func TestCleanup(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	ctx := context.Background()
	keep, err := d.Start(ctx, testMachine("keep"))
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := d.Start(ctx, testMachine("orphan"))
	if err != nil {
		t.Fatal(err)
	}
	orphanPID := orphan.PID()
	orphan.Close()

	// A run directory whose pidfile names an unrelated process.
	sleep := exec.Command("sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	for name, pid := range map[string]int{"fake": sleep.Process.Pid, "dead": 999999999} {
		if err := os.MkdirAll(d.Dir(name), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d.Dir(name), pidFile), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	if err := d.Cleanup(ctx, func(name string) bool { return name == "keep" || name == "fake" }); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the orphan gone", func() error { return gone(orphanPID) })
	names, err := d.List()
	if err != nil || len(names) != 1 || names[0] != "keep" {
		t.Errorf("run directories after cleanup: %v, %v; want [keep]", names, err)
	}
	if err := sleep.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("cleanup touched an unrelated process: %v", err)
	}
	if st, err := keep.Status(ctx); err != nil || !st.Running {
		t.Errorf("kept vm: %+v, %v", st, err)
	}
	if err := keep.Quit(ctx); err != nil {
		t.Fatal(err)
	}
}
