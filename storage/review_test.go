package storage_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// Commands that act on a bucket carry its identity: a write started
// against one project's bucket never lands in a bucket of the same name
// another project created after the first was deleted.
func TestWritesNeverLandInABucketOfTheSameName(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pa, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "tenant-a"})
	pb, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "tenant-b"})
	lc := &lossy{Node: ns[1].node}
	objs := storage.NewObjects(lc, identity.NewService(lc, identity.DefaultConfig()), ns[1].shards, slog.Default())
	if _, err := objs.CreateBucket(ctx, admin, pa.ID, "shared-name"); err != nil {
		t.Fatal(err)
	}
	theirs := randBytes(100)
	// While A's PUT is on its way, A's bucket goes and B makes its own.
	lc.hook = func() {
		if err := ns[0].objects.DeleteBucket(ctx, admin, "shared-name"); err != nil {
			t.Errorf("delete: %v", err)
		}
		if _, err := ns[0].objects.CreateBucket(ctx, admin, pb.ID, "shared-name"); err != nil {
			t.Errorf("create: %v", err)
		}
		if _, err := ns[0].objects.Put(ctx, admin, "shared-name", "patient.dcm", int64(len(theirs)), bytes.NewReader(theirs), storage.PutOptions{}); err != nil {
			t.Errorf("B's put: %v", err)
		}
	}
	lc.arm("", identity.MsgAudited)
	mine := randBytes(40 << 10) // erasure-coded
	_, err := objs.Put(ctx, admin, "shared-name", "patient.dcm", int64(len(mine)), bytes.NewReader(mine), storage.PutOptions{})
	if consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("A's PUT into B's bucket: %v", err)
	}
	var out bytes.Buffer
	if _, err := ns[2].objects.Get(ctx, admin, "shared-name", "patient.dcm", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), theirs) {
		t.Fatalf("B's object: %v", err)
	}
	if q, _ := ns[0].id.GetQuota(admin, pb.ID); q.Usage.Objects != 1 {
		t.Fatalf("B is charged for %d objects", q.Usage.Objects)
	}
}

// A delete decided on an earlier read (a lifecycle rule) names the version
// it judged, and does not remove a write made since.
func TestADecidedDeleteSparesANewerWrite(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "clinic"})
	o := ns[0].objects
	if _, err := o.CreateBucket(ctx, admin, pr.ID, "tmp"); err != nil {
		t.Fatal(err)
	}
	old, err := o.Put(ctx, admin, "tmp", "report", 3, bytes.NewReader([]byte("old")), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Put(ctx, admin, "tmp", "report", 3, bytes.NewReader([]byte("new")), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.DeleteObject(ctx, admin, "tmp", "report", storage.DeleteOptions{IfVersion: old.Version}); consensus.ErrorCode(err) != consensus.CodePreconditionFailed {
		t.Fatalf("a delete decided on the old version: %v", err)
	}
	var out bytes.Buffer
	if _, err := o.Get(ctx, admin, "tmp", "report", 0, -1, &out); err != nil || out.String() != "new" {
		t.Fatalf("the newer write: %q %v", out.String(), err)
	}
}

// Object lock against a stolen member key: a member may protect data in
// GOVERNANCE mode, but only a project admin sets COMPLIANCE retention or a
// legal hold, and only an admin releases a hold; retention ends at most a
// century ahead.
func TestLockRoles(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "legal"})
	if _, err := ns[0].id.CreateUser(ctx, admin, identity.UserSpec{Name: "clerk", Password: "front-desk-5150"}); err != nil {
		t.Fatal(err)
	}
	if err := ns[0].id.SetMember(ctx, admin, pr.ID, "clerk", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	clerk := principal(t, ns[0].id, "clerk", "front-desk-5150")
	o := ns[0].objects
	if _, err := o.CreateBucketWith(ctx, admin, pr.ID, "evidence", storage.BucketOptions{ObjectLock: true}); err != nil {
		t.Fatal(err)
	}
	soon := &storage.Retention{Mode: storage.LockGovernance, Until: time.Now().Add(time.Hour)}
	if _, err := o.Put(ctx, clerk, "evidence", "gov", 1, bytes.NewReader([]byte("g")), storage.PutOptions{Retention: soon}); err != nil {
		t.Fatalf("a member's GOVERNANCE retention: %v", err)
	}
	comp := &storage.Retention{Mode: storage.LockCompliance, Until: time.Now().Add(time.Hour)}
	if _, err := o.Put(ctx, clerk, "evidence", "comp", 1, bytes.NewReader([]byte("c")), storage.PutOptions{Retention: comp}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member's COMPLIANCE retention: %v", err)
	}
	if _, err := o.Put(ctx, clerk, "evidence", "hold", 1, bytes.NewReader([]byte("h")), storage.PutOptions{LegalHold: true}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member's legal hold: %v", err)
	}
	held, err := o.Put(ctx, admin, "evidence", "hold", 1, bytes.NewReader([]byte("h")), storage.PutOptions{LegalHold: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.SetLegalHold(ctx, clerk, "evidence", "hold", held.VersionID, false); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member releasing a hold: %v", err)
	}
	if _, err := o.DeleteObject(ctx, clerk, "evidence", "hold", storage.DeleteOptions{VersionID: held.VersionID}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a member deleting a held version: %v", err)
	}
	forever := &storage.Retention{Mode: storage.LockGovernance, Until: time.Now().AddDate(storage.MaxRetentionYears+1, 0, 0)}
	if _, err := o.Put(ctx, admin, "evidence", "forever", 1, bytes.NewReader([]byte("f")), storage.PutOptions{Retention: forever}); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("a retention past a century: %v", err)
	}
}

// At its object-count limit a project can still delete in a versioned
// bucket, although each delete leaves a marker.
func TestDeleteAtTheObjectLimit(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "full"})
	o := ns[0].objects
	if _, err := o.CreateBucket(ctx, admin, pr.ID, "kept"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.SetVersioning(ctx, admin, "kept", storage.VersioningEnabled); err != nil {
		t.Fatal(err)
	}
	l := identity.DefaultQuota
	l.Objects = 2
	if _, err := ns[0].id.SetQuota(ctx, admin, pr.ID, l, 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if _, err := o.Put(ctx, admin, "kept", k, 1, bytes.NewReader([]byte(k)), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.Put(ctx, admin, "kept", "c", 1, bytes.NewReader([]byte("c")), storage.PutOptions{}); consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("past the limit: %v", err)
	}
	if err := o.Delete(ctx, admin, "kept", "a"); err != nil {
		t.Fatalf("a delete at the limit: %v", err)
	}
}
