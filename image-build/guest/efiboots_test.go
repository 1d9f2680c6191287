package guest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/cloudinit"
	"github.com/cairnhq/cairn/qa/testutil"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// TestGuestEFIBoots boots the test guest under UEFI twice on one variable
// store, killing QEMU in between as a crashed host would, and checks that
// its boot counter (cairn-guest efiboots) says 1 then 2: what the guest
// writes through the firmware lands in the store's file at once, which
// cluster tests rely on when they move that file with the VM.
func TestGuestEFIBoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: guest.sh fetches Debian packages with apt-get (CI runs as root)")
	}
	if _, err := os.Stat(ovmfVars); err != nil {
		t.Skip("no OVMF (apt-get install ovmf)")
	}
	image := guestImage(t)
	dir := t.TempDir()
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	b, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	seed := cloudinit.Seed{InstanceID: "iid-efi", Hostname: "efi", UserData: []byte("#cloud-config\n# cairn-guest efiboots\n")}
	seedISO := filepath.Join(dir, "seed.iso")
	if err := seed.WriteISO(seedISO); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	args := []string{
		"-accel", "tcg", "-machine", "q35", "-cpu", "max", "-m", "256", "-display", "none", "-no-reboot", "-nodefaults",
		"-drive", "if=pflash,format=raw,unit=0,file=" + ovmfCode + ",readonly=on",
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
		// bootindex: the firmware would otherwise try the seed disk too.
		"-drive", "file=" + disk + ",if=none,id=root,format=qcow2", "-device", "virtio-blk-pci,drive=root,bootindex=1",
		"-drive", "file=" + seedISO + ",if=none,id=seed,format=raw,readonly=on", "-device", "virtio-blk-pci,drive=seed",
		"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
		"-serial", "stdio", "-monitor", "none",
	}
	t.Logf("qemu-system-x86_64 %s", strings.Join(args, " "))
	for boot := 1; boot <= 2; boot++ {
		if got, want := efiBootsLine(t, boot, args), fmt.Sprintf("cairn-guest: efi boots=%d", boot); got != want {
			t.Fatalf("boot %d: the guest said %q, want %q", boot, got, want)
		}
	}
}

// efiBootsLine boots QEMU with args, returns the guest's "efi boots" line
// and kills QEMU.
func efiBootsLine(t *testing.T, boot int, args []string) string {
	t.Helper()
	console, stop := startQEMU(t, fmt.Sprintf("boot %d serial", boot), args)
	// Killed, not powered off: the variable must be in the store's file
	// already. The next boot waits for this QEMU to let go of it.
	defer stop()
	var got string
	testutil.WaitFor(t, 120*time.Second, fmt.Sprintf("boot %d's efi boots line", boot), func() error {
		for _, l := range console.all() {
			if strings.HasPrefix(l, "cairn-guest: efi boots") {
				got = l
				return nil
			}
		}
		return errors.New("no 'cairn-guest: efi boots' line yet")
	})
	return got
}
