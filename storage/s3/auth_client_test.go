package s3

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// checkingServer answers what a real S3 client sends by authenticating it
// and reading its body the way the gateway will; it records what it got.
type checkingServer struct {
	mu   sync.Mutex
	got  []received
	srv  *httptest.Server
	fail bool // refuse every body, as a store that lost the data would not
}

type received struct {
	mode, checksum string
	body           []byte
}

func newCheckingServer(t *testing.T) *checkingServer {
	c := &checkingServer{}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *checkingServer) serve(w http.ResponseWriter, r *http.Request) {
	a, err := parseAuth(r)
	if err == nil {
		withHostBucket(a, "") // path style
		var p *payload
		if p, err = a.verify(r, exampleSecret, time.Now()); err == nil {
			body, rerr := drain(p, r)
			if rerr != nil {
				err = rerr.(*Error)
			} else {
				algo, value, _ := p.checksum()
				c.mu.Lock()
				c.got = append(c.got, received{mode: p.contentSHA256, checksum: string(algo) + " " + value, body: body})
				c.mu.Unlock()
			}
		}
	}
	if err != nil {
		writeError(w, r, err, "test")
		return
	}
	w.Header().Set("ETag", `"d41d8cd98f00b204e9800998ecf8427e"`)
	w.WriteHeader(http.StatusOK)
}

func (c *checkingServer) last(t *testing.T) received {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.got) == 0 {
		t.Fatal("nothing received")
	}
	return c.got[len(c.got)-1]
}

// The minio-go client, over plain HTTP, streams aws-chunked uploads in each
// of its modes; every one must authenticate and arrive intact.
func TestMinioGoClientUploads(t *testing.T) {
	srv := newCheckingServer(t)
	host := strings.TrimPrefix(srv.srv.URL, "http://")
	v4, err := minio.New(host, &minio.Options{Creds: credentials.NewStaticV4(exampleKey, exampleSecret, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	trailing, err := minio.New(host, &minio.Options{Creds: credentials.NewStaticV4(exampleKey, exampleSecret, ""), Region: "us-east-1", TrailingHeaders: true})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := minio.New(host, &minio.Options{Creds: credentials.NewStaticV2(exampleKey, exampleSecret, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 9000) // 144000 bytes: three chunks
	modes := map[string]bool{}
	for _, c := range []struct {
		name   string
		client *minio.Client
		opts   minio.PutObjectOptions
	}{
		{"default", v4, minio.PutObjectOptions{}},
		{"trailing, default", trailing, minio.PutObjectOptions{}},
		{"crc64nvme", trailing, minio.PutObjectOptions{Checksum: minio.ChecksumCRC64NVME}},
		{"sha256", trailing, minio.PutObjectOptions{Checksum: minio.ChecksumSHA256}},
		{"no content sha256", v4, minio.PutObjectOptions{DisableContentSha256: true}},
		{"no content sha256, crc32", trailing, minio.PutObjectOptions{DisableContentSha256: true, Checksum: minio.ChecksumCRC32}},
		{"md5", v4, minio.PutObjectOptions{SendContentMd5: true}},
		{"sigv2", v2, minio.PutObjectOptions{}},
	} {
		for _, size := range []int{0, len(data)} {
			if _, err := c.client.PutObject(context.Background(), "bucket", "dir/key one", bytes.NewReader(data[:size]), int64(size), c.opts); err != nil {
				t.Errorf("%s, %d bytes: %v", c.name, size, err)
				continue
			}
			got := srv.last(t)
			if !bytes.Equal(got.body, data[:size]) {
				t.Errorf("%s: %d bytes arrived, not %d", c.name, len(got.body), size)
			}
			modes[got.mode] = true
			t.Logf("%s, %d bytes: %s, checksum %s", c.name, size, got.mode, got.checksum)
		}
	}
	for _, m := range []string{streamingSigned, streamingSignedTrailer, streamingUnsignedTrailer, unsignedPayload} {
		if !modes[m] {
			t.Errorf("no upload used %s: %v", m, modes)
		}
	}

	// Presigned GETs, both versions.
	for name, client := range map[string]*minio.Client{"v4": v4, "v2": v2} {
		u, err := client.PresignedGetObject(context.Background(), "bucket", "dir/key one", time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("presigned %s: %s %s", name, resp.Status, b)
		}
	}
}
