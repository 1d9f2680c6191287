package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

// Shards written to a disk on the data dir's filesystem stop short of the
// control plane's floor, on this node and on a peer, with the error a full
// disk gives (the object layer turns it into ErrNoSpace: S3's 507
// InsufficientStorage). Runs as root: a real 16 MiB tmpfs is filled.
func TestShardWritesKeepTheControlPlaneFloor(t *testing.T) {
	data := testutil.Tmpfs(t, 16<<20)
	reserve := storage.Reserve{Dir: data, MinBytes: 8 << 20}
	sn := twoNodesOn(t, data, reserve)
	a, b := sn[0], sn[1]
	ctx := context.Background()

	space, err := reserve.Space(data)
	if err != nil {
		t.Fatal(err)
	}
	if space.Floor != 8<<20 || space.Usable() == 0 {
		t.Fatalf("space on the tmpfs: %+v", space)
	}
	big := int64(space.Usable()) + 1<<20 // more than the floor leaves
	for _, d := range []storage.Disk{a.disk, b.disk} {
		w, err := a.shards.Create(ctx, d, "big.0", big)
		if err == nil {
			_, err = io.Copy(w, bytes.NewReader(make([]byte, big)))
			if err == nil {
				err = w.Commit()
			} else {
				w.Abort()
			}
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("a %d MiB shard onto %s with %d MiB above the floor: %v", big>>20, d.ID, space.Usable()>>20, err)
		}
		if d.Node == a.node.Name() && (!errors.Is(err, storage.ErrNoSpace) || !strings.Contains(err.Error(), "control plane")) {
			t.Fatalf("local refusal does not say why: %v", err)
		}
	}
	after, err := reserve.Space(data)
	if err != nil {
		t.Fatal(err)
	}
	if after.Free < after.Floor {
		t.Fatalf("the refused writes ate into the floor: %+v", after)
	}
	// A shard that leaves the floor intact is stored.
	small := make([]byte, 1<<20)
	for _, d := range []storage.Disk{a.disk, b.disk} {
		w, err := a.shards.Create(ctx, d, "small.0", int64(len(small)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(small); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatalf("1 MiB shard onto %s: %v", d.ID, err)
		}
	}
	// A disk on another filesystem is not limited by the data dir's floor.
	other := storage.Reserve{Dir: t.TempDir(), MinBytes: 1 << 62}
	if err := other.Check(data, 1<<20); err != nil {
		t.Fatalf("floor applied to another filesystem: %v", err)
	}
}
