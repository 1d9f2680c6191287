package testutil

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on a new directory and unmounts it when
// the test is over: a small real filesystem to fill, for the tests of what
// happens when a disk runs out of room. It needs root, as CI is; without it
// the test fails rather than skips. Take it before starting anything that
// writes into it, so its unmount runs after their clean-up.
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s (needs root): %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !os.IsNotExist(err) {
			t.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}
