package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/minio/minio-go/v7"
)

// Nodes are killed in the middle of uploads, at a point the test controls:
// a peer of the node receiving the upload (which finishes it degraded), and
// the receiving node itself (the upload fails, leaves nothing visible, and
// the client's retry through another node succeeds). Everything stays
// readable with a node down, and when the node returns the healer brings
// every object back to full redundancy.
func TestS3NodeLossAndHeal(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2",
		"--heal-interval", "1s", "--disk-report-interval", "1s", "--disk-stale-after", "8s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	health := func() (int64, error) {
		var h struct {
			Degraded int64 `json:"degraded_segments"`
		}
		err := a.Call("GET", "/api/v1/storage", nil, 200, &h)
		return h.Degraded, err
	}
	waitHealed := func() {
		t.Helper()
		testutil.WaitFor(t, 90*time.Second, "the healer to restore full redundancy", func() error {
			d, err := health()
			if err != nil {
				return err
			}
			if d != 0 {
				return fmt.Errorf("%d segments still degraded", d)
			}
			return nil
		})
	}
	cairntest.WaitHealthyDisks(t, a, 6, 0)
	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "icu"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	var cred s3Cred
	if err := a.Call("POST", "/api/v1/s3/credentials", map[string]string{"project": "icu"}, 201, &cred); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s1 := s3Client(t, c.Node(1), cred.AccessKey, cred.SecretKey)
	s2 := s3Client(t, c.Node(2), cred.AccessKey, cred.SecretKey)
	// node3's own client tries once: its node will be dead, and minio-go
	// would otherwise back off and retry there for minutes.
	s3once := s3Client(t, c.Node(3), cred.AccessKey, cred.SecretKey, 1)
	if err := s1.MakeBucket(ctx, "vitals", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	objects := map[string][]byte{}
	opts := minio.PutObjectOptions{PartSize: 64 << 20}
	put := func(key string, size int) {
		t.Helper()
		data := make([]byte, size)
		_, _ = rand.Read(data)
		if _, err := s1.PutObject(ctx, "vitals", key, bytes.NewReader(data), int64(size), opts); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		objects[key] = data
	}
	readAll := func(via *minio.Client, when string) {
		t.Helper()
		for k, v := range objects {
			got, err := getBytes(ctx, via, "vitals", k, minio.GetObjectOptions{})
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("%s %s: %v", k, when, err)
			}
		}
	}
	put("before", 3<<20)

	// A peer dies mid-upload: node1 receives a 40 MiB upload, and node3 is
	// killed once 8 MiB of it have left the client. node1 finishes it on
	// the shards that node1 and node2 hold.
	data := make([]byte, 40<<20)
	_, _ = rand.Read(data)
	g := newGate(data, 8<<20)
	go g.then(c.Node(3).Kill)
	if _, err := s1.PutObject(ctx, "vitals", "peer-died", g, int64(len(data)), opts); err != nil {
		t.Fatalf("upload while a peer died: %v", err)
	}
	objects["peer-died"] = data
	readAll(s2, "with node3 down")
	if d, err := health(); err != nil || d == 0 {
		t.Fatalf("with a node down some objects must be degraded: %d %v", d, err)
	}
	c.Node(3).Restart()
	cairntest.WaitReady(t, c.Node(3))
	waitHealed()

	// The receiving node dies mid-upload: the client's upload fails, the
	// half-sent object is nowhere, and the retry through node1 succeeds.
	g = newGate(data, 8<<20)
	go g.then(c.Node(3).Kill)
	if _, err := s3once.PutObject(ctx, "vitals", "receiver-died", g, int64(len(data)), opts); err == nil {
		t.Fatal("an upload to a node killed mid-stream succeeded")
	}
	if _, err := s1.StatObject(ctx, "vitals", "receiver-died", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("the interrupted upload is visible: %v", err)
	}
	if _, err := s1.PutObject(ctx, "vitals", "receiver-died", bytes.NewReader(data), int64(len(data)), opts); err != nil {
		t.Fatalf("the client's retry through node1: %v", err)
	}
	objects["receiver-died"] = data
	put("after", 2<<20)
	readAll(s2, "with node3 down")

	c.Node(3).Restart()
	cairntest.WaitReady(t, c.Node(3))
	waitHealed()
	readAll(s2, "after healing")
	// Full redundancy in the shards themselves, not only in the state:
	// with node1 down, every object must come from node2's and node3's
	// shards, four of six, two on each. node3 was down for part of every
	// object's life, so the healer must have written its shards.
	c.Node(1).Kill()
	readAll(s2, "after healing, from node2 and node3 alone")

	// Fewer than four shards left: with node1 down, wiping node2's first
	// disk leaves every object three. A read is a clear error document,
	// never wrong or partial bytes.
	u, err := s3once.PresignedGetObject(ctx, "vitals", "peer-died", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: s3HTTPTransport(t, c.Node(3)), Timeout: 30 * time.Second}
	shards := filepath.Join(c.Node(2).DataDir, "disks", "d1", "shards")
	if err := os.RemoveAll(shards); err != nil {
		t.Fatal(err)
	}
	res, err := hc.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("<Code>ServiceUnavailable</Code>")) {
		t.Fatalf("read with three shards of six: %s %.200q", res.Status, body)
	}
	if obj, err := s3Client(t, c.Node(2), cred.AccessKey, cred.SecretKey, 1).GetObject(ctx, "vitals", "before", minio.GetObjectOptions{}); err == nil {
		if got, err := io.ReadAll(obj); err == nil {
			t.Fatalf("minio-go read %d bytes of an object with three shards of six", len(got))
		}
		obj.Close()
	}

	// Two nodes of three down: no quorum, so a read is a clear 503, never
	// wrong or partial bytes. (A presigned URL and a plain client: minio-go
	// would retry a 503 for a long time.)
	if u, err = s3once.PresignedGetObject(ctx, "vitals", "before", time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	c.Node(2).Kill()
	if res, err = hc.Get(u.String()); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("<Code>ServiceUnavailable</Code>")) {
		t.Fatalf("read with two nodes down: %s %s", res.Status, body)
	}
}

// gate is an upload body that stops once after bytes have been read from it
// (closing reached) until release is closed: the test's moment to kill a
// node with the upload in flight. It reads through ReadAt too, which
// minio-go prefers when a body has it.
type gate struct {
	*bytes.Reader
	after   int64
	read    atomic.Int64
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func newGate(data []byte, after int64) *gate {
	return &gate{Reader: bytes.NewReader(data), after: after, reached: make(chan struct{}), release: make(chan struct{})}
}

// then runs fn when the gate is reached, then opens it.
func (g *gate) then(fn func()) {
	<-g.reached
	fn()
	close(g.release)
}

func (g *gate) wait(n int) {
	if g.read.Add(int64(n)) >= g.after {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	}
}

func (g *gate) Read(p []byte) (int, error) {
	n, err := g.Reader.Read(p)
	g.wait(n)
	return n, err
}

func (g *gate) ReadAt(p []byte, off int64) (int, error) {
	n, err := g.Reader.ReadAt(p, off)
	g.wait(n)
	return n, err
}
