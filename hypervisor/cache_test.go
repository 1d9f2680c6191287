package hypervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cairnhq/cairn/storage"
)

// memObjects is an ObjectStore holding one image's bytes.
type memObjects struct{ body []byte }

func (o memObjects) EnsureSystemBucket(context.Context, string) error { return nil }
func (o memObjects) PutSystem(context.Context, string, string, int64, io.Reader) (*storage.Object, error) {
	return nil, nil
}
func (o memObjects) HeadSystem(_ context.Context, bucket, key string) (*storage.Object, error) {
	return &storage.Object{Bucket: bucket, Key: key, Size: int64(len(o.body))}, nil
}
func (o memObjects) Read(_ context.Context, _ *storage.Object, _, _ int64, w io.Writer) error {
	_, err := io.Copy(w, bytes.NewReader(o.body))
	return err
}
func (o memObjects) DeleteSystem(context.Context, string, string) error { return nil }

// TestCachedImagesRootOnly: the node's image cache holds every project's
// images, so it is root's alone (directory 0700, images 0400) once an image
// is cached, also where an older agent left it open to VM users (0711,
// 0444); QEMU gets the base image as a descriptor instead (the boot disk
// names it as its Backing).
func TestCachedImagesRootOnly(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	base := filepath.Join(data, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	body, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	img := &Image{ID: "img-1", Name: "base", DiskFormat: FormatQCOW2, SHA256: hex.EncodeToString(sum[:])}
	dir := filepath.Join(data, "images", "cache")
	c := NewCache(dir, memObjects{body})
	rootOnly := func(when string, p string, want os.FileMode) {
		t.Helper()
		info, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if info.Mode().Perm() != want || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: %s is %v owned by %d:%d, want %v root's", when, p, info.Mode().Perm(), st.Uid, st.Gid, want)
		}
	}
	path, err := c.Path(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	rootOnly("fetched", dir, 0o700)
	rootOnly("fetched", path, 0o400)

	// As an agent that let QEMU open backing files by path left them.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if path, err = c.Path(ctx, img); err != nil {
		t.Fatal(err)
	}
	rootOnly("cached before", dir, 0o700)
	rootOnly("cached before", path, 0o400)

	// The boot disk is an overlay that names the cached image as its
	// backing file, which the VM's QEMU is then given open.
	vols := NewLocalVolumes(filepath.Join(data, "vms"), nil)
	vm := &VM{ID: "vm-1", Spec: VMSpec{DiskGiB: 1}}
	disks, err := vols.Prepare(ctx, vm, img, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 1 || disks[0].ID != "root" || disks[0].Backing != path {
		t.Errorf("disks %+v, want the root overlay backed by %s", disks, path)
	}
}
