package s3

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// signV4 signs r as a SigV4 client would, over host and every x-amz-*
// header, at the example time with the example key. It returns the chunk
// signer an aws-chunked encoder continues from.
func signV4(t *testing.T, r *http.Request) *chunkSigner {
	t.Helper()
	if r.Header.Get("X-Amz-Date") == "" {
		r.Header.Set("X-Amz-Date", "20130524T000000Z")
	}
	names := []string{"host"}
	for k := range r.Header {
		if n := strings.ToLower(k); strings.HasPrefix(n, "x-amz-") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	auth := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=" + strings.Join(names, ";") + ",Signature="
	r.Header.Set("Authorization", auth+strings.Repeat("0", 64))
	s := mustParseV4(t, r)
	sig := s.compute(r, exampleSecret)
	r.Header.Set("Authorization", auth+sig)
	return &chunkSigner{key: s.signingKey(exampleSecret), date: "20130524T000000Z", scope: s.scope(), prev: sig}
}

// encodeChunked frames data in chunks of n bytes the way the AWS SDKs do,
// signed with s (which it advances) unless s is nil. A nil trailer means no
// trailer section; otherwise its "name:value" lines follow the final chunk,
// with their signature when s is not nil.
func encodeChunked(s *chunkSigner, data []byte, n int, trailer []string) string {
	var b strings.Builder
	for off := 0; ; off += n {
		chunk := data[min(off, len(data)):min(off+n, len(data))]
		b.WriteString(strconv.FormatInt(int64(len(chunk)), 16))
		if s != nil {
			sum := sha256.Sum256(chunk)
			s.prev = s.chunk(sum[:])
			b.WriteString(";chunk-signature=" + s.prev)
		}
		b.WriteString("\r\n")
		if len(chunk) == 0 {
			break
		}
		b.Write(chunk)
		b.WriteString("\r\n")
	}
	if trailer != nil {
		canonical := ""
		for _, l := range trailer {
			b.WriteString(l + "\r\n")
			canonical += l + "\n"
		}
		if s != nil {
			b.WriteString("x-amz-trailer-signature:" + s.trailer(canonical) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// setBody gives r a body of the given text.
func setBody(r *http.Request, body string) {
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = int64(len(body))
}

func TestParseAuthDispatch(t *testing.T) {
	presignedV4 := "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
	presignedV2 := "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D"
	for _, c := range []struct {
		name, query, auth, want string // want: a Go type, or an S3 error code
	}{
		{"v4 header", "", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=00", "*s3.sigV4"},
		{"v4 query", presignedV4, "", "*s3.sigV4"},
		{"v2 header", "", "AWS AKIAIOSFODNN7EXAMPLE:bWq2s1WEIj+Ydj0vQ697zp+IXMU=", "*s3.sigV2"},
		{"v2 query", presignedV2, "", "*s3.sigV2"},
		{"anonymous", "", "", "AccessDenied"},
		{"unknown scheme", "", "Basic dXNlcjpwYXNz", "InvalidArgument"},
		{"header and query", presignedV4, "AWS AKIAIOSFODNN7EXAMPLE:bWq2s1WEIj+Ydj0vQ697zp+IXMU=", "InvalidArgument"},
		{"two queries", presignedV4 + "&" + presignedV2, "", "InvalidArgument"},
		{"v2 query without signature", "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620", "", "AuthorizationQueryParametersError"},
		{"v4 query of another algorithm", strings.Replace(presignedV4, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1), "", "AuthorizationQueryParametersError"},
	} {
		r := httptest.NewRequest("GET", "https://johnsmith.s3.amazonaws.com/photos/puppy.jpg?"+c.query, nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		if strings.HasPrefix(c.auth, "AWS4") {
			r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
			r.Header.Set("X-Amz-Date", "20130524T000000Z")
		}
		a, err := parseAuth(r)
		got := typeName(a)
		if err != nil {
			got = err.Code
		}
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func typeName(a authRequest) string {
	switch a.(type) {
	case *sigV4:
		return "*s3.sigV4"
	case *sigV2:
		return "*s3.sigV2"
	}
	return "?"
}

func TestPayloadSHA256(t *testing.T) {
	body := "hello, cairn"
	sum := sha256.Sum256([]byte(body))
	for name, c := range map[string]struct {
		hash, body, code string
	}{
		"match":          {hex.EncodeToString(sum[:]), body, ""},
		"mismatch":       {hex.EncodeToString(sum[:]), body[:len(body)-1] + "!", "XAmzContentSHA256Mismatch"},
		"short":          {hex.EncodeToString(sum[:]), body[:5], "IncompleteBody"},
		"unsigned":       {unsignedPayload, "anything", ""},
		"not a hash":     {"abc", body, "InvalidArgument"},
		"sigv4a streams": {"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", body, "NotImplemented"},
	} {
		r := httptest.NewRequest("PUT", "http://s3.lan/b/k", nil)
		r.Header.Set("X-Amz-Content-Sha256", c.hash)
		signV4(t, r)
		setBody(r, c.body)
		if name == "short" {
			r.ContentLength = int64(len(body)) // the client declared more than it sent
		}
		a, _ := parseAuth(r)
		p, err := a.verify(r, exampleSecret, exampleTime)
		if err == nil {
			_, rerr := drain(p, r)
			if rerr != nil {
				err = rerr.(*Error)
			}
		}
		switch {
		case c.code == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.code != "" && (err == nil || err.Code != c.code):
			t.Errorf("%s: %v, want %s", name, err, c.code)
		}
	}
}

func TestPayloadChecksumHeader(t *testing.T) {
	body := []byte("The quick brown fox jumps over the lazy dog.\n")
	for _, c := range []struct {
		name, header, value, code string
	}{
		{"crc32", "X-Amz-Checksum-Crc32", "61DMag==", ""},
		{"crc64nvme", "X-Amz-Checksum-Crc64nvme", "xSkvqfnNkUs=", ""},
		{"sha1", "X-Amz-Checksum-Sha1", "nATNY3IHfpsR9wyhEcmAfccTfks=", ""},
		{"wrong crc32c", "X-Amz-Checksum-Crc32c", "61DMag==", "BadDigest"},
		{"wrong sha256", "X-Amz-Checksum-Sha256", checksumOf(checksumSHA256, []byte("other")), "BadDigest"},
		{"name only", "X-Amz-Sdk-Checksum-Algorithm", "CRC32C", ""},
	} {
		r := httptest.NewRequest("PUT", "http://s3.lan/b/k", nil)
		r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
		r.Header.Set(c.header, c.value)
		signV4(t, r)
		setBody(r, string(body))
		p := verified(t, r)
		got, err := drain(p, r)
		if c.code != "" {
			refusedWith(t, c.name, err, c.code)
			if c.code == "BadDigest" && !strings.Contains(err.Error(), "x-amz-checksum-") {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("%s: %v", c.name, err)
		}
		a, v, ok := p.checksum()
		want := c.value
		if c.name == "name only" {
			want = "mMP6ww==" // computed over the body, as S3 stores it
		}
		if !ok || v != want || a.header() != strings.ToLower(c.header) && c.name != "name only" {
			t.Errorf("%s: checksum %s %s %v", c.name, a, v, ok)
		}
	}
}

func TestPayloadRefusesStreamingWithoutHeaderV4(t *testing.T) {
	// Presigned SigV4 carries no seed signature for the chunks.
	r := httptest.NewRequest("PUT", "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"+
		"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Content-Sha256="+streamingUnsignedTrailer+
		"&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=00", nil)
	s := mustParseV4(t, r)
	r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "X-Amz-Signature=00", "X-Amz-Signature="+s.compute(r, exampleSecret), 1)
	s = mustParseV4(t, r)
	if _, err := s.verify(r, exampleSecret, exampleTime); err == nil || err.Code != "InvalidRequest" {
		t.Errorf("presigned streaming: %v", err)
	}
	// An aws-chunked body without its decoded length cannot be sized.
	r = httptest.NewRequest("PUT", "http://s3.lan/b/k", nil)
	r.Header.Set("X-Amz-Content-Sha256", streamingSigned)
	signV4(t, r)
	if _, err := mustParseV4(t, r).verify(r, exampleSecret, exampleTime); err == nil || err.Code != "MissingContentLength" {
		t.Errorf("no decoded length: %v", err)
	}
}

func TestChunkedDeclaredLength(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 100)
	for _, c := range []struct {
		decoded string
		code    string
	}{{"1000", ""}, {"1001", "IncompleteBody"}, {"999", "InvalidRequest"}, {"0", "InvalidRequest"}, {"-1", "InvalidArgument"}, {"+1000", "InvalidArgument"}} {
		r := httptest.NewRequest("PUT", "http://s3.lan/b/k", nil)
		r.Header.Set("X-Amz-Content-Sha256", streamingSigned)
		r.Header.Set("X-Amz-Decoded-Content-Length", c.decoded)
		s := signV4(t, r)
		setBody(r, encodeChunked(s, data, 300, nil))
		a, _ := parseAuth(r)
		p, err := a.verify(r, exampleSecret, exampleTime)
		var rerr error = err
		if err == nil {
			_, rerr = drain(p, r)
		}
		if c.code == "" {
			if rerr != nil {
				t.Errorf("%s: %v", c.decoded, rerr)
			}
			continue
		}
		refusedWith(t, "decoded length "+c.decoded, rerr, c.code)
	}
}

func TestUnsignedTrailer(t *testing.T) {
	data := bytes.Repeat([]byte("cairn "), 20000) // 120000 bytes: two 64 KiB chunks
	crc := checksumOf(checksumCRC32, data)
	for _, c := range []struct {
		name, body, code string
	}{
		{"as the AWS SDKs send it", encodeChunked(nil, data, 65536, []string{"x-amz-checksum-crc32:" + crc}), ""},
		{"wrong checksum", encodeChunked(nil, data, 65536, []string{"x-amz-checksum-crc32:" + checksumOf(checksumCRC32, data[1:])}), "BadDigest"},
		{"other trailer", encodeChunked(nil, data, 65536, []string{"x-amz-checksum-crc32c:" + checksumOf(checksumCRC32C, data)}), "InvalidRequest"},
		{"no trailer", encodeChunked(nil, data, 65536, []string{}), "IncompleteBody"},
		{"signed chunks", encodeChunked(&chunkSigner{}, data, 65536, []string{"x-amz-checksum-crc32:" + crc}), "InvalidRequest"},
		{"truncated", encodeChunked(nil, data, 65536, nil)[:100000], "IncompleteBody"},
	} {
		r := httptest.NewRequest("PUT", "http://s3.lan/b/k", nil)
		r.Header.Set("X-Amz-Content-Sha256", streamingUnsignedTrailer)
		r.Header.Set("X-Amz-Decoded-Content-Length", strconv.Itoa(len(data)))
		r.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
		r.Header.Set("X-Amz-Sdk-Checksum-Algorithm", "CRC32")
		signV4(t, r)
		setBody(r, c.body)
		p := verified(t, r)
		got, err := drain(p, r)
		if c.code != "" {
			refusedWith(t, c.name, err, c.code)
			continue
		}
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes, %v", c.name, len(got), err)
		}
		if a, v, ok := p.checksum(); a != checksumCRC32 || v != crc || !ok {
			t.Errorf("%s: %s %s %v", c.name, a, v, ok)
		}
	}
}

func TestZeroLengthBodies(t *testing.T) {
	// Nothing to read still has a verdict: the final chunk's signature, the
	// trailer's checksum.
	r := httptest.NewRequest("PUT", "http://s3.lan/b/k", nil)
	r.Header.Set("X-Amz-Content-Sha256", streamingSignedTrailer)
	r.Header.Set("X-Amz-Decoded-Content-Length", "0")
	r.Header.Set("X-Amz-Trailer", "x-amz-checksum-sha256")
	s := signV4(t, r)
	setBody(r, encodeChunked(s, nil, 65536, []string{"x-amz-checksum-sha256:" + checksumOf(checksumSHA256, nil)}))
	p := verified(t, r)
	if got, err := drain(p, r); err != nil || len(got) != 0 || p.size(r) != 0 {
		t.Fatalf("empty body: %v", err)
	}
	if _, v, _ := p.checksum(); v != "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" {
		t.Errorf("empty sha256: %s", v)
	}
	r.Header.Set("X-Amz-Checksum-Crc32", "AAAAAA==") // crc32("") is 0
	r.Header.Del("X-Amz-Trailer")
	r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	signV4(t, r)
	setBody(r, "")
	if _, err := drain(verified(t, r), r); err != nil {
		t.Errorf("empty plain body: %v", err)
	}
	r.Header.Set("X-Amz-Checksum-Crc32", "AAAAAQ==")
	signV4(t, r)
	_, err := drain(verified(t, r), r)
	refusedWith(t, "wrong checksum of nothing", err, "BadDigest")
}
