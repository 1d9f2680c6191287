package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

const grace = time.Hour

// age makes files look written before the grace period, so that only their
// references can keep them.
func age(t *testing.T, files ...string) {
	t.Helper()
	old := time.Now().Add(-2 * grace)
	for _, f := range files {
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

// ageAll ages every shard file of a data ID on every node.
func ageAll(t *testing.T, ns []*objNode, dataID string) {
	t.Helper()
	for _, n := range ns {
		age(t, shardFiles(n, dataID)...)
	}
}

func sweepAll(t *testing.T, ns []*objNode) storage.GCStats {
	t.Helper()
	var sum storage.GCStats
	for _, n := range ns {
		st, err := storage.NewSweeper(n.node, n.agent, slog.Default(), grace).Pass(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sum.Checked += st.Checked
		sum.Removed += st.Removed
		sum.FreedBytes += st.FreedBytes
	}
	return sum
}

// strayShard writes a shard file that no object references to a node's
// disk, as a crash before the metadata commit leaves, and returns its path.
func strayShard(t *testing.T, n *objNode, dir, key string, size int) string {
	t.Helper()
	w, err := n.agent.Disk(storage.DiskID(n.node.Name(), dir)).Create(key)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(randBytes(size))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	dataID, _, _ := strings.Cut(key, ".")
	files := shardFiles(n, dataID)
	if len(files) != 1 {
		t.Fatalf("%s: %d files", key, len(files))
	}
	return files[0]
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// noQuorum is a node that cannot serve a linearizable read.
type noQuorum struct{ *consensus.Node }

func (noQuorum) ConsistentRead(context.Context) error { return errors.New("no leader") }

func TestSweepRemovesOldOrphansOnly(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	data := randBytes(300_000)
	obj, err := ns[0].objects.Put(ctx, admin, "records", "chart", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ageAll(t, ns, obj.DataID)
	n := ns[1]
	old := strayShard(t, n, n.dirs[0], "0123456789abcdef01234567.3", 10_000)
	young := strayShard(t, n, n.dirs[1], "fedcba9876543210fedcba98.1", 20_000)
	age(t, old)

	// Without a linearizable view of the state, nothing is deleted.
	if _, err := storage.NewSweeper(noQuorum{n.node}, n.agent, slog.Default(), grace).Pass(ctx); err == nil {
		t.Fatal("a sweep without the state succeeded")
	}
	if !exists(old) {
		t.Fatal("the stray shard was deleted without a linearizable view of the state")
	}

	st := sweepAll(t, ns)
	if st.Removed != 1 || st.FreedBytes != 10_000 || st.Checked != 6+2 {
		t.Fatalf("sweep: %+v, want 1 of 8 files removed, 10000 bytes", st)
	}
	if exists(old) {
		t.Fatal("the old stray shard is still there")
	}
	if !exists(young) {
		t.Fatal("a stray shard younger than the grace period was deleted")
	}
	if c := countShards(ns, obj.DataID); c != 6 {
		t.Fatalf("%d shards of the object left, want 6", c)
	}
	checkIntact(t, ns, admin, "chart", data)
	if st := sweepAll(t, ns); st.Removed != 0 {
		t.Fatalf("a second sweep removed %d files", st.Removed)
	}
}

// One directory offered twice (through a symlink, a bind mount): walked as
// the second disk, its live shards are not placed there by the state, and
// a sweep would take them for orphans. The second path carries the first
// disk's identity marker, so it is never opened; the sweeps go on deleting
// nothing that lives.
func TestOneDirectoryOfferedTwiceIsRefused(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	data := randBytes(300_000)
	obj, err := ns[0].objects.Put(ctx, admin, "records", "chart", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ageAll(t, ns, obj.DataID)
	n := ns[2]
	link := filepath.Join(filepath.Dir(n.dirs[0]), "same-disk")
	if err := os.Symlink(n.dirs[0], link); err != nil {
		t.Fatal(err)
	}
	if err := n.agent.EnsureDisks(ctx, []string{link}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the second path refused", func() error {
		if h, e := diskState(t, n, admin, link); h != storage.HealthFailed || !strings.Contains(e, "holds disk "+storage.DiskID(n.node.Name(), n.dirs[0])) {
			return fmt.Errorf("health %s (%s)", h, e)
		}
		return nil
	})
	if n.agent.Disk(storage.DiskID(n.node.Name(), link)) != nil {
		t.Fatal("the second path to one disk is open")
	}
	if st, err := storage.NewSweeper(n.node, n.agent, slog.Default(), grace).Pass(ctx); err != nil || st.Removed != 0 {
		t.Fatalf("sweep: removed %d (%v)", st.Removed, err)
	}
	if c := countShards(ns, obj.DataID); c != 6 {
		t.Fatalf("%d shards of the object left, want 6", c)
	}
	checkIntact(t, ns, admin, "chart", data)
}

func TestSweepRemovesCopyRebuiltElsewhere(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	data := randBytes(2<<20 + 5)
	obj, err := ns[0].objects.Put(ctx, admin, "records", "scan", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := ns[0]
	idx := -1
	for i, loc := range obj.Shards {
		if loc.Node == n.node.Name() {
			idx = i
			break
		}
	}
	if idx < 0 {
		t.Fatal("node1 holds no shard")
	}
	var stalePath string // the disk the shard leaves
	for _, dir := range n.dirs {
		if storage.DiskID(n.node.Name(), dir) == obj.Shards[idx].Disk {
			stalePath = dir
		}
	}
	// The object has a shard on each of the six disks: give node1 a
	// seventh, so the healer has somewhere to move the shard to.
	extra := diskDir(t, filepath.Dir(n.dirs[0]))
	if err := n.agent.EnsureDisks(ctx, []string{extra}); err != nil {
		t.Fatal(err)
	}
	n.dirs = append(n.dirs, extra)
	svc := storage.NewService(n.node, n.id)
	testutil.WaitFor(t, 15*time.Second, "the seventh disk healthy", func() error {
		d, err := svc.GetDisk(admin, storage.DiskID(n.node.Name(), extra))
		if err != nil || d.Health != storage.HealthOK || d.FreeBytes == 0 {
			return fmt.Errorf("disk %+v %v", d, err)
		}
		return nil
	})
	// Drained, the disk no longer counts: the healer rebuilds its shard on
	// the new disk and leaves the old copy behind, as for a node that was away.
	if _, err := svc.SetDiskState(ctx, admin, obj.Shards[idx].Disk, storage.DiskDraining, 0); err != nil {
		t.Fatal(err)
	}
	if st, err := storage.NewHealer(leaderOf(ns).objects, time.Hour, time.Minute).Pass(ctx); err != nil || st.Repaired != 1 {
		t.Fatalf("heal: %+v %v", st, err)
	}
	key := fmt.Sprintf("%s.%d", obj.DataID, idx)
	var stale []string
	for _, f := range shardFiles(n, obj.DataID) {
		if strings.HasPrefix(f, stalePath+string(filepath.Separator)) && filepath.Base(f) == key {
			stale = append(stale, f)
		}
	}
	if len(stale) != 1 {
		t.Fatalf("stale copies on the drained disk: %v", stale)
	}
	if c := countShards(ns, obj.DataID); c != 7 {
		t.Fatalf("%d shard files before the sweep, want 6 and the stale copy", c)
	}
	ageAll(t, ns, obj.DataID)

	if st := sweepAll(t, ns); st.Removed != 1 {
		t.Fatalf("sweep removed %d files, want the stale copy", st.Removed)
	}
	if exists(stale[0]) {
		t.Fatal("the stale copy is still there")
	}
	if c := countShards(ns, obj.DataID); c != 6 {
		t.Fatalf("%d shard files after the sweep, want 6", c)
	}
	checkIntact(t, ns, admin, "scan", data)
	if bad := scrubAll(t, ns); bad != 0 {
		t.Fatalf("%d shards missing after the sweep", bad)
	}
}

func TestSweepKeepsUploadInProgress(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	u, err := ns[0].objects.CreateUpload(ctx, admin, "records", "study", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(400_000)
	etag, err := ns[0].objects.UploadPart(ctx, admin, "records", "study", u.ID, 1, int64(len(data)), bytes.NewReader(data), storage.PartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := ns[0].objects.ListParts(ctx, admin, "records", "study", u.ID)
	if err != nil || len(parts) != 1 {
		t.Fatalf("parts %v %v", parts, err)
	}
	dataID := parts[0].Segment.DataID
	ageAll(t, ns, dataID)

	if st := sweepAll(t, ns); st.Removed != 0 || st.Checked != 6 {
		t.Fatalf("sweep during the upload: %+v, want 6 files checked and none removed", st)
	}
	if c := countShards(ns, dataID); c != 6 {
		t.Fatalf("%d shards of the part left, want 6", c)
	}
	if _, err := ns[0].objects.CompleteUpload(ctx, admin, "records", "study", u.ID, []storage.CompletePart{{Number: 1, ETag: etag}}, storage.CompleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if st := sweepAll(t, ns); st.Removed != 0 {
		t.Fatalf("sweep after completion removed %d files", st.Removed)
	}
	checkIntact(t, ns, admin, "study", data)
}

func TestExpireAbandonedUploads(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	start := func(key string) (*storage.Upload, string) {
		u, err := ns[0].objects.CreateUpload(ctx, admin, "records", key, storage.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		data := randBytes(200_000) // past ReplicateMax: six shards
		if _, err := ns[0].objects.UploadPart(ctx, admin, "records", key, u.ID, 1, int64(len(data)), bytes.NewReader(data), storage.PartOptions{}); err != nil {
			t.Fatal(err)
		}
		parts, err := ns[0].objects.ListParts(ctx, admin, "records", key, u.ID)
		if err != nil || len(parts) != 1 {
			t.Fatalf("parts %v %v", parts, err)
		}
		return u, parts[0].Segment.DataID
	}
	old, oldData := start("abandoned")
	young, youngData := start("recent")
	if !young.Initiated.After(old.Initiated) {
		t.Fatalf("initiated %v then %v", old.Initiated, young.Initiated)
	}
	// A clock at which the expiry falls between the two uploads.
	const expiry = 7 * 24 * time.Hour
	now := old.Initiated.Add(young.Initiated.Sub(old.Initiated) / 2).Add(expiry)
	l := leaderOf(ns)
	exp := storage.NewUploadExpirer(l.objects, expiry, func() time.Time { return now })

	st, err := exp.Pass(ctx)
	if err != nil || st.Checked != 2 || st.Removed != 1 {
		t.Fatalf("expiry: %+v %v, want 2 uploads checked and 1 aborted", st, err)
	}
	ups, err := ns[1].objects.ListUploads(ctx, admin, "records", "")
	if err != nil || len(ups) != 1 || ups[0].ID != young.ID {
		t.Fatalf("uploads left: %+v %v", ups, err)
	}
	if c := countShards(ns, oldData); c != 0 {
		t.Fatalf("%d shards of the expired upload's part left", c)
	}
	if c := countShards(ns, youngData); c != 6 {
		t.Fatalf("%d shards of the young upload's part left, want 6", c)
	}
	audit, err := l.id.ListAudit(admin, identity.AuditFilter{Action: "upload.abort"})
	if err != nil || len(audit) != 1 || audit[0].UserName != "system:"+l.node.Name() ||
		audit[0].Resource != "records/abandoned" || audit[0].Result != "success" {
		t.Fatalf("audit of the expiry: %+v %v", audit, err)
	}
	if st, err := exp.Pass(ctx); err != nil || st.Removed != 0 {
		t.Fatalf("second expiry: %+v %v", st, err)
	}
}
