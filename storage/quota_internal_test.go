package storage

import (
	"context"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// TestObjectQuotaRoundsTheProjectTotal drives the object quota through the
// replicated state machine, byte by byte at a GiB boundary, with object
// versions that carry sizes but no shards: the quota is a property of the
// state alone, and real GiB-sized bodies would only make the test slow. The
// project's usage is its bytes over all its buckets, rounded up to whole GiB
// once, not per object or per bucket.
func TestObjectQuotaRoundsTheProjectTotal(t *testing.T) {
	one := identity.DefaultQuota
	one.ObjectGiB = 1
	f := newStateFixture(t, identity.ProjectSpec{Name: "radiology", Quota: &one})
	n, id, admin, pr := f.n, f.id, f.admin, f.pr
	ctx := context.Background()
	for _, b := range []string{"scans", "reports"} {
		if _, err := n.Apply(ctx, MsgCreateBucket, Bucket{ID: b, ProjectID: pr.ID}, nil); err != nil {
			t.Fatal(err)
		}
	}

	put := func(bucket, key string, size int64) error {
		// A data ID: these stand for erasure-coded objects, not inline ones.
		_, err := n.Apply(ctx, MsgPutObject, putObjectCmd{Object: Object{ID: bucket + "/" + key, Bucket: bucket, Key: key, Size: size, DataID: "d-" + key}}, nil)
		return err
	}
	del := func(bucket, key string) {
		t.Helper()
		if _, err := n.Apply(ctx, MsgDeleteObject, deleteObjectCmd{ID: bucket + "/" + key}, nil); err != nil {
			t.Fatal(err)
		}
	}
	state := func(want int64, wantBytes ...int64) {
		t.Helper()
		q, err := id.GetQuota(admin, pr.ID)
		if err != nil {
			t.Fatal(err)
		}
		if q.Usage.ObjectGiB != want {
			t.Fatalf("object usage %d GiB, want %d", q.Usage.ObjectGiB, want)
		}
		for i, b := range []string{"scans", "reports"} {
			got := consensus.First[Bucket](n.Store().ReadTxn(), tBuckets, "id", b)
			if got.Bytes != wantBytes[i] {
				t.Fatalf("bucket %s holds %d bytes, want %d", b, got.Bytes, wantBytes[i])
			}
		}
	}
	refused := func(err error) {
		t.Helper()
		if consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
			t.Fatalf("want QuotaExceeded, got %v", err)
		}
	}
	const gib = int64(1) << 30

	state(0, 0, 0)
	// One byte is a whole GiB of usage, and the GiB fills to its last byte.
	if err := put("scans", "a", 1); err != nil {
		t.Fatal(err)
	}
	state(1, 1, 0)
	if err := put("scans", "b", gib-11); err != nil {
		t.Fatal(err)
	}
	state(1, gib-10, 0)
	if err := put("reports", "c", 10); err != nil {
		t.Fatal(err)
	}
	state(1, gib-10, 10)
	// One byte more, in either bucket, would be a second GiB: refused, and
	// nothing changes.
	refused(put("reports", "d", 1))
	refused(put("scans", "d", 1))
	state(1, gib-10, 10)
	if consensus.First[Object](n.Store().ReadTxn(), tObjects, "id", "reports/d") != nil {
		t.Fatal("a refused object is visible")
	}
	// Overwriting counts the difference: one byte smaller frees room for
	// exactly one byte; growing an object past the limit is refused.
	refused(put("scans", "b", gib-10))
	if err := put("scans", "b", gib-12); err != nil {
		t.Fatal(err)
	}
	state(1, gib-11, 10)
	if err := put("reports", "d", 1); err != nil {
		t.Fatal(err)
	}
	state(1, gib-11, 11)

	// With the limit lowered under the usage, growth is refused even within
	// the GiB already charged, and deletes still work.
	zero := identity.DefaultQuota
	zero.ObjectGiB = 0
	if _, err := id.SetQuota(ctx, admin, pr.ID, zero, 0); err != nil {
		t.Fatal(err)
	}
	del("reports", "d")
	state(1, gib-11, 10)
	refused(put("reports", "d", 1))
	// Emptying the project returns the whole GiB only with its last byte.
	del("scans", "b")
	state(1, 1, 10)
	del("scans", "a")
	del("reports", "c")
	state(0, 0, 0)
}
