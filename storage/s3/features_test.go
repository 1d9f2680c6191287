package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/minio/minio-go/v7"
	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/signer"
)

func randData(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// Conditional requests answer 304 and 412 as S3 does; a create-only PUT
// (If-None-Match: *) and a replace-only PUT (If-Match) are decided when
// they commit.
func TestConditionalRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.sdk(0)
	b, k := aws.String("forms"), aws.String("consent.pdf")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	out, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: k, Body: bytes.NewReader([]byte("signed")), IfNoneMatch: aws.String("*")})
	if err != nil {
		t.Fatalf("create-only PUT of a new key: %v", err)
	}
	etag := aws.ToString(out.ETag)
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: k, Body: bytes.NewReader([]byte("again")), IfNoneMatch: aws.String("*")}); apiCode(err) != "PreconditionFailed" {
		t.Fatalf("create-only PUT over an object: %v", err)
	}
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: k, Body: bytes.NewReader([]byte("x")), IfMatch: aws.String(`"0000"`)}); apiCode(err) != "PreconditionFailed" {
		t.Fatalf("PUT If-Match with a stale ETag: %v", err)
	}
	if got, _ := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: k}); string(got) != "signed" {
		t.Fatalf("refused writes changed the object: %q", got)
	}
	mod := time.Now().Add(-time.Hour)
	later := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name string
		in   awss3.HeadObjectInput
		code string // "" for success
	}{
		{"If-Match", awss3.HeadObjectInput{IfMatch: aws.String(etag)}, ""},
		{"If-Match other", awss3.HeadObjectInput{IfMatch: aws.String(`"abc"`)}, "PreconditionFailed"},
		{"If-None-Match", awss3.HeadObjectInput{IfNoneMatch: aws.String(etag)}, "NotModified"},
		{"If-Modified-Since later", awss3.HeadObjectInput{IfModifiedSince: aws.Time(later)}, "NotModified"},
		{"If-Modified-Since earlier", awss3.HeadObjectInput{IfModifiedSince: aws.Time(mod)}, ""},
		{"If-Unmodified-Since earlier", awss3.HeadObjectInput{IfUnmodifiedSince: aws.Time(mod)}, "PreconditionFailed"},
		{"If-Match wins over If-Unmodified-Since", awss3.HeadObjectInput{IfMatch: aws.String(etag), IfUnmodifiedSince: aws.Time(mod)}, ""},
	} {
		in := tc.in
		in.Bucket, in.Key = b, k
		_, err := c.HeadObject(ctx, &in)
		if code := apiCode(err); code != tc.code {
			t.Errorf("%s: %q, want %q", tc.name, code, tc.code)
		}
	}
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: b, Key: k, IfNoneMatch: aws.String(etag)}); apiCode(err) != "NotModified" {
		t.Errorf("GET If-None-Match: %v", err)
	}
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: k, Body: bytes.NewReader([]byte("v2")), IfMatch: aws.String(etag)}); err != nil {
		t.Fatalf("PUT If-Match with the current ETag: %v", err)
	}
}

// Listings shaped as S3 shapes them: ListObjects v1 with markers (older
// backup tools), v2 with continuation tokens, delimiters and common
// prefixes, paginated to the same keys.
func TestListings(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.sdk(1)
	b := aws.String("pacs")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, d := range []string{"a/", "b/x/", "c/"} {
		for i := range 4 {
			keys = append(keys, fmt.Sprintf("%s%02d", d, i))
		}
	}
	keys = append(keys, "root1", "root2", "dir/")
	mc := e.minio(1)
	for _, k := range keys {
		put(t, mc, "pacs", k, []byte(k))
	}
	collect := func(v1 bool, delim string, page int32) (got []string) {
		var marker, token *string
		for {
			if v1 {
				out, err := c.ListObjects(ctx, &awss3.ListObjectsInput{Bucket: b, Delimiter: aws.String(delim), MaxKeys: aws.Int32(page), Marker: marker})
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range out.Contents {
					got = append(got, aws.ToString(o.Key))
				}
				for _, p := range out.CommonPrefixes {
					got = append(got, aws.ToString(p.Prefix))
				}
				if !aws.ToBool(out.IsTruncated) {
					return got
				}
				marker = out.NextMarker
				if marker == nil {
					marker = aws.String(got[len(got)-1])
				}
				continue
			}
			out, err := c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: b, Delimiter: aws.String(delim), MaxKeys: aws.Int32(page), ContinuationToken: token})
			if err != nil {
				t.Fatal(err)
			}
			if int(aws.ToInt32(out.KeyCount)) != len(out.Contents)+len(out.CommonPrefixes) {
				t.Fatalf("KeyCount %d for %d entries", aws.ToInt32(out.KeyCount), len(out.Contents)+len(out.CommonPrefixes))
			}
			for _, o := range out.Contents {
				got = append(got, aws.ToString(o.Key))
			}
			for _, p := range out.CommonPrefixes {
				got = append(got, aws.ToString(p.Prefix))
			}
			if !aws.ToBool(out.IsTruncated) {
				return got
			}
			token = out.NextContinuationToken
		}
	}
	want := map[string]string{
		"":  strings.Join(sortedCopy(keys), ","),
		"/": "a/,b/,c/,dir/,root1,root2",
	}
	for _, delim := range []string{"", "/"} {
		for _, page := range []int32{1, 2, 5, 1000} {
			for _, v1 := range []bool{true, false} {
				got := sortedCopy(collect(v1, delim, page))
				if strings.Join(got, ",") != want[delim] {
					t.Errorf("v1=%v delimiter %q page %d: %v", v1, delim, page, got)
				}
			}
		}
	}
	// A key that ends with the delimiter, inside its own prefix, is listed
	// and paginates past without skipping what follows it.
	out, err := c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: b, Prefix: aws.String("dir/"), Delimiter: aws.String("/")})
	if err != nil || len(out.Contents) != 1 || aws.ToString(out.Contents[0].Key) != "dir/" {
		t.Fatalf("the folder object: %+v %v", out, err)
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// Copy and compose on the server: CopyObject keeps or replaces metadata
// and tags as asked and honours its source conditions; UploadPartCopy
// builds an object from ranges of others.
func TestCopyAndCompose(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.sdk(2)
	b := aws.String("studies")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	src := randData(7<<20 + 3)
	out, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("src"), Body: bytes.NewReader(src),
		ContentType: aws.String("application/dicom"), Metadata: map[string]string{"study": "42"}, Tagging: aws.String("ward=3")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: b, Key: aws.String("copy"), CopySource: aws.String("studies/src")}); err != nil {
		t.Fatal(err)
	}
	h, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: b, Key: aws.String("copy")})
	if err != nil || h.Metadata["study"] != "42" || aws.ToString(h.ContentType) != "application/dicom" || aws.ToInt32(h.TagCount) != 1 {
		t.Fatalf("a copy keeps metadata and tags: %+v %v", h, err)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: b, Key: aws.String("copy2"), CopySource: aws.String("studies/src"),
		MetadataDirective: types.MetadataDirectiveReplace, Metadata: map[string]string{"study": "43"}, ContentType: aws.String("text/plain"),
		TaggingDirective: types.TaggingDirectiveReplace, Tagging: aws.String("")}); err != nil {
		t.Fatal(err)
	}
	h, _ = c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: b, Key: aws.String("copy2")})
	if h.Metadata["study"] != "43" || aws.ToString(h.ContentType) != "text/plain" || aws.ToInt32(h.TagCount) != 0 {
		t.Fatalf("REPLACE: %+v", h)
	}
	if got, _ := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: aws.String("copy2")}); !bytes.Equal(got, src) {
		t.Fatal("the copy's bytes differ")
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: b, Key: aws.String("copy3"), CopySource: aws.String("studies/src"),
		CopySourceIfMatch: aws.String(`"deadbeef"`)}); apiCode(err) != "PreconditionFailed" {
		t.Fatalf("copy-source-if-match another ETag: %v", err)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: b, Key: aws.String("copy3"), CopySource: aws.String("studies/src"),
		CopySourceIfNoneMatch: out.ETag}); apiCode(err) != "PreconditionFailed" {
		t.Fatalf("copy-source-if-none-match its ETag: %v", err)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: b, Key: aws.String("src"), CopySource: aws.String("studies/src")}); apiCode(err) != "InvalidRequest" {
		t.Fatalf("copying an object onto itself unchanged: %v", err)
	}
	// Compose: part 1 = the first 5 MiB of src, part 2 = 100 bytes of it.
	up, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: b, Key: aws.String("composed")})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	for i, rg := range []string{"bytes=0-5242879", "bytes=7000000-7000099"} {
		pc, err := c.UploadPartCopy(ctx, &awss3.UploadPartCopyInput{Bucket: b, Key: aws.String("composed"), UploadId: up.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), CopySource: aws.String("studies/src"), CopySourceRange: aws.String(rg)})
		if err != nil {
			t.Fatalf("upload part copy %s: %v", rg, err)
		}
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: pc.CopyPartResult.ETag})
	}
	if _, err := c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: b, Key: aws.String("composed"), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatal(err)
	}
	got, _ := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: aws.String("composed")})
	if !bytes.Equal(got, append(append([]byte{}, src[:5<<20]...), src[7000000:7000100]...)) {
		t.Fatal("the composed object's bytes differ")
	}
	// GetObject by part number, and GetObjectAttributes.
	p2, _ := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: aws.String("composed"), PartNumber: aws.Int32(2)})
	if !bytes.Equal(p2, src[7000000:7000100]) {
		t.Fatal("part 2 of the composed object")
	}
	attrs, err := c.GetObjectAttributes(ctx, &awss3.GetObjectAttributesInput{Bucket: b, Key: aws.String("composed"),
		ObjectAttributes: []types.ObjectAttributes{types.ObjectAttributesObjectParts, types.ObjectAttributesObjectSize, types.ObjectAttributesEtag}})
	if err != nil || aws.ToInt64(attrs.ObjectSize) != 5<<20+100 || attrs.ObjectParts == nil || aws.ToInt32(attrs.ObjectParts.TotalPartsCount) != 2 {
		t.Fatalf("attributes: %+v %v", attrs, err)
	}
}

// Flexible checksums as current SDKs send them by default (aws-chunked
// bodies with a trailing CRC): verified on the way in, kept, and returned
// with checksum mode; multipart uploads with composite and full-object
// checksums; a wrong checksum is BadDigest and stores nothing.
func TestChecksums(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.sdk(0)
	b := aws.String("labs")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	data := randData(3<<20 + 1)
	for _, algo := range []types.ChecksumAlgorithm{types.ChecksumAlgorithmCrc32, types.ChecksumAlgorithmCrc32c, types.ChecksumAlgorithmCrc64nvme, types.ChecksumAlgorithmSha1, types.ChecksumAlgorithmSha256} {
		key := aws.String("single-" + string(algo))
		if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: key, Body: bytes.NewReader(data), ChecksumAlgorithm: algo}); err != nil {
			t.Fatalf("%s: %v", algo, err)
		}
		got, out := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: key, ChecksumMode: types.ChecksumModeEnabled})
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: bytes differ", algo)
		}
		if v := map[types.ChecksumAlgorithm]*string{types.ChecksumAlgorithmCrc32: out.ChecksumCRC32, types.ChecksumAlgorithmCrc32c: out.ChecksumCRC32C,
			types.ChecksumAlgorithmCrc64nvme: out.ChecksumCRC64NVME, types.ChecksumAlgorithmSha1: out.ChecksumSHA1, types.ChecksumAlgorithmSha256: out.ChecksumSHA256}[algo]; aws.ToString(v) == "" {
			t.Fatalf("%s: no checksum returned", algo)
		}
	}
	// A wrong value: BadDigest, and nothing stored; for a large object
	// (shards) and a small one (kept inline).
	for _, body := range [][]byte{data, data[:100]} {
		_, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("wrong"), Body: bytes.NewReader(body), ChecksumCRC32: aws.String("AAAAAA==")})
		if apiCode(err) != "BadDigest" {
			t.Fatalf("a wrong CRC32 over %d bytes: %v", len(body), err)
		}
		if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: b, Key: aws.String("wrong")}); apiCode(err) != "NotFound" {
			t.Fatalf("an object of %d bytes refused for its checksum exists: %v", len(body), err)
		}
	}
	// A body that does not match its signed SHA-256 is refused too.
	sum := sha256.Sum256([]byte("what was signed"))
	req, _ := http.NewRequest("PUT", e.servers[0].URL+"/labs/tampered", bytes.NewReader([]byte("what was sent")))
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	req = signer.SignV4(*req, e.ak, e.sk, "", "us-east-1")
	res, err := (&http.Client{Transport: e.transport(0)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("a small body that does not match its signed hash: %s", res.Status)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: b, Key: aws.String("tampered")}); apiCode(err) != "NotFound" {
		t.Fatalf("a tampered small object was stored: %v", err)
	}
	// Multipart, both types.
	for _, tc := range []struct {
		algo types.ChecksumAlgorithm
		typ  types.ChecksumType
	}{{types.ChecksumAlgorithmCrc32, types.ChecksumTypeComposite}, {types.ChecksumAlgorithmCrc32c, types.ChecksumTypeFullObject},
		{types.ChecksumAlgorithmCrc64nvme, types.ChecksumTypeFullObject}, {types.ChecksumAlgorithmSha256, types.ChecksumTypeComposite}} {
		key := aws.String(fmt.Sprintf("multi-%s-%s", tc.algo, tc.typ))
		up, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: b, Key: key, ChecksumAlgorithm: tc.algo, ChecksumType: tc.typ})
		if err != nil {
			t.Fatalf("%s %s: %v", tc.algo, tc.typ, err)
		}
		var parts []types.CompletedPart
		whole := []byte{}
		for i, size := range []int{5 << 20, 1<<20 + 17} {
			p := randData(size)
			whole = append(whole, p...)
			out, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: b, Key: key, UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)),
				Body: bytes.NewReader(p), ChecksumAlgorithm: tc.algo})
			if err != nil {
				t.Fatalf("%s %s part %d: %v", tc.algo, tc.typ, i+1, err)
			}
			parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32,
				ChecksumCRC32C: out.ChecksumCRC32C, ChecksumCRC64NVME: out.ChecksumCRC64NVME, ChecksumSHA256: out.ChecksumSHA256})
		}
		done, err := c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: b, Key: key, UploadId: up.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
		if err != nil {
			t.Fatalf("%s %s complete: %v", tc.algo, tc.typ, err)
		}
		if done.ChecksumType != tc.typ {
			t.Fatalf("%s %s: the completion says %q", tc.algo, tc.typ, done.ChecksumType)
		}
		// The SDK checks a full-object checksum against the bytes it reads.
		got, _ := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: key, ChecksumMode: types.ChecksumModeEnabled})
		if !bytes.Equal(got, whole) {
			t.Fatalf("%s %s: bytes differ", tc.algo, tc.typ)
		}
	}
}

// Tags on objects and buckets; CORS rules applied to a browser's preflight
// and requests; presigned POST from an HTML form; SigV2 clients.
func TestTagsCORSPostAndSigV2(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.sdk(1)
	b := aws.String("portal")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	data := []byte("discharge letter")
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("letter"), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObjectTagging(ctx, &awss3.PutObjectTaggingInput{Bucket: b, Key: aws.String("letter"),
		Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String("retention"), Value: aws.String("10y")}}}}); err != nil {
		t.Fatal(err)
	}
	if tg, err := c.GetObjectTagging(ctx, &awss3.GetObjectTaggingInput{Bucket: b, Key: aws.String("letter")}); err != nil || len(tg.TagSet) != 1 || aws.ToString(tg.TagSet[0].Value) != "10y" {
		t.Fatalf("tags: %+v %v", tg, err)
	}
	if _, err := c.DeleteObjectTagging(ctx, &awss3.DeleteObjectTaggingInput{Bucket: b, Key: aws.String("letter")}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: aws.String("letter")}); !bytes.Equal(got, data) {
		t.Fatal("deleting the tags changed the object")
	}
	if _, err := c.PutBucketTagging(ctx, &awss3.PutBucketTaggingInput{Bucket: b, Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String("cost"), Value: aws.String("ward-3")}}}}); err != nil {
		t.Fatal(err)
	}
	if tg, err := c.GetBucketTagging(ctx, &awss3.GetBucketTaggingInput{Bucket: b}); err != nil || len(tg.TagSet) != 1 {
		t.Fatalf("bucket tags: %+v %v", tg, err)
	}
	if _, err := c.PutObjectAcl(ctx, &awss3.PutObjectAclInput{Bucket: b, Key: aws.String("letter"), ACL: types.ObjectCannedACLPublicRead}); apiCode(err) != "NotImplemented" {
		t.Fatalf("a public-read ACL: %v", err)
	}
	if _, err := c.PutObjectAcl(ctx, &awss3.PutObjectAclInput{Bucket: b, Key: aws.String("letter"), ACL: types.ObjectCannedACLPrivate}); err != nil {
		t.Fatalf("the private ACL: %v", err)
	}

	// CORS.
	if _, err := c.PutBucketCors(ctx, &awss3.PutBucketCorsInput{Bucket: b, CORSConfiguration: &types.CORSConfiguration{CORSRules: []types.CORSRule{{
		AllowedOrigins: []string{"https://portal.hospital.lan"}, AllowedMethods: []string{"GET", "PUT"}, AllowedHeaders: []string{"*"},
		ExposeHeaders: []string{"ETag"}, MaxAgeSeconds: aws.Int32(600)}}}}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: e.transport(1)}
	pre := func(origin, method string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", e.servers[1].URL+"/portal/letter", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", method)
		req.Header.Set("Access-Control-Request-Headers", "content-type,x-amz-date")
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := pre("https://portal.hospital.lan", "PUT"); res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "https://portal.hospital.lan" || res.Header.Get("Access-Control-Max-Age") != "600" {
		t.Fatalf("allowed preflight: %s %v", res.Status, res.Header)
	}
	for _, bad := range [][2]string{{"https://evil.example", "GET"}, {"https://portal.hospital.lan", "DELETE"}} {
		if res := pre(bad[0], bad[1]); res.StatusCode != 403 || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight %v: %s", bad, res.Status)
		}
	}
	presign := awss3.NewPresignClient(c)
	pg, err := presign.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: b, Key: aws.String("letter")})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", pg.URL, nil)
	req.Header.Set("Origin", "https://portal.hospital.lan")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Equal(got, data) || res.Header.Get("Access-Control-Allow-Origin") != "https://portal.hospital.lan" || res.Header.Get("Access-Control-Expose-Headers") != "ETag" {
		t.Fatalf("a browser's presigned GET: %s %v", res.Status, res.Header)
	}

	// Presigned POST: a form built by minio-go, posted as a browser does.
	mc := e.minio(1)
	pol := minio.NewPostPolicy()
	_ = pol.SetBucket("portal")
	_ = pol.SetKey("uploads/scan.png")
	_ = pol.SetExpires(time.Now().Add(10 * time.Minute))
	_ = pol.SetContentLengthRange(1, 1<<20)
	_ = pol.SetSuccessStatusAction("201")
	u, fields, err := mc.PresignedPostPolicy(ctx, pol)
	if err != nil {
		t.Fatal(err)
	}
	res = postForm(t, hc, u, fields, []byte("png bytes"))
	if res.StatusCode != 201 {
		t.Fatalf("presigned POST: %s", res.Status)
	}
	if got, _ := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: aws.String("uploads/scan.png")}); string(got) != "png bytes" {
		t.Fatalf("the posted object: %q", got)
	}
	if res := postForm(t, hc, u, fields, make([]byte, 1<<20+1)); res.StatusCode != 400 {
		t.Fatalf("a POST past the policy's size: %s", res.Status)
	}
	// The form's other fields are a PUT's headers: a checksum is verified,
	// what Cairn does not do is refused, object lock needs a locked bucket.
	file := []byte("checked png")
	for _, tc := range []struct {
		name   string
		set    func(*minio.PostPolicy)
		status int
	}{
		{"wrong checksum", func(p *minio.PostPolicy) {
			_ = p.SetChecksum(minio.NewChecksum(minio.ChecksumCRC32C, minio.ChecksumCRC32C.Hasher().Sum(nil)))
		}, 400}, // the CRC32C of nothing is not the file's
		{"encryption", func(p *minio.PostPolicy) { _ = p.SetUserData("server-side-encryption", "AES256") }, 501},
		{"object lock on an unlocked bucket", func(p *minio.PostPolicy) { _ = p.SetUserData("object-lock-legal-hold", "ON") }, 400},
	} {
		p := minio.NewPostPolicy()
		_ = p.SetBucket("portal")
		_ = p.SetKey("uploads/" + tc.name)
		_ = p.SetExpires(time.Now().Add(10 * time.Minute))
		tc.set(p)
		u, fields, err := mc.PresignedPostPolicy(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if res := postForm(t, hc, u, fields, file); res.StatusCode != tc.status {
			t.Fatalf("POST with %s: %s, want %d", tc.name, res.Status, tc.status)
		}
		if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: b, Key: aws.String("uploads/" + tc.name)}); apiCode(err) != "NotFound" {
			t.Fatalf("a refused POST (%s) stored its file: %v", tc.name, err)
		}
	}
	h := minio.ChecksumCRC32C.Hasher()
	h.Write(file)
	p := minio.NewPostPolicy()
	_ = p.SetBucket("portal")
	_ = p.SetKey("uploads/checked")
	_ = p.SetExpires(time.Now().Add(10 * time.Minute))
	_ = p.SetChecksum(minio.NewChecksum(minio.ChecksumCRC32C, h.Sum(nil)))
	_ = p.SetContentDisposition("attachment; filename=scan.png") // minio-go does not escape quotes in its policy JSON
	_ = p.SetContentEncoding("identity")
	u, fields, err = mc.PresignedPostPolicy(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if res := postForm(t, hc, u, fields, file); res.StatusCode != 204 {
		t.Fatalf("POST with the right CRC32C: %s", res.Status)
	}
	if got, out := sdkGet(t, c, &awss3.GetObjectInput{Bucket: b, Key: aws.String("uploads/checked"), ChecksumMode: types.ChecksumModeEnabled}); !bytes.Equal(got, file) || aws.ToString(out.ChecksumCRC32C) == "" {
		t.Fatalf("the checked POST: %q, CRC32C %q", got, aws.ToString(out.ChecksumCRC32C))
	} else if aws.ToString(out.ContentDisposition) != "attachment; filename=scan.png" || aws.ToString(out.ContentEncoding) != "identity" {
		t.Fatalf("the form's standard headers were not kept: disposition %q, encoding %q",
			aws.ToString(out.ContentDisposition), aws.ToString(out.ContentEncoding))
	}

	// SigV2 (older backup software, s3cmd's signature_v2).
	v2, err := minio.New(strings.TrimPrefix(e.servers[1].URL, "https://"), &minio.Options{
		Creds: miniocreds.NewStaticV2(e.ak, e.sk, ""), Secure: true, BucketLookup: minio.BucketLookupPath, Transport: e.transport(1)})
	if err != nil {
		t.Fatal(err)
	}
	put(t, v2, "portal", "v2/object", []byte("signed the old way"))
	if got, err := get(t, v2, "portal", "v2/object", minio.GetObjectOptions{}); err != nil || string(got) != "signed the old way" {
		t.Fatalf("SigV2 round trip: %q %v", got, err)
	}
	pu, err := v2.PresignedGetObject(ctx, "portal", "v2/object", time.Minute, url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	res, err = hc.Get(pu.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(got) != "signed the old way" {
		t.Fatalf("a SigV2 presigned GET: %s %q", res.Status, got)
	}
}

// postForm posts an upload form with its file last, as browsers send it.
func postForm(t *testing.T, hc *http.Client, u *url.URL, fields map[string]string, file []byte) *http.Response {
	t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	for k, v := range fields {
		_ = w.WriteField(k, v)
	}
	fw, _ := w.CreateFormFile("file", "scan.png")
	_, _ = fw.Write(file)
	_ = w.Close()
	res, err := hc.Post(u.String(), w.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// ListMultipartUploads, ListParts and ListObjectVersions paginate as S3
// does: the SDK's paginators see every entry once.
func TestPaginatedListings(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.sdk(2)
	b := aws.String("archive")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutBucketVersioning(ctx, &awss3.PutBucketVersioningInput{Bucket: b,
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatal(err)
	}
	// Uploads: 7 keys under two prefixes, one key with two uploads.
	uploads := map[string]bool{}
	for _, k := range []string{"a/1", "a/2", "a/3", "b/1", "b/2", "c", "c"} {
		up, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: b, Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		uploads[aws.ToString(up.UploadId)] = true
	}
	seen := map[string]bool{}
	var km, um *string
	for pages := 0; ; pages++ {
		out, err := c.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: b, MaxUploads: aws.Int32(2), KeyMarker: km, UploadIdMarker: um})
		if err != nil || pages > 10 {
			t.Fatalf("list uploads: %v after %d pages", err, pages)
		}
		for _, u := range out.Uploads {
			if seen[aws.ToString(u.UploadId)] {
				t.Fatalf("upload %s listed twice", aws.ToString(u.UploadId))
			}
			seen[aws.ToString(u.UploadId)] = true
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		km, um = out.NextKeyMarker, out.NextUploadIdMarker
	}
	if len(seen) != len(uploads) {
		t.Fatalf("listed %d uploads of %d", len(seen), len(uploads))
	}
	if out, err := c.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: b, Delimiter: aws.String("/")}); err != nil || len(out.CommonPrefixes) != 2 || len(out.Uploads) != 2 {
		t.Fatalf("uploads by prefix: %d prefixes, %d uploads (%v)", len(out.CommonPrefixes), len(out.Uploads), err)
	}
	// Parts: 5 of them, two per page.
	up, _ := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: b, Key: aws.String("parts")})
	for n := int32(1); n <= 5; n++ {
		if _, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: b, Key: aws.String("parts"), UploadId: up.UploadId, PartNumber: aws.Int32(n), Body: bytes.NewReader([]byte{byte(n)})}); err != nil {
			t.Fatal(err)
		}
	}
	var nums []int32
	pp := awss3.NewListPartsPaginator(c, &awss3.ListPartsInput{Bucket: b, Key: aws.String("parts"), UploadId: up.UploadId, MaxParts: aws.Int32(2)})
	for pp.HasMorePages() {
		out, err := pp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range out.Parts {
			nums = append(nums, aws.ToInt32(p.PartNumber))
		}
	}
	if fmt.Sprint(nums) != "[1 2 3 4 5]" {
		t.Fatalf("parts %v", nums)
	}
	// Versions: 3 keys × 3 versions and a marker, three per page.
	want := 0
	for _, k := range []string{"x", "y", "z"} {
		for i := range 3 {
			if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String(k), Body: bytes.NewReader([]byte{byte(i)})}); err != nil {
				t.Fatal(err)
			}
			want++
		}
	}
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("y")}); err != nil {
		t.Fatal(err)
	}
	want++
	got := map[string]bool{}
	var vkm, vim *string
	for pages := 0; ; pages++ {
		out, err := c.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: b, MaxKeys: aws.Int32(3), KeyMarker: vkm, VersionIdMarker: vim})
		if err != nil || pages > 10 {
			t.Fatalf("list versions: %v after %d pages", err, pages)
		}
		for _, v := range out.Versions {
			got[aws.ToString(v.Key)+"@"+aws.ToString(v.VersionId)] = true
		}
		for _, m := range out.DeleteMarkers {
			got[aws.ToString(m.Key)+"@"+aws.ToString(m.VersionId)] = true
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		vkm, vim = out.NextKeyMarker, out.NextVersionIdMarker
	}
	if len(got) != want {
		t.Fatalf("listed %d versions and markers of %d", len(got), want)
	}
}
