package storage_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// Lifecycle rules, run as the leader runs them, two days from now: current
// versions past their age get a delete marker (versioned) or go
// (unversioned), older versions past theirs go but for the newest ones the
// rule keeps, delete markers left alone are removed, abandoned uploads are
// aborted; and a locked version survives every rule.
func TestLifecycleRules(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "imaging"})
	o := ns[0].objects
	put := func(bucket, key, body string, opt storage.PutOptions) *storage.Object {
		t.Helper()
		obj, err := o.Put(ctx, admin, bucket, key, int64(len(body)), bytes.NewReader([]byte(body)), opt)
		if err != nil {
			t.Fatal(err)
		}
		return obj
	}
	if _, err := o.CreateBucket(ctx, admin, pr.ID, "scratch"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.CreateBucketWith(ctx, admin, pr.ID, "archive", storage.BucketOptions{ObjectLock: true}); err != nil {
		t.Fatal(err)
	}
	put("scratch", "tmp/a", "a", storage.PutOptions{})
	put("scratch", "keep/b", "b", storage.PutOptions{})
	u, err := o.CreateUpload(ctx, admin, "scratch", "tmp/upload", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Three versions of one key; the newest older one is kept by the rule.
	v1 := put("archive", "study", "1", storage.PutOptions{})
	v2 := put("archive", "study", "2", storage.PutOptions{})
	put("archive", "study", "3", storage.PutOptions{})
	// A locked version, older and past every age: it stays.
	locked := put("archive", "dump", "locked", storage.PutOptions{Retention: &storage.Retention{Mode: storage.LockCompliance, Until: time.Now().Add(30 * 24 * time.Hour)}})
	put("archive", "dump", "newer", storage.PutOptions{})
	put("archive", "dump", "newest", storage.PutOptions{})
	// A delete marker with nothing under it.
	lonely := put("archive", "lonely", "x", storage.PutOptions{})
	if _, err := o.DeleteObject(ctx, admin, "archive", "lonely", storage.DeleteOptions{VersionID: lonely.VersionID}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.DeleteObject(ctx, admin, "archive", "lonely", storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.SetLifecycle(ctx, admin, "scratch", []storage.LifecycleRule{{ID: "tmp", Enabled: true, Prefix: "tmp/", ExpirationDays: 1, AbortIncompleteUploadDays: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.SetLifecycle(ctx, admin, "archive", []storage.LifecycleRule{{ID: "old", Enabled: true, NoncurrentDays: 1, NewerNoncurrentVersions: 1, ExpiredDeleteMarker: true}}); err != nil {
		t.Fatal(err)
	}

	// Today only the lone delete marker is due (it has no age to reach).
	if st, err := storage.NewLifecycle(ns[1].objects, time.Now).Pass(ctx); err != nil || st.Removed != 1 {
		t.Fatalf("a pass today removed %d (%v)", st.Removed, err)
	}
	st, err := storage.NewLifecycle(ns[1].objects, func() time.Time { return time.Now().Add(48 * time.Hour) }).Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Head(ctx, admin, "scratch", "tmp/a"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("tmp/a outlived its rule: %v", err)
	}
	if _, err := o.Head(ctx, admin, "scratch", "keep/b"); err != nil {
		t.Fatalf("keep/b, outside the rule's prefix: %v", err)
	}
	if ups, _ := o.ListUploads(ctx, admin, "scratch", ""); len(ups) != 0 {
		t.Fatalf("the abandoned upload %s is still there", u.ID)
	}
	if _, err := o.HeadVersion(ctx, admin, "archive", "study", v1.VersionID); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("the oldest version outlived its rule: %v", err)
	}
	if _, err := o.HeadVersion(ctx, admin, "archive", "study", v2.VersionID); err != nil {
		t.Fatalf("the newest older version, kept by the rule: %v", err)
	}
	if got, err := o.HeadVersion(ctx, admin, "archive", "dump", locked.VersionID); err != nil || got.Retention == nil {
		t.Fatalf("the locked version: %v", err)
	}
	vs, _, _ := o.ListVersions(ctx, admin, "archive", "lonely", "", "", 10)
	if len(vs) != 0 {
		t.Fatalf("the lone delete marker is still there: %+v", vs)
	}
	if st.Removed != 3 { // tmp/a, the upload, study v1
		t.Fatalf("removed %d, want 3", st.Removed)
	}
}
