package hypervisor

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

// countingReader is an upload of unknown length (chunked, or an import
// without Content-Length) that counts what was taken from it.
type countingReader struct {
	left, read int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), c.left))
	clear(p[:n])
	c.left -= int64(n)
	c.read += int64(n)
	return n, nil
}

// Image uploads and VM disks on the data dir's filesystem stop short of the
// control plane's floor: a known size is refused before any byte is
// spooled, an unknown one as soon as it would cross the floor (and its
// partial file is removed), with the insufficient_storage code (API 507).
// Runs as root: a real 16 MiB tmpfs.
func TestSpoolAndVMDisksKeepTheControlPlaneFloor(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	data := testutil.Tmpfs(t, 16<<20)
	reserve := storage.Reserve{Dir: data, MinBytes: 8 << 20}
	spool := filepath.Join(data, "images", "tmp")
	im := NewImages(e.node, e.id, nil, ImagesConfig{TempDir: spool, Reserve: reserve})
	sp, err := reserve.Space(data)
	if err != nil {
		t.Fatal(err)
	}
	usable := int64(sp.Usable())
	spec := ImageSpec{Name: "scan", Project: "ward"}

	if err := im.CheckRoom(ctx, e.user, spec, usable/4); err != nil {
		t.Fatalf("an upload and its copy that fit above the floor: %v", err)
	}
	if err := im.CheckRoom(ctx, e.user, spec, usable/2+1<<20); consensus.ErrorCode(err) != storage.CodeInsufficientStorage {
		t.Fatalf("an upload whose converted copy would cross the floor: %v", err)
	}

	body := &countingReader{left: 12 << 20}
	_, err = im.Upload(ctx, e.user, spec, body)
	if consensus.ErrorCode(err) != storage.CodeInsufficientStorage {
		t.Fatalf("12 MiB of unknown length into %d MiB above the floor: %v", usable>>20, err)
	}
	if body.read > usable+64<<10 {
		t.Fatalf("read %d bytes of the upload, only %d fit above the floor", body.read, usable)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Fatalf("the refused upload left %d files in the spool", len(left))
	}
	if after, _ := reserve.Space(data); after.Free < after.Floor || after.Free+1<<20 < sp.Free {
		t.Fatalf("space after the refused upload: %+v, before %+v", after, sp)
	}

	// VM disks: thin, but creating or growing one needs room above the floor.
	vols := NewLocalVolumes(filepath.Join(data, "vms"), nil)
	if err := os.MkdirAll(vols.Dir("vm-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(vols.Dir("vm-1"), "root.qcow2")
	vols.SetReserve(storage.Reserve{Dir: data, MinBytes: 16 << 20})
	if err := vols.create(ctx, root, "", 1<<30); !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("a disk created below the floor: %v", err)
	}
	vols.SetReserve(reserve)
	if err := vols.create(ctx, root, "", 1<<30); err != nil {
		t.Fatalf("a thin disk above the floor: %v", err)
	}
	vols.SetReserve(storage.Reserve{Dir: data, MinBytes: 16 << 20})
	if err := vols.create(ctx, root, "", 2<<30); !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("a disk grown below the floor: %v", err)
	}
	if err := vols.create(ctx, root, "", 1<<30); err != nil {
		t.Fatalf("a disk already of its size needs no room: %v", err)
	}
}
