package storage

import (
	"context"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/storage/erasure"
)

// Commands written before versions, object counts and bucket identities
// (no format) apply as they did then: every node replays the log after its
// own snapshot on restart, and must reach the state the others' snapshots
// hold. Today's commands count records and parts.
func TestOldCommandsApplyAsTheyDid(t *testing.T) {
	f := newStateFixture(t, identity.ProjectSpec{Name: "upgrade"})
	n, id, admin, pr := f.n, f.id, f.admin, f.pr
	ctx := context.Background()
	apply := func(mt consensus.MessageType, cmd any) {
		t.Helper()
		if _, err := n.Apply(ctx, mt, cmd, nil); err != nil {
			t.Fatal(err)
		}
	}
	usage := func() identity.Resources {
		q, _ := id.GetQuota(admin, pr.ID)
		return q.Usage
	}
	bucket := func() Bucket { return *consensus.First[Bucket](n.Store().ReadTxn(), tBuckets, "id", "old") }
	apply(MsgCreateBucket, Bucket{ID: "old", ProjectID: pr.ID})

	// An old PUT: its bytes are charged (as then), its record is not.
	apply(MsgPutObject, putObjectCmd{Object: Object{ID: "old/a", Bucket: "old", Key: "a", Size: 10, DataID: "d1"}})
	if b, u := bucket(), usage(); b.Bytes != 10 || b.Objects != 1 || b.Items != 0 || u.Objects != 0 || u.ObjectGiB != 1 {
		t.Fatalf("an old PUT: bucket %+v, usage %+v", b, u)
	}
	// An old upload and part: not charged; a completion today releases
	// nothing of them and charges the object.
	apply(MsgCreateUpload, Upload{ID: "u1", Bucket: "old", Key: "big"})
	apply(MsgPutPart, Part{ID: partID("u1", 1), UploadID: "u1", Number: 1, Segment: Segment{Size: 7, ETag: "e1", DataID: "d2"}})
	if b, u := bucket(), usage(); b.Bytes != 10 || b.Items != 0 || u.Objects != 0 {
		t.Fatalf("an old upload: bucket %+v, usage %+v", b, u)
	}
	now := completeUploadCmd{UploadID: "u1", Parts: []CompletePart{{Number: 1, ETag: "e1"}},
		Object: Object{ID: "old/big", Bucket: "old", Key: "big"}, target: target{Format: cmdFormat}}
	apply(MsgCompleteUpload, now)
	if b, u := bucket(), usage(); b.Bytes != 17 || b.Objects != 2 || b.Items != 1 || u.Objects != 1 {
		t.Fatalf("completing an old upload: bucket %+v, usage %+v", b, u)
	}
	// An old bucket delete leaves uploads alone, as it did.
	apply(MsgCreateBucket, Bucket{ID: "gone", ProjectID: pr.ID})
	apply(MsgCreateUpload, Upload{ID: "u2", Bucket: "gone", Key: "k"})
	apply(MsgDeleteBucket, deleteBucketCmd{Name: "gone"})
	if consensus.First[Upload](n.Store().ReadTxn(), tUploads, "id", "u2") == nil {
		t.Fatal("an old bucket delete removed an upload")
	}
}

// Locks are judged by the lower median of the nodes' last reported clocks
// when the command's own time is later: one node's clock set ahead does not
// end a lock.
func TestLockClock(t *testing.T) {
	c := consensustest.Start(t, 1, func(reg *consensus.Registry) {
		identity.Register(reg)
		Register(reg)
	})
	n := c.Leader()
	ctx := context.Background()
	base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for i, node := range []string{"a", "b", "c"} {
		d := Disk{ID: node + "-d", Node: node, Path: "/x"}
		if _, err := n.Apply(ctx, MsgAddDisk, d, nil); err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Minute) // a: 12:00, b: 12:01, c: 12:02
		if i == 2 {
			at = base.AddDate(1, 0, 0) // c's clock is a year ahead
		}
		if _, err := n.Apply(ctx, MsgReportDisks, reportDisksCmd{Node: node, At: at, Reports: []diskReport{{ID: d.ID, Health: HealthOK}}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	txn := n.Store().ReadTxn()
	tx := &consensus.Tx{Txn: txn}
	if got := lockClock(tx, base.AddDate(1, 0, 0)); !got.Equal(base.Add(time.Minute)) {
		t.Fatalf("a command a year ahead is judged at %v, want the median report %v", got, base.Add(time.Minute))
	}
	if got := lockClock(tx, base); !got.Equal(base) {
		t.Fatalf("a command before the reports is judged at %v", got)
	}
}

// A segment survives a node's loss only if k shards stay off the node that
// holds the most; one all on a single node never does, however many.
func TestSurvivesAnyNode(t *testing.T) {
	l := erasure.Layout{Data: 2, Parity: 1}
	for _, c := range []struct {
		nodes []string
		want  bool
	}{
		{[]string{"a", "b", "c"}, true},
		{[]string{"a", "a", "a"}, false},
		{[]string{"a", "a", "b"}, false},
		{[]string{"a", "b", ""}, false},
	} {
		if got := survivesAnyNode(l, c.nodes); got != c.want {
			t.Errorf("%v: %v, want %v", c.nodes, got, c.want)
		}
	}
}
