package cluster_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/minio/minio-go/v7"
)

// wireLog records what an SDK sends, to show the SDK did what the test
// says it does (aws-chunked bodies with trailing checksums).
type wireLog struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []string
}

func (w *wireLog) RoundTrip(r *http.Request) (*http.Response, error) {
	var sums []string // the checksums sent in headers
	for k := range r.Header {
		if k = strings.ToLower(k); strings.HasPrefix(k, "x-amz-checksum-") || k == "content-md5" {
			sums = append(sums, k)
		}
	}
	sort.Strings(sums)
	w.mu.Lock()
	w.reqs = append(w.reqs, fmt.Sprintf("%s %s?%s content-sha256=%s trailer=%s checksums=%s", r.Method, r.URL.Path, r.URL.RawQuery,
		r.Header.Get("X-Amz-Content-Sha256"), r.Header.Get("X-Amz-Trailer"), strings.Join(sums, ",")))
	w.mu.Unlock()
	return w.next.RoundTrip(r)
}

// sent is the recorded requests that contain every one of parts.
func (w *wireLog) sent(parts ...string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, r := range w.reqs {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(r, p)
		}
		if all {
			out = append(out, r)
		}
	}
	return out
}

// sdkClient is an aws-sdk-go-v2 client of n as an application gets it from
// config.LoadDefaultConfig: checksums on every request that supports them
// (over HTTPS, aws-chunked bodies with a trailing CRC32) and checked on
// every response that carries them.
func sdkClient(t *testing.T, n *harness.Node, ak, sk string, log *wireLog) *s3.Client {
	log.next = s3HTTPTransport(t, n)
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		Credentials:                credentials.NewStaticCredentialsProvider(ak, sk, ""),
		BaseEndpoint:               aws.String("https://" + n.IP + ":8447"),
		UsePathStyle:               true,
		HTTPClient:                 &http.Client{Transport: log},
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported,
	})
}

// crc32Of is the base64 of data's CRC32, as S3 writes checksums.
func crc32Of(data []byte) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(data)))
}

func randomBytes(n int, seed uint64) []byte {
	rnd := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// apiError is an SDK error's S3 code and HTTP status.
func apiError(err error) (string, int) {
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	code, status := "", 0
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// aws-sdk-go-v2 at its current version, with its default checksums, and
// minio-go's presigned POST, against three real nodes: uploads whole and in
// 200 MiB of parts, an object composed of ranges of others, presigned PUT,
// GET and POST fetched with curl, and refusals that must leave the bucket.
func TestS3SDK(t *testing.T) {
	c, _, cred := s3Pool(t, "pacs")
	ctx := context.Background()
	wire := &wireLog{}
	sdk := sdkClient(t, c.Node(1), cred.AccessKey, cred.SecretKey, wire)
	check := s3Client(t, c.Node(3), cred.AccessKey, cred.SecretKey)
	ca := filepath.Join(c.Node(1).DataDir, "ca.crt")
	readBack := func(t *testing.T, key string) []byte {
		t.Helper()
		b, err := getBytes(ctx, check, "sdk", key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("read %s through another node: %v", key, err)
		}
		return b
	}
	if _, err := sdk.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("sdk")}); err != nil {
		t.Fatal(err)
	}

	t.Run("put and get with default checksums", func(t *testing.T) {
		data := randomBytes(3<<20+5, 1)
		out, err := sdk.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("sdk"), Key: aws.String("put/seekable.bin"),
			Body: bytes.NewReader(data), ContentType: aws.String("application/dicom"), Metadata: map[string]string{"study": "ct-1"}})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.ChecksumCRC32) != crc32Of(data) {
			t.Errorf("PutObject answered CRC32 %q, want %q", aws.ToString(out.ChecksumCRC32), crc32Of(data))
		}
		// A body the SDK cannot seek goes aws-chunked too.
		if _, err := sdk.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("sdk"), Key: aws.String("put/stream.bin"),
			Body: io.MultiReader(bytes.NewReader(data[:1<<20]), bytes.NewReader(data[1<<20:])), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
			t.Fatal(err)
		}
		if sent := wire.sent("PUT /sdk/put/", "content-sha256=STREAMING-UNSIGNED-PAYLOAD-TRAILER", "trailer=x-amz-checksum-crc32"); len(sent) != 2 {
			t.Fatalf("the SDK did not send aws-chunked bodies with trailing CRC32s: %q", wire.sent("PUT /sdk/put/"))
		}
		for _, key := range []string{"put/seekable.bin", "put/stream.bin"} {
			if !bytes.Equal(readBack(t, key), data) {
				t.Fatalf("%s differs when read back", key)
			}
			got, err := sdk.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("sdk"), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(got.Body) // the SDK checks the CRC32 as it reads
			got.Body.Close()
			if err != nil || !bytes.Equal(body, data) || aws.ToString(got.ChecksumCRC32) != crc32Of(data) {
				t.Fatalf("GetObject %s: %d bytes, CRC32 %q, %v", key, len(body), aws.ToString(got.ChecksumCRC32), err)
			}
		}
		h, err := sdk.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sdk"), Key: aws.String("put/seekable.bin")})
		if err != nil || aws.ToString(h.ContentType) != "application/dicom" || h.Metadata["study"] != "ct-1" || aws.ToInt64(h.ContentLength) != int64(len(data)) {
			t.Fatalf("HeadObject: %+v %v", h, err)
		}
	})

	t.Run("multipart 200 MiB", func(t *testing.T) {
		const partSize = 8 << 20 // feature/s3/manager's default part size
		data := randomBytes(200<<20, 2)
		start := time.Now()
		// As feature/s3/manager does with the default checksums: the upload
		// declares CRC32 and every part carries its own.
		up, err := sdk.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("sdk"), Key: aws.String("mp/big.bin"),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32})
		if err != nil {
			t.Fatal(err)
		}
		parts := make([]types.CompletedPart, len(data)/partSize)
		errs := make(chan error, len(parts))
		next := make(chan int, len(parts))
		for i := range parts {
			next <- i
		}
		close(next)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for i := range next {
					chunk := data[i*partSize : (i+1)*partSize]
					out, err := sdk.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("sdk"), Key: aws.String("mp/big.bin"), UploadId: up.UploadId,
						PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(chunk), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32})
					if err != nil {
						errs <- fmt.Errorf("part %d: %w", i+1, err)
						return
					}
					if aws.ToString(out.ChecksumCRC32) != crc32Of(chunk) {
						errs <- fmt.Errorf("part %d: CRC32 %q, want %q", i+1, aws.ToString(out.ChecksumCRC32), crc32Of(chunk))
					}
					parts[i] = types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		done, err := sdk.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("sdk"), Key: aws.String("mp/big.bin"),
			UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("200 MiB in %d parts in %s", len(parts), time.Since(start).Round(time.Millisecond))
		if !strings.HasSuffix(aws.ToString(done.ETag), `-25"`) {
			t.Errorf("ETag %s, want one of 25 parts", aws.ToString(done.ETag))
		}
		if len(wire.sent("PUT /sdk/mp/big.bin", "partNumber=", "content-sha256=STREAMING-UNSIGNED-PAYLOAD-TRAILER", "trailer=x-amz-checksum-crc32")) != 25 {
			t.Errorf("not every part went aws-chunked with a trailing CRC32")
		}
		if got := readBack(t, "mp/big.bin"); !bytes.Equal(got, data) {
			t.Fatalf("the object read back differs: %d bytes", len(got))
		}
		attrs, err := sdk.GetObjectAttributes(ctx, &s3.GetObjectAttributesInput{Bucket: aws.String("sdk"), Key: aws.String("mp/big.bin"),
			ObjectAttributes: []types.ObjectAttributes{types.ObjectAttributesObjectParts, types.ObjectAttributesObjectSize, types.ObjectAttributesChecksum}})
		if err != nil || aws.ToInt64(attrs.ObjectSize) != int64(len(data)) || attrs.ObjectParts == nil || aws.ToInt32(attrs.ObjectParts.TotalPartsCount) != 25 {
			t.Fatalf("GetObjectAttributes: %v, size %d, parts %+v", err, aws.ToInt64(attrs.ObjectSize), attrs.ObjectParts)
		}

		// An application calling the API itself, without declaring a
		// checksum for the upload: the SDK still sends one with each part.
		small := data[:11<<20]
		up2, err := sdk.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("sdk"), Key: aws.String("mp/plain.bin")})
		if err != nil {
			t.Fatal(err)
		}
		var plain []types.CompletedPart
		for i, chunk := range [][]byte{small[:6<<20], small[6<<20:]} {
			out, err := sdk.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("sdk"), Key: aws.String("mp/plain.bin"), UploadId: up2.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(chunk)})
			if err != nil {
				t.Fatalf("part %d of an upload with no checksum declared: %v", i+1, err)
			}
			plain = append(plain, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag})
		}
		if _, err := sdk.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("sdk"), Key: aws.String("mp/plain.bin"),
			UploadId: up2.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: plain}}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readBack(t, "mp/plain.bin"), small) {
			t.Fatal("mp/plain.bin differs when read back")
		}
	})

	t.Run("compose with UploadPartCopy", func(t *testing.T) {
		srcA, srcB := randomBytes(12<<20, 3), randomBytes(7<<20, 4)
		for key, data := range map[string][]byte{"compose/a": srcA, "compose/b": srcB} {
			if _, err := sdk.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("sdk"), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
				t.Fatal(err)
			}
		}
		up, err := sdk.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("sdk"), Key: aws.String("compose/whole"),
			ContentType: aws.String("application/x-composed")})
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		var parts []types.CompletedPart
		for i, p := range []struct {
			src        string
			data       []byte
			rangeStart int // -1: the whole source
			rangeEnd   int
		}{
			{"compose/a", srcA, 0, 5<<20 - 1},
			{"compose/b", srcB, -1, 0},
			{"compose/a", srcA, 7 << 20, 12<<20 - 1},
			{"compose/b", srcB, 100, 100 + 4096 - 1}, // the last part may be small
		} {
			in := &s3.UploadPartCopyInput{Bucket: aws.String("sdk"), Key: aws.String("compose/whole"), UploadId: up.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), CopySource: aws.String("sdk/" + p.src)}
			if p.rangeStart >= 0 {
				in.CopySourceRange = aws.String(fmt.Sprintf("bytes=%d-%d", p.rangeStart, p.rangeEnd))
				want = append(want, p.data[p.rangeStart:p.rangeEnd+1]...)
			} else {
				want = append(want, p.data...)
			}
			out, err := sdk.UploadPartCopy(ctx, in)
			if err != nil {
				t.Fatalf("UploadPartCopy %d: %v", i+1, err)
			}
			parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.CopyPartResult.ETag})
		}
		if _, err := sdk.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("sdk"), Key: aws.String("compose/whole"),
			UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
			t.Fatal(err)
		}
		if got := readBack(t, "compose/whole"); !bytes.Equal(got, want) {
			t.Fatalf("the composed object: %d bytes, want %d, equal %v", len(got), len(want), bytes.Equal(got, want))
		}
		h, err := sdk.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sdk"), Key: aws.String("compose/whole")})
		if err != nil || aws.ToString(h.ContentType) != "application/x-composed" || !strings.HasSuffix(aws.ToString(h.ETag), `-4"`) {
			t.Fatalf("HeadObject of the composed object: %+v %v", h, err)
		}
		// The sources are untouched.
		if !bytes.Equal(readBack(t, "compose/a"), srcA) || !bytes.Equal(readBack(t, "compose/b"), srcB) {
			t.Fatal("a source changed")
		}
	})

	t.Run("presigned PUT and GET", func(t *testing.T) {
		pre := s3.NewPresignClient(sdk)
		data := randomBytes(2<<20+9, 5)
		file := filepath.Join(t.TempDir(), "upload.bin")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		put, err := pre.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("sdk"), Key: aws.String("presigned/put.bin")}, s3.WithPresignExpires(5*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		var hdr []string
		for k, vs := range put.SignedHeader {
			if k != "Host" {
				hdr = append(hdr, "-H", k+": "+vs[0])
			}
		}
		if status, body := curl(t, ca, put.URL, append(hdr, "-T", file)...); status != 200 {
			t.Fatalf("curl PUT to a presigned URL: %d %s (signed headers %v)", status, body, put.SignedHeader)
		}
		if !bytes.Equal(readBack(t, "presigned/put.bin"), data) {
			t.Fatal("the object put through a presigned URL differs")
		}
		get, err := pre.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("sdk"), Key: aws.String("presigned/put.bin")}, s3.WithPresignExpires(5*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if status, body := curl(t, ca, get.URL); status != 200 || !bytes.Equal(body, data) {
			t.Fatalf("curl GET of a presigned URL: %d, %d bytes", status, len(body))
		}
		// A presigned GET does not let one PUT.
		if status, _ := curl(t, ca, get.URL, "-T", file); status != 403 {
			t.Fatalf("PUT to a presigned GET URL: %d", status)
		}
	})

	t.Run("presigned POST", func(t *testing.T) {
		data := randomBytes(300<<10, 6)
		file := filepath.Join(t.TempDir(), "form.bin")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		post := func(key string, maxSize int64) (int, []byte) {
			p := minio.NewPostPolicy()
			_ = p.SetBucket("sdk")
			_ = p.SetKey(key)
			_ = p.SetExpires(time.Now().UTC().Add(5 * time.Minute))
			_ = p.SetContentType("application/dicom")
			_ = p.SetContentLengthRange(1, maxSize)
			_ = p.SetUserMetadata("study", "ct-4")
			u, form, err := s3Client(t, c.Node(2), cred.AccessKey, cred.SecretKey).PresignedPostPolicy(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			var args []string
			names := make([]string, 0, len(form))
			for k := range form {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				args = append(args, "--form-string", k+"="+form[k])
			}
			return curl(t, ca, u.String(), append(args, "-F", "file=@"+file)...)
		}
		if status, body := post("presigned/form.bin", 1<<20); status != 204 {
			t.Fatalf("curl -F to a presigned POST: %d %s", status, body)
		}
		if !bytes.Equal(readBack(t, "presigned/form.bin"), data) {
			t.Fatal("the object posted differs")
		}
		st, err := check.StatObject(ctx, "sdk", "presigned/form.bin", minio.StatObjectOptions{})
		if err != nil || st.ContentType != "application/dicom" || st.UserMetadata["Study"] != "ct-4" {
			t.Fatalf("the posted object's content type and metadata: %+v %v", st, err)
		}
		if status, body := post("presigned/too-big.bin", 100<<10); status != 400 || !bytes.Contains(body, []byte("<Code>EntityTooLarge</Code>")) {
			t.Fatalf("a POST larger than its policy allows: %d %s", status, body)
		}
		if _, err := check.StatObject(ctx, "sdk", "presigned/too-big.bin", minio.StatObjectOptions{}); minio.ToErrorResponse(err).StatusCode != 404 {
			t.Fatalf("a refused POST stored something: %v", err)
		}
	})

	t.Run("list pages and delete many", func(t *testing.T) {
		var want []string
		for i := range 30 {
			key := fmt.Sprintf("many/%02d", i)
			want = append(want, key)
			if _, err := sdk.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("sdk"), Key: aws.String(key), Body: strings.NewReader(key)}); err != nil {
				t.Fatal(err)
			}
		}
		list := func() []string {
			var keys []string
			pages := s3.NewListObjectsV2Paginator(sdk, &s3.ListObjectsV2Input{Bucket: aws.String("sdk"), Prefix: aws.String("many/"), MaxKeys: aws.Int32(7)})
			for pages.HasMorePages() {
				page, err := pages.NextPage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range page.Contents {
					keys = append(keys, aws.ToString(o.Key))
				}
			}
			return keys
		}
		if got := list(); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("listed in pages of 7: %v", got)
		}
		// DeleteObjects must carry a checksum: with the default checksums
		// the SDK sends a CRC32 instead of Content-MD5.
		var ids []types.ObjectIdentifier
		for _, k := range want {
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
		}
		out, err := sdk.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String("sdk"), Delete: &types.Delete{Objects: ids}})
		if err != nil || len(out.Deleted) != 30 || len(out.Errors) != 0 {
			t.Fatalf("DeleteObjects: %v, %d deleted, errors %+v", err, len(out.Deleted), out.Errors)
		}
		if got := list(); len(got) != 0 {
			t.Fatalf("left after DeleteObjects: %v", got)
		}
		if sent := wire.sent("POST /sdk?delete"); len(sent) != 1 || !strings.HasSuffix(sent[0], " checksums=x-amz-checksum-crc32") {
			t.Fatalf("DeleteObjects was not sent with a CRC32 alone: %q", wire.sent("POST /sdk"))
		}
	})

	t.Run("bucket configuration deletes and tags keep what is stored", func(t *testing.T) {
		if _, err := sdk.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("sdk-empty")}); err != nil {
			t.Fatal(err)
		}
		if _, err := sdk.DeleteBucketCors(ctx, &s3.DeleteBucketCorsInput{Bucket: aws.String("sdk-empty")}); err != nil {
			t.Fatal(err)
		}
		if _, err := sdk.DeleteBucketLifecycle(ctx, &s3.DeleteBucketLifecycleInput{Bucket: aws.String("sdk-empty")}); err != nil {
			t.Fatal(err)
		}
		_, err := sdk.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: aws.String("sdk-empty")})
		if code, status := apiError(err); code != "NotImplemented" || status != 501 {
			t.Fatalf("DeleteBucketPolicy: %v (%s, %d), want 501 NotImplemented", err, code, status)
		}
		if _, err := sdk.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("sdk-empty")}); err != nil {
			t.Fatalf("the bucket after the configuration deletes: %v", err)
		}

		before := readBack(t, "put/seekable.bin")
		if _, err := sdk.PutObjectTagging(ctx, &s3.PutObjectTaggingInput{Bucket: aws.String("sdk"), Key: aws.String("put/seekable.bin"),
			Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String("ward"), Value: aws.String("3")}}}}); err != nil {
			t.Fatal(err)
		}
		tg, err := sdk.GetObjectTagging(ctx, &s3.GetObjectTaggingInput{Bucket: aws.String("sdk"), Key: aws.String("put/seekable.bin")})
		if err != nil || len(tg.TagSet) != 1 || aws.ToString(tg.TagSet[0].Value) != "3" {
			t.Fatalf("GetObjectTagging: %+v %v", tg, err)
		}
		if _, err := sdk.DeleteObjectTagging(ctx, &s3.DeleteObjectTaggingInput{Bucket: aws.String("sdk"), Key: aws.String("put/seekable.bin")}); err != nil {
			t.Fatal(err)
		}
		h, err := sdk.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sdk"), Key: aws.String("put/seekable.bin")})
		if err != nil || !bytes.Equal(readBack(t, "put/seekable.bin"), before) || h.Metadata["study"] != "ct-1" || aws.ToString(h.ContentType) != "application/dicom" {
			t.Fatalf("the object after tagging and untagging: %+v %v", h, err)
		}
	})
}
