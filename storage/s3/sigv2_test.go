package s3

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/signer"
)

// v2Example is one of the examples of AWS's "Signing and Authenticating
// REST Requests" (Signature Version 2), with its original johnsmith
// bucket; every signature was also recomputed with Python's hmac.
type v2Example struct {
	name, method, target, bucket string // bucket: named by the Host (virtual-host style)
	headers                      [][2]string
	sig                          string
	at                           time.Time
}

func v2Examples() []v2Example {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC1123Z, s); return t }
	return []v2Example{
		{"object GET", "GET", "http://johnsmith.s3.amazonaws.com/photos/puppy.jpg", "johnsmith",
			[][2]string{{"Date", "Tue, 27 Mar 2007 19:36:42 +0000"}}, "bWq2s1WEIj+Ydj0vQ697zp+IXMU=", at("Tue, 27 Mar 2007 19:36:42 +0000")},
		{"object PUT", "PUT", "http://johnsmith.s3.amazonaws.com/photos/puppy.jpg", "johnsmith",
			[][2]string{{"Content-Type", "image/jpeg"}, {"Date", "Tue, 27 Mar 2007 21:15:45 +0000"}}, "MyyxeRY7whkBe+bq8fHCL/2kKUg=", at("Tue, 27 Mar 2007 21:15:45 +0000")},
		{"list", "GET", "http://johnsmith.s3.amazonaws.com/?prefix=photos&max-keys=50&marker=puppy", "johnsmith",
			[][2]string{{"User-Agent", "Mozilla/5.0"}, {"Date", "Tue, 27 Mar 2007 19:42:41 +0000"}}, "htDYFYduRNen8P9ZfE/s9SuKy0U=", at("Tue, 27 Mar 2007 19:42:41 +0000")},
		{"fetch ?acl", "GET", "http://johnsmith.s3.amazonaws.com/?acl", "johnsmith",
			[][2]string{{"Date", "Tue, 27 Mar 2007 19:44:46 +0000"}}, "c2WLPFtWHVgbEmeEG93a4cG37dM=", at("Tue, 27 Mar 2007 19:44:46 +0000")},
		{"upload to a CNAME bucket", "PUT", "http://static.johnsmith.net:8080/db-backup.dat.gz", "static.johnsmith.net",
			[][2]string{{"User-Agent", "curl/7.15.5"}, {"Date", "Tue, 27 Mar 2007 21:06:08 +0000"}, {"x-amz-acl", "public-read"},
				{"content-type", "application/x-download"}, {"Content-MD5", "4gJE4saaMU4BqNR0kLY+lw=="},
				{"X-Amz-Meta-ReviewedBy", "joe@johnsmith.net"}, {"X-Amz-Meta-ReviewedBy", "jane@johnsmith.net"},
				{"X-Amz-Meta-FileChecksum", "0x02661779"}, {"X-Amz-Meta-ChecksumAlgorithm", "crc32"},
				{"Content-Disposition", "attachment; filename=database.dat"}, {"Content-Encoding", "gzip"}},
			"ilyl83RwaSoYIEdixDQcA4OnAnc=", at("Tue, 27 Mar 2007 21:06:08 +0000")},
		{"list all my buckets", "GET", "http://s3.amazonaws.com/", "",
			[][2]string{{"Date", "Wed, 28 Mar 2007 01:29:59 +0000"}}, "qGdzdERIC03wnaRNKh6OqZehG9s=", at("Wed, 28 Mar 2007 01:29:59 +0000")},
		{"unicode keys", "GET", "http://s3.amazonaws.com/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re", "",
			[][2]string{{"Date", "Wed, 28 Mar 2007 01:49:49 +0000"}}, "DNEZGsoieTZ92F3bUfSPQcbGmlM=", at("Wed, 28 Mar 2007 01:49:49 +0000")},
		// The Delete example sends both Date and x-amz-date; its StringToSign
		// puts the latter on the Date line, against the rule the same page
		// states (and clients follow): the Date line empty, x-amz-date among
		// the amz headers. This is the rule's signature, from Python's hmac.
		{"delete with Date and x-amz-date", "DELETE", "http://s3.amazonaws.com/johnsmith/photos/puppy.jpg", "",
			[][2]string{{"User-Agent", "dotnet"}, {"Date", "Tue, 27 Mar 2007 21:20:27 +0000"}, {"X-Amz-Date", "Tue, 27 Mar 2007 21:20:26 +0000"}},
			"R4dJ53KECjStyBO5iTBJZ4XVOaI=", at("Tue, 27 Mar 2007 21:20:26 +0000")},
		// s3cmd's form: x-amz-date instead of Date (signed among the amz
		// headers, the Date line left empty), path style, sub-resources.
		{"s3cmd ?acl", "PUT", "http://s3.lan/mybucket/dir/file%20name.txt?acl", "",
			[][2]string{{"Content-Type", "application/xml"}, {"X-Amz-Date", "Wed, 28 Mar 2007 01:49:49 +0000"}}, "cu6lfaybw6R9MWh3ibGUk+leU/A=", at("Wed, 28 Mar 2007 01:49:49 +0000")},
		{"s3cmd upload part", "PUT", "http://s3.lan/mybucket/big.iso?uploadId=abc123&partNumber=2", "",
			[][2]string{{"X-Amz-Date", "Wed, 28 Mar 2007 01:49:49 +0000"}, {"X-Amz-Meta-S3cmd-Attrs", "uid:0/gid:0"}}, "pP6pPvT/7BmEd8v58UiNal6V45k=", at("Wed, 28 Mar 2007 01:49:49 +0000")},
	}
}

func (e v2Example) request(sig string) *http.Request {
	r := httptest.NewRequest(e.method, e.target, nil)
	for _, h := range e.headers {
		r.Header.Add(h[0], h[1])
	}
	r.Header.Set("Authorization", "AWS "+exampleKey+":"+sig)
	return r
}

// verifyV2 parses r, which must be SigV2, and verifies it at now.
func verifyV2(t *testing.T, r *http.Request, bucket string, now time.Time) (*sigV2, *Error) {
	t.Helper()
	a, err := parseAuth(r)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := a.(*sigV2)
	if !ok {
		t.Fatalf("parsed as %T", a)
	}
	withHostBucket(a, bucket)
	_, err = a.verify(r, exampleSecret, now)
	return s, err
}

func TestSigV2AWSExamples(t *testing.T) {
	for _, e := range v2Examples() {
		r := e.request(e.sig)
		s, err := verifyV2(t, r, e.bucket, e.at.Add(time.Minute))
		if err != nil {
			t.Errorf("%s: %v\nstring to sign %q", e.name, err, s.stringToSign(r, false))
			continue
		}
		if s.accessKey() != exampleKey {
			t.Errorf("%s: key %q", e.name, s.accessKey())
		}
		// The signature covers the method, the path, the bucket, the date.
		for what, tamper := range map[string]func(*http.Request){
			"method": func(r *http.Request) { r.Method = "POST" },
			"path":   func(r *http.Request) { r.URL.Path += "x"; r.URL.RawPath = ""; r.RequestURI = r.URL.RequestURI() },
			"bucket": func(r *http.Request) { withHostBucket(&sigV2{}, "other") },
			"date": func(r *http.Request) {
				d := "Date"
				if r.Header.Get("X-Amz-Date") != "" {
					d = "X-Amz-Date"
				}
				r.Header.Set(d, e.at.Add(time.Second).Format(time.RFC1123Z))
			},
		} {
			r := e.request(e.sig)
			tamper(r)
			bucket := e.bucket
			if what == "bucket" {
				bucket += "x"
			}
			if _, err := verifyV2(t, r, bucket, e.at); err == nil || err.Code != "SignatureDoesNotMatch" {
				t.Errorf("%s: tampered %s: %v", e.name, what, err)
			}
		}
	}
}

func TestSigV2Refusals(t *testing.T) {
	e := v2Examples()[0]
	if _, err := verifyV2(t, e.request(e.sig), "", e.at); err == nil || err.Code != "SignatureDoesNotMatch" {
		t.Errorf("bucket left out of the resource: %v", err)
	}
	if _, err := verifyV2(t, e.request(e.sig), e.bucket, e.at.Add(16*time.Minute)); err == nil || err.Code != "RequestTimeTooSkewed" {
		t.Errorf("skewed: %v", err)
	}
	r := e.request(e.sig)
	r.Header.Del("Date")
	if _, err := verifyV2(t, r, e.bucket, e.at); err == nil || err.Code != "AccessDenied" {
		t.Errorf("no date: %v", err)
	}
	r = e.request(e.sig)
	r.Header.Set("X-Amz-Meta-Added", "1") // amz headers are signed
	if _, err := verifyV2(t, r, e.bucket, e.at); err == nil || err.Code != "SignatureDoesNotMatch" {
		t.Errorf("added amz header: %v", err)
	}
	r = e.request(e.sig)
	r.Header.Set("X-Amz-Content-Sha256", streamingUnsignedTrailer)
	r.Header.Set("Date", "Tue, 27 Mar 2007 19:36:42 +0000")
	if _, err := verifyV2(t, r, e.bucket, e.at); err == nil {
		t.Error("SigV2 with an aws-chunked body (and a changed signature) accepted")
	}
	if _, err := verifyV2(t, e.request(e.sig), e.bucket, e.at); err != nil {
		t.Fatal(err)
	}
}

func TestSigV2PresignedExample(t *testing.T) {
	u := "http://johnsmith.s3.amazonaws.com/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620"
	expires := time.Unix(1175139620, 0)
	if _, err := verifyV2(t, httptest.NewRequest("GET", u, nil), "johnsmith", expires.Add(-time.Hour)); err != nil {
		t.Fatalf("AWS's presigned example: %v", err)
	}
	if _, err := verifyV2(t, httptest.NewRequest("GET", u, nil), "johnsmith", expires.Add(time.Second)); err == nil || err.Message != "Request has expired" {
		t.Errorf("expired: %v", err)
	}
	if _, err := verifyV2(t, httptest.NewRequest("GET", u, nil), "johnsmith", expires.Add(-8*24*time.Hour)); err == nil {
		t.Error("an expiry more than 7 days ahead accepted")
	}
	if _, err := verifyV2(t, httptest.NewRequest("GET", u+"&acl", nil), "johnsmith", expires.Add(-time.Hour)); err == nil {
		t.Error("an added sub-resource still verifies")
	}
	if _, err := verifyV2(t, httptest.NewRequest("PUT", u, nil), "johnsmith", expires.Add(-time.Hour)); err == nil {
		t.Error("another method still verifies")
	}
}

// minio-go's SigV2 signer is an independent client implementation.
func TestSigV2MinioGo(t *testing.T) {
	for _, c := range []struct {
		method, url, bucket string
		virtualHost         bool
	}{
		{"PUT", "http://s3.lan/b/some%20key?uploadId=xyz&partNumber=3", "", false},
		{"GET", "http://b.s3.lan/k%2Bplus?versionId=1&response-content-type=text%2Fplain", "b", true},
		{"DELETE", "http://s3.lan/b/k?tagging", "", false},
	} {
		newReq := func() *http.Request {
			req, _ := http.NewRequest(c.method, c.url, nil)
			req.Header.Set("X-Amz-Meta-Color", "blue")
			req.Header.Set("Content-Type", "text/plain")
			return req
		}
		now := time.Now()
		r := serverSide(t, signer.SignV2(*newReq(), exampleKey, exampleSecret, c.virtualHost))
		if _, err := verifyV2(t, r, c.bucket, now); err != nil {
			t.Errorf("%s %s: %v", c.method, c.url, err)
		}
		r = serverSide(t, signer.PreSignV2(*newReq(), exampleKey, exampleSecret, 3600, c.virtualHost))
		if _, err := verifyV2(t, r, c.bucket, now); err != nil {
			t.Errorf("presigned %s %s: %v", c.method, c.url, err)
		}
	}
}

// serverSide turns a client request into what an HTTP server reads.
func serverSide(t *testing.T, req *http.Request) *http.Request {
	t.Helper()
	var b strings.Builder
	if err := req.Write(&b); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(b.String())))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
