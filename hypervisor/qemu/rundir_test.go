package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The serial log may sit in the run directory, which the VM's user owns;
// the agent rotates it as root. A link or a second name planted in its
// place must not make the agent copy or empty another file (a disk, the
// Raft log).
func TestRotateLogLeavesPlantedLinksAlone(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "wal-0001")
	data := bytes.Repeat([]byte("raft entry "), 1000)
	if err := os.WriteFile(victim, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, plant := range map[string]func(string) error{
		"symlink":   func(p string) error { return os.Symlink(victim, p) },
		"hard link": func(p string) error { return os.Link(victim, p) },
	} {
		log := filepath.Join(dir, "serial.log")
		if err := plant(log); err != nil {
			t.Fatal(err)
		}
		rotated, _ := rotateLog(log, 100)
		if got, _ := os.ReadFile(victim); rotated || !bytes.Equal(got, data) {
			t.Fatalf("%s: rotated %v, and the file it names is %d bytes, not %d", name, rotated, len(got), len(data))
		}
		os.Remove(log)
	}
	// The log itself still rotates.
	log := filepath.Join(dir, "serial.log")
	if err := os.WriteFile(log, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if rotated, err := rotateLog(log, 100); !rotated || err != nil {
		t.Fatalf("a plain log: rotated %v, %v", rotated, err)
	}
	if st, _ := os.Stat(log); st.Size() != 0 {
		t.Fatalf("the log after rotation: %d bytes", st.Size())
	}
	// A log that outran its watcher leaves only its last 100 bytes in the
	// rotated copy.
	if got, _ := os.ReadFile(log + rotatedSuffix); !bytes.Equal(got, data[len(data)-100:]) {
		t.Fatalf("the rotated copy has %d bytes %q, want the log's last 100", len(got), got)
	}
}

// The VM's own disks become its user's alone (qemu-img makes them 0644 in
// directories every VM user may pass through).
func TestHandOverMakesDisksPrivate(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "root.qcow2")
	if err := os.WriteFile(disk, []byte("QFI\xfb"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := Machine{Name: "v", Dir: filepath.Join(dir, "run"), Disks: []Disk{{ID: "d0", Path: disk, Format: "qcow2"}}}
	if err := os.Mkdir(m.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := handOver(m, Confinement{UID: 0x70000001, GID: 0x70000001}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(disk); st.Mode().Perm() != 0o600 {
		t.Fatalf("the VM's disk is %v after hand-over, want 0600", st.Mode().Perm())
	}
}

// A uid that owns a stopped VM's disk is not handed to another VM.
func TestVMUserNotReusedWhileItOwnsDisks(t *testing.T) {
	vms := t.TempDir()
	d := NewDriver(DriverConfig{RunDir: t.TempDir(), UIDBase: 1000, UIDCount: 1, NoCgroups: true})
	d.cfg.UIDCount = 2
	d.mu.Lock()
	first, err := d.allocUID("first", nil)
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	d.end("first")
	// first stopped; its disk is still its user's.
	for _, vm := range []string{"vm-first", "vm-second"} {
		if err := os.MkdirAll(filepath.Join(vms, vm), 0o711); err != nil {
			t.Fatal(err)
		}
	}
	old := filepath.Join(vms, "vm-first", "root.qcow2")
	if err := os.WriteFile(old, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(old, first, first); err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(vms, "vm-second", "root.qcow2")
	for _, name := range []string{"first", "second", "third", "fourth"} {
		d.mu.Lock()
		uid, err := d.allocUID(name, []string{mine})
		d.mu.Unlock()
		d.end(name)
		if err == nil && uid == first {
			t.Fatalf("VM %s got uid %d, which owns another VM's disk", name, uid)
		}
	}
}
