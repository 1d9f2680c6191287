package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/storage/disk"
	"github.com/minio/minio-go/v7"
)

// A pool of small disks: an object too big for them gets S3's 507
// InsufficientStorage, and nothing of it is visible or left on the disks;
// smaller objects still go in.
func TestS3FullPool(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts tmpfs disks and needs root; make test runs as root")
	}
	// The nodes share the host's mount namespace: mounted before they start, the
	// disks are there when each node opens them.
	root := t.TempDir()
	var mounts []string
	t.Cleanup(func() {
		for _, m := range mounts {
			_ = exec.Command("umount", "-l", m).Run()
		}
	})
	for i := 1; i <= 3; i++ {
		for _, d := range []string{"d1", "d2"} {
			dir := filepath.Join(root, fmt.Sprintf("node%d", i), d)
			_ = os.MkdirAll(dir, 0o700)
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", dir).CombinedOutput(); err != nil {
				t.Fatalf("mount: %v %s", err, out)
			}
			mounts = append(mounts, dir)
		}
	}
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk-report-interval", "1s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	for _, n := range c.Nodes {
		for _, d := range []string{"d1", "d2"} {
			if err := a.Call("POST", "/api/v1/disks", map[string]string{"node": n.Name, "path": filepath.Join(root, n.Name, d)}, 201, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	cairntest.WaitHealthyDisks(t, a, 6, 96<<20)
	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "lab"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	var cred s3Cred
	if err := a.Call("POST", "/api/v1/s3/credentials", map[string]string{"project": "lab"}, 201, &cred); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := s3Client(t, c.Node(1), cred.AccessKey, cred.SecretKey)
	if err := s.MakeBucket(ctx, "results", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 200<<20) // 4+2: 50 MiB per shard, more than a 96 MiB disk holds with the margin
	_, _ = rand.Read(big[:1<<20])
	_, err := s.PutObject(ctx, "results", "too-big", bytes.NewReader(big), int64(len(big)), minio.PutObjectOptions{PartSize: 256 << 20})
	if r := minio.ToErrorResponse(err); r.Code != "InsufficientStorage" || r.StatusCode != 507 {
		t.Fatalf("an object too big for the pool: %v (code %q, status %d)", err, r.Code, r.StatusCode)
	}
	for o := range s.ListObjects(ctx, "results", minio.ListObjectsOptions{Recursive: true}) {
		t.Fatalf("something of the refused object is visible: %+v", o)
	}
	for _, m := range mounts {
		var files []string
		_ = filepath.WalkDir(filepath.Join(m, "shards"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, p)
			}
			return nil
		})
		if len(files) != 0 {
			t.Fatalf("the refused object left shards on %s: %s", m, strings.Join(files, ", "))
		}
	}
	if _, err := s.PutObject(ctx, "results", "small", bytes.NewReader(make([]byte, 1<<20)), 1<<20, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("a small object after the refusal: %v", err)
	}

	// Disks that fill up mid-write: four 112 MiB uploads at once each pass
	// the placement check (a 28 MiB shard per disk, and 96 MiB free), but
	// together want 112 MiB of every 96 MiB disk. Each upload either
	// succeeds whole or gets 507, and a refused one leaves nothing: no
	// object, no shard file.
	logStart := logSizes(c)
	type result struct {
		key  string
		data []byte
		err  error
	}
	results := make(chan result, 4)
	for i := range 4 {
		go func() {
			r := result{key: fmt.Sprintf("burst-%d", i), data: make([]byte, 112<<20)}
			_, _ = rand.Read(r.data[:1<<20])
			r.data[len(r.data)-1] = byte(i)
			_, r.err = s.PutObject(ctx, "results", r.key, bytes.NewReader(r.data), int64(len(r.data)), minio.PutObjectOptions{PartSize: 256 << 20})
			results <- r
		}()
	}
	stored, refused := map[string][]byte{"small": make([]byte, 1<<20)}, 0
	for range 4 {
		r := <-results
		if r.err == nil {
			stored[r.key] = r.data
			continue
		}
		if e := minio.ToErrorResponse(r.err); e.Code != "InsufficientStorage" || e.StatusCode != 507 {
			t.Fatalf("%s on full disks: %v (code %q, status %d)", r.key, r.err, e.Code, e.StatusCode)
		}
		refused++
	}
	if refused == 0 {
		t.Fatal("four uploads of 112 MiB all fit on 96 MiB disks")
	}
	enospc := 0
	for _, n := range c.Nodes {
		enospc += logCount(n, logStart[n], "shard write failed", "no_space=true")
	}
	if enospc == 0 {
		t.Fatal("no node logged running out of space: the uploads were refused before writing, not mid-write")
	}
	t.Logf("burst: %d of 4 stored, %d refused; %d shard writes ran out of space", len(stored)-1, refused, enospc)
	var keys []string
	for o := range s.ListObjects(ctx, "results", minio.ListObjectsOptions{Recursive: true}) {
		keys = append(keys, o.Key)
	}
	if len(keys) != len(stored) {
		t.Fatalf("visible after the burst: %v; stored: %d objects", keys, len(stored))
	}
	for k, want := range stored {
		got, err := getBytes(ctx, s, "results", k, minio.GetObjectOptions{})
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after the burst: %v", k, err)
		}
	}
	// No temporary files (the disk's identity marker aside), and at most one shard per disk per stored object
	// (a stored object may lack a shard that ran out of space: the healer's).
	for _, m := range mounts {
		var files, tmp []string
		_ = filepath.WalkDir(m, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && p != filepath.Join(m, disk.MarkerFile) {
				if strings.HasPrefix(p, filepath.Join(m, "shards")+"/") {
					files = append(files, p)
				} else {
					tmp = append(tmp, p)
				}
			}
			return nil
		})
		if len(files) > len(stored) || len(tmp) > 0 {
			t.Fatalf("%s holds %d shard files for %d objects, and temporary files %v", m, len(files), len(stored), tmp)
		}
	}
}
