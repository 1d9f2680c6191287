package s3_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// xmlEndpoints are the requests that take an XML document, each with a
// document S3's reference gives as an example (the fuzzer's seeds).
var xmlEndpoints = []struct{ method, path, doc string }{
	{"PUT", "/fuzz/patient/scan.dcm?tagging", `<Tagging><TagSet><Tag><Key>ward</Key><Value>3</Value></Tag></TagSet></Tagging>`},
	{"PUT", "/fuzz?tagging", `<Tagging><TagSet><Tag><Key>site</Key><Value>north</Value></Tag></TagSet></Tagging>`},
	{"PUT", "/fuzz?versioning", `<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>`},
	{"PUT", "/fuzz?object-lock", `<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>`},
	{"PUT", "/fuzz/patient/scan.dcm?retention", `<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate></Retention>`},
	{"PUT", "/fuzz/patient/scan.dcm?legal-hold", `<LegalHold><Status>OFF</Status></LegalHold>`},
	{"PUT", "/fuzz?cors", `<CORSConfiguration><CORSRule><AllowedOrigin>https://pacs.lan</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>300</MaxAgeSeconds></CORSRule></CORSConfiguration>`},
	{"PUT", "/fuzz?lifecycle", `<LifecycleConfiguration><Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>30</Days></Expiration><AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>`},
	{"PUT", "/fuzz?acl", `<AccessControlPolicy><Owner><ID>o</ID></Owner><AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>o</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>`},
	{"POST", "/fuzz-scratch?delete", `<Delete><Object><Key>a</Key></Object><Object><Key>b</Key><VersionId>null</VersionId></Object><Quiet>true</Quiet></Delete>`},
	{"POST", "/fuzz-scratch/upload?uploadId=UPLOAD", `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"0123456789abcdef0123456789abcdef"</ETag></Part></CompleteMultipartUpload>`},
	{"PUT", "/fuzz-new", `<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint></CreateBucketConfiguration>`},
}

// Every S3 request that carries an XML document, with any document: the
// gateway answers an S3 error (never a 500), and a refused document
// changes nothing: not the object's bytes and metadata, not the bucket's
// configuration. No document changes the object's bytes.
func FuzzXMLBodies(f *testing.F) {
	e := newEnv(f)
	c := e.minio(0)
	ctx := context.Background()
	for _, b := range []string{"fuzz", "fuzz-scratch"} {
		if err := c.MakeBucket(ctx, b, minio.MakeBucketOptions{}); err != nil {
			f.Fatal(err)
		}
	}
	const key = "patient/scan.dcm"
	put(f, c, "fuzz", key, bytes.Repeat([]byte("DICM"), 9000))
	upload, err := minio.Core{Client: c}.NewMultipartUpload(ctx, "fuzz-scratch", "upload", minio.PutObjectOptions{})
	if err != nil {
		f.Fatal(err)
	}
	for i, ep := range xmlEndpoints {
		f.Add(uint8(i), []byte(ep.doc))
	}
	f.Fuzz(func(t *testing.T, which uint8, doc []byte) {
		ep := xmlEndpoints[int(which)%len(xmlEndpoints)]
		path := bytes.Replace([]byte(ep.path), []byte("UPLOAD"), []byte(upload), 1)
		before, config := snapshot(t, c, "fuzz", key), settings(t, e)
		status, body := sendDoc(t, e, ep.method, string(path), doc)
		var res struct {
			XMLName xml.Name
			Code    string `xml:"Code"`
		}
		_ = xml.Unmarshal(body, &res)
		switch {
		case status >= 500 && status != 501:
			t.Fatalf("%s %s: %d %s for %q", ep.method, path, status, body, doc)
		case status >= 300 && (res.XMLName.Local != "Error" || res.Code == ""):
			t.Fatalf("%s %s: %d without an S3 error: %q", ep.method, path, status, body)
		}
		if after := snapshot(t, c, "fuzz", key); after != before {
			t.Fatalf("%s %s (%d) changed the object:\nbefore %s\nafter  %s", ep.method, path, status, before, after)
		}
		if after := settings(t, e); status >= 300 && after != config {
			t.Fatalf("%s %s was refused (%d %s) and still changed the settings:\nbefore %s\nafter  %s", ep.method, path, status, res.Code, config, after)
		}
	})
}

// sendDoc sends an XML document the way SDKs do: its SHA-256 signed and
// its Content-MD5 given.
func sendDoc(t *testing.T, e *env, method, path string, doc []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.servers[0].URL+path, bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	sum, md := sha256.Sum256(doc), md5.Sum(doc)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	req.Header.Set("Content-Md5", base64.StdEncoding.EncodeToString(md[:]))
	req.ContentLength = int64(len(doc))
	req = signer.SignV4(*req, e.ak, e.sk, "", "us-east-1")
	res, err := (&http.Client{Transport: e.transport(0)}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}

var requestID = regexp.MustCompile(`<RequestId>[^<]*</RequestId>`)

// settings is every configuration of the fuzzed bucket and object, as
// GETs return it.
func settings(t *testing.T, e *env) string {
	t.Helper()
	var b bytes.Buffer
	for _, p := range []string{"/fuzz?tagging", "/fuzz?versioning", "/fuzz?object-lock", "/fuzz?cors", "/fuzz?lifecycle",
		"/fuzz/patient/scan.dcm?tagging", "/fuzz/patient/scan.dcm?retention", "/fuzz/patient/scan.dcm?legal-hold"} {
		status, body := sendDoc(t, e, "GET", p, nil)
		body = requestID.ReplaceAll(body, nil) // new with every answer
		fmt.Fprintf(&b, "%s: %d %s\n", p, status, body)
	}
	return b.String()
}
