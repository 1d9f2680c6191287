package s3

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The aws-chunked body encoding, which SDKs use to stream an upload without
// hashing it first (AWS: "Transferring Payload in Multiple Chunks" and
// "Including Trailing Headers"):
//
//	signed:   hex-size;chunk-signature=SIG\r\n data \r\n ... 0;chunk-signature=SIG\r\n
//	unsigned: hex-size\r\n data \r\n ... 0\r\n
//
// then, with a trailer, lines "x-amz-checksum-crc32:VALUE\r\n" (and, when
// signed, "x-amz-trailer-signature:SIG\r\n"), and a final "\r\n". Each chunk
// signature chains from the previous one, starting at the request's own,
// so chunks cannot be dropped, reordered or altered.

const (
	streamingSigned          = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTrailer   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	emptySHA256Hex           = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

	// maxChunkLine bounds a chunk header or trailer line: the longest valid
	// one, a signed chunk header, is 16+17+64 bytes. Together with the
	// reader's fixed buffer it keeps hostile input from being buffered.
	maxChunkLine = 256
	// maxTrailerLines bounds the trailer: the checksum, its signature, the
	// end, and the blank lines some encoders put between them.
	maxTrailerLines = 6
	chunkBufSize    = 4096
)

// chunkSigner computes the signatures that chain a signed aws-chunked body
// to the request's own.
type chunkSigner struct {
	key   []byte // the request's SigV4 signing key
	date  string // the request's x-amz-date, as signed
	scope string // date/region/service/aws4_request
	prev  string // the previous signature: the request's, then each chunk's
}

// chunk returns the signature of the next chunk, whose data hashes to sum.
func (s *chunkSigner) chunk(sum []byte) string {
	return hex.EncodeToString(hmacSHA256(s.key, "AWS4-HMAC-SHA256-PAYLOAD\n"+s.date+"\n"+s.scope+"\n"+s.prev+"\n"+emptySHA256Hex+"\n"+hex.EncodeToString(sum)))
}

// trailer returns the signature of the trailer lines, each "name:value\n".
func (s *chunkSigner) trailer(lines string) string {
	return hex.EncodeToString(hmacSHA256(s.key, "AWS4-HMAC-SHA256-TRAILER\n"+s.date+"\n"+s.scope+"\n"+s.prev+"\n"+hexSHA256([]byte(lines))))
}

// chunkReader decodes an aws-chunked body into exactly the declared number
// of bytes. The Read that returns the last byte also reads the final chunk
// and the trailer and returns io.EOF only if everything verified, so a
// caller that stops after the declared size still gets the verdict.
type chunkReader struct {
	br       *bufio.Reader
	p        *payload
	signer   *chunkSigner // nil for unsigned chunks
	left     int64        // decoded bytes still to come
	inChunk  int64        // bytes left in the current chunk
	sig      string       // the current chunk's signature, as sent
	h        hash.Hash    // SHA-256 of the current chunk (signed chunks)
	err      error        // sticky: io.EOF or why the body was refused
	trailers bool         // the body ends with trailer lines
}

func newChunkReader(body io.Reader, p *payload) *chunkReader {
	c := &chunkReader{br: bufio.NewReaderSize(body, chunkBufSize), p: p, left: p.decoded, trailers: p.trailers}
	if p.signer != nil {
		s := *p.signer // the chain advances; the payload's copy stays the seed
		c.signer, c.h = &s, sha256.New()
	}
	return c
}

func (c *chunkReader) Read(buf []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.inChunk == 0 {
		if c.err = c.startChunk(); c.err != nil {
			return 0, c.err
		}
	}
	buf = buf[:min(int64(len(buf)), c.inChunk)]
	n, err := c.br.Read(buf)
	if c.h != nil {
		c.h.Write(buf[:n])
	}
	c.inChunk -= int64(n)
	c.left -= int64(n)
	switch {
	case err == io.EOF && c.inChunk > 0:
		c.err = errIncompleteBody("the aws-chunked body ended inside a chunk")
	case err != nil && err != io.EOF:
		c.err = readErr(err)
	case c.inChunk == 0:
		c.err = c.endChunk()
		if c.err == nil && c.left == 0 {
			// The last byte: read the final chunk and the trailer now, so
			// that this Read already carries the verdict.
			c.err = c.startChunk()
		}
	}
	return n, c.err
}

// startChunk reads a chunk header. The final, empty chunk is read with what
// follows it and returns io.EOF when all verified.
func (c *chunkReader) startChunk() error {
	line, err := c.readLine(false)
	if err == io.EOF {
		return errIncompleteBody("the aws-chunked body ended before its final chunk")
	}
	if err != nil {
		return err
	}
	sizeHex, sig, signed := strings.Cut(line, ";")
	if signed != (c.signer != nil) {
		return errInvalidRequest("malformed aws-chunked chunk header")
	}
	if signed {
		var ok bool
		if sig, ok = strings.CutPrefix(sig, "chunk-signature="); !ok || !isLowerHex(sig, 64) {
			return errInvalidRequest("malformed aws-chunked chunk signature")
		}
	}
	if len(sizeHex) == 0 || len(sizeHex) > 16 || !isHex(sizeHex) {
		return errInvalidRequest("malformed aws-chunked chunk size")
	}
	size, err := strconv.ParseUint(sizeHex, 16, 63)
	if err != nil {
		return errInvalidRequest("malformed aws-chunked chunk size")
	}
	switch {
	case size > uint64(c.left):
		return errInvalidRequest("the aws-chunked body is longer than x-amz-decoded-content-length")
	case size == 0 && c.left > 0:
		return errIncompleteBody("the aws-chunked body is shorter than x-amz-decoded-content-length")
	}
	c.inChunk, c.sig = int64(size), sig
	if size > 0 {
		return nil
	}
	if err := c.verifyChunk(); err != nil {
		return err
	}
	if c.trailers {
		return c.readTrailer()
	}
	// An empty line ends the body; the end of the stream is as good, since
	// every byte and signature before it has been checked.
	if line, err := c.readLine(false); err != io.EOF && (err != nil || line != "") {
		return errOr(err, errInvalidRequest("malformed end of aws-chunked body"))
	}
	return io.EOF
}

// endChunk reads the CRLF after a chunk's data and checks its signature.
func (c *chunkReader) endChunk() error {
	line, err := c.readLine(false)
	if err == io.EOF {
		return errIncompleteBody("the aws-chunked body ended after a chunk")
	}
	if err != nil || line != "" {
		return errOr(err, errInvalidRequest("aws-chunked chunk data is longer than its size"))
	}
	return c.verifyChunk()
}

func (c *chunkReader) verifyChunk() error {
	if c.signer == nil {
		return nil
	}
	want := c.signer.chunk(c.h.Sum(nil))
	c.h.Reset()
	if !hmac.Equal([]byte(want), []byte(c.sig)) {
		return errSignatureDoesNotMatch()
	}
	c.signer.prev = want
	return nil
}

// readTrailer reads the trailer lines after the final chunk: only the
// checksum x-amz-trailer declared, then its signature when chunks are
// signed, then an empty line. Encoders differ in the blank lines they put
// between these and in ending lines with LF or CRLF (minio-go writes
// "name:value\n\r\n"); neither changes what is signed, so both are read.
func (c *chunkReader) readTrailer() error {
	want := c.p.sum.algo.header()
	var canonical, value, sig string
	got, signed := false, false
	for i := 0; ; i++ {
		if i == maxTrailerLines {
			return errInvalidRequest("aws-chunked trailer is too long")
		}
		line, err := c.readLine(true)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if line == "" {
			if c.p.sum.trailer && !got || c.signer != nil && !signed {
				continue
			}
			break
		}
		name, v, ok := strings.Cut(line, ":")
		name, v = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(v)
		switch {
		case !ok || signed:
			return errInvalidRequest("malformed aws-chunked trailer")
		case name == "x-amz-trailer-signature" && c.signer != nil && isLowerHex(v, 64):
			sig, signed = v, true
		case c.p.sum.trailer && name == want && !got:
			if _, ok := c.p.sum.algo.decode(v); !ok {
				return errInvalidRequest("value for " + want + " trailer is invalid")
			}
			canonical += name + ":" + v + "\n"
			value, got = v, true
		default:
			return errInvalidRequest("unexpected aws-chunked trailer " + name)
		}
	}
	if c.p.sum.trailer && !got {
		return errIncompleteBody("the aws-chunked body has no " + want + " trailer")
	}
	if c.signer != nil {
		if !signed {
			return errIncompleteBody("the aws-chunked body has no x-amz-trailer-signature")
		}
		if !hmac.Equal([]byte(c.signer.trailer(canonical)), []byte(sig)) {
			return errSignatureDoesNotMatch()
		}
	}
	if got {
		c.p.value = value
	}
	return io.EOF
}

// readLine reads a CRLF-terminated line (or LF-terminated, if lf) of at
// most maxChunkLine bytes, without its end; io.EOF only when the body ends
// cleanly before it.
func (c *chunkReader) readLine(lf bool) (string, error) {
	b, err := c.br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull || len(b) > maxChunkLine:
		return "", errInvalidRequest("aws-chunked line is too long")
	case err == io.EOF && len(b) == 0:
		return "", io.EOF
	case err == io.EOF:
		return "", errIncompleteBody("the aws-chunked body ended inside a line")
	case err != nil:
		return "", readErr(err)
	case len(b) >= 2 && b[len(b)-2] == '\r':
		return string(b[:len(b)-2]), nil
	case lf:
		return string(b[:len(b)-1]), nil
	}
	return "", errInvalidRequest("aws-chunked line does not end with CRLF")
}

// readErr maps a body that ended before its Content-Length to S3's error;
// other read errors (a dropped connection) pass as they are.
func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errIncompleteBody("the request body ended before its declared length")
	}
	return err
}

func errOr(err, otherwise error) error {
	if err != nil && err != io.EOF {
		return err
	}
	return otherwise
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func isLowerHex(s string, n int) bool {
	return len(s) == n && isHex(s) && strings.ToLower(s) == s
}

// storedContentEncoding is the Content-Encoding to keep with an object: the
// client's, without the aws-chunked that only framed the upload.
func storedContentEncoding(h http.Header) string {
	var keep []string
	for _, v := range h.Values("Content-Encoding") {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" && !strings.EqualFold(e, "aws-chunked") {
				keep = append(keep, e)
			}
		}
	}
	return strings.Join(keep, ",")
}
