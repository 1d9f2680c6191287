package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// apiCode is the S3 error code of an SDK error.
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

func sdkGet(t *testing.T, c *awss3.Client, in *awss3.GetObjectInput) ([]byte, *awss3.GetObjectOutput) {
	t.Helper()
	out, err := c.GetObject(context.Background(), in)
	if err != nil {
		t.Fatalf("get %s (version %s): %v", aws.ToString(in.Key), aws.ToString(in.VersionId), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, out
}

// Versioning as S3 has it, through aws-sdk-go-v2 with its default
// checksums: every overwrite keeps the older version, a delete puts a
// marker on top, versions are read and deleted by ID through any node, and
// suspending keeps what exists while new writes take the null version.
func TestVersioning(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c, c2 := e.sdk(0), e.sdk(2)
	b := aws.String("records")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	putv := func(key, body string) string {
		t.Helper()
		out, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String(key), Body: bytes.NewReader([]byte(body))})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.VersionId)
	}
	// Before versioning: the null version, replaced in place.
	putv("chart", "v0")
	if _, err := c.PutBucketVersioning(ctx, &awss3.PutBucketVersioningInput{Bucket: b,
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatal(err)
	}
	if v, err := c2.GetBucketVersioning(ctx, &awss3.GetBucketVersioningInput{Bucket: b}); err != nil || v.Status != types.BucketVersioningStatusEnabled {
		t.Fatalf("versioning: %+v %v", v, err)
	}
	v1 := putv("chart", "version one")
	v2 := putv("chart", "version two")
	if v1 == "" || v2 == "" || v1 == v2 || v1 == "null" {
		t.Fatalf("version IDs %q %q", v1, v2)
	}
	if got, _ := sdkGet(t, c2, &awss3.GetObjectInput{Bucket: b, Key: aws.String("chart")}); string(got) != "version two" {
		t.Fatalf("current: %q", got)
	}
	for vid, want := range map[string]string{v1: "version one", "null": "v0", v2: "version two"} {
		got, out := sdkGet(t, c2, &awss3.GetObjectInput{Bucket: b, Key: aws.String("chart"), VersionId: aws.String(vid)})
		if string(got) != want || aws.ToString(out.VersionId) != vid && vid != "null" {
			t.Fatalf("version %s: %q (version %s)", vid, got, aws.ToString(out.VersionId))
		}
	}
	// A delete without a version: a marker, nothing lost.
	del, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("chart")})
	if err != nil || !aws.ToBool(del.DeleteMarker) || aws.ToString(del.VersionId) == "" {
		t.Fatalf("delete: %+v %v", del, err)
	}
	if _, err := c2.GetObject(ctx, &awss3.GetObjectInput{Bucket: b, Key: aws.String("chart")}); apiCode(err) != "NoSuchKey" {
		t.Fatalf("get under a delete marker: %v", err)
	}
	lv, err := c2.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: b})
	if err != nil || len(lv.Versions) != 3 || len(lv.DeleteMarkers) != 1 || !aws.ToBool(lv.DeleteMarkers[0].IsLatest) {
		t.Fatalf("versions: %d versions, %d markers (%v)", len(lv.Versions), len(lv.DeleteMarkers), err)
	}
	if aws.ToString(lv.Versions[0].VersionId) != v2 || aws.ToString(lv.Versions[2].VersionId) != "null" {
		t.Fatalf("versions out of order: %s %s %s", aws.ToString(lv.Versions[0].VersionId), aws.ToString(lv.Versions[1].VersionId), aws.ToString(lv.Versions[2].VersionId))
	}
	if lo, _ := c2.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: b}); len(lo.Contents) != 0 {
		t.Fatalf("a key under a delete marker is listed: %+v", lo.Contents)
	}
	// Deleting the marker restores the object.
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("chart"), VersionId: del.VersionId}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sdkGet(t, c2, &awss3.GetObjectInput{Bucket: b, Key: aws.String("chart")}); string(got) != "version two" {
		t.Fatalf("after removing the marker: %q", got)
	}
	// Deleting the current version for good makes the one before current.
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("chart"), VersionId: aws.String(v2)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sdkGet(t, c2, &awss3.GetObjectInput{Bucket: b, Key: aws.String("chart")}); string(got) != "version one" {
		t.Fatalf("after deleting the newest version: %q", got)
	}
	if _, err := c2.GetObject(ctx, &awss3.GetObjectInput{Bucket: b, Key: aws.String("chart"), VersionId: aws.String(v2)}); apiCode(err) != "NoSuchVersion" {
		t.Fatalf("a deleted version: %v", err)
	}
	// Suspended: new writes replace the null version; the others stay.
	if _, err := c.PutBucketVersioning(ctx, &awss3.PutBucketVersioningInput{Bucket: b,
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusSuspended}}); err != nil {
		t.Fatal(err)
	}
	putv("chart", "suspended one")
	putv("chart", "suspended two")
	lv, _ = c2.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: b, Prefix: aws.String("chart")})
	ids := []string{}
	for _, v := range lv.Versions {
		ids = append(ids, aws.ToString(v.VersionId))
	}
	if len(ids) != 2 || ids[0] != "null" || ids[1] != v1 {
		t.Fatalf("suspended versions %v, want [null %s]", ids, v1)
	}
	if got, _ := sdkGet(t, c2, &awss3.GetObjectInput{Bucket: b, Key: aws.String("chart"), VersionId: aws.String("null")}); string(got) != "suspended two" {
		t.Fatalf("null version: %q", got)
	}
	// A bucket with versions is not empty.
	if _, err := c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: b}); apiCode(err) != "BucketNotEmpty" {
		t.Fatalf("delete a bucket that holds versions: %v", err)
	}
}

// Object lock: a locked version cannot be deleted or replaced by anyone,
// through any node; retention can grow, not shrink; a legal hold holds
// until released; GOVERNANCE gives way to a project admin who asks.
func TestObjectLock(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c, c2 := e.sdk(1), e.sdk(2)
	b := aws.String("backups")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b, ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.GetBucketVersioning(ctx, &awss3.GetBucketVersioningInput{Bucket: b}); v.Status != types.BucketVersioningStatusEnabled {
		t.Fatalf("an object-lock bucket's versioning: %q", v.Status)
	}
	if _, err := c.PutBucketVersioning(ctx, &awss3.PutBucketVersioningInput{Bucket: b,
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusSuspended}}); apiCode(err) != "InvalidBucketState" {
		t.Fatalf("suspending versioning of an object-lock bucket: %v", err)
	}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	out, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("db.dump"), Body: bytes.NewReader([]byte("nightly")),
		ObjectLockMode: types.ObjectLockModeCompliance, ObjectLockRetainUntilDate: aws.Time(until)})
	if err != nil {
		t.Fatal(err)
	}
	vid := out.VersionId
	for i, cl := range []*awss3.Client{c, c2, e.sdk(0)} {
		if _, err := cl.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("db.dump"), VersionId: vid}); apiCode(err) != "AccessDenied" {
			t.Fatalf("delete of a COMPLIANCE version through node %d: %v", i, err)
		}
		if _, err := cl.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("db.dump"), VersionId: vid, BypassGovernanceRetention: aws.Bool(true)}); apiCode(err) != "AccessDenied" {
			t.Fatalf("bypass of a COMPLIANCE version through node %d: %v", i, err)
		}
	}
	if _, err := c.PutObjectRetention(ctx, &awss3.PutObjectRetentionInput{Bucket: b, Key: aws.String("db.dump"), VersionId: vid,
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: aws.Time(until.Add(-time.Minute))}}); apiCode(err) != "AccessDenied" {
		t.Fatalf("shortening COMPLIANCE retention: %v", err)
	}
	if _, err := c.PutObjectRetention(ctx, &awss3.PutObjectRetentionInput{Bucket: b, Key: aws.String("db.dump"), VersionId: vid,
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: aws.Time(until.Add(time.Hour))}}); err != nil {
		t.Fatalf("extending retention: %v", err)
	}
	r, err := c2.GetObjectRetention(ctx, &awss3.GetObjectRetentionInput{Bucket: b, Key: aws.String("db.dump"), VersionId: vid})
	if err != nil || !r.Retention.RetainUntilDate.Equal(until.Add(time.Hour)) {
		t.Fatalf("retention: %+v %v", r, err)
	}
	// An overwrite is a new version; the locked one stays.
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("db.dump"), Body: bytes.NewReader([]byte("tampered"))}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sdkGet(t, c2, &awss3.GetObjectInput{Bucket: b, Key: aws.String("db.dump"), VersionId: vid}); string(got) != "nightly" {
		t.Fatalf("the locked version: %q", got)
	}
	// Legal hold, on a version without retention.
	lh, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("case-file"), Body: bytes.NewReader([]byte("evidence"))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObjectLegalHold(ctx, &awss3.PutObjectLegalHoldInput{Bucket: b, Key: aws.String("case-file"), VersionId: lh.VersionId,
		LegalHold: &types.ObjectLockLegalHold{Status: types.ObjectLockLegalHoldStatusOn}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("case-file"), VersionId: lh.VersionId}); apiCode(err) != "AccessDenied" {
		t.Fatalf("delete under legal hold: %v", err)
	}
	if _, err := c.PutObjectLegalHold(ctx, &awss3.PutObjectLegalHoldInput{Bucket: b, Key: aws.String("case-file"), VersionId: lh.VersionId,
		LegalHold: &types.ObjectLockLegalHold{Status: types.ObjectLockLegalHoldStatusOff}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("case-file"), VersionId: lh.VersionId}); err != nil {
		t.Fatalf("delete after the hold was released: %v", err)
	}
	// Default GOVERNANCE retention: a project admin may bypass it, when asked.
	if _, err := c.PutObjectLockConfiguration(ctx, &awss3.PutObjectLockConfigurationInput{Bucket: b, ObjectLockConfiguration: &types.ObjectLockConfiguration{
		ObjectLockEnabled: types.ObjectLockEnabledEnabled,
		Rule:              &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{Mode: types.ObjectLockRetentionModeGovernance, Days: aws.Int32(1)}}}}); err != nil {
		t.Fatal(err)
	}
	g, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("weekly"), Body: bytes.NewReader([]byte("w"))})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := c2.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: b, Key: aws.String("weekly")}); err != nil || h.ObjectLockMode != types.ObjectLockModeGovernance {
		t.Fatalf("default retention: %+v %v", h, err)
	}
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("weekly"), VersionId: g.VersionId}); apiCode(err) != "AccessDenied" {
		t.Fatalf("delete of a GOVERNANCE version without bypass: %v", err)
	}
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("weekly"), VersionId: g.VersionId, BypassGovernanceRetention: aws.Bool(true)}); err != nil {
		t.Fatalf("a project admin's bypass: %v", err)
	}
}
