package storage_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// Everything a project keeps counts against its quotas: parts of uploads
// in progress (bytes and records) as they land, zero-byte objects and
// delete markers (records), and user metadata is held to S3's 2 KiB, so
// no member can fill the pool or every node's memory past the quota.
func TestEverythingStoredIsCharged(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "lab"})
	o := ns[0].objects
	if _, err := o.CreateBucket(ctx, admin, pr.ID, "results"); err != nil {
		t.Fatal(err)
	}
	usage := func() identity.Resources {
		q, err := ns[0].id.GetQuota(admin, pr.ID)
		if err != nil {
			t.Fatal(err)
		}
		return q.Usage
	}
	setLimits := func(objects, gib int64) {
		l := identity.DefaultQuota
		l.Objects, l.ObjectGiB = objects, gib
		if _, err := ns[0].id.SetQuota(ctx, admin, pr.ID, l, 0); err != nil {
			t.Fatal(err)
		}
	}

	// Zero-byte objects are objects.
	setLimits(3, identity.Unlimited)
	for _, k := range []string{"a", "b", "c"} {
		if _, err := o.Put(ctx, admin, "results", k, 0, bytes.NewReader(nil), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.Put(ctx, admin, "results", "d", 0, bytes.NewReader(nil), storage.PutOptions{}); consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("a fourth object past a quota of three: %v", err)
	}
	if u := usage(); u.Objects != 3 {
		t.Fatalf("three empty objects count %d", u.Objects)
	}
	// An overwrite replaces; a delete releases.
	if _, err := o.Put(ctx, admin, "results", "a", 1, bytes.NewReader([]byte("x")), storage.PutOptions{}); err != nil {
		t.Fatalf("overwrite at the quota: %v", err)
	}
	if err := o.Delete(ctx, admin, "results", "c"); err != nil {
		t.Fatal(err)
	}
	if u := usage(); u.Objects != 2 {
		t.Fatalf("after a delete: %d objects", u.Objects)
	}

	// An upload and its parts are records too, and the part's bytes count
	// as they land.
	setLimits(identity.Unlimited, identity.Unlimited)
	u, err := o.CreateUpload(ctx, admin, "results", "genome", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := randBytes(5 << 20)
	if _, err := o.UploadPart(ctx, admin, "results", "genome", u.ID, 1, int64(len(part)), bytes.NewReader(part), storage.PartOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := usage(); got.Objects != 4 || got.ObjectGiB != 1 {
		t.Fatalf("an upload with one part: %d objects, %d GiB; want 4 and 1", got.Objects, got.ObjectGiB)
	}
	// With no GiB left, a part is refused and leaves no shard behind.
	setLimits(identity.Unlimited, 0)
	_, err = o.UploadPart(ctx, admin, "results", "genome", u.ID, 2, int64(len(part)), bytes.NewReader(part), storage.PartOptions{})
	if consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("a part past the GiB quota: %v", err)
	}
	parts, _ := o.ListParts(ctx, admin, "results", "genome", u.ID)
	if len(parts) != 1 {
		t.Fatalf("%d parts after a refused one", len(parts))
	}
	if err := o.AbortUpload(ctx, admin, "results", "genome", u.ID); err != nil {
		t.Fatal(err)
	}
	if got := usage(); got.Objects != 2 || got.ObjectGiB != 1 {
		// "a" (1 byte) and "b": one GiB, rounded up, and two objects.
		t.Fatalf("after the abort: %d objects, %d GiB", got.Objects, got.ObjectGiB)
	}

	// User metadata is held to S3's 2 KiB.
	setLimits(identity.Unlimited, identity.Unlimited)
	meta := map[string]string{"note": strings.Repeat("x", 2048-len("note"))}
	if _, err := o.Put(ctx, admin, "results", "max-meta", 0, bytes.NewReader(nil), storage.PutOptions{Meta: meta}); err != nil {
		t.Fatalf("2 KiB of metadata: %v", err)
	}
	meta["more"] = "y"
	_, err = o.Put(ctx, admin, "results", "too-much-meta", 0, bytes.NewReader(nil), storage.PutOptions{Meta: meta})
	if consensus.ErrorReason(err) != storage.ReasonMetadataTooLarge {
		t.Fatalf("metadata past 2 KiB: %v", err)
	}
	if _, err := o.CreateUpload(ctx, admin, "results", "too-much-meta", storage.PutOptions{Meta: meta}); consensus.ErrorReason(err) != storage.ReasonMetadataTooLarge {
		t.Fatalf("an upload with metadata past 2 KiB: %v", err)
	}
}

// S3 keys are UTF-8. A key that is not is refused (the replicated state's
// JSON would replace its bytes, so two such keys would become one, and the
// writer would not find its own object again).
func TestKeysMustBeUTF8(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "archive"})
	o := ns[0].objects
	if _, err := o.CreateBucket(ctx, admin, pr.ID, "letters"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"caf\xe9", "caf\xe8", "bad\xff\xfe", "nul\x00byte"} {
		if _, err := o.Put(ctx, admin, "letters", key, 3, bytes.NewReader([]byte("abc")), storage.PutOptions{}); consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Fatalf("PUT of key %q: %v", key, err)
		}
		if _, err := o.CreateUpload(ctx, admin, "letters", key, storage.PutOptions{}); consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Fatalf("upload of key %q: %v", key, err)
		}
	}
	if _, err := o.Put(ctx, admin, "letters", "caf\u00e9", 3, bytes.NewReader([]byte("abc")), storage.PutOptions{}); err != nil {
		t.Fatalf("a UTF-8 key: %v", err)
	}
	objs, _, _ := o.List(ctx, admin, "letters", "", "", 10)
	if len(objs) != 1 || objs[0].Key != "caf\u00e9" {
		t.Fatalf("listing: %+v", objs)
	}
	if _, err := o.Put(ctx, admin, "letters", "bad", 3, bytes.NewReader([]byte("abc")), storage.PutOptions{Meta: map[string]string{"x": "\xff"}}); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("metadata that is not UTF-8: %v", err)
	}
	// Nor do deletes, tags or locks of such a key reach the one JSON would
	// make of it (caf\ufffd).
	if _, err := o.Put(ctx, admin, "letters", "caf\ufffd", 1, bytes.NewReader([]byte("r")), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.DeleteObject(ctx, admin, "letters", "caf\xff", storage.DeleteOptions{}); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("delete of a key that is not UTF-8: %v", err)
	}
	if _, err := o.SetObjectTags(ctx, admin, "letters", "caf\xff", "", map[string]string{"a": "b"}); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("tags on a key that is not UTF-8: %v", err)
	}
	if got, err := o.Head(ctx, admin, "letters", "caf\ufffd"); err != nil || len(got.Tags) != 0 {
		t.Fatalf("the U+FFFD key after refusals: %+v %v", got, err)
	}
}
