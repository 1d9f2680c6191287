package guest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/scribble"
	"github.com/cairnhq/cairn/qa/testutil"
)

// TestGuestQuiesce boots the test guest with a disk marked for scribbling
// and the guest agent channel the hypervisor gives every VM, freezes it
// through the QEMU package's agent client while it scribbles, and checks
// that a copy of the disk taken while frozen holds exactly the records the
// guest says it had flushed, and that it scribbles on after the thaw.
func TestGuestQuiesce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: guest.sh fetches Debian packages with apt-get (CI runs as root)")
	}
	image := guestImage(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data.raw")
	size := int64(scribble.MaxRecords+1) * scribble.BlockSize
	if err := os.WriteFile(data, scribble.Magic(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, size); err != nil {
		t.Fatal(err)
	}
	// The channel where the QEMU driver puts it, so the driver's client
	// finds it.
	runDir := filepath.Join(dir, "run")
	if err := os.MkdirAll(filepath.Join(runDir, "vm"), 0o755); err != nil {
		t.Fatal(err)
	}
	drv := qemu.NewDriver(qemu.DriverConfig{RunDir: runDir, NoCgroups: true})
	args := []string{
		"-accel", "tcg", "-machine", "q35", "-cpu", "max", "-m", "256", "-display", "none", "-no-reboot", "-nodefaults",
		// bootindex: SeaBIOS would otherwise try the data disk too.
		"-drive", "file=" + disk + ",if=none,id=root,format=qcow2", "-device", "virtio-blk-pci,drive=root,bootindex=1",
		"-drive", "file=" + data + ",if=none,id=data,format=raw,cache=none",
		"-device", "virtio-blk-pci,drive=data,serial=vol-scribble",
		"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
		"-device", "virtio-serial-pci,id=vserial0",
		"-chardev", "socket,id=qga0,path=" + drv.GuestAgentSocket("vm") + ",server=on,wait=off",
		"-device", "virtserialport,bus=vserial0.0,chardev=qga0,name=org.qemu.guest_agent.0",
		"-serial", "stdio", "-monitor", "none",
	}
	t.Logf("qemu-system-x86_64 %s", strings.Join(args, " "))
	console, stop := startQEMU(t, "serial", args)
	t.Cleanup(stop)

	progress := regexp.MustCompile(`^cairn-guest: scribble vdb seq=(\d+)$`)
	lastProgress := func() int {
		n := 0
		for _, l := range console.all() {
			if m := progress.FindStringSubmatch(l); m != nil {
				n, _ = strconv.Atoi(m[1])
			}
		}
		return n
	}
	testutil.WaitFor(t, 3*time.Minute, "the guest scribbling 200 records", func() error {
		if n := lastProgress(); n < 200 {
			return fmt.Errorf("at record %d", n)
		}
		return nil
	})

	ctx := context.Background()
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	frozen, err := drv.FreezeFS(fctx, "vm")
	cancel()
	if err != nil {
		t.Fatalf("freeze: %v", err)
	}
	var flushed uint64
	testutil.WaitFor(t, 10*time.Second, "the guest saying it froze", func() error {
		for _, l := range console.all() {
			if rest, ok := strings.CutPrefix(l, "cairn-guest: frozen scribble="); ok {
				n, _, _ := strings.Cut(rest, " ")
				flushed, err = strconv.ParseUint(n, 10, 64)
				return err
			}
		}
		return fmt.Errorf("no frozen line")
	})
	t.Logf("frozen: %d disks, record %d flushed", frozen, flushed)
	// What a snapshot taken now gets: the file as QEMU left it (cache=none,
	// and the guest flushed every record).
	f, err := os.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	last, err := scribble.Check(f, size)
	f.Close()
	if err != nil {
		t.Fatalf("disk while frozen: %v", err)
	}
	if last != flushed {
		t.Errorf("disk while frozen holds records 1-%d, the guest flushed 1-%d", last, flushed)
	}
	// Frozen means frozen: no record is written until the thaw.
	time.Sleep(time.Second) // a negative check: nothing to poll for
	f, _ = os.Open(data)
	again, err := scribble.Check(f, size)
	f.Close()
	if err != nil || again != last {
		t.Errorf("disk a second into the freeze: records 1-%d, %v; want 1-%d", again, err, last)
	}
	// A second freeze is refused, as qemu-ga refuses it.
	if _, err := drv.FreezeFS(ctx, "vm"); err == nil {
		t.Error("a second freeze succeeded")
	}
	if n, err := drv.ThawFS(ctx, "vm"); err != nil || n != frozen {
		t.Fatalf("thaw = %d, %v; want %d", n, err, frozen)
	}
	testutil.WaitFor(t, time.Minute, "scribbling to go on after the thaw", func() error {
		if n := lastProgress(); uint64(n) <= flushed+100 {
			return fmt.Errorf("at record %d", n)
		}
		return nil
	})
	if !console.has("cairn-guest: thawed") {
		t.Error("the guest did not say it thawed")
	}
	// And a crash-consistent copy, taken with no freeze, is a prefix too.
	f, _ = os.Open(data)
	last, err = scribble.Check(f, size)
	f.Close()
	if err != nil {
		t.Errorf("disk while scribbling: %v", err)
	}
	t.Logf("disk while scribbling: records 1-%d", last)
}
