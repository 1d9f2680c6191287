package disk

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCommitAbortAndCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := openNew(t, dir)
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
	if _, err := Open(dir, testIdentity); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("%d temp files survive a reopen", len(left))
	}
	var keys []string
	_ = s.Walk(func(k string, _ fs.FileInfo) error { keys = append(keys, k); return nil })
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

// RemoveIfUnchanged deletes the file that was listed, never one written again
// under the same key since.
func TestRemoveIfUnchanged(t *testing.T) {
	s, err := openNew(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(key, data string) {
		w, _ := s.Create(key)
		w.Write([]byte(data))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	list := func() map[string]fs.FileInfo {
		out := map[string]fs.FileInfo{}
		if err := s.Walk(func(k string, info fs.FileInfo) error { out[k] = info; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	put("a.0", "old")
	put("b.0", "old")
	listed := list()
	put("b.0", "rewritten") // e.g. a repair placed this shard here again
	if ok, err := s.RemoveIfUnchanged("b.0", listed["b.0"]); ok || err != nil {
		t.Fatalf("a shard written again after the listing was removed (%v)", err)
	}
	if ok, err := s.RemoveIfUnchanged("a.0", listed["a.0"]); !ok || err != nil {
		t.Fatalf("the listed shard was not removed (%v)", err)
	}
	if ok, err := s.RemoveIfUnchanged("a.0", listed["a.0"]); ok || err != nil {
		t.Fatalf("removing a gone shard: %v %v", ok, err)
	}
	if got := list(); len(got) != 1 || got["b.0"] == nil {
		t.Fatalf("left: %v", got)
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
	s, err := openNew(t, dir)
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
	// A shard smaller than one write chunk, of unknown size (O_DIRECT) or
	// known small (through the page cache), meets the full disk at Commit.
	small, _ := s.Create("small.0")
	if _, err := small.Write(make([]byte, 100<<10)); err != nil {
		t.Fatalf("a write smaller than a chunk failed before the commit: %v", err)
	}
	sized, _ := s.CreateSized("sized.0", 100<<10)
	if _, err := sized.Write(make([]byte, 50<<10)); err != nil { // less than it said: held until the commit
		t.Fatalf("a small shard's write failed before the commit: %v", err)
	}
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = filler.Write(make([]byte, 4096))
	}
	filler.Close()
	for key, w := range map[string]*Writer{"small.0": small, "sized.0": sized} {
		if err := w.Commit(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("committing %s to a full disk: %v", key, err)
		}
		if _, err := s.Open(key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s failed its commit and is visible", key)
		}
	}
}

var testIdentity = Identity{Disk: "node1-abcdef", Token: "0123456789abcdef"}

// openNew marks dir as a pool disk and opens it.
func openNew(t *testing.T, dir string) (*Store, error) {
	t.Helper()
	if err := WriteIdentity(dir, testIdentity); err != nil {
		t.Fatal(err)
	}
	return Open(dir, testIdentity)
}
