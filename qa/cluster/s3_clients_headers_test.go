package cluster_test

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

// cliChecksumsAndHeaders: awscli uploads with each flexible checksum (it
// streams them aws-chunked, unsized, with the checksum in a trailer) and
// reads them back checked; the standard headers a client sets (aws s3 cp
// --cache-control …, s3cmd modify --add-header) are kept, and copies keep
// them.
func cliChecksumsAndHeaders(t *testing.T, x *s3CLIs, check *minio.Client) {
	ctx := context.Background()
	x.ok("aws", "s3", "mb", "s3://sums")
	body := filepath.Join(t.TempDir(), "body.bin")
	writeRandom(t, body, 3<<20+11, rand.New(rand.NewPCG(11, 11)))
	data, err := os.ReadFile(body)
	if err != nil {
		t.Fatal(err)
	}
	crc := func(tab *crc32.Table) string {
		return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.Checksum(data, tab)))
	}
	s1, s256 := sha1.Sum(data), sha256.Sum256(data)
	want := map[string]string{
		"CRC32": crc(crc32.IEEETable), "CRC32C": crc(crc32.MakeTable(crc32.Castagnoli)),
		"SHA1": base64.StdEncoding.EncodeToString(s1[:]), "SHA256": base64.StdEncoding.EncodeToString(s256[:]),
	}
	for algo, sum := range want {
		key := "sum-" + algo
		var put awsHeadResult
		decodeJSON(t, x.ok("aws", "s3api", "put-object", "--bucket", "sums", "--key", key, "--body", body, "--checksum-algorithm", algo), &put)
		h := awsHead(t, x, "sums", key, "--checksum-mode", "ENABLED")
		got := map[string][2]string{"CRC32": {put.ChecksumCRC32, h.ChecksumCRC32}, "CRC32C": {put.ChecksumCRC32C, h.ChecksumCRC32C},
			"SHA1": {put.ChecksumSHA1, h.ChecksumSHA1}, "SHA256": {put.ChecksumSHA256, h.ChecksumSHA256}}[algo]
		if got != [2]string{sum, sum} {
			t.Errorf("%s: put-object answered %q, head-object %q, want %q", algo, got[0], got[1], sum)
		}
		// With --checksum-mode ENABLED awscli checks the body against it.
		out := filepath.Join(t.TempDir(), key)
		x.ok("aws", "s3api", "get-object", "--bucket", "sums", "--key", key, "--checksum-mode", "ENABLED", out)
		if fileSum(t, out) != fileSum(t, body) {
			t.Errorf("%s: the object read back differs", algo)
		}
	}

	x.ok("aws", "s3", "cp", "--no-progress", body, "s3://sums/page.bin.gz", "--content-type", "application/octet-stream",
		"--cache-control", "max-age=3600", "--content-disposition", `attachment; filename="page.bin"`,
		"--content-encoding", "gzip", "--content-language", "en", "--expires", "2031-01-01T00:00:00Z")
	x.ok("aws", "s3", "cp", "--no-progress", "s3://sums/page.bin.gz", "s3://sums/copy.bin.gz")
	for _, key := range []string{"page.bin.gz", "copy.bin.gz"} {
		h := awsHead(t, x, "sums", key)
		if h.CacheControl != "max-age=3600" || h.ContentDisposition != `attachment; filename="page.bin"` || h.ContentEncoding != "gzip" ||
			h.ContentLanguage != "en" || !strings.HasPrefix(h.Expires, "2031-01-01") && !strings.Contains(h.Expires, "01 Jan 2031") {
			t.Errorf("%s: the headers set with aws s3 cp: %+v", key, h)
		}
	}
	x.ok("s3cmd", "modify", "--add-header=Cache-Control:no-store", "s3://sums/sum-CRC32")
	if h := awsHead(t, x, "sums", "sum-CRC32"); h.CacheControl != "no-store" {
		t.Errorf("s3cmd modify --add-header=Cache-Control:no-store: %+v", h)
	}
	if sums := bucketSums(t, check, "sums", "sum-CRC32"); sums[""] != fileSum(t, body) {
		t.Error("s3cmd modify changed the bytes")
	}
	if st, err := check.StatObject(ctx, "sums", "page.bin.gz", minio.StatObjectOptions{}); err != nil || st.Metadata.Get("Content-Encoding") != "gzip" {
		t.Errorf("Content-Encoding through another node: %v %v", st.Metadata, err)
	}
}
