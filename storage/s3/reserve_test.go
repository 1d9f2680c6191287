package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/storagetest"
)

// An object or part whose shards would take a disk on the data dir's
// filesystem below the control plane's floor is refused with 507
// InsufficientStorage (what MinIO answers at its free-space threshold;
// SDKs do not retry it, as more room will not appear in a second), and
// the floor stays free. Runs as root: the pool's disks share a real tmpfs.
func TestPutsStopAtTheControlPlaneFloor(t *testing.T) {
	// One node (every shard local, as in --dev) and three (most remote).
	for _, nodes := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d-nodes", nodes), func(t *testing.T) { putsStopAtTheFloor(t, nodes) })
	}
}

func putsStopAtTheFloor(t *testing.T, nodes int) {
	data := testutil.Tmpfs(t, 256<<20)
	reserve := storage.Reserve{Dir: data, MinBytes: 240 << 20}
	ns, admin := storagetest.PoolOn(t, nodes, 2, data, reserve)
	e := envOf(t, ns, admin)
	c := e.sdk(0)
	ctx := context.Background()
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("scans")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("scans"), Key: aws.String("small"), Body: bytes.NewReader(make([]byte, 1<<20))}); err != nil {
		t.Fatalf("an object that fits above the floor: %v", err)
	}
	refused := func(what string, err error) {
		t.Helper()
		var re *smithyhttp.ResponseError
		if !errors.As(err, &re) || re.HTTPStatusCode() != 507 || apiCode(err) != "InsufficientStorage" {
			t.Fatalf("%s: want 507 InsufficientStorage, got %v", what, err)
		}
	}
	big := make([]byte, 96<<20) // shards of 24 MiB or more; 16 MiB lie above the floor
	_, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("scans"), Key: aws.String("big"), Body: bytes.NewReader(big)})
	refused("put", err)
	up, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("scans"), Key: aws.String("parts")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("scans"), Key: aws.String("parts"), UploadId: up.UploadId,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(big)})
	refused("upload part", err)
	sp, err := reserve.Space(data)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Free < sp.Floor {
		t.Fatalf("the floor was eaten into: %+v", sp)
	}
}
