package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// tempRoot holds what the whole test binary shares (the test guest).
var tempRoot string

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		runHelper(dir)
		return
	}
	var err error
	tempRoot, err = os.MkdirTemp("", "cairn-qemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// QEMU runs as a VM user, who must reach the test guest's initramfs.
	if err := os.Chmod(tempRoot, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tempRoot)
	os.Exit(code)
}

// helperEnv makes the test binary a stand-in for the agent: it starts a VM
// in the given run directory, says so, and waits to be killed with -9.
const helperEnv = "CAIRN_QEMU_TEST_HELPER_RUNDIR"

func runHelper(runDir string) {
	d := NewDriver(DriverConfig{RunDir: runDir, Logger: slog.New(slog.DiscardHandler)})
	inst, err := d.Start(context.Background(), testMachine("survivor"))
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("STARTED", inst.PID())
	select {}
}

func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not installed (apt-get install qemu-system-x86; make test installs it)")
	}
}

// testMachine is the cheapest VM: TCG, no disk, no kernel (SeaBIOS finds
// nothing to boot and retries every 5 s, which is enough to control it).
func testMachine(name string) Machine {
	return Machine{Name: name, VCPUs: 1, MemoryMiB: 128, Accel: "tcg"}
}

// newTestDriver gives a test its own run directory and a logger into
// t.Log, and stops whatever VM the test leaves behind.
func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	w := testutil.LogWriter(t) // created first, so it stops after the cleanup below
	d := NewDriver(DriverConfig{
		RunDir:    vmTempDir(t),
		Logger:    slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		QuitGrace: 5 * time.Second,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Cleanup(ctx, nil); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return d
}

// vmTempDir is a t.TempDir that a VM's user can reach (as the agent's run
// and data directories are: 0711 on the way, nothing listable): QEMU runs
// as that user and opens its run directory, writable disks and serial log
// by path.
func vmTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// gone reports whether pid has exited (a zombie counts: it runs no more).
func gone(pid int) error {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && stat[i+2] == 'Z' {
		return nil
	}
	return fmt.Errorf("pid %d still running", pid)
}

// events records an Instance's events for later checks.
type events struct {
	mu    sync.Mutex
	names []string
}

func collectEvents(inst *Instance) *events {
	e := &events{}
	go func() {
		for ev := range inst.Events() {
			e.mu.Lock()
			e.names = append(e.names, ev.Name)
			e.mu.Unlock()
		}
	}()
	return e
}

func (e *events) seen(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.names {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("no %s event in %v", name, e.names)
}
