package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Sysctl is one kernel setting (like vm.unprivileged_userfaultfd) that a
// test owns until it ends: the kernel's settings are the host's, shared
// by every test binary running at the same time, so LockSysctl holds a
// file lock on the setting (test binaries of packages run in parallel
// wait for each other on it) and puts the value it found back at the end.
type Sysctl struct {
	t    testing.TB
	path string
}

// LockSysctl takes key ("vm.unprivileged_userfaultfd") for the rest of t,
// waiting while another test has it. It needs root, as CI is.
func LockSysctl(t testing.TB, key string) *Sysctl {
	t.Helper()
	dir := "/run/lock"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = os.TempDir()
	}
	lock, err := os.OpenFile(filepath.Join(dir, "cairn-test-sysctl-"+key), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		t.Fatal(err)
	}
	s := &Sysctl{t: t, path: "/proc/sys/" + strings.ReplaceAll(key, ".", "/")}
	old, err := os.ReadFile(s.path)
	if err != nil {
		lock.Close()
		t.Fatalf("sysctl %s: %v", key, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(s.path, old, 0o644); err != nil {
			t.Errorf("put sysctl %s back to %s: %v", key, strings.TrimSpace(string(old)), err)
		}
		lock.Close() // and with it the lock
	})
	return s
}

// Set writes the setting.
func (s *Sysctl) Set(value string) {
	s.t.Helper()
	if err := os.WriteFile(s.path, []byte(value+"\n"), 0o644); err != nil {
		s.t.Fatalf("sysctl %s=%s (needs root): %v", s.path, value, err)
	}
}
