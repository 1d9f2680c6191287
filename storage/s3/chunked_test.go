package s3

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/minio/minio-go/v7/pkg/signer"
)

// The example of AWS's "Transferring Payload in Multiple Chunks": 65536 and
// 1024 bytes of 'a', signed chunk by chunk from the request's signature, and
// of "Including Trailing Headers", the same upload with a CRC32C trailer.
const (
	exampleSeed        = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
	exampleTrailerSeed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
)

var (
	exampleChunkSigs        = []string{"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"}
	exampleTrailerChunkSigs = []string{"b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2", "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7", "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"}
	exampleData             = bytes.Repeat([]byte("a"), 66560)
)

// exampleChunks frames the example's data with the given chunk signatures;
// the final chunk's line ends the returned body.
func exampleChunks(sigs []string) string {
	return "10000;chunk-signature=" + sigs[0] + "\r\n" + string(exampleData[:65536]) + "\r\n" +
		"400;chunk-signature=" + sigs[1] + "\r\n" + string(exampleData[65536:]) + "\r\n" +
		"0;chunk-signature=" + sigs[2] + "\r\n"
}

// exampleRequest is the AWS example's PUT with the given body; trailer
// selects the trailing-header variant.
func exampleRequest(body string, trailer bool) *http.Request {
	r := httptest.NewRequest("PUT", "https://s3.amazonaws.com/examplebucket/chunkObject.txt", strings.NewReader(body))
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")
	r.Header.Set("Content-Encoding", "aws-chunked")
	r.Header.Set("X-Amz-Decoded-Content-Length", "66560")
	cred := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
	if trailer {
		r.Header.Set("X-Amz-Content-Sha256", streamingSignedTrailer)
		r.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32c")
		r.Header.Set("Authorization", cred+"SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer,Signature="+exampleTrailerSeed)
	} else {
		// Content-Length is signed here: a tampered body keeps the one
		// declared, as a cut connection or a lying client would.
		r.ContentLength = 66824
		r.Header.Set("X-Amz-Content-Sha256", streamingSigned)
		r.Header.Set("Authorization", cred+"SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature="+exampleSeed)
	}
	return r
}

// verified parses and verifies r with the example secret at the example's time.
func verified(t *testing.T, r *http.Request, now ...any) *payload {
	t.Helper()
	a, err := parseAuth(r)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.verify(r, exampleSecret, exampleTime)
	if err != nil {
		if s, ok := a.(*sigV4); ok {
			t.Fatalf("%v (computed %s)", err, s.compute(r, exampleSecret))
		}
		t.Fatal(err)
	}
	return p
}

// drain reads the body the way the object layer does: exactly size bytes,
// never a Read more, so the verdict must come with the last byte.
func drain(p *payload, r *http.Request) ([]byte, error) {
	var out bytes.Buffer
	size := p.size(r)
	src := p.reader(r)
	if size < 0 {
		_, err := io.Copy(&out, src)
		return out.Bytes(), err
	}
	n, err := io.Copy(&out, io.LimitReader(src, size))
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && size == 0 {
		_, err = src.Read(nil) // the one Read a zero-length body still needs
		if err == io.EOF {
			err = nil
		}
	}
	return out.Bytes(), err
}

// refusedWith checks that err is the S3 error code.
func refusedWith(t *testing.T, what string, err error, code string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Code != code {
		t.Errorf("%s: got %v, want %s", what, err, code)
	}
}

func TestChunkedAWSExample(t *testing.T) {
	body := exampleChunks(exampleChunkSigs) + "\r\n"
	if len(body) != 66824 {
		t.Fatalf("the example's body is 66824 bytes, not %d", len(body))
	}
	for name, wrap := range map[string]func(io.Reader) io.Reader{"whole": nil, "byte by byte": iotest.OneByteReader, "halves": iotest.HalfReader} {
		r := exampleRequest(body, false)
		if wrap != nil {
			r.Body = io.NopCloser(wrap(r.Body))
		}
		p := verified(t, r)
		if p.size(r) != 66560 || !p.chunked || p.signer == nil {
			t.Fatalf("%+v", p)
		}
		got, err := drain(p, r)
		if err != nil || !bytes.Equal(got, exampleData) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
		if _, _, ok := p.checksum(); ok {
			t.Error("a checksum out of nowhere")
		}
	}
}

func TestChunkedRefusals(t *testing.T) {
	good := exampleChunks(exampleChunkSigs) + "\r\n"
	wrongSig := strings.Replace(good, exampleChunkSigs[1][:8], "00000000", 1)
	flipped := []byte(good)
	flipped[66000] = 'b' // in the second chunk
	for _, c := range []struct {
		name, body, code string
	}{
		{"flipped data byte", string(flipped), "SignatureDoesNotMatch"},
		{"wrong chunk signature", wrongSig, "SignatureDoesNotMatch"},
		{"wrong final signature", strings.Replace(good, exampleChunkSigs[2], exampleChunkSigs[1], 1), "SignatureDoesNotMatch"},
		{"truncated in data", good[:40000], "IncompleteBody"},
		{"truncated in a header", good[:65536+88+2+20], "IncompleteBody"},
		{"no final chunk", good[:len(good)-84-2], "IncompleteBody"},
		{"data longer than its chunk", strings.Replace(good, "\r\n400;", "x\r\n400;", 1), "InvalidRequest"},
		{"bad size", strings.Replace(good, "10000;", "1000g;", 1), "InvalidRequest"},
		{"signed size", strings.Replace(good, "400;", "+400;", 1), "InvalidRequest"},
		{"no signature", strings.Replace(good, "400;chunk-signature="+exampleChunkSigs[1], "400", 1), "InvalidRequest"},
		{"too-long line", strings.Replace(good, "400;", strings.Repeat("0", 300)+"400;", 1), "InvalidRequest"},
		{"endless line", "10000;chunk-signature=" + strings.Repeat("a", 100000), "InvalidRequest"},
		{"LF only", strings.Replace(good, "\r\n400;", "\n400;", 1), "InvalidRequest"},
		{"a trailer where none was declared", exampleChunks(exampleChunkSigs) + "x-amz-checksum-crc32:AAAAAA==\r\n\r\n", "InvalidRequest"},
	} {
		r := exampleRequest(c.body, false)
		p := verified(t, r)
		_, err := drain(p, r)
		refusedWith(t, c.name, err, c.code)
		if c.name == "too-long line" && err != nil && !strings.Contains(err.Error(), "too long") {
			t.Errorf("too-long line: %v", err)
		}
	}
}

func TestStoredContentEncoding(t *testing.T) {
	for in, want := range map[string]string{"aws-chunked": "", "aws-chunked,gzip": "gzip", "gzip, AWS-Chunked , br": "gzip,br", "": ""} {
		h := http.Header{}
		if in != "" {
			h.Set("Content-Encoding", in)
		}
		if got := storedContentEncoding(h); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// trailerBody is the AWS trailer example's body with the given trailer lines.
func trailerBody(lines ...string) string {
	return exampleChunks(exampleTrailerChunkSigs) + strings.Join(lines, "\r\n") + "\r\n"
}

const exampleTrailerSig = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"

func TestChunkedAWSTrailerExample(t *testing.T) {
	for name, body := range map[string]string{
		"as documented":     trailerBody("x-amz-checksum-crc32c:sOO8/Q==", "x-amz-trailer-signature:"+exampleTrailerSig, ""),
		"blank line before": trailerBody("", "x-amz-checksum-crc32c:sOO8/Q==", "x-amz-trailer-signature:"+exampleTrailerSig, ""),
		"minio-go's LF":     exampleChunks(exampleTrailerChunkSigs) + "x-amz-checksum-crc32c:sOO8/Q==\n\r\nx-amz-trailer-signature:" + exampleTrailerSig + "\r\n\r\n",
		"no final CRLF":     trailerBody("x-amz-checksum-crc32c:sOO8/Q==", "x-amz-trailer-signature:"+exampleTrailerSig),
	} {
		r := exampleRequest(body, true)
		r.Body = io.NopCloser(iotest.OneByteReader(r.Body))
		p := verified(t, r)
		if a, _, _ := p.checksum(); a != checksumCRC32C {
			t.Errorf("%s: declared %q", name, a)
		}
		got, err := drain(p, r)
		if err != nil || !bytes.Equal(got, exampleData) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
		if a, v, ok := p.checksum(); a != checksumCRC32C || v != "sOO8/Q==" || !ok {
			t.Errorf("%s: checksum %s %s %v", name, a, v, ok)
		}
	}

	// A wrong checksum that is properly signed is a BadDigest: sign it as the
	// client would, from the final chunk's signature.
	r := exampleRequest("", true)
	p := verified(t, r)
	s := *p.signer
	s.prev = exampleTrailerChunkSigs[2]
	wrong := checksumOf(checksumCRC32C, []byte("not the data"))
	wrongSigned := trailerBody("x-amz-checksum-crc32c:"+wrong, "x-amz-trailer-signature:"+s.trailer("x-amz-checksum-crc32c:"+wrong+"\n"), "")
	if s.trailer("x-amz-checksum-crc32c:sOO8/Q==\n") != exampleTrailerSig {
		t.Fatal("the trailer signature is not AWS's")
	}

	for _, c := range []struct{ name, body, code string }{
		{"wrong trailer checksum", wrongSigned, "BadDigest"},
		{"altered trailer", trailerBody("x-amz-checksum-crc32c:sOO8/A==", "x-amz-trailer-signature:"+exampleTrailerSig, ""), "SignatureDoesNotMatch"},
		{"unsigned trailer", trailerBody("x-amz-checksum-crc32c:sOO8/Q==", ""), "IncompleteBody"},
		{"no trailer", trailerBody("x-amz-trailer-signature:"+exampleTrailerSig, ""), "IncompleteBody"},
		{"undeclared trailer", trailerBody("x-amz-checksum-crc32:AAAAAA==", "x-amz-checksum-crc32c:sOO8/Q==", "x-amz-trailer-signature:"+exampleTrailerSig, ""), "InvalidRequest"},
		{"trailer twice", trailerBody("x-amz-checksum-crc32c:sOO8/Q==", "x-amz-checksum-crc32c:sOO8/Q==", "x-amz-trailer-signature:"+exampleTrailerSig, ""), "InvalidRequest"},
		{"line after the signature", trailerBody("x-amz-checksum-crc32c:sOO8/Q==", "x-amz-trailer-signature:"+exampleTrailerSig, "x-amz-meta-a:b", ""), "InvalidRequest"},
		{"malformed value", trailerBody("x-amz-checksum-crc32c:sOO8", "x-amz-trailer-signature:"+exampleTrailerSig, ""), "InvalidRequest"},
		{"too-long trailer line", trailerBody("x-amz-checksum-crc32c:"+strings.Repeat("A", 1000), ""), "InvalidRequest"},
		{"endless blank lines", trailerBody("", "", "", "", "", "", "", ""), "InvalidRequest"},
		{"truncated trailer", trailerBody("x-amz-checksum-crc32c:sOO8/Q==", "x-amz-trailer-sig"), "IncompleteBody"},
	} {
		body := strings.TrimSuffix(c.body, "\r\n")
		if c.name != "truncated trailer" {
			body = c.body
		}
		r := exampleRequest(body, true)
		_, err := drain(verified(t, r), r)
		refusedWith(t, c.name, err, c.code)
	}
}

// sha256Hasher is the hasher minio-go's streaming signer takes.
type sha256Hasher struct{ hash.Hash }

func (sha256Hasher) Close() {}

// minio-go's aws-chunked encoders are an independent client implementation
// of all three streaming modes.
func TestChunkedMinioGoSigner(t *testing.T) {
	for _, size := range []int{0, 1, 65536, 200001} {
		data := bytes.Repeat([]byte{'c', 'a', 'i', 'r', 'n'}, size/5+1)[:size]
		crc := checksumOf(checksumCRC32C, data)
		for _, mode := range []string{streamingSigned, streamingSignedTrailer, streamingUnsignedTrailer} {
			req, _ := http.NewRequest("PUT", "http://s3.lan/bucket/some/key", bytes.NewReader(data))
			req.ContentLength = int64(size)
			trailer := http.Header{"X-Amz-Checksum-Crc32c": {crc}}
			now := time.Now().UTC()
			switch mode {
			case streamingSigned:
				req = signer.StreamingSignV4(req, exampleKey, exampleSecret, "", "us-east-1", int64(size), now, sha256Hasher{sha256.New()})
			case streamingSignedTrailer:
				req.Trailer = trailer
				req = signer.StreamingSignV4(req, exampleKey, exampleSecret, "", "us-east-1", int64(size), now, sha256Hasher{sha256.New()})
			case streamingUnsignedTrailer:
				if size == 0 {
					continue // minio-go declares a Content-Length of 0 for the framing of nothing
				}
				req.Header.Set("X-Amz-Content-Sha256", streamingUnsignedTrailer)
				req = signer.SignV4Trailer(*req, exampleKey, exampleSecret, "", "us-east-1", trailer)
			}
			r := serverSide(t, req)
			if got := r.Header.Get("X-Amz-Content-Sha256"); got != mode {
				t.Fatalf("minio-go sent %s for %s", got, mode)
			}
			a, err := parseAuth(r)
			if err != nil {
				t.Fatalf("%s %d: %v", mode, size, err)
			}
			p, err := a.verify(r, exampleSecret, now)
			if err != nil {
				t.Fatalf("%s %d: %v", mode, size, err)
			}
			got, rerr := drain(p, r)
			if rerr != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s %d: %d bytes, %v", mode, size, len(got), rerr)
			}
			if a, v, ok := p.checksum(); mode != streamingSigned && (a != checksumCRC32C || v != crc || !ok) {
				t.Errorf("%s %d: checksum %s %s %v", mode, size, a, v, ok)
			}
		}
	}
}

// FuzzChunkReader feeds hostile bodies to the decoder: it must not panic,
// never give more than the declared length, and succeed only with exactly it.
func FuzzChunkReader(f *testing.F) {
	data := []byte("hello, cairn")
	f.Add(encodeChunked(nil, data, 5, []string{"x-amz-checksum-crc32:" + checksumOf(checksumCRC32, data)}), int64(len(data)), false)
	f.Add(encodeChunked(&chunkSigner{key: []byte("k")}, data, 5, nil), int64(len(data)), true)
	f.Add("0\r\n\r\n", int64(0), false)
	f.Add("5;chunk-signature="+strings.Repeat("0", 64)+"\r\nhello\r\n", int64(5), true)
	f.Fuzz(func(t *testing.T, body string, decoded int64, signed bool) {
		if decoded < 0 {
			decoded = -decoded
		}
		p := &payload{chunked: true, trailers: !signed, decoded: decoded}
		if signed {
			p.signer = &chunkSigner{key: []byte("k")}
		} else {
			p.sum = checksumDecl{algo: checksumCRC32, trailer: true}
		}
		r := httptest.NewRequest("PUT", "http://s3.lan/b/k", strings.NewReader(body))
		got, err := drain(p, r)
		if int64(len(got)) > decoded {
			t.Fatalf("%d bytes out of %d declared", len(got), decoded)
		}
		if err == nil && int64(len(got)) != decoded {
			t.Fatalf("accepted %d bytes of %d declared", len(got), decoded)
		}
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an S3 error: %v", err)
		}
	})
}
