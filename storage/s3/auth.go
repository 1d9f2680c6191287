package s3

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Authentication has two steps because the secret depends on the request:
// parseAuth reads the access key and the signature's form, the gateway looks
// the secret up, and verify checks the signature and says what the body
// must then be checked against (payload), which happens as it is read.

// authRequest is a parsed signature (V4 or V2, header or presigned query), before its secret is known.
type authRequest interface {
	accessKey() string
	verify(r *http.Request, secret string, now time.Time) (*payload, *Error)
}

// parseAuth reads whichever signature r carries; no signature at all is errAccessDenied("anonymous access is not allowed").
func parseAuth(r *http.Request) (authRequest, *Error) {
	q := r.URL.Query()
	h := r.Header.Get("Authorization")
	v4q, v2q := q.Has("X-Amz-Algorithm"), q.Has("AWSAccessKeyId")
	if (h != "" && (v4q || v2q)) || (v4q && v2q) {
		return nil, errMultipleAuth()
	}
	switch {
	case v4q:
		return asAuth(parseV4Query(r))
	case v2q:
		return asAuth(parseV2Query(r))
	case h == "":
		return nil, errAccessDenied("anonymous access is not allowed")
	case strings.HasPrefix(h, sigAlgorithm+" "):
		return asAuth(parseV4Header(r))
	case strings.HasPrefix(h, "AWS "):
		return asAuth(parseV2Header(r))
	}
	return nil, errUnsupportedAuth()
}

// asAuth returns a nil interface with an error, never one holding a nil
// pointer, which would compare non-nil.
func asAuth[T authRequest](a T, err *Error) (authRequest, *Error) {
	if err != nil {
		return nil, err
	}
	return a, nil
}

// withHostBucket tells a signature the bucket the request named in its Host
// (virtual-host style), which the gateway knows and the signature cannot:
// SigV2's canonical resource includes the bucket although the path does
// not. The gateway calls it between parseAuth and verify; it is a no-op for
// SigV4, which signs the Host header itself.
func withHostBucket(a authRequest, bucket string) {
	if v2, ok := a.(*sigV2); ok {
		v2.hostBucket = bucket
	}
}

// payload is what a verified request's body must be checked against.
type payload struct {
	contentSHA256 string       // the x-amz-content-sha256 the signature covers ("UNSIGNED-PAYLOAD" for SigV2)
	sha256        []byte       // the body's SHA-256 when the client signed one
	chunked       bool         // aws-chunked framing
	trailers      bool         // aws-chunked with trailer lines
	signer        *chunkSigner // verifies chunk signatures; nil when chunks are unsigned
	decoded       int64        // x-amz-decoded-content-length
	sum           checksumDecl // the flexible checksum declared
	value         string       // its value: from the header, the trailer, or computed over the body
}

// newPayload reads how the body is to be checked. contentSHA256 is the
// payload hash the signature covered; signer is non-nil only for SigV4 in
// the Authorization header, the one form that may stream aws-chunked.
func newPayload(r *http.Request, contentSHA256 string, signer *chunkSigner) (*payload, *Error) {
	p := &payload{contentSHA256: contentSHA256}
	switch contentSHA256 {
	case unsignedPayload:
	case streamingSigned, streamingSignedTrailer:
		p.chunked, p.signer = true, signer
	case streamingUnsignedTrailer:
		p.chunked = true
	default:
		if strings.HasPrefix(contentSHA256, "STREAMING-AWS4-ECDSA-") {
			return nil, errNotImplemented("SigV4A streaming (" + contentSHA256 + ")")
		}
		b, err := hex.DecodeString(contentSHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, errInvalidContentSHA256()
		}
		p.sha256 = b
	}
	if p.chunked {
		if signer == nil {
			return nil, errInvalidRequest(contentSHA256 + " needs SigV4 in the Authorization header")
		}
		p.trailers = strings.HasSuffix(contentSHA256, "-TRAILER")
		v := r.Header.Get("X-Amz-Decoded-Content-Length")
		if v == "" {
			return nil, errMissingDecodedLength()
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || strings.TrimLeft(v, "0123456789") != "" {
			return nil, errInvalidArgument("x-amz-decoded-content-length must be a non-negative integer")
		}
		p.decoded = n
	}
	var err *Error
	if p.sum, err = parseChecksumDecl(r.Header, p.trailers); err != nil {
		return nil, err
	}
	p.value = p.sum.value
	return p, nil
}

// size is the length of the payload as the client declared it: Content-Length, or
// x-amz-decoded-content-length for aws-chunked bodies; -1 when unknown.
func (p *payload) size(r *http.Request) int64 {
	if p.chunked {
		return p.decoded
	}
	return r.ContentLength
}

// reader returns the request body, decoded and checked: aws-chunked framing removed
// with every chunk signature verified (signed variants), a signed x-amz-content-sha256
// compared, the declared flexible checksum (header or trailer) compared, and exactly
// size bytes required. The Read that reaches the end returns an *Error
// (XAmzContentSHA256Mismatch, SignatureDoesNotMatch, BadDigest, IncompleteBody,
// InvalidRequest…) instead of io.EOF when anything does not match, so nothing built
// from the body is committed. The Read that returns the size-th byte already
// carries that verdict; for a size of 0, the caller must still Read once.
// Call it once per request.
func (p *payload) reader(r *http.Request) io.Reader {
	body := io.Reader(r.Body)
	if r.Body == nil {
		body = http.NoBody
	}
	b := &bodyReader{p: p, src: body, left: -1}
	if p.chunked {
		b.src = newChunkReader(body, p)
	} else if r.ContentLength >= 0 {
		b.left = r.ContentLength
	}
	if p.sha256 != nil {
		b.sha = sha256.New()
	}
	if p.sum.algo != "" {
		b.sum = p.sum.algo.hash()
	}
	return b
}

// checksum returns the flexible checksum the client declared (algorithm and base64
// value) and whether one was declared; for trailers valid once reader returned io.EOF.
// When the client names an algorithm (x-amz-sdk-checksum-algorithm or
// x-amz-checksum-algorithm) but sends no value, the value is the one computed over the body.
// signedBody reports whether the signature covers the body itself (a
// signed x-amz-content-sha256, or signed aws-chunked chunks).
func (p *payload) signedBody() bool { return p.sha256 != nil || p.signer != nil }

func (p *payload) checksum() (algo checksumAlgo, value string, ok bool) {
	return p.sum.algo, p.value, p.sum.algo != ""
}

// bodyReader hashes the (decoded) body and gives the verdict with its end.
type bodyReader struct {
	p    *payload
	src  io.Reader // the body, or its aws-chunked decoder (which counts for itself)
	left int64     // bytes of a plain body still to come; -1 when unknown or chunked
	sha  hash.Hash
	sum  hash.Hash
	err  error // sticky: io.EOF or the refusal
}

func (b *bodyReader) Read(buf []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		b.err = b.finish()
		return 0, b.err
	}
	if b.left > 0 && int64(len(buf)) > b.left {
		buf = buf[:b.left]
	}
	n, err := b.src.Read(buf)
	if b.sha != nil {
		b.sha.Write(buf[:n])
	}
	if b.sum != nil {
		b.sum.Write(buf[:n])
	}
	if b.left > 0 {
		b.left -= int64(n)
	}
	switch {
	case err == io.EOF && b.left > 0:
		err = errIncompleteBody("you did not provide the number of bytes specified by the Content-Length HTTP header")
	case err == io.EOF || err == nil && b.left == 0:
		// The declared length is in: a plain body is not read further, as
		// the HTTP server would not give more anyway.
		err = b.finish()
	case err != nil:
		err = readErr(err)
	default:
		return n, nil
	}
	b.err = err
	return n, err
}

// finish compares what the body hashed to with what the client declared.
func (b *bodyReader) finish() error {
	if b.sha != nil && !bytes.Equal(b.sha.Sum(nil), b.p.sha256) {
		return errContentSHA256Mismatch()
	}
	if b.sum != nil {
		got := base64.StdEncoding.EncodeToString(b.sum.Sum(nil))
		if b.p.value == "" {
			b.p.value = got // only an algorithm was named: this is the checksum to store
		} else if got != b.p.value {
			return errChecksumMismatch(b.p.sum.algo)
		}
	}
	return io.EOF
}
