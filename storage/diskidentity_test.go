package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/disk"
)

// diskState reads one disk's health and error from the state.
func diskState(t *testing.T, n *objNode, admin *identity.Principal, dir string) (string, string) {
	t.Helper()
	ds, err := storage.NewService(n.node, n.id).ListDisks(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Path == dir {
			return d.Health, d.Error
		}
	}
	t.Fatalf("no disk at %s", dir)
	return "", ""
}

// A disk whose filesystem is not mounted shows its empty mount point. The
// node must not open that as the disk (whose shards would all look missing
// to the scrubber, which would mark them for rebuilding elsewhere), nor
// keep using an open disk that was unmounted under it. When the disk comes
// back it is used again, every shard still in place.
func TestUnmountedDiskGivesNoVerdicts(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	data := randBytes(3<<20 + 11)
	obj, err := ns[0].objects.Put(ctx, admin, "records", "angiogram", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := ns[1]
	dir := n.dirs[0]
	held := 0
	for _, loc := range obj.Shards {
		if loc.Disk == storage.DiskID(n.node.Name(), dir) {
			held++
		}
	}
	if held == 0 {
		t.Fatal("placement put no shard on the disk under test")
	}
	// "Unmount" it: the directory is now an empty mount point.
	if err := os.Rename(dir, dir+".mounted"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the unmounted disk reported failed", func() error {
		if h, e := diskState(t, n, admin, dir); h != storage.HealthFailed || !strings.Contains(e, "marker") {
			return fmt.Errorf("health %s (%s)", h, e)
		}
		return nil
	})
	if n.agent.Disk(storage.DiskID(n.node.Name(), dir)) != nil {
		t.Fatal("the unmounted disk is still open")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the node wrote into the empty mount point: %v", entries)
	}
	if bad := scrubAll(t, ns); bad != 0 {
		t.Fatalf("the scrubber found %d bad shards on a disk that is not there", bad)
	}
	cur, _ := ns[0].objects.Head(ctx, admin, "records", "angiogram")
	for i, loc := range cur.Shards {
		if loc != obj.Shards[i] {
			t.Fatalf("shard %d was moved or marked missing while its disk was away: %+v", i, loc)
		}
	}
	// Mounted again: the same disk, every shard intact.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".mounted", dir); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the disk back", func() error {
		if h, e := diskState(t, n, admin, dir); h != storage.HealthOK {
			return fmt.Errorf("health %s (%s)", h, e)
		}
		return nil
	})
	if bad := scrubAll(t, ns); bad != 0 {
		t.Fatalf("%d bad shards after the disk came back", bad)
	}
	checkIntact(t, ns, admin, "angiogram", data)

	// Another pool's disk at this path (a swapped cable, a wrong mount) is
	// not opened either.
	if err := os.Rename(dir, dir+".ours"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := disk.WriteIdentity(dir, disk.Identity{Disk: storage.DiskID(n.node.Name(), dir), Token: "another-pool"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the foreign disk refused", func() error {
		if h, e := diskState(t, n, admin, dir); h != storage.HealthFailed || !strings.Contains(e, "another pool") {
			return fmt.Errorf("health %s (%s)", h, e)
		}
		return nil
	})
}
