package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/minio/minio-go/v7"
)

// awsVersion is one entry of aws s3api list-object-versions.
type awsVersion struct {
	Key       string
	VersionID string `json:"VersionId"`
	IsLatest  bool
	Size      int64
}

type awsVersions struct {
	Versions      []awsVersion
	DeleteMarkers []awsVersion
}

func listVersions(t *testing.T, x *s3CLIs, bucket, prefix string) awsVersions {
	t.Helper()
	var v awsVersions
	out := x.ok("aws", "s3api", "list-object-versions", "--bucket", bucket, "--prefix", prefix)
	if strings.TrimSpace(out) != "" { // awscli prints nothing for an empty listing
		decodeJSON(t, out, &v)
	}
	return v
}

// awsPut writes body to bucket/key with aws s3api put-object and returns the
// new version's ID.
func awsPut(t *testing.T, x *s3CLIs, bucket, key, body string, more ...string) string {
	t.Helper()
	var res struct {
		VersionID string `json:"VersionId"`
	}
	decodeJSON(t, x.ok("aws", append([]string{"s3api", "put-object", "--bucket", bucket, "--key", key, "--body", body}, more...)...), &res)
	return res.VersionID
}

// awsGet reads bucket/key (a version of it, with --version-id) through
// aws s3api get-object.
func awsGet(t *testing.T, x *s3CLIs, bucket, key string, more ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	x.ok("aws", append([]string{"s3api", "get-object", "--bucket", bucket, "--key", key, out}, more...)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// minioGet reads an object, or one version of it, through c.
func minioGet(t *testing.T, c *minio.Client, bucket, key, versionID string) string {
	t.Helper()
	b, err := getBytes(context.Background(), c, bucket, key, minio.GetObjectOptions{VersionID: versionID})
	if err != nil {
		t.Fatalf("read %s/%s %s: %v", bucket, key, versionID, err)
	}
	return string(b)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Versioning through awscli: overwrites keep the older version, a delete
// leaves a delete marker, and deleting the marker restores the object.
func awsVersioning(t *testing.T, x *s3CLIs, check *minio.Client) {
	ctx, work := context.Background(), t.TempDir()
	x.ok("aws", "s3", "mb", "s3://versioned")
	x.ok("aws", "s3api", "put-bucket-versioning", "--bucket", "versioned", "--versioning-configuration", "Status=Enabled")
	var vc struct{ Status string }
	decodeJSON(t, x.ok("aws", "s3api", "get-bucket-versioning", "--bucket", "versioned"), &vc)
	if vc.Status != "Enabled" {
		t.Fatalf("get-bucket-versioning: %+v", vc)
	}
	v1 := awsPut(t, x, "versioned", "report.txt", writeFile(t, work, "v1", "first"))
	v2 := awsPut(t, x, "versioned", "report.txt", writeFile(t, work, "v2", "the second one"))
	if v1 == "" || v2 == "" || v1 == v2 {
		t.Fatalf("version IDs %q and %q", v1, v2)
	}
	vs := listVersions(t, x, "versioned", "report.txt")
	if len(vs.Versions) != 2 || len(vs.DeleteMarkers) != 0 ||
		vs.Versions[0] != (awsVersion{"report.txt", v2, true, 14}) || vs.Versions[1] != (awsVersion{"report.txt", v1, false, 5}) {
		t.Fatalf("list-object-versions after an overwrite: %+v", vs)
	}
	if got := awsGet(t, x, "versioned", "report.txt", "--version-id", v1); got != "first" {
		t.Fatalf("get-object --version-id of the older version: %q", got)
	}
	if got := awsGet(t, x, "versioned", "report.txt"); got != "the second one" {
		t.Fatalf("get-object of the current version: %q", got)
	}

	var del struct {
		DeleteMarker bool
		VersionID    string `json:"VersionId"`
	}
	decodeJSON(t, x.ok("aws", "s3api", "delete-object", "--bucket", "versioned", "--key", "report.txt"), &del)
	if !del.DeleteMarker || del.VersionID == "" {
		t.Fatalf("delete-object in a versioned bucket: %+v", del)
	}
	x.fails("NoSuchKey", "aws", "s3api", "get-object", "--bucket", "versioned", "--key", "report.txt", filepath.Join(work, "none"))
	if _, err := check.StatObject(ctx, "versioned", "report.txt", minio.StatObjectOptions{}); minio.ToErrorResponse(err).StatusCode != 404 {
		t.Fatalf("a deleted object is still there: %v", err)
	}
	vs = listVersions(t, x, "versioned", "report.txt")
	if len(vs.Versions) != 2 || len(vs.DeleteMarkers) != 1 || vs.DeleteMarkers[0].VersionID != del.VersionID || !vs.DeleteMarkers[0].IsLatest || vs.Versions[0].IsLatest {
		t.Fatalf("list-object-versions after a delete: %+v", vs)
	}
	// Deleting the marker brings the object back.
	x.ok("aws", "s3api", "delete-object", "--bucket", "versioned", "--key", "report.txt", "--version-id", del.VersionID)
	if got := minioGet(t, check, "versioned", "report.txt", ""); got != "the second one" {
		t.Fatalf("after removing the delete marker: %q", got)
	}
	// Deleting a version for good makes the one before it current.
	x.ok("aws", "s3api", "delete-object", "--bucket", "versioned", "--key", "report.txt", "--version-id", v2)
	if got := minioGet(t, check, "versioned", "report.txt", ""); got != "first" {
		t.Fatalf("after deleting the current version: %q", got)
	}
	if vs := listVersions(t, x, "versioned", "report.txt"); len(vs.Versions) != 1 || vs.Versions[0] != (awsVersion{"report.txt", v1, true, 5}) || len(vs.DeleteMarkers) != 0 {
		t.Fatalf("list-object-versions at the end: %+v", vs)
	}
}

// Object lock through awscli: a COMPLIANCE version cannot be deleted or its
// retention shortened, an overwrite leaves it intact, legal holds go on and
// off, and GOVERNANCE yields only to a project admin who asks to bypass it.
func awsObjectLock(t *testing.T, x *s3CLIs, check *minio.Client, a *cairntest.Client, c *harness.Cluster) {
	work := t.TempDir()
	x.ok("aws", "s3api", "create-bucket", "--bucket", "locked", "--object-lock-enabled-for-bucket")
	var lc struct {
		ObjectLockConfiguration struct{ ObjectLockEnabled string }
	}
	decodeJSON(t, x.ok("aws", "s3api", "get-object-lock-configuration", "--bucket", "locked"), &lc)
	if lc.ObjectLockConfiguration.ObjectLockEnabled != "Enabled" {
		t.Fatalf("get-object-lock-configuration: %+v", lc)
	}
	until := time.Now().UTC().Add(3 * time.Minute).Truncate(time.Second)
	v1 := awsPut(t, x, "locked", "record.txt", writeFile(t, work, "record-1", "the record"),
		"--object-lock-mode", "COMPLIANCE", "--object-lock-retain-until-date", until.Format(time.RFC3339))
	x.fails("AccessDenied", "aws", "s3api", "delete-object", "--bucket", "locked", "--key", "record.txt", "--version-id", v1)
	x.fails("AccessDenied", "aws", "s3api", "delete-object", "--bucket", "locked", "--key", "record.txt", "--version-id", v1, "--bypass-governance-retention")

	v2 := awsPut(t, x, "locked", "record.txt", writeFile(t, work, "record-2", "a newer record"))
	if got := awsGet(t, x, "locked", "record.txt", "--version-id", v1); got != "the record" {
		t.Fatalf("the locked version after an overwrite: %q", got)
	}
	if got := minioGet(t, check, "locked", "record.txt", ""); got != "a newer record" {
		t.Fatalf("the current version after an overwrite: %q", got)
	}
	if vs := listVersions(t, x, "locked", "record.txt"); len(vs.Versions) != 2 || vs.Versions[0].VersionID != v2 || vs.Versions[1].VersionID != v1 {
		t.Fatalf("versions after an overwrite: %+v", vs)
	}

	var ret struct {
		Retention struct{ Mode, RetainUntilDate string }
	}
	decodeJSON(t, x.ok("aws", "s3api", "get-object-retention", "--bucket", "locked", "--key", "record.txt", "--version-id", v1), &ret)
	if d, err := time.Parse(time.RFC3339, ret.Retention.RetainUntilDate); ret.Retention.Mode != "COMPLIANCE" || err != nil || !d.Equal(until) {
		t.Fatalf("get-object-retention: %+v, want COMPLIANCE until %s", ret, until)
	}
	shorter := "Mode=COMPLIANCE,RetainUntilDate=" + until.Add(-time.Minute).Format(time.RFC3339)
	x.fails("AccessDenied", "aws", "s3api", "put-object-retention", "--bucket", "locked", "--key", "record.txt", "--version-id", v1, "--retention", shorter)
	x.fails("AccessDenied", "aws", "s3api", "put-object-retention", "--bucket", "locked", "--key", "record.txt", "--version-id", v1,
		"--retention", "Mode=GOVERNANCE,RetainUntilDate="+until.Format(time.RFC3339), "--bypass-governance-retention")
	longer := "Mode=COMPLIANCE,RetainUntilDate=" + until.Add(time.Minute).Format(time.RFC3339)
	x.ok("aws", "s3api", "put-object-retention", "--bucket", "locked", "--key", "record.txt", "--version-id", v1, "--retention", longer)

	for _, status := range []string{"ON", "OFF"} {
		x.ok("aws", "s3api", "put-object-legal-hold", "--bucket", "locked", "--key", "record.txt", "--version-id", v2, "--legal-hold", "Status="+status)
		var lh struct{ LegalHold struct{ Status string } }
		decodeJSON(t, x.ok("aws", "s3api", "get-object-legal-hold", "--bucket", "locked", "--key", "record.txt", "--version-id", v2), &lh)
		if lh.LegalHold.Status != status {
			t.Fatalf("get-object-legal-hold after setting %s: %+v", status, lh)
		}
		if status == "ON" {
			x.fails("AccessDenied", "aws", "s3api", "delete-object", "--bucket", "locked", "--key", "record.txt", "--version-id", v2)
		}
	}
	// With the hold off and no retention, the newer version can go.
	x.ok("aws", "s3api", "delete-object", "--bucket", "locked", "--key", "record.txt", "--version-id", v2)
	if got := minioGet(t, check, "locked", "record.txt", ""); got != "the record" {
		t.Fatalf("after deleting the unlocked version: %q", got)
	}

	// GOVERNANCE: a project member cannot bypass it, a project admin can.
	if err := a.Call("POST", "/api/v1/users", map[string]any{"name": "tech", "display_name": "Technician", "password": "server-room-8080"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("PUT", "/api/v1/projects/pacs/members/tech", map[string]string{"role": "member"}, 204, nil); err != nil {
		t.Fatal(err)
	}
	anon, err := cairntest.NewClient(c.Node(1), "")
	if err != nil {
		t.Fatal(err)
	}
	var login struct{ Token string }
	if err := anon.Call("POST", "/api/v1/auth/login", map[string]string{"username": "tech", "password": "server-room-8080"}, 200, &login); err != nil {
		t.Fatal(err)
	}
	tech, _ := cairntest.NewClient(c.Node(1), login.Token)
	var techCred s3Cred
	if err := tech.Call("POST", "/api/v1/s3/credentials", map[string]string{"project": "pacs"}, 201, &techCred); err != nil {
		t.Fatal(err)
	}
	member := newS3CLIs(t, c, techCred.AccessKey, techCred.SecretKey)
	until = time.Now().UTC().Add(3 * time.Minute).Truncate(time.Second)
	gv := awsPut(t, x, "locked", "draft.txt", writeFile(t, work, "draft", "a draft"),
		"--object-lock-mode", "GOVERNANCE", "--object-lock-retain-until-date", until.Format(time.RFC3339))
	x.fails("AccessDenied", "aws", "s3api", "delete-object", "--bucket", "locked", "--key", "draft.txt", "--version-id", gv)
	member.fails("AccessDenied", "aws", "s3api", "delete-object", "--bucket", "locked", "--key", "draft.txt", "--version-id", gv, "--bypass-governance-retention")
	if got := minioGet(t, check, "locked", "draft.txt", gv); got != "a draft" {
		t.Fatalf("the GOVERNANCE version after refused deletes: %q", got)
	}
	x.ok("aws", "s3api", "delete-object", "--bucket", "locked", "--key", "draft.txt", "--version-id", gv, "--bypass-governance-retention")
	if vs := listVersions(t, x, "locked", "draft.txt"); len(vs.Versions) != 0 || len(vs.DeleteMarkers) != 0 {
		t.Fatalf("a GOVERNANCE version deleted by an admin with bypass is still listed: %+v", vs)
	}
}
