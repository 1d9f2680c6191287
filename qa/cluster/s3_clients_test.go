package cluster_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/minio/minio-go/v7"
)

// The S3 clients people use, as Debian 12 ships them (awscli, s3cmd,
// rclone), run their ordinary workflows against three real nodes: syncing
// trees both ways, 200 MiB multipart uploads, copies, tags, ACLs, bucket
// configuration, versioning, object lock and presigned URLs. Every outcome
// is read back through minio-go on a node the client did not use.
func TestS3Clients(t *testing.T) {
	c, a, cred := s3Pool(t, "pacs")
	x := newS3CLIs(t, c, cred.AccessKey, cred.SecretKey)
	check := s3Client(t, c.Node(2), cred.AccessKey, cred.SecretKey)
	work := t.TempDir()
	big := filepath.Join(work, "big.bin")
	writeRandom(t, big, 200<<20, rand.New(rand.NewPCG(7, 7)))

	// Each workflow has buckets of its own, and most of the time is the
	// clients' start-up (a second for every aws), so they run side by side.
	t.Run("workflows", func(t *testing.T) {
		for i, s := range s3Syncers {
			t.Run("sync "+s.name, func(t *testing.T) {
				t.Parallel()
				cliSync(t, x.with(t), check, s, filepath.Join(work, s.bucket), uint64(i))
			})
		}
		for _, w := range []struct {
			name string
			fn   func(*testing.T, *s3CLIs)
		}{
			{"multipart 200 MiB", func(t *testing.T, x *s3CLIs) { cliMultipart(t, x, check, big) }},
			{"copy", func(t *testing.T, x *s3CLIs) { cliCopy(t, x, check, big) }},
			{"tags and ACLs", func(t *testing.T, x *s3CLIs) { cliTagsAndACLs(t, x, check) }},
			{"presigned GET", func(t *testing.T, x *s3CLIs) { cliPresign(t, x, check) }},
			{"versioning", func(t *testing.T, x *s3CLIs) { awsVersioning(t, x, check) }},
			{"checksums and headers", func(t *testing.T, x *s3CLIs) { cliChecksumsAndHeaders(t, x, check) }},
			{"object lock", func(t *testing.T, x *s3CLIs) { awsObjectLock(t, x, check, a, c) }},
			// awscli over one connection, without retries: an empty upload
			// once left the connection unusable for the next one.
			{"aws uploads after an empty file", func(t *testing.T, x *s3CLIs) {
				dir := t.TempDir()
				rnd := rand.New(rand.NewPCG(9, 9))
				for name, size := range map[string]int{"a-empty": 0, "b-data": 5000, "c-empty": 0, "d-data": 7000} {
					writeRandom(t, filepath.Join(dir, name), size, rnd)
				}
				x.ok("aws", "s3", "mb", "s3://serial")
				x.ok("aws-serial", "s3", "sync", "--no-progress", dir, "s3://serial/t")
				sameSums(t, "uploaded one by one", bucketSums(t, check, "serial", "t/"), treeSums(t, dir))
			}},
			{"bucket configuration deletes keep the bucket", func(t *testing.T, x *s3CLIs) {
				x.ok("aws", "s3", "mb", "s3://empty-config")
				x.ok("aws", "s3api", "delete-bucket-cors", "--bucket", "empty-config")
				x.ok("aws", "s3api", "delete-bucket-lifecycle", "--bucket", "empty-config")
				x.fails("NotImplemented", "aws", "s3api", "delete-bucket-policy", "--bucket", "empty-config")
				x.ok("aws", "s3api", "head-bucket", "--bucket", "empty-config")
				if ok, err := check.BucketExists(context.Background(), "empty-config"); !ok || err != nil {
					t.Fatalf("the bucket is gone after the configuration deletes: %v", err)
				}
			}},
		} {
			t.Run(w.name, func(t *testing.T) {
				t.Parallel()
				w.fn(t, x.with(t))
			})
		}
	})

	// What the workflows left goes the ways each client removes a bucket
	// with everything in it (multi-object deletes).
	t.Run("remove buckets", func(t *testing.T) {
		x := x.with(t)
		x.ok("aws", "s3", "rb", "--force", "s3://sync-aws")
		x.ok("s3cmd", "rb", "--recursive", "--force", "s3://sync-s3cmd")
		x.ok("s3cmd-v2", "rb", "--recursive", "--force", "s3://sync-s3cmd-v2")
		x.ok("rclone", "purge", "cairn:sync-rclone")
		x.ok("aws", "s3", "rb", "s3://empty-config")
		for _, b := range []string{"sync-aws", "sync-s3cmd", "sync-s3cmd-v2", "sync-rclone", "empty-config"} {
			if ok, err := check.BucketExists(context.Background(), b); ok || err != nil {
				t.Errorf("bucket %s is still there (%v)", b, err)
			}
		}
	})
}

// s3Syncer is how one client syncs a directory tree with a bucket; with
// del, what the source lacks is deleted from the destination. Each returns
// what the client printed.
type s3Syncer struct {
	name, client, bucket string
	mb                   []string
	up, down             func(x *s3CLIs, local, remote string, del bool) string
}

var s3Syncers = []s3Syncer{
	{"aws", "aws", "sync-aws", []string{"s3", "mb", "s3://sync-aws"},
		func(x *s3CLIs, local, remote string, del bool) string {
			return x.ok("aws", withFlag([]string{"s3", "sync", "--no-progress", local, "s3://" + remote}, del, "--delete")...)
		}, func(x *s3CLIs, remote, local string, del bool) string {
			return x.ok("aws", withFlag([]string{"s3", "sync", "--no-progress", "s3://" + remote, local}, del, "--delete")...)
		}},
	{"s3cmd", "s3cmd", "sync-s3cmd", []string{"mb", "s3://sync-s3cmd"}, s3cmdSync("s3cmd", true), s3cmdSync("s3cmd", false)},
	{"s3cmd SigV2", "s3cmd-v2", "sync-s3cmd-v2", []string{"mb", "s3://sync-s3cmd-v2"}, s3cmdSync("s3cmd-v2", true), s3cmdSync("s3cmd-v2", false)},
	{"rclone", "rclone", "sync-rclone", []string{"mkdir", "cairn:sync-rclone"},
		func(x *s3CLIs, local, remote string, del bool) string {
			out, errOut := x.okBoth("rclone", rcloneSync(del), "-v", local, "cairn:"+remote)
			return out + errOut
		}, func(x *s3CLIs, remote, local string, del bool) string {
			out, errOut := x.okBoth("rclone", rcloneSync(del), "-v", "cairn:"+remote, local)
			return out + errOut
		}},
}

func s3cmdSync(client string, up bool) func(x *s3CLIs, from, to string, del bool) string {
	return func(x *s3CLIs, from, to string, del bool) string {
		if up {
			to = "s3://" + to
		} else {
			from = "s3://" + from
		}
		return x.ok(client, withFlag([]string{"sync", from + "/", to + "/"}, del, "--delete-removed")...)
	}
}

func withFlag(args []string, on bool, flag string) []string {
	if on {
		return append(args, flag)
	}
	return args
}

func rcloneSync(del bool) string {
	if del {
		return "sync"
	}
	return "copy"
}

// transferred is the lines of a sync's output that report a file copied.
func transferred(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "upload:") || strings.Contains(l, "download:") || strings.Contains(l, "Copied") {
			lines = append(lines, l)
		}
	}
	return lines
}

// cliSync syncs a tree up and down, changes it on each side and syncs
// again, checking every byte each time, and that a sync with nothing to do
// copies nothing.
func cliSync(t *testing.T, x *s3CLIs, check *minio.Client, s s3Syncer, dir string, seed uint64) {
	ctx := context.Background()
	x.ok(s.client, s.mb...)
	local, down := filepath.Join(dir, "local"), filepath.Join(dir, "down")
	makeTree(t, local, seed)
	remote := s.bucket + "/tree"
	s.up(x, local, remote, false)
	sameSums(t, "after the first upload", bucketSums(t, check, s.bucket, "tree/"), treeSums(t, local))
	// awscli and rclone set the content type by the file's extension
	// (s3cmd asks libmagic, which calls random bytes octet-stream).
	if st, err := check.StatObject(ctx, s.bucket, "tree/with space.txt", minio.StatObjectOptions{}); err != nil || !strings.HasPrefix(st.ContentType, "text/plain") && !strings.HasPrefix(s.client, "s3cmd") {
		t.Errorf("the content type of a .txt file: %q %v", st.ContentType, err)
	}
	s.down(x, remote, down, false)
	sameSums(t, "downloaded tree", treeSums(t, down), treeSums(t, local))
	if s.client != "aws" { // s3cmd and rclone keep files' times in metadata
		for _, f := range []string{"README", "scans/big.dcm", "ünïcödé/名前.txt"} {
			a, _ := os.Stat(filepath.Join(local, f))
			b, _ := os.Stat(filepath.Join(down, f))
			if a == nil || b == nil || a.ModTime().Unix() != b.ModTime().Unix() {
				t.Errorf("%s: the modification time did not survive the round trip", f)
			}
		}
	}
	if got := transferred(s.up(x, local, remote, false) + s.down(x, remote, down, false)); len(got) > 0 {
		t.Errorf("syncs with nothing to do copied files:\n%s", strings.Join(got, "\n"))
	}

	// Change, add and delete files locally: a sync without deleting
	// keeps the deleted file remotely, one with it removes it.
	rnd := rand.New(rand.NewPCG(seed, 2))
	writeRandom(t, filepath.Join(local, "README"), 999, rnd)
	writeRandom(t, filepath.Join(local, "scans/2024/03/new.dcm"), 12345, rnd)
	writeRandom(t, filepath.Join(local, "scans/big.dcm"), 9<<20, rnd)
	gone := treeSums(t, local)["scans/2024/01/b.dcm"]
	if err := os.Remove(filepath.Join(local, "scans/2024/01/b.dcm")); err != nil {
		t.Fatal(err)
	}
	out := s.up(x, local, remote, false)
	if got := transferred(out); len(got) != 3 {
		t.Errorf("a sync of three changed files copied %d:\n%s", len(got), out)
	}
	want := treeSums(t, local)
	want["scans/2024/01/b.dcm"] = gone
	sameSums(t, "after a sync that keeps deleted files", bucketSums(t, check, s.bucket, "tree/"), want)
	s.up(x, local, remote, true)
	sameSums(t, "after a sync with deletes", bucketSums(t, check, s.bucket, "tree/"), treeSums(t, local))

	// Change the bucket, then sync down with deletes.
	for key, size := range map[string]int{"tree/ünïcödé/名前.txt": 4321, "tree/remote-only/x.bin": 2 << 20} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		if _, err := check.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(size), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := check.RemoveObject(ctx, s.bucket, "tree/empty", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	s.down(x, remote, down, true)
	sameSums(t, "after syncing bucket changes down", treeSums(t, down), bucketSums(t, check, s.bucket, "tree/"))
}

// cliMultipart uploads and downloads 200 MiB with each client, which all
// split it into parts by default.
func cliMultipart(t *testing.T, x *s3CLIs, check *minio.Client, big string) {
	bigSum := fileSum(t, big)
	for _, u := range []struct {
		client, bucket, key string
		parts               string // the ETag's part count: the client's default part size
		up, down            []string
	}{
		// awscli splits at 8 MiB, s3cmd at 15 MiB, rclone at 5 MiB.
		{"aws", "mp-aws", "big.bin", "-25", []string{"s3", "cp", "--no-progress", big, "s3://mp-aws/big.bin"}, []string{"s3", "cp", "--no-progress", "s3://mp-aws/big.bin", "aws.bin"}},
		{"s3cmd", "mp-s3cmd", "big.bin", "-14", []string{"put", big, "s3://mp-s3cmd/big.bin"}, []string{"get", "s3://mp-s3cmd/big.bin", "s3cmd.bin"}},
		{"s3cmd-v2", "mp-s3cmd", "big-v2.bin", "-14", []string{"put", big, "s3://mp-s3cmd/big-v2.bin"}, []string{"get", "s3://mp-s3cmd/big-v2.bin", "s3cmd-v2.bin"}},
		{"rclone", "mp-rclone", "big.bin", "-40", []string{"copyto", big, "cairn:mp-rclone/big.bin"}, []string{"copyto", "cairn:mp-rclone/big.bin", "rclone.bin"}},
	} {
		if u.client != "s3cmd-v2" {
			if err := check.MakeBucket(context.Background(), u.bucket, minio.MakeBucketOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		x.ok(u.client, u.up...)
		t.Logf("%s uploaded 200 MiB in %s", u.client, time.Since(start).Round(time.Millisecond))
		if etag := etagOf(t, check, u.bucket, u.key); !strings.HasSuffix(etag, u.parts) {
			t.Errorf("%s: ETag %s, want a multipart upload of %s parts", u.client, etag, u.parts[1:])
		}
		if sums := bucketSums(t, check, u.bucket, u.key); sums[""] != bigSum {
			t.Fatalf("%s: the object read back differs from the file", u.client)
		}
		x.ok(u.client, u.down...)
		got := filepath.Join(x.dir, u.down[len(u.down)-1])
		if sum := fileSum(t, got); sum != bigSum {
			t.Fatalf("%s: downloaded %s, want %s", u.client, sum, bigSum)
		}
		_ = os.Remove(got)
	}
}

func etagOf(t *testing.T, check *minio.Client, bucket, key string) string {
	t.Helper()
	st, err := check.StatObject(context.Background(), bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("stat %s/%s: %v", bucket, key, err)
	}
	return st.ETag
}

// putObjects stores objects of random bytes through c.
func putObjects(t *testing.T, c *minio.Client, bucket string, sizes map[string]int, seed uint64) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 4))
	for _, key := range slices.Sorted(maps.Keys(sizes)) {
		data := make([]byte, sizes[key])
		for i := range data {
			data[i] = byte(rnd.Uint32())
		}
		if _, err := c.PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{PartSize: 8 << 20, ContentType: "text/plain"}); err != nil {
			t.Fatal(err)
		}
	}
}

// cliCopy copies within and between buckets: single CopyObject, 200 MiB in
// UploadPartCopy parts, mv, copy-object with either metadata directive, and
// rclone's server-side copy.
func cliCopy(t *testing.T, x *s3CLIs, check *minio.Client, big string) {
	ctx := context.Background()
	for _, b := range []string{"copy-src", "copies"} {
		x.ok("aws", "s3", "mb", "s3://"+b)
	}
	putObjects(t, check, "copy-src", map[string]int{"readme": 999, "tree/a": 1, "tree/b/c": 100 << 10, "tree/d": 6 << 20}, 1)
	x.ok("aws", "s3", "cp", "--no-progress", big, "s3://copy-src/big.bin")
	x.ok("aws", "s3", "cp", "--no-progress", "s3://copy-src/readme", "s3://copies/readme")
	x.ok("aws", "s3", "cp", "--no-progress", "s3://copy-src/big.bin", "s3://copies/big.bin")
	sameSums(t, "copied readme", bucketSums(t, check, "copies", "readme"), bucketSums(t, check, "copy-src", "readme"))
	if sums := bucketSums(t, check, "copies", "big.bin"); sums[""] != fileSum(t, big) {
		t.Fatal("the 200 MiB copy differs from its source")
	}
	if etag := etagOf(t, check, "copies", "big.bin"); !strings.HasSuffix(etag, "-25") {
		t.Errorf("the copy of 200 MiB was not made in 25 parts: %s", etag)
	}
	x.ok("aws", "s3", "mv", "--no-progress", "s3://copies/readme", "s3://copies/moved")
	if keys := keysOf(bucketSums(t, check, "copies", "")); keys != "big.bin,moved" {
		t.Fatalf("after mv: %s", keys)
	}

	// copy-object keeps the metadata, or replaces it when told to.
	x.ok("aws", "s3api", "copy-object", "--bucket", "copies", "--key", "src.txt", "--copy-source", "copy-src/readme",
		"--metadata-directive", "REPLACE", "--content-type", "text/x-report", "--metadata", "study=ct-1,modality=CT")
	x.ok("aws", "s3api", "copy-object", "--bucket", "copies", "--key", "kept.txt", "--copy-source", "copies/src.txt")
	if h := awsHead(t, x, "copies", "kept.txt"); h.ContentType != "text/x-report" || !maps.Equal(h.Metadata, map[string]string{"study": "ct-1", "modality": "CT"}) {
		t.Errorf("copy with the metadata directive COPY: %+v", h)
	}
	x.ok("aws", "s3api", "copy-object", "--bucket", "copies", "--key", "replaced.txt", "--copy-source", "copies/src.txt",
		"--metadata-directive", "REPLACE", "--content-type", "application/dicom", "--metadata", "study=ct-2")
	if h := awsHead(t, x, "copies", "replaced.txt"); h.ContentType != "application/dicom" || !maps.Equal(h.Metadata, map[string]string{"study": "ct-2"}) {
		t.Errorf("copy with the metadata directive REPLACE: %+v", h)
	}
	// Onto itself, with REPLACE: the way to change an object's metadata.
	x.ok("aws", "s3api", "copy-object", "--bucket", "copies", "--key", "src.txt", "--copy-source", "copies/src.txt",
		"--metadata-directive", "REPLACE", "--metadata", "study=ct-3")
	if h := awsHead(t, x, "copies", "src.txt"); !maps.Equal(h.Metadata, map[string]string{"study": "ct-3"}) {
		t.Errorf("copy onto itself with REPLACE: %+v", h)
	}
	for _, k := range []string{"src.txt", "kept.txt", "replaced.txt"} {
		sameSums(t, "copy-object "+k, bucketSums(t, check, "copies", k), bucketSums(t, check, "copy-src", "readme"))
	}

	// rclone copies within the remote server-side.
	_, errOut := x.okBoth("rclone", "copy", "-v", "cairn:copy-src/tree", "cairn:copies/rclone")
	if n := strings.Count(errOut, "Copied (server-side copy)"); n != 3 {
		t.Errorf("rclone copied %d of 3 objects server-side:\n%s", n, errOut)
	}
	sameSums(t, "rclone's server-side copy", bucketSums(t, check, "copies", "rclone/"), bucketSums(t, check, "copy-src", "tree/"))
	if _, err := check.StatObject(ctx, "copy-src", "readme", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("a copy source is gone: %v", err)
	}
}

// cliTagsAndACLs: tagging calls and a private ACL change nothing of the
// object (DELETE ?tagging was once taken for DeleteObject), and s3cmd info
// reads an object and a bucket.
func cliTagsAndACLs(t *testing.T, x *s3CLIs, check *minio.Client) {
	x.ok("aws", "s3", "mb", "s3://tagged")
	body := filepath.Join(t.TempDir(), "scan.dcm")
	writeRandom(t, body, 5<<20+3, rand.New(rand.NewPCG(5, 5)))
	x.ok("aws", "s3api", "put-object", "--bucket", "tagged", "--key", "scan.dcm", "--body", body,
		"--content-type", "application/dicom", "--metadata", "patient=anon-7")
	before := objectState(t, check, "tagged", "scan.dcm")
	same := func(after string) {
		t.Helper()
		if now := objectState(t, check, "tagged", "scan.dcm"); now != before {
			t.Fatalf("the object changed %s:\nbefore %s\nafter  %s", after, before, now)
		}
	}
	x.ok("aws", "s3api", "put-object-tagging", "--bucket", "tagged", "--key", "scan.dcm", "--tagging", "TagSet=[{Key=ward,Value=3},{Key=retain,Value=yes}]")
	same("after put-object-tagging")
	if got := awsTags(t, x, "tagged", "scan.dcm"); got != "retain=yes,ward=3" {
		t.Fatalf("get-object-tagging: %s", got)
	}
	x.ok("aws", "s3api", "delete-object-tagging", "--bucket", "tagged", "--key", "scan.dcm")
	same("after delete-object-tagging")
	if got := awsTags(t, x, "tagged", "scan.dcm"); got != "" {
		t.Fatalf("get-object-tagging after delete-object-tagging: %s", got)
	}
	x.ok("aws", "s3api", "put-object-acl", "--bucket", "tagged", "--key", "scan.dcm", "--acl", "private")
	same("after put-object-acl --acl private")
	x.fails("NotImplemented", "aws", "s3api", "put-object-acl", "--bucket", "tagged", "--key", "scan.dcm", "--acl", "public-read")
	same("after a refused put-object-acl --acl public-read")
	var acl struct {
		Grants []struct{ Permission string }
	}
	decodeJSON(t, x.ok("aws", "s3api", "get-object-acl", "--bucket", "tagged", "--key", "scan.dcm"), &acl)
	if len(acl.Grants) != 1 || acl.Grants[0].Permission != "FULL_CONTROL" {
		t.Fatalf("get-object-acl: %+v", acl)
	}

	info := x.ok("s3cmd", "info", "s3://tagged/scan.dcm")
	for _, want := range []string{"File size: 5242883", "MIME type: application/dicom", "x-amz-meta-patient: anon-7", "MD5 sum:   " + strings.Trim(etagOf(t, check, "tagged", "scan.dcm"), `"`)} {
		if !strings.Contains(info, want) {
			t.Errorf("s3cmd info of an object lacks %q:\n%s", want, info)
		}
	}
	info = x.ok("s3cmd", "info", "s3://tagged")
	if !strings.Contains(info, "s3://tagged/ (bucket)") || !strings.Contains(info, "Location:  us-east-1") {
		t.Errorf("s3cmd info of a bucket:\n%s", info)
	}
	same("after s3cmd info")
}

// cliPresign fetches presigned URLs of awscli (version 4) and s3cmd
// (version 2) with curl, for keys that need encoding too.
func cliPresign(t *testing.T, x *s3CLIs, check *minio.Client) {
	x.ok("aws", "s3", "mb", "s3://presigned")
	keys := map[string]int{"plain.txt": 1000, "with space+plus.txt": 2000, "ünïcödé/名前.txt": 3000}
	putObjects(t, check, "presigned", keys, 3)
	for key := range keys {
		want := bucketSums(t, check, "presigned", key)[""]
		url := strings.TrimSpace(x.ok("aws", "s3", "presign", "s3://presigned/"+key, "--expires-in", "300"))
		if status, body := curl(t, x.ca, url); status != 200 || sha256Hex(body) != want {
			t.Errorf("aws s3 presign %s: %d %.200s", key, status, body)
		}
		// s3cmd writes its URLs with http: whatever its configuration says;
		// the scheme is not signed.
		url = strings.TrimSpace(x.ok("s3cmd", "signurl", "s3://presigned/"+key, "+300"))
		url = "https:" + strings.TrimPrefix(url, "http:")
		if status, body := curl(t, x.ca, url); status != 200 || sha256Hex(body) != want {
			t.Errorf("s3cmd signurl %s: %d %.200s", key, status, body)
		}
	}
	url := strings.TrimSpace(x.ok("aws", "s3", "presign", "s3://presigned/plain.txt", "--expires-in", "1"))
	if status, _ := curl(t, x.ca, strings.Replace(url, "plain.txt", "with%20space%2Bplus.txt", 1)); status != 403 {
		t.Fatalf("a presigned URL for another key: %d", status)
	}
	testutil.WaitFor(t, 10*time.Second, "the presigned URL to expire", func() error {
		if status, _ := curl(t, x.ca, url); status != 403 {
			return fmt.Errorf("status %d", status)
		}
		return nil
	})
}

// keysOf is a map's keys, sorted and joined.
func keysOf(m map[string]string) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ",")
}

// awsHeadResult is what aws s3api head-object prints.
type awsHeadResult struct {
	ContentLength      int64
	ContentType        string
	ETag               string
	VersionID          string `json:"VersionId"`
	Metadata           map[string]string
	CacheControl       string
	ContentDisposition string
	ContentEncoding    string
	ContentLanguage    string
	Expires            string
	ChecksumCRC32      string
	ChecksumCRC32C     string
	ChecksumSHA1       string
	ChecksumSHA256     string
}

func awsHead(t *testing.T, x *s3CLIs, bucket, key string, more ...string) awsHeadResult {
	t.Helper()
	var h awsHeadResult
	decodeJSON(t, x.ok("aws", append([]string{"s3api", "head-object", "--bucket", bucket, "--key", key}, more...)...), &h)
	return h
}

func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
}

// awsTags is an object's tags as k=v pairs in key order.
func awsTags(t *testing.T, x *s3CLIs, bucket, key string) string {
	t.Helper()
	var res struct{ TagSet []struct{ Key, Value string } }
	decodeJSON(t, x.ok("aws", "s3api", "get-object-tagging", "--bucket", bucket, "--key", key), &res)
	var kv []string
	for _, tg := range res.TagSet {
		kv = append(kv, tg.Key+"="+tg.Value)
	}
	slices.Sort(kv)
	return strings.Join(kv, ",")
}

// objectState is what a client sees of an object: its size, type, ETag,
// metadata and the SHA-256 of its bytes.
func objectState(t *testing.T, check *minio.Client, bucket, key string) string {
	t.Helper()
	st, err := check.StatObject(context.Background(), bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return "no object: " + err.Error()
	}
	return fmt.Sprintf("size=%d type=%s etag=%s meta=%v modified=%s sha256=%s", st.Size, st.ContentType, st.ETag,
		st.UserMetadata, st.LastModified, bucketSums(t, check, bucket, key)[""])
}

// curl fetches url with curl, trusting ca, and returns the status and body.
func curl(t *testing.T, ca, url string, args ...string) (int, []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "body")
	argv := append([]string{"-sS", "--cacert", ca, "-o", out, "-w", "%{http_code}"}, args...)
	cmd := exec.Command("curl", append(argv, url)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	status, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	body, _ := os.ReadFile(out)
	var code int
	_, _ = fmt.Sscan(string(status), &code)
	return code, body
}

func sha256Hex(b []byte) string { return hex.EncodeToString(sha(b)) }
