package image

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/qa/testutil"
)

// uefi boots a copy of the UEFI disk image with OVMF; vars is the box's own
// copy of the firmware's variable store.
func uefi(disk, vars string) []string {
	return []string{
		"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "file=" + disk + ",format=raw,if=virtio"}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// The UEFI disk image, written to a larger disk, boots through OVMF and
// systemd-boot into slot A; the first boot adds and formats the data
// partition in the free space; a boot config on the EFI system partition
// (edited as an admin would, from another computer) overrides the image's
// defaults; QEMU runs from the slot's system image; powered off and on again,
// the box keeps its data.
func TestUEFIDiskImage(t *testing.T) {
	files := bootFiles(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	copyFile(t, filepath.Join(files, "cairn.img"), disk)
	if err := os.Truncate(disk, 4<<30); err != nil {
		t.Fatal(err)
	}
	// A one-box site: expect 1, in cairn/boot.json on the ESP (at 1 MiB).
	cfg := filepath.Join(dir, "boot.json")
	if err := os.WriteFile(cfg, []byte(`{"expect": 1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mcopy", "-i", disk+"@@1M", cfg, "::cairn/boot.json").CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	vars := filepath.Join(dir, "vars.fd")
	copyFile(t, "/usr/share/OVMF/OVMF_VARS_4M.fd", vars)

	start := time.Now()
	netdev, api := userNet(t)
	b := boot(t, uefi(disk, vars), netdev, api, 2)
	took := b.waitReady(start, 4*time.Minute)
	t.Logf("UEFI power-on to ready: %s (accel %s)", took.Round(10*time.Millisecond), hypervisor.Accel())
	testutil.WaitFor(t, time.Minute, "the console to report the hypervisor", func() error {
		if !strings.Contains(b.Console(), "hypervisor: QEMU emulator version") {
			return fmt.Errorf("no QEMU version on the console yet")
		}
		return nil
	})
	for _, want := range []string{"first boot: adding the data partition", "first boot: formatting the data disk", "slot=A", "--expect 1", "system image mounted"} {
		if !strings.Contains(b.Console(), want) {
			t.Errorf("console lacks %q", want)
		}
	}
	ca := b.caKey()
	b.powerOff()
	out, err := exec.Command("sgdisk", "-p", disk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cairn-esp") || !strings.Contains(string(out), "cairn-data") {
		t.Fatalf("partition table after the first boot: %v\n%s", err, out)
	}
	t.Logf("partitions after the first boot:\n%s", out)

	netdev, api = userNet(t)
	b2 := boot(t, uefi(disk, vars), netdev, api, 2)
	b2.waitReady(time.Now(), 4*time.Minute)
	if strings.Contains(b2.Console(), "first boot:") {
		t.Error("the second boot redid first-boot work")
	}
	if got := b2.caKey(); got != ca {
		t.Errorf("cluster CA after reboot %s, before %s", got, ca)
	}
}
