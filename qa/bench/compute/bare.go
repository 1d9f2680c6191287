package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/hypervisor/cloudinit"
	"github.com/cairnhq/cairn/hypervisor/qemu"
)

// bare launches the guest the way Cairn's node does, without Cairn: the
// same qemu.Machine (as hypervisor's worker builds it for a flavor of
// bootVCPUs and bootRAMMiB) on a qcow2 overlay and a cloud-init seed, with
// QEMU's user network instead of a tap on a bridge.
type bare struct {
	work   string // overlays, seeds and serial logs, on the file system the node's disks are on
	base   string // the guest image the overlays are made on
	driver *qemu.Driver
	cache  string // "none" where O_DIRECT works, as Cairn picks it
}

func newBare(work, guest, runDir string, log *slog.Logger) (*bare, error) {
	base := filepath.Join(work, "guest.qcow2")
	if out, err := exec.Command("cp", guest, base).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy the guest: %v: %s", err, out)
	}
	return &bare{work: work, base: base, cache: cacheMode(work),
		driver: qemu.NewDriver(qemu.DriverConfig{RunDir: runDir, Logger: log})}, nil
}

// cacheMode is LocalVolumes.cacheMode's probe: O_DIRECT or not.
func cacheMode(dir string) string {
	p := filepath.Join(dir, ".odirect-probe")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|syscall.O_DIRECT, 0o600)
	if err != nil {
		return "writeback"
	}
	f.Close()
	os.Remove(p)
	return "none"
}

// machine is what hypervisor's worker gives QEMU for a VM called id (a
// BIOS image, one root overlay, the seed) minus the NIC.
func (b *bare) machine(id, dir string) qemu.Machine {
	sum := sha256.Sum256([]byte(id))
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	return qemu.Machine{Name: id, UUID: uuid, VCPUs: bootVCPUs, MemoryMiB: bootRAMMiB,
		MaxVCPUs: min(2*bootVCPUs, 64), MaxMemoryMiB: 2 * bootRAMMiB, Accel: hypervisor.Accel(),
		SerialLog: filepath.Join(dir, "serial.log"),
		Disks: []qemu.Disk{
			{ID: "root", Path: filepath.Join(dir, "root.qcow2"), Format: "qcow2", Media: "disk", BootIndex: 1, Cache: b.cache},
			{ID: "seed", Path: filepath.Join(dir, "seed.iso"), Format: "raw", Media: "disk", ReadOnly: true, Cache: b.cache},
		}}
}

// argv is the driver's command line for m with a user-network NIC where a
// tap NIC would be (just before -pidfile, after the disks).
func (b *bare) argv(m qemu.Machine) []string {
	argv := b.driver.Command(m)
	i := slices.Index(argv, "-pidfile")
	nic := []string{"-netdev", "user,id=net-nic0", "-device", "virtio-net-pci,id=nic0,netdev=net-nic0,mac=52:54:00:12:34:56"}
	// The driver no longer daemonizes QEMU (its seccomp filter forbids the
	// fork); the bare baseline runs unconfined, so it still can, and its
	// "launched" milestone keeps meaning "VM set up".
	return slices.Concat(argv[:i], nic, argv[i:], []string{"-daemonize"})
}

// bareRun is one bare boot: the milestones from QEMU's exec, and how long
// the overlay and the seed took to make before it.
type bareRun struct {
	m          milestones
	disk, seed time.Duration
	argv       []string
}

// boot makes a fresh overlay and seed for VM id, launches QEMU (daemonized), waits for the hostname line or timeout, and quits
// QEMU.
func (b *bare) boot(ctx context.Context, id string, timeout time.Duration) (bareRun, error) {
	var r bareRun
	dir := filepath.Join(b.work, "vms", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	m := b.machine(id, dir)

	t := time.Now()
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", b.base,
		m.Disks[0].Path, fmt.Sprint(int64(bootDiskGiB)<<30)).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	r.disk = time.Since(t)
	t = time.Now()
	if err := (cloudinit.Seed{InstanceID: id, Hostname: id}).WriteISO(m.Disks[1].Path); err != nil {
		return r, fmt.Errorf("seed: %w", err)
	}
	r.seed = time.Since(t)

	run := b.driver.Dir(id)
	if err := os.MkdirAll(run, 0o750); err != nil {
		return r, err
	}
	defer os.RemoveAll(run)
	r.argv = b.argv(m)
	cmd := exec.CommandContext(ctx, r.argv[0], r.argv[1:]...)
	cmd.Dir = run
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// A file, not a pipe, as the driver does: the daemon keeps the
	// descriptor a while, and Run would wait for it.
	logf, err := os.CreateTemp(run, "qemu-start-*.log")
	if err != nil {
		return r, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf

	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	done := make(chan milestones, 1)
	go func() { done <- watch(wctx, t0, func() string { return dir }) }()
	if err := cmd.Run(); err != nil {
		cancel()
		<-done
		msg, _ := os.ReadFile(logf.Name())
		return r, fmt.Errorf("qemu: %v: %s", err, strings.TrimSpace(string(msg)))
	}
	launched := time.Since(t0)
	// Not cancelled with the run: an interrupted benchmark still quits it.
	qctx := context.WithoutCancel(ctx)
	inst, attachErr := b.driver.Attach(qctx, id)
	r.m = <-done
	r.m.launch = launched
	if attachErr != nil {
		return r, fmt.Errorf("attach to the bare QEMU: %w", attachErr)
	}
	if err := inst.Quit(qctx); err != nil {
		return r, fmt.Errorf("quit the bare QEMU: %w", err)
	}
	if r.m.hello == 0 {
		return r, fmt.Errorf("no %q line within %s", helloMarker, timeout)
	}
	return r, nil
}
