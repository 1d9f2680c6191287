package disk

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCommitAbortAndCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := s.Create("obj1.0")
	w.Write([]byte("hello"))
	if _, err := s.Open("obj1.0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an uncommitted shard is visible: %v", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open("obj1.0")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}
	a, _ := s.Create("obj2.0")
	a.Write([]byte("partial"))
	a.Abort()
	if _, err := s.Open("obj2.0"); !errors.Is(err, ErrNotFound) {
		t.Fatal("an aborted shard is visible")
	}
	// A crash mid-write leaves a temp file; reopening removes it.
	c, _ := s.Create("obj3.0")
	c.Write([]byte("crash"))
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 1 {
		t.Fatalf("%d temp files", len(left))
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("%d temp files survive a reopen", len(left))
	}
	var keys []string
	_ = s.Walk(func(k string, size int64) error { keys = append(keys, k); return nil })
	if strings.Join(keys, ",") != "obj1.0" {
		t.Fatalf("walk: %v", keys)
	}
	if _, err := s.Create("../escape"); err == nil {
		t.Fatal("a key with a path was accepted")
	}
	if err := s.Delete("obj1.0"); err != nil || s.Delete("obj1.0") != nil {
		t.Fatal("delete is not idempotent")
	}
	if u, err := s.Usage(); err != nil || u.Total == 0 || u.Free > u.Total {
		t.Fatalf("usage %+v %v", u, err)
	}
}

// A full disk gives ENOSPC on write and leaves no shard behind. Needs root to
// mount a tiny tmpfs; make test runs as root.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (make test runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := s.Create("big.0")
	_, werr := w.Write(make([]byte, 1<<20))
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 1 MiB to a 256 KiB disk: %v", werr)
	}
	w.Abort()
	if _, err := s.Open("big.0"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a failed shard is visible")
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatal("the failed shard's temp file was left behind")
	}
}
