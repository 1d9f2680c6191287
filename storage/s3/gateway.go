package s3

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
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
func bucketAndKey(host, path, domain string) (bucket, key string) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	path = strings.TrimPrefix(path, "/")
	if domain != "" {
		if b, ok := strings.CutSuffix(strings.ToLower(host), "."+strings.ToLower(domain)); ok && b != "" {
			return b, path
		}
	}
	bucket, key, _ = strings.Cut(path, "/")
	return bucket, key
}

// request is one authenticated S3 request.
type request struct {
	w         http.ResponseWriter
	r         *http.Request
	ctx       context.Context
	p         *identity.Principal
	project   string
	bucket    string
	key       string
	id        string
	payload   string
	maxObject int64
}

const maxObjectSize = 5 << 40

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := make([]byte, 8)
	_, _ = rand.Read(rid)
	req := &request{w: w, r: r, id: strings.ToUpper(hex.EncodeToString(rid))}
	w.Header().Set("x-amz-request-id", req.id)
	w.Header().Set("Server", "Cairn")
	if err := g.serve(req); err != nil {
		writeError(w, r, err, req.id)
	}
}

func (g *Gateway) serve(q *request) *Error {
	r := q.r
	sig, serr := parseSignature(r)
	if serr != nil {
		return serr
	}
	ctx := identity.WithRemoteAddr(r.Context(), r.RemoteAddr)
	p, cred, err := g.id.ResolveS3(ctx, sig.accessKey)
	if err != nil {
		if identity.IsCode(err, identity.CodeUnauthenticated) {
			return errInvalidAccessKey()
		}
		return toS3Error(err, nil)
	}
	s, serr := sig.verify(r, cred.Secret, g.now())
	if serr != nil {
		return serr
	}
	q.ctx, q.p, q.project, q.payload = ctx, p, cred.ProjectID, s.PayloadHash
	if strings.HasPrefix(q.payload, "STREAMING-") {
		return errNotImplemented("aws-chunked streaming uploads (" + q.payload + ")")
	}
	q.bucket, q.key = bucketAndKey(r.Host, r.URL.Path, g.domain)
	qs := r.URL.Query()
	switch {
	case q.bucket == "":
		if r.Method == http.MethodGet {
			return g.listBuckets(q)
		}
	case q.key == "":
		switch r.Method {
		case http.MethodPut:
			return g.createBucket(q)
		case http.MethodHead:
			return g.headBucket(q)
		case http.MethodDelete:
			return g.deleteBucket(q)
		case http.MethodPost:
			if qs.Has("delete") {
				return g.deleteObjects(q)
			}
		case http.MethodGet:
			switch {
			case qs.Has("location"):
				return g.location(q)
			case qs.Has("uploads"):
				return g.listUploads(q)
			case qs.Has("versioning"), qs.Has("policy"), qs.Has("lifecycle"):
				return errNotImplemented("this bucket subresource")
			}
			return g.listObjects(q)
		}
	default:
		switch {
		case r.Method == http.MethodPost && qs.Has("uploads"):
			return g.createUpload(q)
		case r.Method == http.MethodPut && qs.Has("uploadId") && qs.Has("partNumber"):
			return g.uploadPart(q)
		case r.Method == http.MethodPost && qs.Has("uploadId"):
			return g.completeUpload(q)
		case r.Method == http.MethodDelete && qs.Has("uploadId"):
			return g.abortUpload(q)
		case r.Method == http.MethodGet && qs.Has("uploadId"):
			return g.listParts(q)
		}
		switch r.Method {
		case http.MethodPut:
			if r.Header.Get("X-Amz-Copy-Source") != "" {
				return g.copyObject(q)
			}
			return g.putObject(q)
		case http.MethodGet, http.MethodHead:
			return g.getObject(q)
		case http.MethodDelete:
			return g.deleteObject(q)
		}
	}
	return &Error{http.StatusMethodNotAllowed, "MethodNotAllowed", "the specified method is not allowed against this resource"}
}

// body returns the request body, checked against x-amz-content-sha256 when
// the client signed a payload hash: the last Read fails if it does not
// match, so nothing built from it is committed.
func (q *request) body() io.Reader {
	if q.payload == unsignedPayload || len(q.payload) != 64 {
		return q.r.Body
	}
	return &sha256Reader{r: q.r.Body, h: sha256.New(), want: q.payload, left: q.r.ContentLength}
}

type sha256Reader struct {
	r    io.Reader
	h    hash.Hash
	want string
	left int64
}

func (s *sha256Reader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.left -= int64(n)
	if s.left <= 0 || err == io.EOF {
		if hex.EncodeToString(s.h.Sum(nil)) != s.want {
			return n, errContentSHA256Mismatch()
		}
	}
	return n, err
}

// --- buckets ------------------------------------------------------------------

func (g *Gateway) listBuckets(q *request) *Error {
	bs, err := g.objects.ListBuckets(q.ctx, q.p)
	if err != nil {
		return toS3Error(err, nil)
	}
	res := listAllMyBucketsResult{Owner: owner{ID: q.p.User.ID, DisplayName: q.p.User.Name}}
	for _, b := range bs {
		res.Buckets = append(res.Buckets, bucketXML{Name: b.ID, CreationDate: b.CreatedAt.Format(time.RFC3339)})
	}
	return writeXML(q.w, http.StatusOK, res)
}

func (g *Gateway) createBucket(q *request) *Error {
	if _, err := g.objects.CreateBucket(q.ctx, q.p, q.project, q.bucket); err != nil {
		if ae := toS3Error(err, nil); ae.Code == "InvalidArgument" {
			return errInvalidBucketName(err.Error())
		}
		return toS3Error(err, nil)
	}
	q.w.Header().Set("Location", "/"+q.bucket)
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) headBucket(q *request) *Error {
	if _, err := g.objects.Bucket(q.ctx, q.p, q.bucket); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) deleteBucket(q *request) *Error {
	if err := g.objects.DeleteBucket(q.ctx, q.p, q.bucket); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (g *Gateway) location(q *request) *Error {
	if _, err := g.objects.Bucket(q.ctx, q.p, q.bucket); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	return writeXML(q.w, http.StatusOK, locationConstraint{})
}

// --- objects -------------------------------------------------------------------

func (g *Gateway) putObject(q *request) *Error {
	r := q.r
	if r.ContentLength < 0 {
		return errMissingContentLength()
	}
	if r.ContentLength > maxObjectSize {
		return errEntityTooLarge()
	}
	opt := storage.PutOptions{ContentType: r.Header.Get("Content-Type"), Meta: userMeta(r.Header)}
	if m := r.Header.Get("Content-Md5"); m != "" {
		b, err := base64.StdEncoding.DecodeString(m)
		if err != nil || len(b) != 16 {
			return errInvalidDigest()
		}
		opt.MD5 = b
	}
	obj, err := g.objects.Put(q.ctx, q.p, q.bucket, q.key, r.ContentLength, q.body(), opt)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.Header().Set("ETag", `"`+obj.ETag+`"`)
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func userMeta(h http.Header) map[string]string {
	var m map[string]string
	for k, v := range h {
		if name, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-meta-"); ok && len(v) > 0 {
			if m == nil {
				m = map[string]string{}
			}
			m[name] = v[0]
		}
	}
	return m
}

func (g *Gateway) getObject(q *request) *Error {
	obj, err := g.objects.Head(q.ctx, q.p, q.bucket, q.key)
	if err != nil {
		return toS3Error(err, notFoundFor(err))
	}
	off, n, partial, rerr := parseRange(q.r.Header.Get("Range"), obj.Size)
	if rerr != nil {
		q.w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(obj.Size, 10))
		return rerr
	}
	h := q.w.Header()
	h.Set("ETag", `"`+obj.ETag+`"`)
	h.Set("Last-Modified", obj.Modified.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	ct := obj.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	for k, v := range obj.Meta {
		h.Set("X-Amz-Meta-"+k, v)
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, obj.Size))
	}
	if q.r.Method == http.MethodHead {
		q.w.WriteHeader(status)
		return nil
	}
	body := &statusOnWrite{w: q.w, status: status}
	if err := g.objects.Read(q.ctx, obj, off, n, body); err != nil {
		if !body.sent {
			// Nothing sent (the first stripe could not be read): an error
			// document instead of the object's headers.
			for k := range h {
				if k == "ETag" || k == "Last-Modified" || k == "Accept-Ranges" || k == "Content-Length" ||
					k == "Content-Type" || k == "Content-Range" || strings.HasPrefix(k, "X-Amz-Meta-") {
					h.Del(k)
				}
			}
			g.log.Warn("object read failed", "bucket", q.bucket, "key", q.key, "err", err)
			return toS3Error(err, nil)
		}
		// The status line is gone: cut the connection so the client sees a
		// failed transfer, never a short body it could take as complete.
		g.log.Warn("object read failed mid-response", "bucket", q.bucket, "key", q.key, "err", err)
		panic(http.ErrAbortHandler)
	}
	if !body.sent {
		q.w.WriteHeader(status) // an empty object or range
	}
	return nil
}

// statusOnWrite sends the status line with the first byte of the body, so a
// read that fails before any byte can still answer with an error.
type statusOnWrite struct {
	w      http.ResponseWriter
	status int
	sent   bool
}

func (s *statusOnWrite) Write(p []byte) (int, error) {
	if !s.sent {
		s.sent = true
		s.w.WriteHeader(s.status)
	}
	return s.w.Write(p)
}

func notFoundFor(err error) *Error {
	if strings.Contains(err.Error(), "bucket") {
		return errNoSuchBucket()
	}
	return errNoSuchKey()
}

// parseRange reads a single "bytes=a-b", "bytes=a-" or "bytes=-n" range.
func parseRange(h string, size int64) (off, n int64, partial bool, err *Error) {
	if h == "" {
		return 0, size, false, nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, false, nil // S3 ignores ranges it does not support
	}
	a, b, _ := strings.Cut(spec, "-")
	switch {
	case a == "":
		k, e := strconv.ParseInt(b, 10, 64)
		if e != nil || k <= 0 {
			return 0, 0, false, errInvalidRange()
		}
		k = min(k, size)
		return size - k, k, true, nil
	default:
		start, e := strconv.ParseInt(a, 10, 64)
		if e != nil || start >= size {
			return 0, 0, false, errInvalidRange()
		}
		end := size - 1
		if b != "" {
			if end, e = strconv.ParseInt(b, 10, 64); e != nil || end < start {
				return 0, 0, false, errInvalidRange()
			}
			end = min(end, size-1)
		}
		return start, end - start + 1, true, nil
	}
}

func (g *Gateway) deleteObject(q *request) *Error {
	err := g.objects.Delete(q.ctx, q.p, q.bucket, q.key)
	if err != nil && notFoundFor(err).Code == "NoSuchBucket" {
		return toS3Error(err, errNoSuchBucket())
	}
	if err != nil && toS3Error(err, nil).Code != "NoSuchKey" {
		return toS3Error(err, nil)
	}
	q.w.WriteHeader(http.StatusNoContent) // S3 answers 204 for a missing key too
	return nil
}

func (g *Gateway) copyObject(q *request) *Error {
	src, err := url.PathUnescape(strings.TrimPrefix(q.r.Header.Get("X-Amz-Copy-Source"), "/"))
	if err != nil {
		return errInvalidArgument("bad x-amz-copy-source")
	}
	sb, sk, ok := strings.Cut(src, "/")
	if !ok || sk == "" {
		return errInvalidArgument("x-amz-copy-source must be /bucket/key")
	}
	if i := strings.Index(sk, "?versionId="); i >= 0 {
		sk = sk[:i]
	}
	obj, err := g.objects.Head(q.ctx, q.p, sb, sk)
	if err != nil {
		return toS3Error(err, notFoundFor(err))
	}
	opt := storage.PutOptions{ContentType: obj.ContentType, Meta: obj.Meta}
	if q.r.Header.Get("X-Amz-Metadata-Directive") == "REPLACE" {
		opt = storage.PutOptions{ContentType: q.r.Header.Get("Content-Type"), Meta: userMeta(q.r.Header)}
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(g.objects.Read(q.ctx, obj, 0, -1, pw))
	}()
	dst, err := g.objects.Put(q.ctx, q.p, q.bucket, q.key, obj.Size, pr, opt)
	pr.CloseWithError(errors.New("copy finished"))
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	return writeXML(q.w, http.StatusOK, copyObjectResult{ETag: `"` + dst.ETag + `"`, LastModified: dst.Modified.Format(time.RFC3339)})
}

// --- listing -------------------------------------------------------------------

func (g *Gateway) listObjects(q *request) *Error {
	qs := q.r.URL.Query()
	if lt := qs.Get("list-type"); lt != "" && lt != "2" {
		return errInvalidArgument("list-type must be 2")
	}
	prefix, delim := qs.Get("prefix"), qs.Get("delimiter")
	maxKeys := 1000
	if v := qs.Get("max-keys"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil || k < 0 {
			return errInvalidArgument("max-keys must be a non-negative integer")
		}
		maxKeys = min(k, 1000)
	}
	after := qs.Get("start-after")
	if tok := qs.Get("continuation-token"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			return errInvalidArgument("bad continuation-token")
		}
		after = string(b)
	} else if qs.Get("marker") != "" {
		after = qs.Get("marker")
	}
	encode := func(s string) string { return s }
	if qs.Get("encoding-type") == "url" {
		encode = func(s string) string { return awsEncode(s, false) }
	}
	res := listBucketResult{Name: q.bucket, Prefix: encode(prefix), Delimiter: encode(delim), MaxKeys: maxKeys,
		StartAfter: encode(qs.Get("start-after")), ContinuationToken: qs.Get("continuation-token"), EncodingType: qs.Get("encoding-type")}
	last, lastCP := "", ""
	count := 0
	for count < maxKeys {
		page, more, err := g.objects.List(q.ctx, q.p, q.bucket, prefix, after, 1000)
		if err != nil {
			return toS3Error(err, errNoSuchBucket())
		}
		for _, o := range page {
			after = o.Key
			if delim != "" {
				if i := strings.Index(o.Key[len(prefix):], delim); i >= 0 {
					cp := o.Key[:len(prefix)+i+len(delim)]
					if cp == lastCP {
						continue
					}
					if count == maxKeys {
						res.IsTruncated = true
						break
					}
					lastCP, last = cp, cp+"\xff" // resume after every key under cp
					after = last
					res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: encode(cp)})
					count++
					continue
				}
			}
			if count == maxKeys {
				res.IsTruncated = true
				break
			}
			res.Contents = append(res.Contents, objectXML{Key: encode(o.Key), LastModified: o.Modified.Format(time.RFC3339Nano),
				ETag: `"` + o.ETag + `"`, Size: o.Size, StorageClass: "STANDARD"})
			last = o.Key
			count++
		}
		if res.IsTruncated || !more {
			break
		}
		if count == maxKeys {
			// Is there anything after the last key returned?
			rest, _, err := g.objects.List(q.ctx, q.p, q.bucket, prefix, after, 1)
			if err == nil && len(rest) > 0 {
				res.IsTruncated = true
			}
		}
	}
	if res.IsTruncated && last != "" {
		res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
		res.NextMarker = encode(last)
	}
	res.KeyCount = count
	return writeXML(q.w, http.StatusOK, res)
}
