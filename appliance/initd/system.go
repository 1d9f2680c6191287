//go:build linux

package initd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SystemMount is where the booted slot's system image (QEMU, its libraries
// and firmware) is mounted, read-only.
const SystemMount = "/opt/cairn-system"

// QEMU is how the box runs qemu-system-x86_64 from the system image: through
// the image's own dynamic loader and libraries, with its firmware directory.
func QEMU(args ...string) *exec.Cmd {
	lib := filepath.Join(SystemMount, "lib", "x86_64-linux-gnu")
	argv := append([]string{"--library-path", lib, filepath.Join(SystemMount, "usr", "bin", "qemu-system-x86_64"),
		"-L", filepath.Join(SystemMount, "usr", "share", "qemu")}, args...)
	return exec.Command(filepath.Join(lib, "ld-linux-x86-64.so.2"), argv...)
}

// vmArgs are the agent flags that run VMs with the system image's QEMU,
// qemu-img and UEFI firmware, each through the image's own loader.
func vmArgs() []string {
	lib := filepath.Join(SystemMount, "lib", "x86_64-linux-gnu")
	run := filepath.Join(lib, "ld-linux-x86-64.so.2") + " --library-path " + lib + " "
	bin := filepath.Join(SystemMount, "usr", "bin")
	return []string{
		"--qemu", run + filepath.Join(bin, "qemu-system-x86_64") + " -L " + filepath.Join(SystemMount, "usr", "share", "qemu"),
		"--qemu-img", run + filepath.Join(bin, "qemu-img"),
		"--ovmf-code", filepath.Join(SystemMount, "usr", "share", "OVMF", "OVMF_CODE_4M.fd"),
		"--ovmf-vars", filepath.Join(SystemMount, "usr", "share", "OVMF", "OVMF_VARS_4M.fd"),
	}
}

// mountSystem mounts the system image of the slot the box booted from: the
// EFI system partition read-only at /run/esp, the slot's system.squashfs on
// a loop device at SystemMount. Booted without a slot (kernel and initramfs
// given directly), there is none.
func mountSystem(log *slog.Logger, slot string) error {
	if slot == "" {
		return os.ErrNotExist
	}
	at, err := mountESP()
	if err != nil {
		return err
	}
	img := filepath.Join(at, "cairn", strings.ToLower(slot), "system.squashfs")
	dev, err := attachLoop(img)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(SystemMount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, SystemMount, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("mount %s: %w", img, err)
	}
	log.Info("system image mounted", "slot", slot, "image", img)
	return nil
}

// attachLoop puts file on a free loop device, read-only, and names it.
func attachLoop(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return "", fmt.Errorf("free loop device: %w", err)
	}
	dev := fmt.Sprintf("/dev/loop%d", n)
	loop, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	defer loop.Close()
	if err := unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(f.Fd())); err != nil {
		return "", fmt.Errorf("attach %s to %s: %w", file, dev, err)
	}
	return dev, nil
}

// checkHypervisor logs the QEMU the box can run VMs with, and whether KVM
// is there (without blocking the boot).
func checkHypervisor(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := QEMU("--version")
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	out, err := output(cmd)
	if err != nil {
		log.Error("hypervisor: QEMU does not run", "err", err, "output", string(bytes.TrimSpace(out)))
		return
	}
	version, _, _ := strings.Cut(string(out), "\n")
	_, kvmErr := os.Stat("/dev/kvm")
	log.Info("hypervisor: "+version, "kvm", !errors.Is(kvmErr, os.ErrNotExist))
}
