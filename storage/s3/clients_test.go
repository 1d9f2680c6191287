package s3_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// Regressions found by running real S3 clients (qa/cluster/s3_clients_test.go)
// against the gateway.

// rawHeads sends a signed request with an empty body for path to node i
// and returns the first n response heads as they came on the wire, header
// names in their case and interim responses included: Go's client would
// canonicalize the one and swallow the other.
func rawHeads(t *testing.T, e *env, i int, method, path string, n int, hdr ...string) []string {
	t.Helper()
	req, err := http.NewRequest(method, e.servers[i].URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	for j := 0; j+1 < len(hdr); j += 2 {
		req.Header.Set(hdr[j], hdr[j+1])
	}
	req = signer.SignV4(*req, e.ak, e.sk, "", "us-east-1")
	conn, err := tls.Dial("tcp", req.URL.Host, e.transport(i).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	var heads []string
	var head strings.Builder
	rd := bufio.NewReader(conn)
	for len(heads) < n {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading response heads: %v (%q so far)", err, append(heads, head.String()))
		}
		if line == "\r\n" {
			heads = append(heads, head.String())
			head.Reset()
			continue
		}
		head.WriteString(line)
	}
	return heads
}

// aws s3api head-object showed metadata set as study=ct-1 as {"Study":
// "ct-1"}: the gateway sent X-Amz-Meta-Study, and botocore keeps the case
// it receives. S3 sends the names in lower case.
func TestMetadataNamesLowerCase(t *testing.T) {
	e := newEnv(t)
	c := e.minio(0)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "meta", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, "meta", "k", bytes.NewReader([]byte("x")), 1,
		minio.PutObjectOptions{UserMetadata: map[string]string{"Study": "ct-1", "modality": "CT"}}); err != nil {
		t.Fatal(err)
	}
	head := rawHeads(t, e, 1, http.MethodHead, "/meta/k", 1)[0]
	for _, want := range []string{"\r\nx-amz-meta-study: ct-1\r\n", "\r\nx-amz-meta-modality: CT\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("the response lacks %q:\n%s", strings.TrimSpace(want), head)
		}
	}
}

// aws-sdk-go-v2's GetObjectAttributes returned no TotalPartsCount for a
// 25-part object: S3 names the element PartsCount, and the gateway sent
// TotalPartsCount, the SDKs' name for the field.
func TestObjectAttributesPartsCount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.minio(0).MakeBucket(ctx, "attrs", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	c := minio.Core{Client: e.minio(0)}
	uid, err := c.NewMultipartUpload(ctx, "attrs", "mp", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var parts []minio.CompletePart
	for i, size := range []int{5 << 20, 1000} {
		p, err := c.PutObjectPart(ctx, "attrs", "mp", uid, i+1, bytes.NewReader(make([]byte, size)), int64(size), minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: i + 1, ETag: p.ETag})
	}
	if _, err := c.CompleteMultipartUpload(ctx, "attrs", "mp", uid, parts, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := e.sdk(1).GetObjectAttributes(ctx, &awss3.GetObjectAttributesInput{Bucket: aws.String("attrs"), Key: aws.String("mp"),
		ObjectAttributes: []types.ObjectAttributes{types.ObjectAttributesObjectParts}})
	if err != nil {
		t.Fatal(err)
	}
	if out.ObjectParts == nil || aws.ToInt32(out.ObjectParts.TotalPartsCount) != 2 || len(out.ObjectParts.Parts) != 2 {
		t.Fatalf("ObjectParts: %+v", out.ObjectParts)
	}
}

// aws s3 sync of a tree with an empty file stalled for 60 s: botocore sends
// Expect: 100-continue with every upload, Go's server sends 100 Continue
// only when a handler reads a body, and botocore, answered without one,
// misreads the next response on that connection. S3 sends 100 Continue
// for an empty body too.
func TestExpectContinueWithEmptyBody(t *testing.T) {
	e := newEnv(t)
	if err := e.minio(0).MakeBucket(context.Background(), "expect", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	heads := rawHeads(t, e, 1, http.MethodPut, "/expect/empty", 2, "Expect", "100-continue", "Content-Length", "0")
	if !strings.HasPrefix(heads[0], "HTTP/1.1 100 Continue\r\n") || !strings.HasPrefix(heads[1], "HTTP/1.1 200 OK\r\n") {
		t.Fatalf("the answers to an empty PUT expecting 100-continue:\n%s", strings.Join(heads, "\n"))
	}
	if st, err := e.minio(2).StatObject(context.Background(), "expect", "empty", minio.StatObjectOptions{}); err != nil || st.Size != 0 {
		t.Fatalf("the empty object: %+v %v", st, err)
	}
}

// aws s3 cp --cache-control --content-disposition --content-encoding
// (awscli), s3cmd modify --add-header and rclone's copies lost those
// headers: the gateway kept only Content-Type and x-amz-meta-*. S3 keeps
// Cache-Control, Content-Disposition, Content-Encoding, Content-Language and
// Expires, through multipart uploads and copies.
func TestStandardHeadersKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// With the SDK's default checksums, uploads go aws-chunked: that
	// encoding frames the upload and is not the object's.
	c := awss3.New(e.sdk(0).Options(), func(o *awss3.Options) {
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenSupported
	})
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("hdrs")}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Cache-Control": "max-age=3600", "Content-Disposition": `attachment; filename="scan.dcm"`,
		"Content-Encoding": "gzip", "Content-Language": "en", "Expires": "Wed, 01 Jan 2031 00:00:00 GMT"}
	expires, _ := http.ParseTime(want["Expires"])
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("hdrs"), Key: aws.String("put"), Body: bytes.NewReader([]byte("gzipped, say")),
		CacheControl: aws.String(want["Cache-Control"]), ContentDisposition: aws.String(want["Content-Disposition"]),
		ContentEncoding: aws.String("gzip"), ContentLanguage: aws.String("en"), Expires: &expires}); err != nil {
		t.Fatal(err)
	}
	up, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("hdrs"), Key: aws.String("multipart"),
		CacheControl: aws.String(want["Cache-Control"]), ContentDisposition: aws.String(want["Content-Disposition"]),
		ContentEncoding: aws.String("gzip"), ContentLanguage: aws.String("en"), Expires: &expires})
	if err != nil {
		t.Fatal(err)
	}
	part, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("hdrs"), Key: aws.String("multipart"), UploadId: up.UploadId,
		PartNumber: aws.Int32(1), Body: bytes.NewReader([]byte("one part"))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("hdrs"), Key: aws.String("multipart"), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{PartNumber: aws.Int32(1), ETag: part.ETag}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("hdrs"), Key: aws.String("copied"), CopySource: aws.String("hdrs/put")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("hdrs"), Key: aws.String("replaced"), CopySource: aws.String("hdrs/put"),
		MetadataDirective: types.MetadataDirectiveReplace, CacheControl: aws.String("no-store")}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]map[string]string{"put": want, "multipart": want, "copied": want, "replaced": {"Cache-Control": "no-store"}} {
		head := rawHeads(t, e, 2, http.MethodHead, "/hdrs/"+key, 1)[0]
		for _, name := range []string{"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires"} {
			line := "\r\n" + name + ": " + want[name] + "\r\n"
			if has := strings.Contains(head, "\r\n"+name+":"); has != (want[name] != "") || want[name] != "" && !strings.Contains(head, line) {
				t.Errorf("%s: %s should be %q:\n%s", key, name, want[name], head)
			}
		}
	}
	// A GET's response-* parameters still override what is stored.
	u, err := e.minio(1).PresignedGetObject(ctx, "hdrs", "put", time.Minute, map[string][]string{"response-cache-control": {"no-cache"}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := (&http.Client{Transport: e.transport(1)}).Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("response-cache-control: Cache-Control %q", got)
	}
}

// minio-go's CompleteMultipartUpload with parts 5 and 1, in that order,
// got EntityTooSmall (part 5, 123 bytes, is not last) where S3 answers
// InvalidPartOrder: S3 judges the list's order before any part's size.
func TestCompleteOutOfOrderBeforeSizes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.minio(0).MakeBucket(ctx, "order", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	c := minio.Core{Client: e.minio(0)}
	uid, err := c.NewMultipartUpload(ctx, "order", "mp", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var parts []minio.CompletePart
	for _, n := range []int{1, 5} {
		size := 5 << 20
		if n == 5 {
			size = 123
		}
		p, err := c.PutObjectPart(ctx, "order", "mp", uid, n, bytes.NewReader(make([]byte, size)), int64(size), minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
	}
	for _, list := range [][]minio.CompletePart{{parts[1], parts[0]}, {parts[0], parts[0]}} {
		if _, err := c.CompleteMultipartUpload(ctx, "order", "mp", uid, list, minio.PutObjectOptions{}); minio.ToErrorResponse(err).Code != "InvalidPartOrder" {
			t.Fatalf("complete with parts %d, %d: %v", list[0].PartNumber, list[1].PartNumber, err)
		}
	}
	if _, err := c.CompleteMultipartUpload(ctx, "order", "mp", uid, parts, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("the upload after refused completions: %v", err)
	}
}
