package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/storagetest"
)

// Two pool directories on one filesystem fail together. A single node with
// two disks on its root filesystem and a third on a filesystem of its own
// (a tmpfs) must code objects so that losing the shared filesystem loses
// nothing, which 2+1 over the three directories would not (two shards on
// it): the layout counts filesystems, not directories (1+1, one shard on
// each), and the shared ones are reported so. An admin's wider layout
// still writes, and the healer still rebuilds its shards, by the rule
// before filesystems were known.
func TestDisksSharingAFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs: run it as root (make test does)")
	}
	base := t.TempDir()
	ns, admin := storagetest.PoolOn(t, 1, 2, base, storage.Reserve{})
	n := ns[0]
	own := filepath.Join(t.TempDir(), "own-fs")
	if err := os.Mkdir(own, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512m", "cairn-test", own).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", own).Run() })
	ctx := context.Background()
	dirs := append(append([]string{}, n.Dirs...), own)
	testutil.WaitFor(t, 30*time.Second, "the third disk in the pool", func() error { return n.Agent.EnsureDisks(ctx, dirs) })

	svc := storage.NewService(n.Node, n.ID)
	var disks []storage.Disk
	testutil.WaitFor(t, 30*time.Second, "three healthy disks with their filesystems", func() error {
		ds, err := svc.ListDisks(admin)
		if err != nil {
			return err
		}
		disks = ds
		ok := 0
		for _, d := range ds {
			if d.Health == storage.HealthOK && d.Device != "" {
				ok++
			}
		}
		if ok != 3 {
			return fmt.Errorf("%+v", ds)
		}
		return nil
	})
	byPath := map[string]storage.Disk{}
	for _, d := range disks {
		byPath[d.Path] = d
	}
	a, b, c := byPath[dirs[0]], byPath[dirs[1]], byPath[own]
	shared := storage.SharedDevices(disks)
	if a.Device != b.Device || a.Device == c.Device || len(shared[a.ID]) != 1 || shared[a.ID][0] != b.ID || len(shared[c.ID]) != 0 {
		t.Fatalf("devices %s %s %s, shared %v", a.Device, b.Device, c.Device, shared)
	}

	l, err := n.Objects.DefaultLayout()
	if err != nil || l.Data != 1 || l.Parity != 1 {
		t.Fatalf("layout over two filesystems, one holding two disks: %v %v (want 1+1)", l, err)
	}
	pr, err := n.ID.CreateProject(ctx, admin, identity.ProjectSpec{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Objects.CreateBucket(ctx, admin, pr.ID, "results"); err != nil {
		t.Fatal(err)
	}
	data := randBytes(200 << 10)
	obj, err := n.Objects.Put(ctx, admin, "results", "blood.csv", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	onShared := 0
	for _, loc := range obj.Shards {
		if loc.Disk == a.ID || loc.Disk == b.ID {
			onShared++
		}
	}
	if len(obj.Shards) != 2 || onShared != 1 {
		t.Fatalf("shards %+v: %d on the shared filesystem, parity %d", obj.Shards, onShared, obj.Layout.Parity)
	}

	var before bytes.Buffer
	if _, err := n.Objects.Get(ctx, admin, "results", "blood.csv", 0, -1, &before); err != nil || !bytes.Equal(before.Bytes(), data) {
		t.Fatalf("read: %v (%d of %d bytes), shards %+v", err, before.Len(), len(data), obj.Shards)
	}

	// The shared filesystem is lost: every shard on it is gone. The object
	// still reads, whole, from the filesystem of its own.
	for _, d := range []string{dirs[0], dirs[1]} {
		if err := os.RemoveAll(filepath.Join(d, "shards")); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(d, "shards"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if _, err := n.Objects.Get(ctx, admin, "results", "blood.csv", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("after losing the shared filesystem: %v (%d of %d bytes)", err, out.Len(), len(data))
	}

	// A bucket an admin gave 2+1 (wider than the two filesystems) takes
	// writes as before, all three shards on the node's three disks; when
	// one of them is drained, the healer rebuilds its shard on the only
	// other disk, though that doubles up a filesystem.
	if _, err := n.Objects.CreateBucket(ctx, admin, pr.ID, "wide"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Objects.SetBucketLayout(ctx, admin, "wide", 2, 1); err != nil {
		t.Fatal(err)
	}
	wide, err := n.Objects.Put(ctx, admin, "wide", "x.csv", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil || len(wide.Shards) != 3 {
		t.Fatalf("2+1 on three disks of two filesystems: %+v %v", wide, err)
	}
	extra := filepath.Join(base, "extra")
	if err := os.Mkdir(extra, 0o700); err != nil {
		t.Fatal(err)
	}
	dirs = append(dirs, extra)
	testutil.WaitFor(t, 30*time.Second, "a fourth disk", func() error { return n.Agent.EnsureDisks(ctx, dirs) })
	testutil.WaitFor(t, 30*time.Second, "the fourth disk healthy", func() error {
		ds, _ := svc.ListDisks(admin)
		for _, d := range ds {
			if d.Path == extra && d.Health == storage.HealthOK && d.Device != "" {
				return nil
			}
		}
		return fmt.Errorf("%+v", ds)
	})
	if _, err := svc.SetDiskState(ctx, admin, c.ID, storage.DiskDraining, 0); err != nil {
		t.Fatal(err)
	}
	healer := storage.NewHealer(n.Objects, time.Hour, time.Minute)
	testutil.WaitFor(t, 30*time.Second, "the wide object healed off the drained disk", func() error {
		if _, err := healer.Pass(ctx); err != nil {
			return err
		}
		obj, err := n.Objects.Head(ctx, admin, "wide", "x.csv")
		if err != nil {
			return err
		}
		for _, loc := range obj.Shards {
			if loc.Disk == c.ID || loc.Disk == "" {
				return fmt.Errorf("shards %+v", obj.Shards)
			}
		}
		return nil
	})
	out.Reset()
	if _, err := n.Objects.Get(ctx, admin, "wide", "x.csv", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("the healed object: %v", err)
	}
}

// The pool's redundancy as the dashboard reads it: whole and spread, then a
// disk drained (its shards count as missing).
func TestRedundancy(t *testing.T) {
	ns, admin := storagetest.Pool(t, 3, 1)
	ctx := context.Background()
	pr, err := ns[0].ID.CreateProject(ctx, admin, identity.ProjectSpec{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns[0].Objects.CreateBucket(ctx, admin, pr.ID, "results"); err != nil {
		t.Fatal(err)
	}
	data := randBytes(100 << 10)
	obj, err := ns[0].Objects.Put(ctx, admin, "results", "a.csv", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ns[1].Objects.Redundancy(ctx, time.Minute); err != nil || r.Degraded != 0 || r.OneNode != 0 {
		t.Fatalf("a whole pool: %+v %v", r, err)
	}
	if _, err := storage.NewService(ns[0].Node, ns[0].ID).SetDiskState(ctx, admin, obj.Shards[0].Disk, storage.DiskDraining, 0); err != nil {
		t.Fatal(err)
	}
	if r, err := ns[1].Objects.Redundancy(ctx, time.Minute); err != nil || r.Degraded != 1 {
		t.Fatalf("a disk drained: %+v %v", r, err)
	}
}
