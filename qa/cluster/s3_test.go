package cluster_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Client is a minio-go client of n's S3 port. maxRetries, if given, caps
// minio-go's attempts per request.
func s3Client(t *testing.T, n *harness.Node, ak, sk string, maxRetries ...int) *minio.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(n.DataDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := minio.New(n.IP+":8447", &minio.Options{
		Creds: credentials.NewStaticV4(ak, sk, ""), Secure: true, Region: "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		Transport:    &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		MaxRetries:   append(maxRetries, 0)[0],
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// s3Pool starts three nodes with two disks each, waits until the pool is
// whole, and returns an admin client and an access key of a new project.
func s3Pool(t *testing.T, project string) (*harness.Cluster, *cairntest.Client, s3Cred) {
	t.Helper()
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	cairntest.WaitHealthyDisks(t, a, 6, 0)
	if _, err := a.CreateProject(project); err != nil {
		t.Fatal(err)
	}
	var cred s3Cred
	if err := a.Call("POST", "/api/v1/s3/credentials", map[string]string{"project": project}, 201, &cred); err != nil {
		t.Fatal(err)
	}
	return c, a, cred
}

type s3Cred struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
}

// A real S3 client (minio-go) against three real nodes with two disks each:
// round trips at the stripe boundaries and of 100 MiB, ranges, metadata,
// listing with delimiters and pagination, copy, delete, presigned URLs, and
// refusals.
func TestS3WithMinioClient(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2", "--s3-domain", "s3.cairn.test"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	cairntest.WaitHealthyDisks(t, a, 6, 0)
	var pacs, other cairntest.Project
	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "pacs"}, 201, &pacs); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "billing"}, 201, &other); err != nil {
		t.Fatal(err)
	}
	var cred, otherCred s3Cred
	if err := a.Call("POST", "/api/v1/s3/credentials", map[string]string{"project": "pacs"}, 201, &cred); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/s3/credentials", map[string]string{"project": "billing"}, 201, &otherCred); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s1 := s3Client(t, c.Node(1), cred.AccessKey, cred.SecretKey)
	s3c := s3Client(t, c.Node(3), cred.AccessKey, cred.SecretKey)
	read := func(key string) []byte {
		t.Helper()
		b, err := getBytes(ctx, s3c, "studies", key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("read %s: %v", key, err)
		}
		return b
	}
	if err := s1.MakeBucket(ctx, "studies", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	// HEAD and list buckets; an empty bucket can be deleted.
	if err := s1.MakeBucket(ctx, "scratch", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s3c.BucketExists(ctx, "studies"); !ok || err != nil {
		t.Fatalf("HEAD bucket: %v %v", ok, err)
	}
	if ok, err := s3c.BucketExists(ctx, "no-such-bucket"); ok || err != nil {
		t.Fatalf("HEAD of a missing bucket: %v %v", ok, err)
	}
	if bs, err := s3c.ListBuckets(ctx); err != nil || len(bs) != 2 || bs[0].Name != "scratch" || bs[1].Name != "studies" {
		t.Fatalf("list buckets: %+v %v", bs, err)
	}
	if err := s3c.RemoveBucket(ctx, "scratch"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s1.BucketExists(ctx, "scratch"); ok || err != nil {
		t.Fatalf("a deleted bucket: %v %v", ok, err)
	}

	const stripe = 1 << 20
	for _, size := range []int{0, 1, stripe - 1, stripe, stripe + 1, 100 << 20} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		key := fmt.Sprintf("sizes/%d.bin", size)
		if _, err := s1.PutObject(ctx, "studies", key, bytes.NewReader(data), int64(size),
			// At 100 MiB minio-go uploads multipart, in 16 MiB parts.
			minio.PutObjectOptions{ContentType: "application/dicom", UserMetadata: map[string]string{"Patient-Ref": "anon-42"}}); err != nil {
			t.Fatalf("put %d: %v", size, err)
		}
		// Read back through another node: read-after-write across the cluster.
		obj, err := s3c.GetObject(ctx, "studies", key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, obj)
		obj.Close()
		if err != nil || n != int64(size) || !bytes.Equal(h.Sum(nil), sha(data)) {
			t.Fatalf("get %d: %d bytes, err %v, checksum match %v", size, n, err, bytes.Equal(h.Sum(nil), sha(data)))
		}
		if size > 100 {
			opts := minio.GetObjectOptions{}
			_ = opts.SetRange(int64(size/2), int64(size/2+99))
			part, err := getBytes(ctx, s3c, "studies", key, opts)
			if err != nil || !bytes.Equal(part, data[size/2:size/2+100]) {
				t.Fatalf("range of %d: %v", size, err)
			}
		}
	}
	st, err := s3c.StatObject(ctx, "studies", "sizes/1.bin", minio.StatObjectOptions{})
	if err != nil || st.Size != 1 || st.ContentType != "application/dicom" || st.UserMetadata["Patient-Ref"] != "anon-42" {
		t.Fatalf("stat: %+v %v", st, err)
	}
	// A single-part object's ETag is its MD5; a Content-MD5 that does not
	// match the body is refused, and nothing is stored.
	body := []byte("the body whose digest the client sends")
	sum := md5.Sum(body)
	if info, err := s1.PutObject(ctx, "studies", "digest.txt", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil || info.ETag != hex.EncodeToString(sum[:]) {
		t.Fatalf("ETag %q, want the MD5 %x (%v)", info.ETag, sum, err)
	}
	pu, err := s1.PresignedPutObject(ctx, "studies", "digest-bad.txt", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: s3HTTPTransport(t, c.Node(1))}
	for _, digest := range []string{base64.StdEncoding.EncodeToString(make([]byte, 16)), "not base64"} {
		req, _ := http.NewRequest("PUT", pu.String(), bytes.NewReader(body))
		req.Header.Set("Content-MD5", digest)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 || !bytes.Contains(msg, []byte("<Code>BadDigest</Code>")) && !bytes.Contains(msg, []byte("<Code>InvalidDigest</Code>")) {
			t.Fatalf("PUT with Content-MD5 %q: %s\n%s", digest, res.Status, msg)
		}
	}
	if _, err := s3c.StatObject(ctx, "studies", "digest-bad.txt", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("an object refused for its digest is visible: %v", err)
	}

	// Virtual-host style: BUCKET.s3.cairn.test, over TLS that names it
	// (the test's resolver sends every such name to node2).
	var dialed []string
	vh, err := minio.New("s3.cairn.test:8447", &minio.Options{
		Creds: credentials.NewStaticV4(cred.AccessKey, cred.SecretKey, ""), Secure: true, Region: "us-east-1",
		BucketLookup: minio.BucketLookupDNS,
		Transport: &http.Transport{
			TLSClientConfig: s3HTTPTransport(t, c.Node(2)).TLSClientConfig,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dialed = append(dialed, addr)
				return (&net.Dialer{}).DialContext(ctx, network, c.Node(2).IP+":8447")
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vh.PutObject(ctx, "studies", "vhost/note.txt", strings.NewReader("virtual host"), 12, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("virtual-host-style PUT: %v", err)
	}
	if got := read("vhost/note.txt"); string(got) != "virtual host" {
		t.Fatalf("virtual-host-style object read by path style: %q", got)
	}
	if len(dialed) == 0 || dialed[0] != "studies.s3.cairn.test:8447" {
		t.Fatalf("the virtual-host client dialed %v", dialed)
	}
	if err := vh.RemoveObject(ctx, "studies", "vhost/note.txt", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	// Listing with a delimiter, and pagination over many keys.
	for _, k := range []string{"tree/a/1", "tree/a/2", "tree/b/1", "tree/c"} {
		if _, err := s1.PutObject(ctx, "studies", k, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for o := range s3c.ListObjects(ctx, "studies", minio.ListObjectsOptions{Prefix: "tree/"}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		got = append(got, o.Key)
	}
	sort.Strings(got) // minio-go yields a page's keys before its common prefixes
	if strings.Join(got, ",") != "tree/a/,tree/b/,tree/c" {
		t.Fatalf("delimited listing: %v", got)
	}
	const many = 2000
	var wg sync.WaitGroup
	errs := make(chan error, many)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < many; i += 8 {
				if _, err := s1.PutObject(ctx, "studies", fmt.Sprintf("many/%04d", i), strings.NewReader("y"), 1, minio.PutObjectOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	count, prev := 0, ""
	for o := range s3c.ListObjects(ctx, "studies", minio.ListObjectsOptions{Prefix: "many/", Recursive: true, MaxKeys: 137}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if o.Key <= prev {
			t.Fatalf("listing out of order: %s after %s", o.Key, prev)
		}
		prev = o.Key
		count++
	}
	if count != many {
		t.Fatalf("paginated listing returned %d of %d keys", count, many)
	}
	// Multi-object delete: half of them in one go.
	toDelete := make(chan minio.ObjectInfo, many/2)
	for i := 0; i < many; i += 2 {
		toDelete <- minio.ObjectInfo{Key: fmt.Sprintf("many/%04d", i)}
	}
	close(toDelete)
	for e := range s1.RemoveObjects(ctx, "studies", toDelete, minio.RemoveObjectsOptions{}) {
		t.Fatalf("multi-object delete: %+v", e)
	}
	left := 0
	for o := range s3c.ListObjects(ctx, "studies", minio.ListObjectsOptions{Prefix: "many/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		left++
	}
	if left != many/2 {
		t.Fatalf("%d keys left after deleting half of %d", left, many)
	}

	if st, err := s3c.StatObject(ctx, "studies", "sizes/104857600.bin", minio.StatObjectOptions{}); err != nil || !strings.HasSuffix(st.ETag, "-7") {
		t.Fatalf("the 100 MiB object was not a 7-part multipart upload: %+v %v", st.ETag, err)
	}

	// Multipart by hand: five parts, listing, refusals, abort.
	core := minio.Core{Client: s1}
	uid, err := core.NewMultipartUpload(ctx, "studies", "mp.bin", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var whole []byte
	var parts []minio.CompletePart
	for i := 1; i <= 5; i++ {
		size := 5 << 20
		if i == 5 {
			size = 123
		}
		chunk := make([]byte, size)
		_, _ = rand.Read(chunk)
		whole = append(whole, chunk...)
		op, err := core.PutObjectPart(ctx, "studies", "mp.bin", uid, i, bytes.NewReader(chunk), int64(size), minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: i, ETag: op.ETag})
	}
	lp, err := core.ListObjectParts(ctx, "studies", "mp.bin", uid, 0, 100)
	if err != nil || len(lp.ObjectParts) != 5 {
		t.Fatalf("list parts: %d %v", len(lp.ObjectParts), err)
	}
	var open []string
	for u := range s3c.ListIncompleteUploads(ctx, "studies", "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		open = append(open, u.Key+" "+u.UploadID)
	}
	if len(open) != 1 || open[0] != "mp.bin "+uid {
		t.Fatalf("uploads in progress: %v, want mp.bin %s", open, uid)
	}
	badParts := append([]minio.CompletePart(nil), parts...)
	badParts[2].ETag = `"00000000000000000000000000000000"`
	if _, err := core.CompleteMultipartUpload(ctx, "studies", "mp.bin", uid, badParts, minio.PutObjectOptions{}); minio.ToErrorResponse(err).Code != "InvalidPart" {
		t.Fatalf("complete with a wrong ETag: %v", err)
	}
	if _, err := core.CompleteMultipartUpload(ctx, "studies", "mp.bin", uid, []minio.CompletePart{parts[4], parts[0]}, minio.PutObjectOptions{}); minio.ToErrorResponse(err).Code != "InvalidPartOrder" {
		t.Fatalf("complete out of order: %v", err)
	}
	if _, err := core.CompleteMultipartUpload(ctx, "studies", "mp.bin", uid, parts, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	got2, err := getBytes(ctx, s3c, "studies", "mp.bin", minio.GetObjectOptions{})
	if err != nil || !bytes.Equal(got2, whole) {
		t.Fatalf("multipart object: %d bytes, %v", len(got2), err)
	}
	opts := minio.GetObjectOptions{}
	_ = opts.SetRange(5<<20-10, 5<<20+9) // across the boundary of parts 1 and 2
	span, err := getBytes(ctx, s3c, "studies", "mp.bin", opts)
	if err != nil || !bytes.Equal(span, whole[5<<20-10:5<<20+10]) {
		t.Fatalf("range across parts: %v", err)
	}
	uid2, _ := core.NewMultipartUpload(ctx, "studies", "tiny-parts", minio.PutObjectOptions{})
	p1, err1 := core.PutObjectPart(ctx, "studies", "tiny-parts", uid2, 1, strings.NewReader("small"), 5, minio.PutObjectPartOptions{})
	p2, err2 := core.PutObjectPart(ctx, "studies", "tiny-parts", uid2, 2, strings.NewReader("last"), 4, minio.PutObjectPartOptions{})
	if err1 != nil || err2 != nil {
		t.Fatalf("small parts: %v, %v", err1, err2)
	}
	if _, err := core.CompleteMultipartUpload(ctx, "studies", "tiny-parts", uid2, []minio.CompletePart{{PartNumber: 1, ETag: p1.ETag}, {PartNumber: 2, ETag: p2.ETag}}, minio.PutObjectOptions{}); minio.ToErrorResponse(err).Code != "EntityTooSmall" {
		t.Fatalf("a small middle part: %v", err)
	}
	if err := core.AbortMultipartUpload(ctx, "studies", "tiny-parts", uid2); err != nil {
		t.Fatal(err)
	}
	for u := range s1.ListIncompleteUploads(ctx, "studies", "", true) {
		t.Fatalf("an upload survived completion or abort: %+v", u)
	}

	// Copy, then delete.
	if _, err := s1.CopyObject(ctx, minio.CopyDestOptions{Bucket: "studies", Object: "copy.bin"},
		minio.CopySrcOptions{Bucket: "studies", Object: "sizes/1048577.bin"}); err != nil {
		t.Fatal(err)
	}
	if cp, src := read("copy.bin"), read("sizes/1048577.bin"); len(cp) != stripe+1 || !bytes.Equal(cp, src) {
		t.Fatalf("copy: %d bytes, equal to its source: %v", len(cp), bytes.Equal(cp, src))
	}
	if err := s1.RemoveObject(ctx, "studies", "copy.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.StatObject(ctx, "studies", "copy.bin", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("deleted object: %v", err)
	}

	// Presigned URLs: valid, then expired.
	u, err := s1.PresignedGetObject(ctx, "studies", "sizes/1.bin", 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := hc.Get(u.String()); err != nil || res.StatusCode != 200 {
		t.Fatalf("presigned GET: %v %v", res, err)
	}
	time.Sleep(3 * time.Second) // the URL's own lifetime, which the test set
	if res, err := hc.Get(u.String()); err != nil || res.StatusCode != 403 {
		t.Fatalf("expired presigned GET: %v %v", res, err)
	}

	// Refusals: a wrong secret, another project's bucket, a non-empty bucket.
	bad := s3Client(t, c.Node(2), cred.AccessKey, "not-the-secret")
	if _, err := bad.StatObject(ctx, "studies", "sizes/1.bin", minio.StatObjectOptions{}); err == nil {
		t.Fatal("a wrong secret was accepted")
	}
	if _, err := bad.ListBuckets(ctx); minio.ToErrorResponse(err).Code != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	intruder := s3Client(t, c.Node(2), otherCred.AccessKey, otherCred.SecretKey)
	// (GET, not HEAD: a HEAD error has no body to carry the code.)
	_, err = getBytes(ctx, intruder, "studies", "sizes/1.bin", minio.GetObjectOptions{})
	if minio.ToErrorResponse(err).Code != "NoSuchBucket" {
		t.Fatalf("another project's bucket: %v", err)
	}
	if bs, err := intruder.ListBuckets(ctx); err != nil || len(bs) != 0 {
		t.Fatalf("another project's key lists buckets: %v %v", bs, err)
	}
	if err := s1.RemoveBucket(ctx, "studies"); minio.ToErrorResponse(err).Code != "BucketNotEmpty" {
		t.Fatalf("removing a non-empty bucket: %v", err)
	}
	// The usage counts against the project's object quota.
	var q struct {
		Usage struct {
			ObjectGiB int64 `json:"object_gib"`
		} `json:"usage"`
	}
	if err := a.Call("GET", "/api/v1/projects/pacs/quota", nil, 200, &q); err != nil || q.Usage.ObjectGiB != 1 {
		t.Fatalf("object quota usage: %+v %v", q, err)
	}
	// With the limit cut to nothing, growth is refused (QuotaExceeded) and
	// stores nothing; shrinking is still allowed.
	if err := a.Call("PUT", "/api/v1/projects/pacs/quota", map[string]any{"instances": 10, "vcpus": 20, "ram_mib": 51200, "disk_gib": 1000, "object_gib": 0, "floating_ips": 5}, 200, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.PutObject(ctx, "studies", "over-quota", strings.NewReader("z"), 1, minio.PutObjectOptions{}); minio.ToErrorResponse(err).Code != "QuotaExceeded" {
		t.Fatalf("a write over the object quota: %v", err)
	}
	if _, err := s3c.StatObject(ctx, "studies", "over-quota", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("the refused object is visible: %v", err)
	}
	if err := s1.RemoveObject(ctx, "studies", "sizes/1.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("a delete over the object quota: %v", err)
	}
}

func s3HTTPTransport(t *testing.T, n *harness.Node) *http.Transport {
	pem, _ := os.ReadFile(filepath.Join(n.DataDir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
}

// getBytes reads an object (or the range opts asks for) whole through c.
func getBytes(ctx context.Context, c *minio.Client, bucket, key string, opts minio.GetObjectOptions) ([]byte, error) {
	obj, err := c.GetObject(ctx, bucket, key, opts)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
