package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// TestStartVariants has QEMU itself accept the shapes the golden tests pin:
// UEFI with a per-VM vars copy, a qcow2 disk, a CD-ROM and an NBD volume.
func TestStartVariants(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	dir := vmTempDir(t)
	m := testMachine("variants")
	m.MaxVCPUs, m.MaxMemoryMiB = 4, 1024
	cache := diskCache(t, dir)
	iso := filepath.Join(dir, "cd.iso")
	if err := os.WriteFile(iso, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Disks = append(m.Disks, Disk{ID: "cd", Path: iso, Media: "cdrom", BootIndex: 2, Cache: cache})
	if _, err := exec.LookPath("qemu-img"); err == nil {
		img := filepath.Join(dir, "root.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", img, "64M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v\n%s", err, out)
		}
		m.Disks = append(m.Disks, Disk{ID: "root", Path: img, Format: "qcow2", BootIndex: 1, Cache: cache})
	}
	if _, err := exec.LookPath("qemu-nbd"); err == nil {
		vol := filepath.Join(dir, "vol.raw")
		if err := os.WriteFile(vol, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(dir, "nbd.sock")
		nbd := exec.Command("qemu-nbd", "--persistent", "--shared=4", "-f", "raw", "-x", "vol", "-k", sock, vol)
		if err := nbd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nbd.Process.Kill(); nbd.Wait() })
		testutil.WaitFor(t, 10*time.Second, "qemu-nbd's socket", func() error { _, err := os.Stat(sock); return err })
		// QEMU connects as the VM's user.
		if err := os.Chmod(sock, 0o666); err != nil {
			t.Fatal(err)
		}
		m.Disks = append(m.Disks, Disk{ID: "vol", Source: "nbd+unix:///vol?socket=" + sock})
	}
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	if _, err := os.Stat("/usr/share/OVMF/OVMF_CODE_4M.fd"); err == nil {
		m.Firmware = Firmware{Type: "uefi", Code: "/usr/share/OVMF/OVMF_CODE_4M.fd", Vars: vars,
			VarsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd"}
	} else {
		t.Log("no OVMF (apt-get install ovmf): UEFI not covered")
	}
	ctx := context.Background()
	inst, err := d.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("disks: %d, firmware %q", len(m.Disks), m.Firmware.Type)
	if m.Firmware.Type == "uefi" {
		if _, err := os.Stat(vars); err != nil {
			t.Errorf("vars copy: %v", err)
		}
	}
	for _, f := range []string{inst.VNCSocket(), inst.SerialSocket()} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	// Several CPUs at once through one monitor.
	if err := inst.SetVCPUs(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if n, err := inst.VCPUs(ctx); err != nil || n != 4 {
		t.Errorf("vcpus = %d, %v", n, err)
	}
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vars); err != nil {
		t.Errorf("vars file is the VM's state and must survive Quit: %v", err)
	}
}

// TestExitNoticed kills QEMU behind the driver's back: Exited fires, events
// end, commands fail, and Quit still cleans up.
func TestExitNoticed(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	ctx := context.Background()
	inst, err := d.Start(ctx, testMachine("victim"))
	if err != nil {
		t.Fatal(err)
	}
	// Many callers at once share the one monitor connection.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if st, err := inst.Status(ctx); err != nil || !st.Running {
				t.Errorf("concurrent status: %+v, %v", st, err)
			}
		})
	}
	wg.Wait()
	if err := syscall.Kill(inst.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := inst.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	for range inst.Events() {
	}
	if _, err := inst.Status(ctx); err == nil {
		t.Error("status of a dead VM succeeded")
	}
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Dir("victim")); !os.IsNotExist(err) {
		t.Errorf("run directory left: %v", err)
	}
}
