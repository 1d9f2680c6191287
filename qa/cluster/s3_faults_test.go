package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/minio/minio-go/v7"
)

// A node is killed during an upload: the upload still succeeds (degraded),
// everything stays readable with the node down, and when the node returns the
// healer brings every object back to full redundancy.
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
	if err := s1.MakeBucket(ctx, "vitals", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	objects := map[string][]byte{}
	put := func(key string, size int) {
		t.Helper()
		data := make([]byte, size)
		_, _ = rand.Read(data)
		if _, err := s1.PutObject(ctx, "vitals", key, bytes.NewReader(data), int64(size), minio.PutObjectOptions{PartSize: 64 << 20}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		objects[key] = data
	}
	put("before", 3<<20)

	// Kill node3 while a 40 MiB upload through node1 is in flight.
	done := make(chan struct{})
	go func() {
		defer close(done)
		put("during", 40<<20)
	}()
	time.Sleep(150 * time.Millisecond) // let the upload start; it must survive either way
	c.Node(3).Kill()
	<-done
	put("after", 2<<20)
	for k, v := range objects {
		obj, err := s2.GetObject(ctx, "vitals", k, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("%s with node3 down: %v", k, err)
		}
	}
	if d, err := health(); err != nil || d == 0 {
		t.Fatalf("with a node down some objects must be degraded: %d %v", d, err)
	}

	c.Node(3).Restart()
	cairntest.WaitReady(t, c.Node(3))
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
	for k, v := range objects {
		obj, err := s2.GetObject(ctx, "vitals", k, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("%s after healing: %v", k, err)
		}
	}

	// Two nodes of three down: no quorum, so a read is a clear 503, never
	// wrong or partial bytes. (A presigned URL and a plain client: minio-go
	// would retry a 503 for a long time.)
	u, err := s1.PresignedGetObject(ctx, "vitals", "before", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Node(2).Kill()
	c.Node(3).Kill()
	hc := &http.Client{Transport: s3HTTPTransport(t, c.Node(1)), Timeout: 30 * time.Second}
	res, err := hc.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("<Code>ServiceUnavailable</Code>")) {
		t.Fatalf("read with two nodes down: %s %s", res.Status, body)
	}
}
