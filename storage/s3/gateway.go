package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage"
)

// Gateway serves the S3 API.
type Gateway struct {
	domain  string // for virtual-host-style addressing: BUCKET.domain
	objects *storage.Objects
	id      *identity.Service
	log     *slog.Logger
	now     func() time.Time
}

// New returns the gateway. With a domain, requests to BUCKET.domain address
// that bucket (virtual-host style); path style always works.
func New(objects *storage.Objects, id *identity.Service, log *slog.Logger, domain string) *Gateway {
	return &Gateway{objects: objects, id: id, log: log, now: time.Now, domain: strings.TrimPrefix(domain, ".")}
}

// bucketAndKey reads the bucket and key from the Host (virtual-host style)
// or the path (path style).
func bucketAndKey(host, path, domain string) (bucket, key string, hostStyle bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	path = strings.TrimPrefix(path, "/")
	if domain != "" {
		if b, ok := strings.CutSuffix(strings.ToLower(host), "."+strings.ToLower(domain)); ok && b != "" {
			return b, path, true
		}
	}
	bucket, key, _ = strings.Cut(path, "/")
	return bucket, key, false
}

// request is one authenticated S3 request.
type request struct {
	w       http.ResponseWriter
	r       *http.Request
	ctx     context.Context
	p       *identity.Principal
	project string
	bucket  string
	key     string
	query   url.Values
	id      string
	pl      *payload
}

const maxObjectSize = 5 << 40

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := make([]byte, 8)
	_, _ = rand.Read(rid)
	req := &request{w: w, r: r, id: strings.ToUpper(hex.EncodeToString(rid)), query: r.URL.Query()}
	w.Header().Set("x-amz-request-id", req.id)
	w.Header().Set("Server", "Cairn")
	continueEmpty(w, r)
	if err := g.serve(req); err != nil {
		writeError(w, r, err, req.id)
	}
}

// continueEmpty answers Expect: 100-continue on a request with an empty
// body with 100 Continue, as S3 does. Go's server sends it only when the
// handler reads a body, and an empty one is never read. botocore (awscli,
// boto3), which sends the expectation with every upload, takes a final
// status without a 100 Continue as an early answer and keeps expecting one
// on that connection: the next upload over it reads its 100 Continue as the
// final status and then waits out its read timeout (aws s3 sync of a tree
// with an empty file stalled for 60 s).
func continueEmpty(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 && r.ProtoAtLeast(1, 1) && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		w.WriteHeader(http.StatusContinue)
	}
}

func (g *Gateway) serve(q *request) *Error {
	r := q.r
	bucket, key, hostStyle := bucketAndKey(r.Host, r.URL.Path, g.domain)
	q.bucket, q.key = bucket, key
	g.corsHeaders(q)
	if r.Method == http.MethodOptions {
		return g.preflight(q)
	}
	if r.Method == http.MethodPost && key == "" && bucket != "" && isForm(r) {
		return g.postObject(q)
	}
	auth, serr := parseAuth(r)
	if serr != nil {
		return serr
	}
	if hostStyle {
		withHostBucket(auth, bucket)
	}
	ctx := identity.WithRemoteAddr(r.Context(), r.RemoteAddr)
	p, cred, err := g.id.ResolveS3(ctx, auth.accessKey())
	if err != nil {
		if identity.IsCode(err, identity.CodeUnauthenticated) {
			return errInvalidAccessKey()
		}
		return toS3Error(err, nil)
	}
	pl, serr := auth.verify(r, cred.Secret, g.now())
	if serr != nil {
		return serr
	}
	q.ctx, q.p, q.project, q.pl = ctx, p, cred.ProjectID, pl
	sc := onObject
	switch {
	case bucket == "":
		sc = onService
	case key == "":
		sc = onBucket
	}
	rt, rerr := match(r.Method, sc, q.query)
	if rerr != nil {
		return rerr
	}
	return rt.serve(g, q)
}

// isForm reports whether a POST to a bucket is an HTML form upload.
func isForm(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "multipart/form-data"
}

// body returns the request's payload, checked as its signature requires,
// and its declared size. The verdict comes with the last byte; for an empty
// body it is taken here, since nothing would read it otherwise.
func (q *request) body() (io.Reader, int64, *Error) {
	size := q.pl.size(q.r)
	rd := q.pl.reader(q.r)
	if size == 0 {
		if _, err := rd.Read(make([]byte, 1)); err != io.EOF {
			return nil, 0, toS3Error(err, nil)
		}
		return strings.NewReader(""), 0, nil
	}
	return rd, size, nil
}

// xmlBody reads a small XML request body (a configuration, a delete list)
// into v, checked like any payload and against Content-MD5. As S3 does, it
// needs an integrity check of the body itself: a signed payload hash, a
// Content-MD5 or a flexible checksum. Otherwise (SigV2, UNSIGNED-PAYLOAD,
// presigned) a captured request could be replayed with another body, to
// delete other keys or expire everything.
func (q *request) xmlBody(v any, limit int64) *Error {
	if _, _, declared := q.pl.checksum(); !q.pl.signedBody() && !declared && q.r.Header.Get("Content-Md5") == "" {
		return errInvalidRequest("Missing required header for this request: Content-MD5")
	}
	return q.xmlBodyAnyway(v, limit)
}

// xmlBodyAnyway is xmlBody without the integrity requirement, for the one
// document S3 takes without it (CompleteMultipartUpload).
func (q *request) xmlBodyAnyway(v any, limit int64) *Error {
	rd, _, serr := q.body()
	if serr != nil {
		return serr
	}
	return q.readXML(rd, v, limit)
}

// xmlBodyFrom is xmlBody for a body the caller already has.
func (q *request) xmlBodyFrom(rd io.Reader, v any) *Error { return q.readXML(rd, v, 64<<10) }

func (q *request) readXML(rd io.Reader, v any, limit int64) *Error {
	b, err := io.ReadAll(io.LimitReader(rd, limit+1))
	if err != nil {
		return toS3Error(err, nil)
	}
	if int64(len(b)) > limit {
		return errMalformedXML("the request body is larger than " + humanBytes(limit))
	}
	if m := q.r.Header.Get("Content-Md5"); m != "" {
		want, err := base64.StdEncoding.DecodeString(m)
		if sum := md5.Sum(b); err != nil || !bytes.Equal(want, sum[:]) {
			return errBadDigest()
		}
	}
	return decodeXML(b, v)
}
