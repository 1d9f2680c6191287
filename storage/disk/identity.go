package disk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A pool disk carries an identity marker: a small file naming the disk and
// a token chosen when the disk joined the pool. A path without the right
// marker is not opened. Without it, a disk whose filesystem failed to mount
// would open as its empty mount point, and every shard on it would look
// missing to the scrubber and be rebuilt elsewhere, or worse, written to the
// root filesystem.

// Identity is what a disk's marker says.
type Identity struct {
	Disk  string `json:"disk"`
	Token string `json:"token"`
}

// MarkerFile is the marker's name in the disk's directory.
const MarkerFile = "cairn-disk.json"

// ErrNoMarker is returned for a directory without a marker.
var ErrNoMarker = errors.New("no cairn disk marker (is the disk mounted?)")

// ReadIdentity reads the marker of dir.
func ReadIdentity(dir string) (Identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, MarkerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Identity{}, ErrNoMarker
	}
	if err != nil {
		return Identity{}, fmt.Errorf("read disk marker in %s: %w", dir, err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil || id.Disk == "" || id.Token == "" {
		return Identity{}, fmt.Errorf("disk marker in %s is damaged", dir)
	}
	return id, nil
}

// WriteIdentity writes dir's marker durably (temporary file, fsync, rename,
// fsync of the directory). dir must exist: a marker is never written into a
// directory created for it.
func WriteIdentity(dir string, id Identity) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("write disk marker: %s is not a directory", dir)
	}
	b, _ := json.Marshal(id)
	tmp := filepath.Join(dir, MarkerFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write disk marker: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, MarkerFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write disk marker: %w", err)
	}
	return nil
}

// CheckIdentity reports whether the disk's directory still carries the
// marker it was opened with: a disk unmounted under a running node fails.
func (s *Store) CheckIdentity() error {
	id, err := ReadIdentity(s.root)
	if err != nil {
		return err
	}
	if id != s.id {
		return fmt.Errorf("disk %s: marker names disk %s", s.root, id.Disk)
	}
	return nil
}
