package storage_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

func register(reg *consensus.Registry) {
	identity.Register(reg)
	storage.Register(reg)
}

type fixture struct {
	base  string // parent of the test disks, removed after the agent stops
	node  *consensus.Node
	id    *identity.Service
	svc   *storage.Service
	agent *storage.DiskAgent
	admin *identity.Principal
}

func newFixture(t *testing.T) *fixture {
	base := t.TempDir()
	c := consensustest.Start(t, 1, register)
	n := c.Nodes[0]
	id := identity.NewService(n, identity.DefaultConfig())
	ctx := context.Background()
	if _, err := id.CreateFirstAdmin(ctx, "admin", "cluster-root-6161"); err != nil {
		t.Fatal(err)
	}
	tok, _, _ := id.Login(ctx, "admin", "cluster-root-6161")
	admin, _ := id.Authenticate(ctx, tok)
	svc := storage.NewService(n, id)
	agent := storage.NewDiskAgent(n, svc, slog.Default(), time.Second)
	runAgent(t, agent)
	return &fixture{base: base, node: n, id: id, svc: svc, agent: agent, admin: admin}
}

func (f *fixture) waitHealth(t *testing.T, id, want string) storage.Disk {
	var d *storage.Disk
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("disk %s %s", id, want), func() error {
		var err error
		if d, err = f.svc.GetDisk(f.admin, id); err != nil {
			return err
		}
		if d.Health != want {
			return fmt.Errorf("health %s (%s)", d.Health, d.Error)
		}
		return nil
	})
	return *d
}

func TestDiskLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dir := diskDir(t, f.base)
	d, err := f.svc.AddDisk(ctx, f.admin, f.node.Name(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got := f.waitHealth(t, d.ID, storage.HealthOK)
	if got.TotalBytes == 0 || got.FreeBytes == 0 || got.FreeBytes > got.TotalBytes || got.State != storage.DiskActive {
		t.Fatalf("reported disk: %+v", got)
	}
	if f.agent.Disk(d.ID) == nil {
		t.Fatal("the agent did not open the disk")
	}
	if _, err := os.Stat(filepath.Join(dir, "shards")); err != nil {
		t.Fatalf("the disk was not prepared: %v", err)
	}
	if _, err := f.svc.AddDisk(ctx, f.admin, f.node.Name(), dir); consensus.ErrorCode(err) != consensus.CodeAlreadyExists {
		t.Fatalf("adding a disk twice: %v", err)
	}
	if err := f.svc.RemoveDisk(ctx, f.admin, d.ID, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("removing an active disk: %v", err)
	}
	if _, err := f.svc.SetDiskState(ctx, f.admin, d.ID, storage.DiskDraining, d.Version+99); consensus.ErrorCode(err) != consensus.CodePreconditionFailed {
		t.Fatalf("stale If-Match: %v", err)
	}
	dr, err := f.svc.SetDiskState(ctx, f.admin, d.ID, storage.DiskDraining, d.Version)
	if err != nil || dr.State != storage.DiskDraining {
		t.Fatalf("drain: %+v %v", dr, err)
	}
	if err := f.svc.RemoveDisk(ctx, f.admin, d.ID, 0); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the agent to forget the removed disk", func() error {
		if f.agent.Disk(d.ID) != nil {
			return fmt.Errorf("still open")
		}
		return nil
	})
	if ds, _ := f.svc.ListDisks(f.admin); len(ds) != 0 {
		t.Fatalf("disks left: %+v", ds)
	}
	es, _ := f.id.ListAudit(f.admin, identity.AuditFilter{Action: "disk."})
	if len(es) < 5 {
		t.Fatalf("disk changes are not all audited: %d entries", len(es))
	}
}

func TestBadDisksAndPermissions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	_ = os.WriteFile(file, []byte("x"), 0o600)
	d, err := f.svc.AddDisk(ctx, f.admin, f.node.Name(), file)
	if err != nil {
		t.Fatal(err)
	}
	failed := f.waitHealth(t, d.ID, storage.HealthFailed)
	if failed.Error == "" {
		t.Fatal("a failed disk must say why")
	}
	for _, p := range []string{"relative/dir", "/", "/a/../b", ""} {
		if _, err := f.svc.AddDisk(ctx, f.admin, f.node.Name(), p); consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Errorf("path %q: %v", p, err)
		}
	}
	if _, err := f.id.CreateUser(ctx, f.admin, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	tok, _, _ := f.id.Login(ctx, "nurse", "night-shift-9471")
	nurse, _ := f.id.Authenticate(ctx, tok)
	if _, err := f.svc.AddDisk(ctx, nurse, f.node.Name(), diskDir(t, f.base)); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a non-admin added a disk: %v", err)
	}
	if _, err := f.svc.ListDisks(nurse); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a non-admin listed disks: %v", err)
	}
	if ds, _ := f.svc.ListDisks(f.admin); len(ds) != 1 {
		t.Fatalf("refused requests changed the pool: %d disks", len(ds))
	}
	// --disk flags at start are idempotent.
	dirs := []string{diskDir(t, f.base), diskDir(t, f.base)}
	for range 2 {
		if err := f.agent.EnsureDisks(ctx, dirs); err != nil {
			t.Fatal(err)
		}
	}
	if ds, _ := f.svc.ListDisks(f.admin); len(ds) != 3 {
		t.Fatalf("EnsureDisks twice: %d disks, want 3", len(ds))
	}
}
