package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

// An upload in progress belongs to its bucket, not to the bucket's name:
// deleting the bucket aborts it (its parts' shards go and its quota is
// released), and a bucket of the same name created later, in another
// project, neither sees it nor can complete it into itself.
func TestUploadsDieWithTheirBucket(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pa, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "oncology"})
	pb, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "billing"})
	o := ns[0].objects
	if _, err := o.CreateBucket(ctx, admin, pa.ID, "scans"); err != nil {
		t.Fatal(err)
	}
	u, err := o.CreateUpload(ctx, admin, "scans", "tumour.dcm", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := randBytes(6 << 20)
	etag, err := o.UploadPart(ctx, admin, "scans", "tumour.dcm", u.ID, 1, int64(len(part)), bytes.NewReader(part), storage.PartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := o.ListParts(ctx, admin, "scans", "tumour.dcm", u.ID)
	dataID := parts[0].Segment.DataID
	if q, _ := ns[0].id.GetQuota(admin, pa.ID); q.Usage.ObjectGiB != 1 || q.Usage.Objects != 2 {
		t.Fatalf("an upload with a part in progress charges %d GiB and %d objects, want 1 and 2", q.Usage.ObjectGiB, q.Usage.Objects)
	}
	if err := o.DeleteBucket(ctx, admin, "scans"); err != nil {
		t.Fatalf("delete a bucket with an upload in progress: %v", err)
	}
	if n := countShards(ns, dataID); n != 0 {
		t.Fatalf("%d shards of the aborted upload's part remain", n)
	}
	if q, _ := ns[0].id.GetQuota(admin, pa.ID); q.Usage.ObjectGiB != 0 || q.Usage.Objects != 0 {
		t.Fatalf("after the bucket went, its project still uses %d GiB and %d objects", q.Usage.ObjectGiB, q.Usage.Objects)
	}
	// The name again, in another project.
	if _, err := o.CreateBucket(ctx, admin, pb.ID, "scans"); err != nil {
		t.Fatal(err)
	}
	if ups, err := o.ListUploads(ctx, admin, "scans", ""); err != nil || len(ups) != 0 {
		t.Fatalf("the new bucket lists %d uploads (%v)", len(ups), err)
	}
	_, err = o.CompleteUpload(ctx, admin, "scans", "tumour.dcm", u.ID, []storage.CompletePart{{Number: 1, ETag: etag}}, storage.CompleteOptions{})
	if consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("completing the old bucket's upload into the new one: %v", err)
	}
	if _, err := o.Head(ctx, admin, "scans", "tumour.dcm"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("the old upload became an object of the new bucket: %v", err)
	}
}

// A completion racing a re-upload of one of its parts commits an object
// made of the parts as they are when it applies, never of a part whose
// shards the re-upload deletes.
func TestCompleteRacingPartReupload(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "cardiology"})
	lc := &lossy{Node: ns[1].node}
	objs := storage.NewObjects(lc, identity.NewService(lc, identity.DefaultConfig()), ns[1].shards, slog.Default())
	if _, err := objs.CreateBucket(ctx, admin, pr.ID, "echo"); err != nil {
		t.Fatal(err)
	}
	u, err := objs.CreateUpload(ctx, admin, "echo", "study", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := randBytes(5<<20), randBytes(1<<20+7)
	var list []storage.CompletePart
	for i, p := range [][]byte{p1, p2} {
		etag, err := objs.UploadPart(ctx, admin, "echo", "study", u.ID, i+1, int64(len(p)), bytes.NewReader(p), storage.PartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, storage.CompletePart{Number: i + 1, ETag: etag})
	}
	parts, _ := objs.ListParts(ctx, admin, "echo", "study", u.ID)
	first := parts[0].Segment.DataID
	// Between the completion's read of the parts and its commit, another
	// client uploads part 1 again (the same bytes, so the same ETag): its
	// earlier copy's shards are deleted.
	lc.hook = func() {
		if _, err := ns[0].objects.UploadPart(ctx, admin, "echo", "study", u.ID, 1, int64(len(p1)), bytes.NewReader(p1), storage.PartOptions{}); err != nil {
			t.Errorf("re-upload: %v", err)
		}
		testutil.WaitFor(t, 10*time.Second, "the first copy of part 1 deleted", func() error {
			if n := countShards(ns, first); n > 0 {
				return fmt.Errorf("%d shards left", n)
			}
			return nil
		})
	}
	lc.arm("", identity.MsgAudited)
	if _, err := objs.CompleteUpload(ctx, admin, "echo", "study", u.ID, list, storage.CompleteOptions{}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	var out bytes.Buffer
	if _, err := ns[2].objects.Get(ctx, admin, "echo", "study", 0, -1, &out); err != nil {
		t.Fatalf("the completed object does not read: %v", err)
	}
	if !bytes.Equal(out.Bytes(), append(append([]byte{}, p1...), p2...)) {
		t.Fatal("the completed object's bytes differ")
	}
}
