package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/cairnhq/cairn/storage/storagetest"
)

// objNode is a pool node as these tests name its parts.
type objNode struct {
	node    *consensus.Node
	id      *identity.Service
	agent   *storage.DiskAgent
	shards  *storage.Shards
	objects *storage.Objects
	dirs    []string
}

func principal(t *testing.T, id *identity.Service, user, pw string) *identity.Principal {
	return storagetest.Principal(t, id, user, pw)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// readyPool is three nodes with two disks each (the default layout is 4+2),
// the first admin created and all six disks healthy.
func readyPool(t *testing.T) ([]*objNode, *identity.Principal) {
	sns, admin := storagetest.Pool(t, 3, 2)
	var ns []*objNode
	for _, n := range sns {
		ns = append(ns, &objNode{node: n.Node, id: n.ID, agent: n.Agent, shards: n.Shards, objects: n.Objects, dirs: n.Dirs})
	}
	return ns, admin
}

func TestObjectsOverThePool(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, err := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "radiology"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns[1].objects.CreateBucket(ctx, admin, pr.ID, "scans"); err != nil {
		t.Fatal(err)
	}
	const stripe = 1 << 20
	for _, size := range []int{0, 1, storage.InlineMax, storage.InlineMax + 1, storage.ReplicateMax, storage.ReplicateMax + 1, stripe - 1, stripe, stripe + 1, 5*stripe + 3} {
		data := randBytes(size)
		key := fmt.Sprintf("size/%d", size)
		obj, err := ns[0].objects.Put(ctx, admin, "scans", key, int64(size), bytes.NewReader(data), storage.PutOptions{})
		if err != nil {
			t.Fatalf("put %d: %v", size, err)
		}
		// Small objects ride in their record; those up to ReplicateMax
		// are three whole copies, one on each node; the rest 4+2 shards,
		// at most two on a node.
		layout, most := "4+2", 2
		if size <= storage.ReplicateMax {
			layout, most = "1+2", 1
		}
		if inline := size <= storage.InlineMax; obj.IsInline() != inline || (!inline && obj.Layout.String() != layout) {
			t.Fatalf("%d bytes: inline %v, layout %s, want %s", size, obj.IsInline(), obj.Layout, layout)
		}
		perNode := map[string]int{}
		for _, s := range obj.Shards {
			perNode[s.Node]++
		}
		for node, c := range perNode {
			if c > most {
				t.Fatalf("%d bytes: %d shards on %s", size, c, node)
			}
		}
		for _, reader := range ns {
			var out bytes.Buffer
			if _, err := reader.objects.Get(ctx, admin, "scans", key, 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("get %d via %s: %v", size, reader.node.Name(), err)
			}
		}
		if size > 10 {
			var out bytes.Buffer
			if _, err := ns[2].objects.Get(ctx, admin, "scans", key, 5, 7, &out); err != nil || !bytes.Equal(out.Bytes(), data[5:12]) {
				t.Fatalf("ranged get %d: %v", size, err)
			}
		}
	}

	// Overwrite: the new bytes win and the old version's shards go away.
	first, _ := ns[0].objects.Head(ctx, admin, "scans", "size/1")
	if _, err := ns[1].objects.Put(ctx, admin, "scans", "size/1", 3, strings.NewReader("new"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the overwritten version's shards deleted", func() error {
		if n := countShards(ns, first.DataID); n != 0 {
			return fmt.Errorf("%d old shards left", n)
		}
		return nil
	})

	// The layout is shown, and a project admin can choose another per bucket:
	// it must fit the disks and survive a node loss.
	if l, err := ns[0].objects.DefaultLayout(); err != nil || l.String() != "4+2" {
		t.Fatalf("default layout %s %v", l, err)
	}
	if _, err := ns[0].objects.SetBucketLayout(ctx, admin, "scans", 5, 1); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("5+1 over three nodes must be refused (a node holds 2 shards): %v", err)
	}
	if _, err := ns[0].objects.SetBucketLayout(ctx, admin, "scans", 2, 2); err != nil {
		t.Fatal(err)
	}
	big := int64(storage.InlineMax + 10) // erasure-coded, not inline
	mirrored, err := ns[0].objects.Put(ctx, admin, "scans", "layout/2+2", big, bytes.NewReader(randBytes(int(big))), storage.PutOptions{})
	if err != nil || mirrored.Layout.String() != "2+2" {
		t.Fatalf("object in a 2+2 bucket: %+v %v", mirrored, err)
	}
	if _, err := ns[0].objects.SetBucketLayout(ctx, admin, "scans", 0, 0); err != nil {
		t.Fatal(err)
	}

	// Listing with a prefix and pagination.
	for i := range 12 {
		if _, err := ns[0].objects.Put(ctx, admin, "scans", fmt.Sprintf("list/%02d", i), 1, strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	after := ""
	for {
		page, more, err := ns[2].objects.List(ctx, admin, "scans", "list/", after, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page {
			keys = append(keys, o.Key)
		}
		if !more {
			break
		}
		after = page[len(page)-1].Key
	}
	if len(keys) != 12 || keys[0] != "list/00" || keys[11] != "list/11" {
		t.Fatalf("listed %v", keys)
	}

	// Content-MD5 mismatch: refused, nothing stored.
	if _, err := ns[0].objects.Put(ctx, admin, "scans", "bad-md5", 2, strings.NewReader("ab"), storage.PutOptions{MD5: make([]byte, 16)}); !errors.Is(err, storage.ErrBadDigest) {
		t.Fatalf("bad Content-MD5: %v", err)
	}
	if _, err := ns[0].objects.Head(ctx, admin, "scans", "bad-md5"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatal("an object with a bad Content-MD5 is visible")
	}
	// A body shorter than declared: refused, nothing visible, no shards left.
	if _, err := ns[0].objects.Put(ctx, admin, "scans", "short", 100, strings.NewReader("only-this"), storage.PutOptions{}); !errors.Is(err, storage.ErrIncomplete) {
		t.Fatalf("short body: %v", err)
	}

	// Another project's member cannot see the bucket; a reader cannot write.
	if _, err := ns[0].id.CreateUser(ctx, admin, identity.UserSpec{Name: "rita", Password: "radiology-4412"}); err != nil {
		t.Fatal(err)
	}
	rita := principal(t, ns[0].id, "rita", "radiology-4412")
	if _, err := ns[0].objects.Head(ctx, rita, "scans", "size/0"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("an outsider sees the bucket: %v", err)
	}
	if err := ns[0].id.SetMember(ctx, admin, pr.ID, "rita", identity.RoleReader); err != nil {
		t.Fatal(err)
	}
	rita = principal(t, ns[0].id, "rita", "radiology-4412")
	if _, err := ns[0].objects.Head(ctx, rita, "scans", "size/0"); err != nil {
		t.Fatalf("a reader cannot read: %v", err)
	}
	if _, err := ns[0].objects.Put(ctx, rita, "scans", "x", 1, strings.NewReader("x"), storage.PutOptions{}); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a reader wrote: %v", err)
	}

	// Quota: lowering the object quota to 0 GiB refuses writes and leaves no shards.
	q, _ := ns[0].id.GetQuota(admin, pr.ID)
	limits := q.Limits
	limits.ObjectGiB = 0
	if _, err := ns[0].id.SetQuota(ctx, admin, pr.ID, limits, 0); err != nil {
		t.Fatal(err)
	}
	before := countAllShards(ns)
	if _, err := ns[0].objects.Put(ctx, admin, "scans", "over-quota", 10, bytes.NewReader(randBytes(10)), storage.PutOptions{}); consensus.ErrorCode(err) != consensus.CodeQuotaExceeded {
		t.Fatalf("over quota: %v", err)
	}
	if after := countAllShards(ns); after != before {
		t.Fatalf("a refused write left %d shards", after-before)
	}

	// Delete, and a bucket must be empty to go.
	if err := ns[2].objects.DeleteBucket(ctx, admin, "scans"); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("deleting a non-empty bucket: %v", err)
	}
	if err := ns[1].objects.Delete(ctx, admin, "scans", "size/0"); err != nil {
		t.Fatal(err)
	}
	if _, err := ns[1].objects.Head(ctx, admin, "scans", "size/0"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatal("a deleted object is visible")
	}
}

// With one node of three down, reads reconstruct from the survivors and
// writes succeed degraded (4 of 6 shards).
func TestObjectsWithANodeDown(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "lab"})
	if _, err := ns[0].objects.CreateBucket(ctx, admin, pr.ID, "results"); err != nil {
		t.Fatal(err)
	}
	data := randBytes(3<<20 + 5)
	if _, err := ns[0].objects.Put(ctx, admin, "results", "before", int64(len(data)), bytes.NewReader(data), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	small := randBytes(64 << 10) // three whole copies, one on each node
	if obj, err := ns[0].objects.Put(ctx, admin, "results", "small-before", int64(len(small)), bytes.NewReader(small), storage.PutOptions{}); err != nil || obj.Layout.String() != "1+2" {
		t.Fatalf("small object: %+v %v", obj, err)
	}
	// Take down a node that is not the leader.
	var down *objNode
	for _, n := range ns {
		if !n.node.IsLeader() {
			down = n
		}
	}
	_ = down.node.Shutdown()
	var up *objNode
	for _, n := range ns {
		if n != down {
			up = n
			break
		}
	}
	var out bytes.Buffer
	if _, err := up.objects.Get(ctx, admin, "results", "before", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("read with a node down: %v", err)
	}
	obj, err := up.objects.Put(ctx, admin, "results", "during", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatalf("degraded write: %v", err)
	}
	written := 0
	for _, s := range obj.Shards {
		if s.Disk != "" {
			written++
		}
	}
	if written != 4 {
		t.Fatalf("degraded write stored %d shards, want 4", written)
	}
	out.Reset()
	if _, err := up.objects.Get(ctx, admin, "results", "during", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("read of a degraded write: %v", err)
	}

	// A small object: its copy on the node that is down is not needed to
	// read it, and a new one is written as two copies, on the two nodes up.
	for _, n := range ns {
		if n == down {
			continue
		}
		out.Reset()
		if _, err := n.objects.Get(ctx, admin, "results", "small-before", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), small) {
			t.Fatalf("read of a small object with a node down, through %s: %v", n.node.Name(), err)
		}
	}
	obj, err = up.objects.Put(ctx, admin, "results", "small-during", int64(len(small)), bytes.NewReader(small), storage.PutOptions{})
	if err != nil {
		t.Fatalf("degraded write of a small object: %v", err)
	}
	copies := map[string]bool{}
	for _, s := range obj.Shards {
		if s.Disk != "" {
			copies[s.Node] = true
		}
	}
	if obj.Layout.String() != "1+2" || len(copies) != 2 || copies[down.node.Name()] {
		t.Fatalf("degraded write of a small object: layout %s, copies on %v", obj.Layout, copies)
	}
	out.Reset()
	if _, err := up.objects.Get(ctx, admin, "results", "small-during", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), small) {
		t.Fatalf("read of a degraded small write: %v", err)
	}
}

func countShards(ns []*objNode, dataID string) int {
	n := 0
	for _, node := range ns {
		for _, dir := range node.dirs {
			_ = filepath.WalkDir(filepath.Join(dir, "shards"), func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), dataID+".") {
					n++
				}
				return nil
			})
		}
	}
	return n
}

func countAllShards(ns []*objNode) int { return countShards(ns, "") }

// Two copies of a small object on one node are not enough for a write,
// however many disks they are on: the node's loss would take both. Copies
// on two nodes are; a k+m layout is judged by its quorum alone.
func TestCopiesOnOneNodeAreNotApart(t *testing.T) {
	ns, _ := readyPool(t)
	copies := erasure.Layout{Data: 1, Parity: 2, StripeSize: erasure.DefaultStripeSize}
	loc := func(n, d int) storage.ShardLoc {
		node := ns[n].node.Name()
		return storage.ShardLoc{Disk: storage.DiskID(node, ns[n].dirs[d]), Node: node}
	}
	o := ns[0].objects
	testutil.WaitFor(t, 10*time.Second, "the pool's disks in every node's state", func() error {
		if !o.Apart(copies, []storage.ShardLoc{loc(0, 0), loc(1, 0), {}}) {
			return fmt.Errorf("copies on node1 and node2 judged on one node")
		}
		return nil
	})
	for _, tc := range []struct {
		name   string
		layout erasure.Layout
		locs   []storage.ShardLoc
		want   bool
	}{
		{"two copies on node1's two disks", copies, []storage.ShardLoc{loc(0, 0), loc(0, 1), {}}, false},
		{"one copy", copies, []storage.ShardLoc{{}, loc(2, 1), {}}, false},
		{"copies on node1 and node3", copies, []storage.ShardLoc{loc(0, 1), {}, loc(2, 0)}, true},
		{"three copies", copies, []storage.ShardLoc{loc(0, 0), loc(1, 1), loc(2, 0)}, true},
		{"4+2 shards on one node", erasure.Layout{Data: 4, Parity: 2, StripeSize: erasure.DefaultStripeSize}, []storage.ShardLoc{loc(0, 0), loc(0, 1), {}, {}, {}, {}}, true},
	} {
		if got := o.Apart(tc.layout, tc.locs); got != tc.want {
			t.Errorf("%s: apart %v, want %v", tc.name, got, tc.want)
		}
	}
}
