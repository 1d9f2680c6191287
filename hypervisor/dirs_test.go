package hypervisor

import (
	"os"
	"path/filepath"
	"testing"
)

// TestVMDirsSearchable: the directories on the way to a VM's disks let
// everyone search them (QEMU runs as the VM's user) but list nothing, and
// a private directory above them is reported.
func TestVMDirsSearchable(t *testing.T) {
	root := t.TempDir()
	if err := os.Chmod(root, 0o700); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(root, "old")
	if err := os.Mkdir(old, 0o700); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(root, "new", "vms")
	if err := Traversable(old, fresh); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]os.FileMode{old: 0o701, fresh: 0o711, filepath.Dir(fresh): 0o711} {
		if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", dir, info.Mode().Perm(), err, want)
		}
	}
	if err := Reachable(fresh); err == nil {
		t.Errorf("%s under a 0700 directory reported reachable", fresh)
	}
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(root), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := Reachable(fresh); err != nil {
		t.Error(err)
	}
}
