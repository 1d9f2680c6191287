package s3

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go/encoding/httpbinding"
	"github.com/minio/minio-go/v7/pkg/s3utils"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// The signature checks are fuzzed against the clients' own signers: any
// key and query a client can send, signed by aws-sdk-go-v2 or minio-go (V4
// in the header, V4 presigned, V2 in the header and presigned), must
// verify, and the same request with one query value changed must not. A
// canonicalisation that differs from a client's on some byte shows up
// here as a refused request that the client believes is valid.

// wire sends r through HTTP/1.1 framing and reads it back as a server
// does, so the request checked is the one a server would see.
func wire(t *testing.T, r *http.Request) *http.Request {
	t.Helper()
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Skipf("not sendable: %v", err) // net/http refuses it before any server sees it
	}
	got, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil {
		t.Skipf("not readable: %v", err)
	}
	return got
}

// fuzzRequest is the request a client builds for key with query q, its
// path escaped by escape (each client has its own).
func fuzzRequest(t *testing.T, method, key string, q url.Values, escape func(string) string) *http.Request {
	u := &url.URL{Scheme: "http", Host: "s3.lan:9000", Path: "/bucket/" + key, RawPath: "/bucket/" + escape(key), RawQuery: q.Encode()}
	r, err := http.NewRequest(method, u.String(), nil)
	if err != nil || r.URL.Path != "/bucket/"+key {
		t.Skip("the key does not survive the client's own URL")
	}
	r.Header.Set("X-Amz-Meta-Study", "ct-1")
	return r
}

func verifies(r *http.Request, now time.Time) *Error {
	a, err := parseAuth(r)
	if err != nil {
		return err
	}
	withHostBucket(a, "")
	_, err = a.verify(r, exampleSecret, now)
	return err
}

// tamper changes the key, and for SigV4 the first query value too, or
// adds one when there is none (SigV2 signs only S3's subresources of the
// query: a changed prefix= is one its signature does not cover).
func tamper(r *http.Request) *http.Request {
	c := r.Clone(context.Background())
	defer func() { c.RequestURI = c.URL.RequestURI() }() // as the wire would carry it
	c.URL.Path += "x"
	c.URL.RawPath = ""
	q := c.URL.Query()
	if q.Has("AWSAccessKeyId") || strings.HasPrefix(c.Header.Get("Authorization"), "AWS ") {
		return c
	}
	for k, vs := range q {
		if !strings.HasPrefix(k, "X-Amz-") {
			q[k] = []string{vs[0] + "x"}
			c.URL.RawQuery = q.Encode()
			return c
		}
	}
	q.Set("versionId", "v1")
	c.URL.RawQuery = q.Encode()
	return c
}

func FuzzSignatureClients(f *testing.F) {
	for _, s := range [][3]string{
		{"photos/puppy.jpg", "", ""},
		{"dir/key one", "prefix", "a b"},
		{"ü/ß/日本.txt", "uploadId", "2~x"},
		{"a+b=c&d", "list-type", "2"},
		{"~!*'()$,;:@", "tagging", ""},
		{"a//b/../c", "versionId", "null"},
		{"%2F%41", "response-content-disposition", "attachment; filename=\"x y.pdf\""},
		{"key", "delimiter", "/"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	now := time.Now().UTC()
	creds := aws.Credentials{AccessKeyID: exampleKey, SecretAccessKey: exampleSecret}
	sdk := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	sdkEscape := func(k string) string { return httpbinding.EscapePath(k, false) }
	minioEscape := func(k string) string { return strings.TrimPrefix(s3utils.EncodePath("/bucket/"+k), "/bucket/") }
	f.Fuzz(func(t *testing.T, key, qk, qv string) {
		if key == "" || !utf8.ValidString(key) || !utf8.ValidString(qk) || !utf8.ValidString(qv) {
			t.Skip("S3 keys are UTF-8; the gateway refuses others before their signature matters")
		}
		q := url.Values{}
		if qk != "" {
			q.Set(qk, qv)
		}
		check := func(name string, r *http.Request) {
			t.Helper()
			r = wire(t, r)
			if err := verifies(r, now); err != nil {
				t.Fatalf("%s: a request the client signed is refused: %v\n%s %s", name, err, r.Method, r.URL.RequestURI())
			}
			if err := verifies(tamper(r), now); err == nil {
				t.Fatalf("%s: a changed query still verifies: %s", name, tamper(r).URL.RequestURI())
			}
		}

		r := fuzzRequest(t, "GET", key, q, sdkEscape)
		r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
		if err := sdk.SignHTTP(context.Background(), creds, r, unsignedPayload, "s3", "us-east-1", now); err != nil {
			t.Fatal(err)
		}
		check("aws-sdk-go-v2 header", r)

		r = fuzzRequest(t, "GET", key, q, sdkEscape)
		pq := r.URL.Query()
		pq.Set("X-Amz-Expires", "900")
		r.URL.RawQuery = pq.Encode()
		signed, hdr, err := sdk.PresignHTTP(context.Background(), creds, r, unsignedPayload, "s3", "us-east-1", now)
		if err != nil {
			t.Fatal(err)
		}
		pr, err := http.NewRequest("GET", signed, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, vs := range hdr {
			if !strings.EqualFold(k, "host") {
				pr.Header[k] = vs
			}
		}
		check("aws-sdk-go-v2 presigned", pr)

		r = fuzzRequest(t, "PUT", key, q, minioEscape)
		r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
		check("minio-go V4 header", signer.SignV4(*r, exampleKey, exampleSecret, "", "us-east-1"))
		check("minio-go V4 presigned", signer.PreSignV4(*fuzzRequest(t, "GET", key, q, minioEscape), exampleKey, exampleSecret, "", "us-east-1", 900))
		check("minio-go V2 header", signer.SignV2(*fuzzRequest(t, "GET", key, q, minioEscape), exampleKey, exampleSecret, false))
		check("minio-go V2 presigned", signer.PreSignV2(*fuzzRequest(t, "GET", key, q, minioEscape), exampleKey, exampleSecret, 900, false))
	})
}

// Whatever arrives as a signature, in the header or the query, is parsed
// without a panic and refused unless it carries the right signature.
func FuzzSignatureParse(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature=00", "")
	f.Add("", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=00")
	f.Add("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", "acl&versionId=1")
	f.Add("", "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1141889120&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D")
	f.Fuzz(func(t *testing.T, auth, rawQuery string) {
		r, err := http.NewRequest("GET", "http://s3.lan/bucket/key", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.URL.RawQuery = rawQuery
		r.Header.Set("Authorization", auth)
		r.Header.Set("X-Amz-Date", exampleTime.Format(amzDateFormat))
		r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
		if err := verifies(r, exampleTime); err == nil {
			t.Fatalf("an unsigned request verified: %q %q", auth, rawQuery)
		}
	})
}

// Minio-go (and aws-sdk-go v1) sort the query by raw name, the AWS SDK v2
// by encoded name; for a name like "|" the two orders differ, and both
// clients' requests must verify.
func TestSignatureQueryOrderOfGoClients(t *testing.T) {
	q := url.Values{"|": {"0"}, "prefix": {"a"}}
	r := fuzzRequest(t, "GET", "key", q, func(k string) string { return k })
	if err := verifies(wire(t, signer.PreSignV4(*r, exampleKey, exampleSecret, "", "us-east-1", 900)), time.Now()); err != nil {
		t.Fatalf("minio-go's presigned URL: %v", err)
	}
	r = fuzzRequest(t, "GET", "key", q, func(k string) string { return k })
	pq := r.URL.Query()
	pq.Set("X-Amz-Expires", "900")
	r.URL.RawQuery = pq.Encode()
	now := time.Now()
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: exampleKey, SecretAccessKey: exampleSecret}, r, unsignedPayload, "s3", "us-east-1", now)
	if err != nil {
		t.Fatal(err)
	}
	pr, _ := http.NewRequest("GET", signed, nil)
	pr.Header.Set("X-Amz-Meta-Study", "ct-1")
	if err := verifies(wire(t, pr), now); err != nil {
		t.Fatalf("aws-sdk-go-v2's presigned URL: %v", err)
	}
}

// An aws-chunked body, signed or with an unsigned checksum trailer, in any
// chunk size, decodes to exactly what was sent; and one byte of it
// changed anywhere either is refused or still decodes to exactly that.
func FuzzAWSChunked(f *testing.F) {
	f.Add([]byte("hello, world"), uint16(5), uint8(0), uint32(3), byte('x'))
	f.Add(bytes.Repeat([]byte("cairn "), 3000), uint16(8192), uint8(1), uint32(9000), byte(0))
	f.Add([]byte{}, uint16(1), uint8(2), uint32(0), byte('1'))
	f.Add([]byte("a"), uint16(1), uint8(5), uint32(70), byte('\n'))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16, mode uint8, flipAt uint32, flipTo byte) {
		n := max(int(chunk), 1)
		request := func(body string) *http.Request {
			r, _ := http.NewRequest("PUT", "http://s3.lan/b/k", nil)
			r.Header.Set("X-Amz-Decoded-Content-Length", strconv.Itoa(len(data)))
			var s *chunkSigner
			var trailer []string
			switch mode % 3 {
			case 0:
				r.Header.Set("X-Amz-Content-Sha256", streamingSigned)
				s = signV4(t, r)
			case 1:
				r.Header.Set("X-Amz-Content-Sha256", streamingSignedTrailer)
				r.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32c")
				s = signV4(t, r)
				trailer = []string{"x-amz-checksum-crc32c:" + checksumOf(checksumCRC32C, data)}
			case 2:
				r.Header.Set("X-Amz-Content-Sha256", streamingUnsignedTrailer)
				r.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
				signV4(t, r)
				trailer = []string{"x-amz-checksum-crc32:" + checksumOf(checksumCRC32, data)}
			}
			if body == "" {
				body = encodeChunked(s, data, n, trailer)
			}
			setBody(r, body)
			if mode&4 != 0 {
				r.Body = io.NopCloser(iotest.OneByteReader(r.Body))
			}
			return r
		}
		r := request("")
		a, serr := parseAuth(r)
		if serr != nil {
			t.Fatal(serr)
		}
		p, serr := a.verify(r, exampleSecret, exampleTime)
		if serr != nil {
			t.Fatal(serr)
		}
		got, err := drain(p, r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the body as sent: %d of %d bytes, %v", len(got), len(data), err)
		}

		body, _ := io.ReadAll(request("").Body) // signing is deterministic: the same body again
		i := int(flipAt % uint32(len(body)))
		if body[i] == flipTo {
			t.Skip()
		}
		body[i] = flipTo
		r = request(string(body))
		a, _ = parseAuth(r)
		if p, serr = a.verify(r, exampleSecret, exampleTime); serr != nil {
			return
		}
		if got, err = drain(p, r); err == nil && !bytes.Equal(got, data) {
			t.Fatalf("byte %d changed to %q: accepted %q instead of %q", i, flipTo, got, data)
		}
	})
}
