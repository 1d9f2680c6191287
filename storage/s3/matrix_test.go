package s3_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"
	"github.com/minio/minio-go/v7/pkg/tags"
)

// Every subresource S3 defines, as the issue that introduced the route
// table lists them, plus the newer ones.
var s3Subresources = []string{
	"acl", "analytics", "attributes", "accelerate", "cors", "encryption", "intelligent-tiering", "inventory",
	"legal-hold", "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls",
	"policy", "policyStatus", "publicAccessBlock", "replication", "requestPayment", "restore", "retention",
	"select", "tagging", "torrent", "versioning", "versions", "website", "uploads", "uploadId", "partNumber",
	"delete", "location", "session", "metadataTable", "metadataConfiguration", "renameObject",
}

// implemented is what Cairn serves, with the statuses a well-formed request
// carrying a junk body (and uploadId=nope) gets: S3's answer to it. Every
// other combination must be 501 NotImplemented.
var implemented = map[string][]int{
	"GET bucket location": {200}, "GET bucket uploads": {200}, "GET bucket versions": {200},
	"GET bucket versioning": {200}, "GET bucket tagging": {404}, "GET bucket acl": {200},
	"GET bucket object-lock": {404}, "GET bucket cors": {404}, "GET bucket lifecycle": {404},
	"PUT bucket versioning": {400}, "PUT bucket tagging": {400}, "PUT bucket acl": {400},
	"PUT bucket object-lock": {400}, "PUT bucket cors": {400}, "PUT bucket lifecycle": {400},
	"POST bucket delete": {400}, "DELETE bucket tagging": {204}, "DELETE bucket cors": {204},
	"DELETE bucket lifecycle": {204},
	// partNumber is a parameter: on its own it qualifies the plain request.
	"GET bucket partNumber": {200}, "HEAD bucket partNumber": {200},
	"GET object tagging": {200}, "GET object acl": {200}, "GET object retention": {400},
	"GET object legal-hold": {400}, "GET object attributes": {400}, "GET object uploadId": {404},
	"GET object partNumber": {416}, "HEAD object partNumber": {416},
	"PUT object tagging": {400}, "PUT object acl": {400}, "PUT object retention": {400},
	"PUT object legal-hold": {400}, "PUT object uploadId": {400},
	"POST object uploads": {200}, "POST object uploadId": {400, 404},
	"DELETE object tagging": {204}, "DELETE object uploadId": {404},
}

// A request naming any S3 subresource, with any method, on a bucket or an
// object, either does what S3 documents for it or is refused with 501; and
// whatever it does, the bytes, metadata and listings of what is stored are
// unchanged (the gateway once took DELETE ?tagging for DeleteObject and PUT
// ?acl for PutObject).
func TestSubresourceMatrix(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.minio(1)
	for _, b := range []string{"matrix", "empty-bucket"} {
		if err := c.MakeBucket(ctx, b, minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)
	const key = "patient/scan.dcm"
	tg, _ := tags.NewTags(map[string]string{"ward": "3"}, true)
	if _, err := c.PutObject(ctx, "matrix", key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType: "application/dicom", UserMetadata: map[string]string{"study": "ct-1"}, UserTags: tg.ToMap()}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, c, "matrix", key)

	junk := []byte("<Junk>not a document S3 knows</Junk>")
	for _, sub := range s3Subresources {
		for _, target := range []string{"bucket", "object"} {
			for _, method := range []string{"GET", "HEAD", "PUT", "POST", "DELETE"} {
				name := method + " " + target + " " + sub
				path := "/empty-bucket"
				if target == "object" {
					path = "/matrix/" + key
				}
				query := sub
				if sub == "uploadId" || sub == "partNumber" {
					query += "=" + map[string]string{"uploadId": "nope", "partNumber": "99"}[sub]
				}
				body := junk
				if method == "GET" || method == "HEAD" {
					body = nil
				}
				status, code := send(t, e, 1, method, path+"?"+query, body)
				want, ok := implemented[name]
				switch {
				case !ok && (status != 501 || (method != "HEAD" && code != "NotImplemented")):
					t.Errorf("%s: %d %s, want 501 NotImplemented", name, status, code)
				case ok && !contains(want, status):
					t.Errorf("%s: %d %s, want one of %v", name, status, code, want)
				}
				// Also on the bucket that holds the object.
				if target == "bucket" {
					send(t, e, 1, method, "/matrix?"+query, body)
				}
				if after := snapshot(t, c, "matrix", key); after != before {
					t.Fatalf("%s changed what is stored:\nbefore %s\nafter  %s", name, before, after)
				}
				if ok, err := c.BucketExists(ctx, "empty-bucket"); !ok || err != nil {
					t.Fatalf("%s deleted the empty bucket (%v)", name, err)
				}
			}
		}
	}
	// A write with a query key Cairn does not know is refused; a read
	// ignores it, as S3 does.
	for _, method := range []string{"PUT", "POST", "DELETE"} {
		if status, code := send(t, e, 0, method, "/matrix/"+key+"?futureSubresource", junk); status != 501 || code != "NotImplemented" {
			t.Errorf("%s ?futureSubresource: %d %s, want 501", method, status, code)
		}
	}
	if status, _ := send(t, e, 0, "GET", "/matrix/"+key+"?futureSubresource", nil); status != 200 {
		t.Errorf("GET ?futureSubresource: %d, want 200", status)
	}
	if after := snapshot(t, c, "matrix", key); after != before {
		t.Fatalf("unknown query keys changed what is stored")
	}
}

// send signs a request with SigV4 (the body's SHA-256 signed) and returns
// the status and S3 error code.
func send(t *testing.T, e *env, node int, method, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.servers[node].URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	req.ContentLength = int64(len(body))
	req = signer.SignV4(*req, e.ak, e.sk, "", "us-east-1")
	res, err := (&http.Client{Transport: e.transport(node)}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var doc struct {
		Code string `xml:"Code"`
	}
	_ = xml.Unmarshal(raw, &doc)
	return res.StatusCode, doc.Code
}

// snapshot is what a client can see of a bucket and one object: the
// object's bytes, metadata and tags, and the bucket's listing.
func snapshot(t *testing.T, c *minio.Client, bucket, key string) string {
	t.Helper()
	ctx := context.Background()
	data, err := get(t, c, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return "unreadable: " + err.Error()
	}
	st, err := c.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return "no stat: " + err.Error()
	}
	var meta []string
	for k, v := range st.UserMetadata {
		meta = append(meta, k+"="+v)
	}
	sort.Strings(meta)
	var list []string
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		list = append(list, fmt.Sprintf("%s:%d:%s", o.Key, o.Size, o.ETag))
	}
	return fmt.Sprintf("md5=%x type=%s meta=%s etag=%s list=%s", md5.Sum(data), st.ContentType, strings.Join(meta, ","), st.ETag, strings.Join(list, ","))
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
