package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/minio/minio-go/v7"
)

// On three real nodes with two disks each, damage shards on disk behind the
// cluster's back: a flipped byte in one shard (once read, so that read repair
// finds it, and once left for the scrubber), then a whole wiped disk. Reads
// through S3 stay byte-exact, the damage is found and the healer writes the
// lost shards back, byte for byte.
//
// With 4+2 over six disks every object has one shard on every disk, so the
// healer can only put a lost shard back on the disk it was lost from: the
// test checks the very files that were damaged.
func TestS3RepairCorruptShardAndWipedDisk(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2",
		"--scrub-interval", "1s", "--scrub-pace", "0s", "--heal-interval", "1s", "--disk-report-interval", "1s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	cairntest.WaitHealthyDisks(t, a, 6, 0)
	type health struct {
		Degraded int64  `json:"degraded_segments"`
		Layout   string `json:"default_layout"`
	}
	var h health
	if err := a.Call("GET", "/api/v1/storage", nil, 200, &h); err != nil {
		t.Fatal(err)
	}
	if h.Layout != "4+2" {
		t.Fatalf("three nodes with two disks each should default to 4+2, not %q", h.Layout)
	}
	// Objects of up to storage.ReplicateMax bytes are three whole copies
	// (1+2), one on each node; larger ones are 4+2.
	layoutOf := func(size int) erasure.Layout {
		if size <= storage.ReplicateMax {
			return erasure.Layout{Data: 1, Parity: 2, StripeSize: erasure.DefaultStripeSize}
		}
		return erasure.Layout{Data: 4, Parity: 2, StripeSize: erasure.DefaultStripeSize}
	}
	disks := repairDisks(t, a, c)

	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "radiology"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	var cred s3Cred
	if err := a.Call("POST", "/api/v1/s3/credentials", map[string]string{"project": "radiology"}, 201, &cred); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	clients := []*minio.Client{}
	for _, n := range c.Nodes {
		clients = append(clients, s3Client(t, n, cred.AccessKey, cred.SecretKey))
	}
	if err := clients[0].MakeBucket(ctx, "films", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}

	// Put objects one at a time and learn each one's data ID from the shard
	// files that appear (a 4+2 object's on every disk, a small one's on one
	// disk of each node).
	type object struct {
		data   []byte
		dataID string
	}
	objects := map[string]*object{}
	for _, o := range []struct {
		key  string
		size int
	}{{"ct-3mib", 3<<20 + 5}, {"mr-1mib", 1 << 20}, {"xr-small", 40_000}, {"note", 32<<10 + 17}} { // past the inline limit: shards
		before := dataIDs(disks)
		data := make([]byte, o.size)
		_, _ = rand.Read(data)
		if _, err := clients[0].PutObject(ctx, "films", o.key, bytes.NewReader(data), int64(o.size), minio.PutObjectOptions{}); err != nil {
			t.Fatalf("put %s: %v", o.key, err)
		}
		var fresh []string
		for id, n := range dataIDs(disks) {
			if before[id] == 0 {
				fresh = append(fresh, id)
				if want := layoutOf(o.size).Shards(); n != want {
					t.Fatalf("%s: %d shard files of %s on the disks, want %d", o.key, n, id, want)
				}
			}
		}
		if len(fresh) != 1 {
			t.Fatalf("%s: new data IDs on the disks: %v", o.key, fresh)
		}
		objects[o.key] = &object{data: data, dataID: fresh[0]}
	}
	readAll := func(when string) {
		t.Helper()
		for k, o := range objects {
			for i, s := range clients {
				got, err := getBytes(ctx, s, "films", k, minio.GetObjectOptions{})
				if err != nil || !bytes.Equal(got, o.data) {
					t.Fatalf("%s: %s from node%d: %d bytes, err %v, equal %v", when, k, i+1, len(got), err, bytes.Equal(got, o.data))
				}
			}
		}
	}
	// A shard set is whole when every index is on disk and verifies.
	checkShards := func(key string) error {
		o := objects[key]
		layout := layoutOf(len(o.data))
		found := map[int]bool{}
		nodes := map[*harness.Node]bool{}
		for _, d := range disks {
			for _, p := range shardFilesOf(d.path, o.dataID) {
				i, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), o.dataID+"."))
				if err != nil {
					return fmt.Errorf("%s: odd shard file %s", key, p)
				}
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				err = erasure.VerifyShard(f, layout, int64(len(o.data)), i)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: shard %s: %w", key, p, err)
				}
				found[i] = true
				nodes[d.node] = true
			}
		}
		if len(found) != layout.Shards() {
			return fmt.Errorf("%s: %d of %d shards on disk", key, len(found), layout.Shards())
		}
		if layout.Data == 1 && len(nodes) != 3 {
			return fmt.Errorf("%s: copies on %d nodes, want one on each of 3", key, len(nodes))
		}
		return nil
	}
	for k := range objects {
		if err := checkShards(k); err != nil {
			t.Fatal(err)
		}
	}
	healthy := func() error {
		var h health
		if err := a.Call("GET", "/api/v1/storage", nil, 200, &h); err != nil {
			return err
		}
		if h.Degraded != 0 {
			return fmt.Errorf("%d segments degraded", h.Degraded)
		}
		return nil
	}

	// 1. Flip one byte in the middle of a shard of the 3 MiB object on node2.
	ct := objects["ct-3mib"]
	node2 := c.Node(2)
	var shard string
	for _, d := range disks {
		if d.node == node2 {
			if files := shardFilesOf(d.path, ct.dataID); len(files) == 1 {
				shard = files[0]
				break
			}
		}
	}
	if shard == "" {
		t.Fatal("node2 holds no shard of the 3 MiB object")
	}
	orig, err := os.ReadFile(shard)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(shard), ct.dataID+"."))
	mid := int64(len(orig) / 2)
	bad := bytes.Clone(orig)
	bad[mid] ^= 0x10
	if err := erasure.VerifyShard(bytes.NewReader(bad), layoutOf(len(ct.data)), int64(len(ct.data)), idx); err == nil {
		t.Fatal("the flipped byte went unnoticed by VerifyShard: the test would prove nothing")
	}
	flip := func() {
		t.Helper()
		f, err := os.OpenFile(shard, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bad[mid:mid+1], mid); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("flipped byte %d of %d in %s", mid, len(orig), shard)
	}
	restored := func() error {
		got, err := os.ReadFile(shard)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, orig) {
			return fmt.Errorf("%s is not the original shard again", shard)
		}
		return healthy()
	}
	// 1a. Read it: the reads are right, and a read that met the bad shard
	// queues it; read repair has node2 confirm it, and the healer rewrites it.
	logStart := logSizes(c)
	flip()
	readAll("with a corrupt shard")
	testutil.WaitFor(t, 90*time.Second, "read repair to mark the corrupt shard and the healer to rewrite it", func() error {
		if !anyLogHas(c, logStart, "shard marked for repair", "data="+ct.dataID, "shard data corrupt") {
			return fmt.Errorf("no node's read repair has marked the corrupt shard of %s", ct.dataID)
		}
		if !anyLogHas(c, logStart, "msg=healed", "data="+ct.dataID) {
			return fmt.Errorf("no healer has reported rebuilding %s", ct.dataID)
		}
		return restored()
	})
	// 1b. Leave it unread: node2's scrubber finds it.
	logStart = logSizes(c)
	flip()
	testutil.WaitFor(t, 90*time.Second, "the scrubber to find the corrupt shard and the healer to rewrite it", func() error {
		if !logHas(node2, logStart[node2], "bad shard found", "data="+ct.dataID) {
			return fmt.Errorf("node2's scrubber has not reported the corrupt shard of %s", ct.dataID)
		}
		if !anyLogHas(c, logStart, "msg=healed", "data="+ct.dataID) {
			return fmt.Errorf("no healer has reported rebuilding %s", ct.dataID)
		}
		return restored()
	})
	if err := checkShards("ct-3mib"); err != nil {
		t.Fatal(err)
	}
	readAll("after repairing the corrupt shard")

	// 2. Wipe the disk of node3 that holds its copy of the small object
	// (it holds a shard of every 4+2 object too) while node3 runs.
	node3 := c.Node(3)
	var wiped, other repairDisk
	for _, d := range disks {
		if d.node != node3 {
			continue
		}
		if len(shardFilesOf(d.path, objects["xr-small"].dataID)) == 1 {
			wiped = d
		} else {
			other = d
		}
	}
	if wiped.id == "" || other.id == "" {
		t.Fatalf("node3 has no copy of xr-small on one disk of two: %+v", disks)
	}
	shardsDir := filepath.Join(wiped.path, "shards")
	held := map[string][]byte{}
	_ = filepath.WalkDir(shardsDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, rerr := os.ReadFile(p)
			if rerr != nil {
				t.Fatal(rerr)
			}
			held[p] = b
		}
		return nil
	})
	for k, o := range objects {
		if layoutOf(len(o.data)).Data > 1 && len(shardFilesOf(wiped.path, o.dataID)) != 1 {
			t.Fatalf("%s holds no shard of %s", wiped.path, k)
		}
	}
	logStart = logSizes(c)
	if err := os.RemoveAll(shardsDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(shardsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Logf("wiped %s (%d shard files)", shardsDir, len(held))
	readAll("with a wiped disk")
	testutil.WaitFor(t, 90*time.Second, "the wiped disk's shards found lost and rebuilt", func() error {
		// Found by node3's scrubber, or by read repair after the reads above.
		n := logCount(node3, logStart[node3], "bad shard found", "disk="+wiped.id)
		for _, node := range c.Nodes {
			n += logCount(node, logStart[node], "shard marked for repair", "disk="+wiped.id)
		}
		if n < len(held) {
			return fmt.Errorf("%d of %d lost shards reported", n, len(held))
		}
		// A 4+2 shard can only go back where it was lost; a copy goes
		// back to node3, on either of its disks.
		for p, want := range held {
			got, err := os.ReadFile(p)
			if errors.Is(err, fs.ErrNotExist) {
				got, err = os.ReadFile(filepath.Join(other.path, strings.TrimPrefix(p, wiped.path)))
			}
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("%s was rebuilt with different bytes", p)
			}
		}
		return healthy()
	})
	for k := range objects {
		if err := checkShards(k); err != nil {
			t.Fatal(err)
		}
	}
	readAll("after rebuilding the wiped disk")
}

type repairDisk struct {
	id, path string
	node     *harness.Node
}

// repairDisks lists the pool's disks from the API. Nodes share the host's
// filesystem, so a disk's path is where the test finds its shard files.
func repairDisks(t *testing.T, a *cairntest.Client, c *harness.Cluster) []repairDisk {
	t.Helper()
	var ds []struct {
		ID   string `json:"id"`
		Node string `json:"node"`
		Path string `json:"path"`
	}
	if err := a.Call("GET", "/api/v1/disks", nil, 200, &ds); err != nil {
		t.Fatal(err)
	}
	var out []repairDisk
	for _, d := range ds {
		n := cairntest.NodeByName(c, d.Node)
		if n == nil || !strings.HasPrefix(d.Path, n.DataDir+string(filepath.Separator)) {
			t.Fatalf("disk %s of %s at %s is not under the node's data directory", d.ID, d.Node, d.Path)
		}
		out = append(out, repairDisk{id: d.ID, path: d.Path, node: n})
	}
	if len(out) != 6 {
		t.Fatalf("%d disks in the pool, want 6", len(out))
	}
	return out
}

// shardFilesOf lists the shard files of a data ID on one disk: they are
// named <data ID>.<shard index>.
func shardFilesOf(disk, dataID string) []string {
	var out []string
	_ = filepath.WalkDir(filepath.Join(disk, "shards"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), dataID+".") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// dataIDs counts the shard files of each data ID over all disks.
func dataIDs(disks []repairDisk) map[string]int {
	out := map[string]int{}
	for _, d := range disks {
		_ = filepath.WalkDir(filepath.Join(d.path, "shards"), func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				if i := strings.LastIndexByte(e.Name(), '.'); i > 0 {
					out[e.Name()[:i]]++
				}
			}
			return nil
		})
	}
	return out
}

// logSizes marks where each node's log ends, so later checks read only what
// was logged after.
func logSizes(c *harness.Cluster) map[*harness.Node]int64 {
	out := map[*harness.Node]int64{}
	for _, n := range c.Nodes {
		if st, err := os.Stat(n.LogPath); err == nil {
			out[n] = st.Size()
		}
	}
	return out
}

// logCount counts the lines n logged after offset that contain every one of parts.
func logCount(n *harness.Node, offset int64, parts ...string) int {
	b, err := os.ReadFile(n.LogPath)
	if err != nil || int64(len(b)) < offset {
		return 0
	}
	count := 0
lines:
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		count++
	}
	return count
}

func logHas(n *harness.Node, offset int64, parts ...string) bool {
	return logCount(n, offset, parts...) > 0
}

func anyLogHas(c *harness.Cluster, offsets map[*harness.Node]int64, parts ...string) bool {
	for _, n := range c.Nodes {
		if logHas(n, offsets[n], parts...) {
			return true
		}
	}
	return false
}
