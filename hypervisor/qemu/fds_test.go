package qemu

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackingChainRefused: a backing file with a backing file of its own
// would have QEMU open the second level by path, as the VM's user; Start
// refuses it before QEMU runs, and a standalone one is passed.
func TestBackingChainRefused(t *testing.T) {
	dir := t.TempDir()
	qcow2 := func(name string, backingOffset uint64) string {
		h := make([]byte, 512)
		copy(h, "QFI\xfb")
		binary.BigEndian.PutUint32(h[4:], 3)
		binary.BigEndian.PutUint64(h[8:], backingOffset)
		if backingOffset != 0 {
			binary.BigEndian.PutUint32(h[16:], 9)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, h, 0o400); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m := goldenMachine()
	m.NICs = nil
	m.Disks = []Disk{{ID: "root", Path: filepath.Join(dir, "root.qcow2"), Format: "qcow2", Backing: qcow2("chained.qcow2", 0x200)}}
	if files, err := openPassed(m); err == nil || !strings.Contains(err.Error(), "backing file of its own") {
		closeAll(files)
		t.Errorf("a two-level chain: %v, want it refused", err)
	}
	m.Disks[0].Backing = qcow2("base.qcow2", 0)
	files, err := openPassed(m)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	if len(files) != 1 || files[0].Name() != m.Disks[0].Backing {
		t.Errorf("passed %v, want the backing file alone", files)
	}
	if _, backing := m.diskFDs(); backing["root"] != firstPassedFD {
		t.Errorf("backing descriptors %v, want root's at %d", backing, firstPassedFD)
	}
}
