package s3_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// Regressions found by running real S3 clients (qa/cluster/s3_clients_test.go)
// against the gateway.

// rawHead sends a signed HEAD for path to node i and returns the response
// head as it came on the wire, header names in their case: Go's client
// would canonicalize them.
func rawHead(t *testing.T, e *env, i int, path string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, e.servers[i].URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	req = signer.SignV4(*req, e.ak, e.sk, "", "us-east-1")
	conn, err := tls.Dial("tcp", req.URL.Host, e.transport(i).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	var head strings.Builder
	rd := bufio.NewReader(conn)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the response head: %v (%q so far)", err, head.String())
		}
		if line == "\r\n" {
			return head.String()
		}
		head.WriteString(line)
	}
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
	head := rawHead(t, e, 1, "/meta/k")
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
