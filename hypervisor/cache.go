package hypervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Cache keeps each node's local copy of the images its VMs boot from. A boot
// disk is a qcow2 overlay on the cached file, so creating a VM copies
// nothing once the image is here, and the copy is fetched once per node.
//
// The cache is root's alone (directory 0700, files 0400): it holds every
// project's images, private ones included, and a VM's QEMU, which runs as
// the VM's user, gets its own base image as a descriptor from the agent
// (qemu.Disk.Backing), so an escaped QEMU reads no other project's image.
type Cache struct {
	dir     string
	objects ObjectStore

	mu       sync.Mutex
	inflight map[string]*fetch
}

type fetch struct {
	done chan struct{}
	path string
	err  error
}

// NewCache returns the image cache in dir.
func NewCache(dir string, objects ObjectStore) *Cache {
	return &Cache{dir: dir, objects: objects, inflight: map[string]*fetch{}}
}

// File is where an image's cached copy lives on this node.
func (c *Cache) File(img *Image) string {
	return filepath.Join(c.dir, img.ID+"."+img.DiskFormat)
}

// Path returns the cached copy of an image, fetching it from the object
// store the first time; concurrent callers for one image share one fetch.
// The copy is checked against the image's SHA-256 before it is used.
func (c *Cache) Path(ctx context.Context, img *Image) (string, error) {
	path := c.File(img)
	if err := c.private(); err != nil {
		return "", err
	}
	if info, err := os.Stat(path); err == nil {
		// Cached by an older agent as 0444 (when QEMU opened it by path).
		if info.Mode().Perm() != 0o400 {
			if err := os.Chmod(path, 0o400); err != nil {
				return "", err
			}
		}
		return path, nil
	}
	c.mu.Lock()
	f, ok := c.inflight[img.ID]
	if !ok {
		f = &fetch{done: make(chan struct{})}
		c.inflight[img.ID] = f
		go func() {
			// Detached from the first caller: a second caller must not fail
			// because the first one gave up.
			f.path, f.err = c.fetch(context.WithoutCancel(ctx), img)
			c.mu.Lock()
			delete(c.inflight, img.ID)
			c.mu.Unlock()
			close(f.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.path, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// private creates the cache directory root-only, and makes one an older
// agent left searchable (0711) root-only again.
func (c *Cache) private() error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(c.dir, 0o700)
}

func (c *Cache) fetch(ctx context.Context, img *Image) (string, error) {
	obj, err := c.objects.HeadSystem(ctx, ImageBucket, img.ID)
	if err != nil {
		return "", fmt.Errorf("fetch image %s: %w", img.Name, err)
	}
	tmp, err := os.CreateTemp(c.dir, ".fetch-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if err := c.objects.Read(ctx, obj, 0, -1, io.MultiWriter(tmp, h)); err != nil {
		return "", fmt.Errorf("fetch image %s: %w", img.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != img.SHA256 {
		return "", fmt.Errorf("fetch image %s: checksum %s, expected %s", img.Name, got, img.SHA256)
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	path := c.File(img)
	// Read-only and root's: every VM disk on this node is an overlay on
	// it, and QEMU gets it as a descriptor.
	if err := os.Chmod(tmp.Name(), 0o400); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// Prune removes cached images that no local VM uses and that are either
// deleted or not wanted any more (keep says which image IDs to keep).
func (c *Cache) Prune(keep func(imageID string) bool) error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		name := e.Name()
		id, _, _ := strings.Cut(name, ".")
		c.mu.Lock()
		_, busy := c.inflight[id]
		fetching := len(c.inflight) > 0
		c.mu.Unlock()
		switch {
		case strings.HasPrefix(name, ".fetch-"):
			if !fetching { // a fetch that a crash interrupted
				_ = os.Remove(filepath.Join(c.dir, name))
			}
		case !busy && !keep(id):
			_ = os.Remove(filepath.Join(c.dir, name))
		}
	}
	return nil
}
