package s3

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The examples from AWS's "Signature Version 4 signing process" for S3.
const (
	exampleKey    = "AKIAIOSFODNN7EXAMPLE"
	exampleSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	emptySHA256   = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

var exampleTime = time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)

func TestSigV4HeaderExampleGetObject(t *testing.T) {
	r := httptest.NewRequest("GET", "https://examplebucket.s3.amazonaws.com/test.txt", nil)
	r.Header.Set("Range", "bytes=0-9")
	r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"+
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"+
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
	s := mustParseV4(t, r)
	got, verr := s.verify(r, exampleSecret, exampleTime.Add(time.Minute))
	if verr != nil {
		t.Fatalf("AWS's own example does not verify: %v (computed %s)", verr, s.compute(r, exampleSecret))
	}
	if s.accessKey() != exampleKey || got.contentSHA256 != emptySHA256 || got.chunked || got.size(r) != 0 {
		t.Fatalf("%s %+v", s.accessKey(), got)
	}
	// Any change to a signed header breaks it; so does a wrong secret or a stale clock.
	r.Header.Set("Range", "bytes=0-10")
	if _, err := s.verify(r, exampleSecret, exampleTime); err == nil || err.Code != "SignatureDoesNotMatch" {
		t.Fatalf("tampered Range: %v", err)
	}
	r.Header.Set("Range", "bytes=0-9")
	if _, err := s.verify(r, "wrong", exampleTime); err == nil || err.Code != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := s.verify(r, exampleSecret, exampleTime.Add(time.Hour)); err == nil || err.Code != "RequestTimeTooSkewed" {
		t.Fatalf("skewed clock: %v", err)
	}
}

func TestSigV4PresignedExample(t *testing.T) {
	u := "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256" +
		"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request" +
		"&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host" +
		"&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
	r := httptest.NewRequest("GET", u, nil)
	s := mustParseV4(t, r)
	if _, err := s.verify(r, exampleSecret, exampleTime.Add(time.Hour)); err != nil {
		t.Fatalf("AWS's presigned example does not verify: %v (computed %s)", err, s.compute(r, exampleSecret))
	}
	if _, err := s.verify(r, exampleSecret, exampleTime.Add(25*time.Hour)); err == nil || err.Message != "Request has expired" {
		t.Fatalf("expired URL: %v", err)
	}
	r2 := httptest.NewRequest("GET", u+"&extra=1", nil)
	s2 := mustParseV4(t, r2)
	if _, err := s2.verify(r2, exampleSecret, exampleTime.Add(time.Hour)); err == nil {
		t.Fatal("an added query parameter still verifies")
	}
	// Whoever holds the URL cannot add x-amz-* headers the signer never saw.
	r3 := httptest.NewRequest("GET", u, nil)
	r3.Header.Set("X-Amz-Copy-Source", "/other/secret")
	if _, err := parseAuth(r3); err == nil || err.Code != "AccessDenied" || !strings.Contains(err.Message, "x-amz-copy-source") {
		t.Fatalf("unsigned x-amz-copy-source: %v", err)
	}
}

// mustParseV4 parses r's signature, which must be SigV4.
func mustParseV4(t *testing.T, r *http.Request) *sigV4 {
	t.Helper()
	a, err := parseAuth(r)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := a.(*sigV4)
	if !ok {
		t.Fatalf("parsed as %T", a)
	}
	return s
}

func TestSigV4Refusals(t *testing.T) {
	for name, hdr := range map[string]string{
		"anonymous": "",
		"sigv4a":    "AWS4-ECDSA-P256-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/s3/aws4_request, SignedHeaders=host, Signature=00",
		"bearer":    "Bearer abc",
		"malformed": "AWS4-HMAC-SHA256 Credential=x",
		"v2 no sig": "AWS AKIAIOSFODNN7EXAMPLE",
		"v2 no key": "AWS :frJIUN8DYpKDtOLCwo//yllqDzg=",
		"host unsigned": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request," +
			"SignedHeaders=x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
	} {
		r := httptest.NewRequest("GET", "https://h/b/k", nil)
		r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
		r.Header.Set("X-Amz-Date", "20130524T000000Z")
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		if _, err := parseAuth(r); err == nil {
			t.Errorf("%s: accepted", name)
		} else if err.Status < 400 || err.Status >= 500 {
			t.Errorf("%s: status %d", name, err.Status)
		}
	}
	if awsEncode("a b/c~d*e", false) != "a%20b/c~d%2Ae" || awsEncode("a/b", true) != "a%2Fb" {
		t.Fatal("awsEncode")
	}
}

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		h       string
		off, n  int64
		partial bool
		bad     bool
	}{
		{"", 0, 100, false, false}, {"bytes=0-9", 0, 10, true, false}, {"bytes=90-", 90, 10, true, false},
		{"bytes=-5", 95, 5, true, false}, {"bytes=10-1000", 10, 90, true, false}, {"bytes=100-", 0, 0, false, true},
		{"bytes=5-2", 0, 0, false, true}, {"bytes=0-1,5-6", 0, 100, false, false},
	} {
		off, n, partial, err := parseRange(c.h, 100)
		if (err != nil) != c.bad || (!c.bad && (off != c.off || n != c.n || partial != c.partial)) {
			t.Errorf("%q: %d %d %v %v", c.h, off, n, partial, err)
		}
	}
}

func TestBucketAndKey(t *testing.T) {
	for _, c := range []struct{ host, path, domain, bucket, key string }{
		{"10.0.0.5:8447", "/b/dir/k.txt", "", "b", "dir/k.txt"},
		{"10.0.0.5:8447", "/", "", "", ""},
		{"scans.s3.hospital.lan:8447", "/dir/k.txt", "s3.hospital.lan", "scans", "dir/k.txt"},
		{"s3.hospital.lan", "/scans/k", "s3.hospital.lan", "scans", "k"},
		{"SCANS.S3.Hospital.LAN", "/", "s3.hospital.lan", "scans", ""},
		{"other.example", "/b/k", "s3.hospital.lan", "b", "k"},
	} {
		b, k, _ := bucketAndKey(c.host, c.path, c.domain)
		if b != c.bucket || k != c.key {
			t.Errorf("%s %s (%s): %q %q, want %q %q", c.host, c.path, c.domain, b, k, c.bucket, c.key)
		}
	}
}
