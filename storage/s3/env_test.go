package s3_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage/s3"
	"github.com/cairnhq/cairn/storage/storagetest"
	"github.com/minio/minio-go/v7"
	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"
)

// env is an in-process pool of three nodes with two disks each, the S3
// gateway of every node on its own HTTPS port, and a project with an
// access key.
type env struct {
	t       testing.TB
	nodes   []*storagetest.Node
	admin   *identity.Principal
	servers []*httptest.Server
	project string
	ak, sk  string
}

func newEnv(t testing.TB) *env {
	ns, admin := storagetest.Pool(t, 3, 2)
	return envOf(t, ns, admin)
}

func envOf(t testing.TB, ns []*storagetest.Node, admin *identity.Principal) *env {
	e := &env{t: t, nodes: ns, admin: admin}
	ctx := context.Background()
	pr, err := ns[0].ID.CreateProject(ctx, admin, identity.ProjectSpec{Name: "radiology"})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := ns[0].ID.CreateS3Credential(ctx, admin, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.project, e.ak, e.sk = pr.ID, cred.ID, cred.Secret
	for _, n := range ns {
		srv := httptest.NewUnstartedServer(s3.New(n.Objects, n.ID, slog.Default(), ""))
		srv.EnableHTTP2 = false
		srv.StartTLS()
		t.Cleanup(srv.Close)
		e.servers = append(e.servers, srv)
	}
	return e
}

// transport trusts node i's test certificate.
func (e *env) transport(i int) *http.Transport {
	pool := x509.NewCertPool()
	pool.AddCert(e.servers[i].Certificate())
	tr := e.servers[i].Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = pool
	return tr
}

// minio is a minio-go client of node i.
func (e *env) minio(i int) *minio.Client {
	c, err := minio.New(strings.TrimPrefix(e.servers[i].URL, "https://"), &minio.Options{
		Creds: miniocreds.NewStaticV4(e.ak, e.sk, ""), Secure: true, Region: "us-east-1",
		BucketLookup: minio.BucketLookupPath, Transport: e.transport(i),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// sdk is an aws-sdk-go-v2 client of node i with the SDK's defaults
// (checksums on every upload that supports them, aws-chunked trailers).
func (e *env) sdk(i int) *awss3.Client {
	return awss3.New(awss3.Options{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider(e.ak, e.sk, ""),
		BaseEndpoint: aws.String(e.servers[i].URL),
		UsePathStyle: true,
		HTTPClient:   &http.Client{Transport: e.transport(i)},
		// What config.LoadDefaultConfig gives: a checksum on every
		// request that supports one, sent as an aws-chunked trailer.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported,
	})
}

// get reads an object whole through minio-go.
func get(t *testing.T, c *minio.Client, bucket, key string, opt minio.GetObjectOptions) ([]byte, error) {
	t.Helper()
	o, err := c.GetObject(context.Background(), bucket, key, opt)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return io.ReadAll(o)
}

func put(t testing.TB, c *minio.Client, bucket, key string, data []byte) minio.UploadInfo {
	t.Helper()
	info, err := c.PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
	return info
}
