package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// TestQEMUImgLimits runs the image service's real qemu-img on a FIFO, where
// it blocks opening the "image", and reads the limits of the running
// process from /proc: they must be OpenStack's, set before qemu-img ran.
func TestQEMUImgLimits(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not installed (apt-get install qemu-utils; make test installs it)")
	}
	fifo := filepath.Join(t.TempDir(), "upload.img")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	im := NewImages(nil, nil, nil, ImagesConfig{TempDir: t.TempDir()})
	done := make(chan error, 1)
	go func() {
		_, err := im.info(context.Background(), fifo, "raw")
		done <- err
	}()
	var pid int
	testutil.WaitFor(t, 10*time.Second, "qemu-img opening the fifo", func() error {
		pid = findCmdline(fifo)
		if pid == 0 {
			return errors.New("no process with the fifo on its command line")
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); !strings.HasSuffix(exe, "/qemu-img") {
			return fmt.Errorf("pid %d is %s, not qemu-img yet", pid, exe)
		}
		return nil
	})
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	// Let qemu-img go: a writer that closes at once is an empty image.
	// qemu-img may open the file more than once, so keep doing that.
	testutil.WaitFor(t, 10*time.Second, "qemu-img info to return", func() error {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		select {
		case <-done:
			return nil
		default:
			return errors.New("still running")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]string{
		{"Max cpu time", "30", "30", "seconds"},
		{"Max address space", "1073741824", "1073741824", "bytes"},
	} {
		if !hasLimit(string(limits), want) {
			t.Errorf("qemu-img runs without %q:\n%s", strings.Join(want, " "), limits)
		}
	}
}

func hasLimit(limits string, want []string) bool {
	for _, line := range strings.Split(limits, "\n") {
		if strings.HasPrefix(line, want[0]) && strings.Join(strings.Fields(line[len(want[0]):]), " ") == strings.Join(want[1:], " ") {
			return true
		}
	}
	return false
}

// findCmdline is the pid of a process with arg on its command line, or 0.
func findCmdline(arg string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		for _, a := range strings.Split(string(raw), "\x00") {
			if a == arg {
				return pid
			}
		}
	}
	return 0
}

func TestQEMUImgArgv(t *testing.T) {
	// The appliance's form: qemu-img through the system image's loader,
	// with prlimit beside it.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prlimit"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := qemuImgArgv([]string{"/lib/ld.so", "--library-path", "/lib", filepath.Join(dir, "qemu-img")}, "convert", "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	want := "/lib/ld.so --library-path /lib " + dir + "/prlimit --as=1073741824 --cpu=21600 -- /lib/ld.so --library-path /lib " + dir + "/qemu-img convert a b"
	if strings.Join(got, " ") != want {
		t.Errorf("argv\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
}

// A VM's disks are created for its QEMU alone: qemu-img makes them 0644,
// and the directories above them are passable by every VM user.
func TestNewVMDisksArePrivate(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not installed (apt-get install qemu-utils; make test installs it)")
	}
	l := NewLocalVolumes(t.TempDir(), []string{"qemu-img"})
	vm := &VM{ID: "vm-1", Spec: VMSpec{DiskGiB: 1, DataDisks: []DataDisk{{SizeGiB: 1}}}}
	disks, err := l.Prepare(context.Background(), vm, &Image{DiskFormat: FormatISO}, "/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		if d.ReadOnly {
			continue
		}
		if st, err := os.Stat(d.Path); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("disk %s: %v %v, want 0600", d.ID, st.Mode(), err)
		}
	}
}
