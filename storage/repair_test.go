package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

func repairFixture(t *testing.T) ([]*objNode, *identity.Principal) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "ward"})
	if _, err := ns[0].objects.CreateBucket(ctx, admin, pr.ID, "records"); err != nil {
		t.Fatal(err)
	}
	return ns, admin
}

// shardFiles lists the shard files of a data ID on one node's disks.
func shardFiles(n *objNode, dataID string) []string {
	var out []string
	for _, dir := range n.dirs {
		_ = filepath.WalkDir(filepath.Join(dir, "shards"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), dataID+".") {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

func checkIntact(t *testing.T, ns []*objNode, admin *identity.Principal, key string, data []byte) {
	t.Helper()
	var out bytes.Buffer
	if _, err := ns[1].objects.Get(context.Background(), admin, "records", key, 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("%s: read back wrong (%v)", key, err)
	}
}

func scrubAll(t *testing.T, ns []*objNode) int64 {
	var bad int64
	for _, n := range ns {
		st, err := storage.NewScrubber(n.node, n.agent, slog.Default(), time.Hour, 0).Pass(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		bad += st.Repaired
	}
	return bad
}

func leaderOf(ns []*objNode) *objNode {
	for _, n := range ns {
		if n.node.IsLeader() {
			return n
		}
	}
	return ns[0]
}

func TestScrubAndHealCorruptShard(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	data := randBytes(2<<20 + 77)
	obj, err := ns[0].objects.Put(ctx, admin, "records", "xray", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte in the middle of a shard on node2's disks.
	files := shardFiles(ns[1], obj.DataID)
	if len(files) == 0 {
		t.Fatal("node2 holds no shard")
	}
	b, _ := os.ReadFile(files[0])
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(files[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	checkIntact(t, ns, admin, "xray", data) // reconstructed on the fly

	if bad := scrubAll(t, ns); bad != 1 {
		t.Fatalf("scrub found %d bad shards, want 1", bad)
	}
	if d, _ := ns[2].objects.Degraded(ctx); d != 1 {
		t.Fatalf("%d degraded segments after the scrub, want 1", d)
	}
	l := leaderOf(ns)
	st, err := storage.NewHealer(l.objects, time.Hour, time.Minute).Pass(ctx)
	if err != nil || st.Repaired != 1 || st.Degraded != 0 {
		t.Fatalf("heal: %+v %v", st, err)
	}
	if d, _ := ns[0].objects.Degraded(ctx); d != 0 {
		t.Fatalf("%d degraded segments after healing", d)
	}
	if bad := scrubAll(t, ns); bad != 0 {
		t.Fatalf("%d bad shards after healing", bad)
	}
	checkIntact(t, ns, admin, "xray", data)
}

// A read that meets a missing or a corrupt shard still returns the right
// bytes and queues the shard: read repair confirms it where it lies, marks it
// missing (deleting a corrupt copy), and the healer rebuilds it. No scrubber
// runs here.
func TestReadRepairQueuesBadShards(t *testing.T) {
	ns, admin := repairFixture(t)
	reader := ns[0]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reader.objects.RunReadRepair(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, damage := range []string{"missing", "corrupt"} {
		key := "scan-" + damage
		data := randBytes(3<<20 + 5)
		obj, err := reader.objects.Put(ctx, admin, "records", key, int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The reader reads its own two shards, then the others in index
		// order: the lowest index on another node is read for sure.
		victim := slices.IndexFunc(obj.Shards, func(l storage.ShardLoc) bool { return l.Node != reader.node.Name() })
		holder := ns[slices.IndexFunc(ns, func(n *objNode) bool { return n.node.Name() == obj.Shards[victim].Node })]
		var path string
		for _, f := range shardFiles(holder, obj.DataID) {
			if strings.HasSuffix(f, fmt.Sprintf(".%d", victim)) {
				path = f
			}
		}
		if damage == "missing" {
			err = os.Remove(path)
		} else {
			b, _ := os.ReadFile(path)
			b[len(b)/3] ^= 0x04
			err = os.WriteFile(path, b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := reader.objects.Get(ctx, admin, "records", key, 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("%s shard: read back wrong (%v)", damage, err)
		}
		testutil.WaitFor(t, 10*time.Second, damage+" shard marked for repair", func() error {
			if d, _ := reader.objects.Degraded(ctx); d != 1 {
				return fmt.Errorf("%d degraded segments", d)
			}
			return nil
		})
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s shard: the bad copy is still on disk (%v)", damage, err)
		}
		st, err := storage.NewHealer(leaderOf(ns).objects, time.Hour, time.Minute).Pass(ctx)
		if err != nil || st.Repaired != 1 || st.Degraded != 0 {
			t.Fatalf("heal: %+v %v", st, err)
		}
		if bad := scrubAll(t, ns); bad != 0 {
			t.Fatalf("%d bad shards after healing", bad)
		}
		checkIntact(t, ns, admin, key, data)
	}

	// A mark that names the disk a shard was on is void once the shard has
	// moved: read repair never undoes a heal.
	data := randBytes(100_000)
	obj, err := reader.objects.Put(ctx, admin, "records", "moved", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, disk := range []string{"some-other-disk", obj.Shards[0].Disk} {
		cmd := map[string]any{"object_id": obj.ID, "data_id": obj.DataID, "indexes": []int{0}, "disks": []string{disk}}
		if _, err := reader.node.Apply(ctx, storage.MsgMarkShards, cmd, nil); err != nil {
			t.Fatal(err)
		}
		want := int64(0)
		if disk == obj.Shards[0].Disk {
			want = 1
		}
		if d, _ := reader.objects.Degraded(ctx); d != want {
			t.Fatalf("mark for disk %s: %d degraded segments, want %d", disk, d, want)
		}
	}
}

func TestScrubAndHealWipedDisk(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	objects := map[string][]byte{}
	for i := range 5 {
		data := randBytes(300_000 + i)
		key := fmt.Sprintf("chart-%d", i)
		if _, err := ns[0].objects.Put(ctx, admin, "records", key, int64(len(data)), bytes.NewReader(data), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		objects[key] = data
	}
	for i := range 10 { // whole copies, one on each node
		data := randBytes(40_000 + i)
		key := fmt.Sprintf("note-%d", i)
		if _, err := ns[0].objects.Put(ctx, admin, "records", key, int64(len(data)), bytes.NewReader(data), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		objects[key] = data
	}
	// Wipe one of node3's disks: everything on it is gone.
	wiped := filepath.Join(ns[2].dirs[0], "shards")
	if err := os.RemoveAll(wiped); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll(wiped, 0o700)
	for k, v := range objects {
		checkIntact(t, ns, admin, k, v)
	}
	lost := scrubAll(t, ns)
	if lost == 0 {
		t.Fatal("the scrubber did not notice the wiped disk")
	}
	st, err := storage.NewHealer(leaderOf(ns).objects, time.Hour, time.Minute).Pass(ctx)
	if err != nil || st.Repaired != lost || st.Degraded != 0 {
		t.Fatalf("heal after losing %d shards: %+v %v", lost, st, err)
	}
	if bad := scrubAll(t, ns); bad != 0 {
		t.Fatalf("%d bad shards after healing", bad)
	}
	for k, v := range objects {
		checkIntact(t, ns, admin, k, v)
	}
	// A rebuilt copy went to node3 again, which had lost its own: each
	// small object is still one copy on each node.
	for i := range 10 {
		obj, err := ns[0].objects.Head(ctx, admin, "records", fmt.Sprintf("note-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		nodes := map[string]bool{}
		for _, s := range obj.Shards {
			nodes[s.Node] = true
		}
		if obj.Layout.String() != "1+2" || len(nodes) != 3 {
			t.Fatalf("note-%d after healing: layout %s, copies %+v", i, obj.Layout, obj.Shards)
		}
	}
}

// Draining a disk moves every shard off it; until then it cannot be removed,
// and its progress is shown. The objects read back intact throughout.
func TestDrainMovesShardsBeforeRemoval(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	svc := storage.NewService(ns[0].node, ns[0].id)
	objects := map[string][]byte{}
	var victim string
	for i := range 6 {
		data := randBytes(200_000 + i)
		key := fmt.Sprintf("scan-%d", i)
		obj, err := ns[0].objects.Put(ctx, admin, "records", key, int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		objects[key] = data
		for _, loc := range obj.Shards {
			if loc.Node == "node2" {
				victim = loc.Disk
			}
		}
	}
	if victim == "" {
		t.Fatal("no shard on node2's disks")
	}
	// 4+2 over three nodes, at most two shards a node: every object has
	// shards on node2 (a node drain says so), each counted once though on
	// two of its disks.
	if n, none := storage.ObjectsOn(ns[0].node.Store().ReadTxn(), "node2"), storage.ObjectsOn(ns[0].node.Store().ReadTxn(), "node9"); n != len(objects) || none != 0 {
		t.Fatalf("objects with shards on node2: %d of %d; on a node with no disks: %d", n, len(objects), none)
	}
	// A third disk on node2, added after the objects were written 4+2 over
	// six disks: a shard can leave one of node2's disks for it and still
	// respect at most two shards per node.
	spare, err := svc.AddDisk(ctx, admin, "node2", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the spare disk to be healthy", func() error {
		d, err := svc.GetDisk(admin, spare.ID)
		if err != nil || d.Health != storage.HealthOK || d.FreeBytes == 0 {
			return fmt.Errorf("spare disk: %+v %v", d, err)
		}
		return nil
	})
	d, err := svc.SetDiskState(ctx, admin, victim, storage.DiskDraining, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ = svc.GetDisk(admin, victim); d.Remaining == 0 {
		t.Fatalf("draining disk %s shows nothing remaining", victim)
	}
	if err := svc.RemoveDisk(ctx, admin, victim, 0); consensus.ErrorCode(err) != consensus.CodeConflict || !strings.Contains(err.Error(), "drain") {
		t.Fatalf("removing a disk that still holds shards: %v", err)
	}

	st, err := storage.NewHealer(leaderOf(ns).objects, time.Hour, time.Minute).Pass(ctx)
	if err != nil || st.Repaired == 0 || st.Degraded != 0 {
		t.Fatalf("heal pass off the draining disk: %+v %v", st, err)
	}
	if d, _ = svc.GetDisk(admin, victim); d.Remaining != 0 {
		t.Fatalf("%d objects still on the drained disk after the heal pass", d.Remaining)
	}
	for k, v := range objects {
		checkIntact(t, ns, admin, k, v)
	}
	if err := svc.RemoveDisk(ctx, admin, victim, 0); err != nil {
		t.Fatalf("removing the drained disk: %v", err)
	}
	for k, v := range objects {
		checkIntact(t, ns, admin, k, v)
	}
}

// A multipart upload whose steps go through different nodes, each right after
// the previous one was acknowledged elsewhere, as behind a load balancer.
func TestMultipartAcrossNodes(t *testing.T) {
	ns, admin := repairFixture(t)
	ctx := context.Background()
	for round := range 5 {
		key := fmt.Sprintf("study-%d", round)
		u, err := ns[round%3].objects.CreateUpload(ctx, admin, "records", key, storage.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var parts []storage.CompletePart
		var whole []byte
		for n := 1; n <= 2; n++ {
			data := randBytes(5<<20 + n) // S3's minimum part size, but for the last
			if n == 2 {
				data = randBytes(1000)
			}
			etag, err := ns[(round+n)%3].objects.UploadPart(ctx, admin, "records", key, u.ID, n, int64(len(data)), bytes.NewReader(data), storage.PartOptions{})
			if err != nil {
				t.Fatalf("round %d, part %d on node%d: %v", round, n, (round+n)%3+1, err)
			}
			parts = append(parts, storage.CompletePart{Number: n, ETag: etag})
			whole = append(whole, data...)
		}
		if _, err := ns[(round+1)%3].objects.CompleteUpload(ctx, admin, "records", key, u.ID, parts, storage.CompleteOptions{}); err != nil {
			t.Fatalf("round %d: complete: %v", round, err)
		}
		checkIntact(t, ns, admin, key, whole)
	}
}
