// Package disk keeps shards on one local disk (a block device's filesystem in
// the appliance, a directory in dev mode and tests). Writes go to a temporary
// file that is fsynced and renamed into place, then the directory is fsynced:
// a shard is either absent or complete and durable, never half-written.
// Shard bytes go past the page cache (O_DIRECT) where the filesystem allows
// (direct.go). Only storage packages import disk.
package disk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"golang.org/x/sys/unix"
)

// Store is one disk's shard directory.
type Store struct {
	root string
	id   Identity
	mu   sync.Mutex // orders a shard's rename into place with RemoveIfUnchanged
}

// ErrNotFound is returned for a shard the disk does not have.
var ErrNotFound = errors.New("shard not found")

var keyRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// Open opens the disk in dir, whose marker must be want, prepares it for
// shards and removes temporary files a crash left.
func Open(dir string, want Identity) (*Store, error) {
	got, err := ReadIdentity(dir)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", dir, err)
	}
	if got != want {
		return nil, fmt.Errorf("open disk %s: it is disk %s of another pool or addition, not %s", dir, got.Disk, want.Disk)
	}
	for _, d := range []string{"shards", "tmp"} {
		if err := mkdirDurable(filepath.Join(dir, d)); err != nil {
			return nil, fmt.Errorf("open disk %s: %w", dir, err)
		}
	}
	tmp := filepath.Join(dir, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", dir, err)
	}
	for _, e := range entries {
		_ = os.Remove(filepath.Join(tmp, e.Name()))
	}
	return &Store{root: dir, id: want}, nil
}

// mkdirDurable creates dir if it is missing and fsyncs its parent, so the
// new directory entry survives a crash along with what is written into it.
func mkdirDurable(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

// Root is the disk's directory.
func (s *Store) Root() string { return s.root }

// path spreads shards over 256 directories by a hash of the key.
func (s *Store) path(key string) (string, error) {
	if !keyRE.MatchString(key) {
		return "", fmt.Errorf("bad shard key %q", key)
	}
	h := sha256.Sum256([]byte(key))
	return filepath.Join(s.root, "shards", hex.EncodeToString(h[:1]), key), nil
}

// Writer is a shard being written. Commit makes it durable and visible;
// Abort (or a crash) leaves nothing behind.
type Writer struct {
	f      *os.File
	chunks *chunkWriter
	dest   string
	mu     *sync.Mutex // the store's
	done   bool
}

// Create starts writing a shard of unknown size, replacing any existing
// one on Commit.
func (s *Store) Create(key string) (*Writer, error) { return s.CreateSized(key, -1) }

// CreateSized starts writing a shard of about size bytes (-1: unknown),
// replacing any existing one on Commit.
func (s *Store) CreateSized(key string, size int64) (*Writer, error) {
	dest, err := s.path(key)
	if err != nil {
		return nil, err
	}
	small := size >= 0 && size < writeChunk
	f, direct, err := createTemp(filepath.Join(s.root, "tmp"), key+".*", !small)
	if err != nil {
		return nil, fmt.Errorf("create shard %s: %w", key, err)
	}
	return &Writer{f: f, chunks: newChunkWriter(f, direct, size), dest: dest, mu: &s.mu}, nil
}

// Write appends to the shard; a full disk shows up here or in Commit as
// ENOSPC.
func (w *Writer) Write(p []byte) (int, error) { return w.chunks.Write(p) }

// ReadFrom appends r's bytes up to its end (io.Copy uses it).
func (w *Writer) ReadFrom(r io.Reader) (int64, error) { return w.chunks.ReadFrom(r) }

// Commit fsyncs the data, renames it into place and fsyncs the directory.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("shard already committed or aborted")
	}
	w.done = true
	tmp := w.f.Name()
	if err := w.chunks.finish(); err != nil {
		w.f.Close()
		os.Remove(tmp)
		return fmt.Errorf("commit shard: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		os.Remove(tmp)
		return fmt.Errorf("commit shard: %w", err)
	}
	if err := w.f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("commit shard: %w", err)
	}
	dir := filepath.Dir(w.dest)
	if err := mkdirDurable(dir); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("commit shard: %w", err)
	}
	w.mu.Lock()
	err := os.Rename(tmp, w.dest)
	w.mu.Unlock()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("commit shard: %w", err)
	}
	return syncDir(dir)
}

// Abort discards the shard.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.chunks.release()
	w.f.Close()
	os.Remove(w.f.Name())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open returns the shard for reading (an *os.File is an io.ReaderAt).
func (s *Store) Open(key string) (*os.File, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

// Delete removes a shard; deleting a missing shard is not an error.
func (s *Store) Delete(key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Walk calls fn for every shard on the disk, with its size and modification
// time, for the garbage collector.
func (s *Store) Walk(fn func(key string, info fs.FileInfo) error) error {
	return filepath.WalkDir(filepath.Join(s.root, "shards"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted since the directory was read
		}
		if err != nil {
			return err
		}
		return fn(d.Name(), info)
	})
}

// RemoveIfUnchanged deletes a shard only if it is still the file Walk listed
// (same inode, same modification time): a shard written again since, by a
// repair for instance, is kept. It reports whether it deleted the file.
func (s *Store) RemoveIfUnchanged(key string, listed fs.FileInfo) (bool, error) {
	p, err := s.path(key)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !os.SameFile(cur, listed) || !cur.ModTime().Equal(listed.ModTime()) {
		return false, nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// Usage is the filesystem's size and free space, in bytes.
type Usage struct {
	Total uint64 `json:"total"`
	Free  uint64 `json:"free"`
}

// Usage reports the capacity of the filesystem holding the disk.
func (s *Store) Usage() (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.root, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", s.root, err)
	}
	return Usage{Total: st.Blocks * uint64(st.Bsize), Free: st.Bavail * uint64(st.Bsize)}, nil
}
