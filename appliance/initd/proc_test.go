package initd

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The appliance's /proc hides other users' processes: a VM's QEMU (a user
// of its own) does not see the agent or the other VMs. Mounted here as the
// appliance mounts it, and listed as another user.
func TestProcHidesOtherUsersProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount a procfs (make test runs as root)")
	}
	dir, err := os.MkdirTemp("", "proc-") // t.TempDir's parent is closed to other users
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("proc", dir, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, procOptions); err != nil {
		t.Fatalf("mount proc with %q: %v", procOptions, err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("ls as nobody: %v %s", err, out)
	}
	for _, e := range strings.Fields(string(out)) {
		if e == "1" {
			t.Fatalf("another user sees process 1 in %s", dir)
		}
	}
}
