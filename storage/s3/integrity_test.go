package s3_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// sendUnsigned sends a request signed with SigV4 but UNSIGNED-PAYLOAD, as a
// captured request could be replayed with another body.
func sendUnsigned(t *testing.T, e *env, method, path string, body []byte, hdr ...string) int {
	t.Helper()
	req, err := http.NewRequest(method, e.servers[0].URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	req = signer.SignV4(*req, e.ak, e.sk, "", "us-east-1")
	res, err := (&http.Client{Transport: e.transport(0)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// A document that changes what is stored (a delete list, a lifecycle) is
// taken only with an integrity check of its own when the signature does not
// cover the body, as S3 requires.
func TestDocumentsNeedIntegrity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.minio(0)
	if err := c.MakeBucket(ctx, "wards", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	put(t, c, "wards", "bed-1", []byte("one"))
	del := []byte(`<Delete><Object><Key>bed-1</Key></Object></Delete>`)
	if st := sendUnsigned(t, e, "POST", "/wards?delete", del); st != 400 {
		t.Fatalf("an unsigned delete list without Content-MD5: %d", st)
	}
	if _, err := c.StatObject(ctx, "wards", "bed-1", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("the refused delete list deleted: %v", err)
	}
	sum := md5.Sum(del)
	if st := sendUnsigned(t, e, "POST", "/wards?delete", del, "Content-MD5", base64.StdEncoding.EncodeToString(sum[:])); st != 200 {
		t.Fatalf("with Content-MD5: %d", st)
	}
	if _, err := c.StatObject(ctx, "wards", "bed-1", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("the delete list with its MD5 did not delete: %v", err)
	}
	life := []byte(`<LifecycleConfiguration><Rule><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>`)
	if st := sendUnsigned(t, e, "PUT", "/wards?lifecycle", life); st != 400 {
		t.Fatalf("an unsigned lifecycle without Content-MD5: %d", st)
	}
	if _, err := c.GetBucketLifecycle(ctx, "wards"); minio.ToErrorResponse(err).Code != "NoSuchLifecycleConfiguration" {
		t.Fatalf("the refused lifecycle was set: %v", err)
	}
}
