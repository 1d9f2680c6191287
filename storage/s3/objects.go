package s3

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// putOrCopyObject is PutObject, or CopyObject when the request names a source.
func (g *Gateway) putOrCopyObject(q *request) *Error {
	if q.r.Header.Get("X-Amz-Copy-Source") != "" {
		return g.copyObject(q)
	}
	return g.putObject(q)
}

func (g *Gateway) putObject(q *request) *Error {
	opt, serr := q.putOptions()
	if serr != nil {
		return serr
	}
	if m := q.r.Header.Get("Content-Md5"); m != "" {
		b, err := base64.StdEncoding.DecodeString(m)
		if err != nil || len(b) != 16 {
			return errInvalidDigest()
		}
		opt.MD5 = b
	}
	rd, size, serr := q.body()
	if serr != nil {
		return serr
	}
	if size < 0 {
		return errMissingContentLength()
	}
	if size > maxObjectSize {
		return errEntityTooLarge()
	}
	opt.Checksum = q.declaredChecksum
	obj, err := g.objects.Put(q.ctx, q.p, q.bucket, q.key, size, rd, opt)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	h := q.w.Header()
	h.Set("ETag", `"`+obj.ETag+`"`)
	setVersionHeader(h, obj)
	if c := obj.Checksum; c != nil {
		h.Set(checksumAlgo(c.Algorithm).header(), c.Value)
		h.Set("X-Amz-Checksum-Type", c.Type)
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// declaredChecksum is the flexible checksum the client declared and the
// payload verified, once the body is read.
func (q *request) declaredChecksum() *storage.Checksum {
	algo, value, ok := q.pl.checksum()
	if !ok {
		return nil
	}
	return &storage.Checksum{Algorithm: string(algo), Value: value, Type: "FULL_OBJECT"}
}

// putOptions reads what a PUT, copy or multipart upload sets besides the
// bytes: content type, metadata, tags, object lock, conditions. What Cairn
// does not implement is refused here, before any byte is stored.
func (q *request) putOptions() (storage.PutOptions, *Error) {
	h := q.r.Header
	opt := storage.PutOptions{ContentType: h.Get("Content-Type"), Meta: userMeta(h)}
	if serr := refuseUnsupportedHeaders(h); serr != nil {
		return opt, serr
	}
	var serr *Error
	if opt.Headers, serr = storedHeaders(h); serr != nil {
		return opt, serr
	}
	if v := h.Get("X-Amz-Tagging"); v != "" {
		tags, serr := parseTagQuery(v)
		if serr != nil {
			return opt, serr
		}
		opt.Tags = tags
	}
	if serr := lockOptions(h, &opt); serr != nil {
		return opt, serr
	}
	if serr := writeConditions(h, &opt); serr != nil {
		return opt, serr
	}
	return opt, nil
}

// refuseUnsupportedHeaders refuses writes that ask for something Cairn
// does not do, rather than store the object without it.
func refuseUnsupportedHeaders(h http.Header) *Error {
	if acl := h.Get("X-Amz-Acl"); acl != "" && acl != "private" {
		return errACL()
	}
	for _, name := range []string{"X-Amz-Grant-Full-Control", "X-Amz-Grant-Read", "X-Amz-Grant-Read-Acp", "X-Amz-Grant-Write-Acp"} {
		if h.Get(name) != "" {
			return errACL()
		}
	}
	if sc := h.Get("X-Amz-Storage-Class"); sc != "" && sc != "STANDARD" {
		return &Error{http.StatusBadRequest, "InvalidStorageClass", "Cairn has one storage class, STANDARD"}
	}
	for _, name := range []string{"X-Amz-Server-Side-Encryption", "X-Amz-Server-Side-Encryption-Customer-Algorithm", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"} {
		if h.Get(name) != "" {
			return errNotImplemented("server-side encryption (" + name + ")")
		}
	}
	if h.Get("X-Amz-Website-Redirect-Location") != "" {
		return errNotImplemented("website redirects")
	}
	return nil
}

// lockOptions reads the object lock headers of a write.
func lockOptions(h http.Header, opt *storage.PutOptions) *Error {
	mode, until := h.Get("X-Amz-Object-Lock-Mode"), h.Get("X-Amz-Object-Lock-Retain-Until-Date")
	if (mode == "") != (until == "") {
		return errInvalidArgument("x-amz-object-lock-mode and x-amz-object-lock-retain-until-date go together")
	}
	if mode != "" {
		if mode != storage.LockGovernance && mode != storage.LockCompliance {
			return errInvalidArgument("x-amz-object-lock-mode must be GOVERNANCE or COMPLIANCE")
		}
		t, err := time.Parse(time.RFC3339, until)
		if err != nil {
			return errInvalidArgument("x-amz-object-lock-retain-until-date must be an ISO 8601 date")
		}
		opt.Retention = &storage.Retention{Mode: mode, Until: t.UTC()}
	}
	switch h.Get("X-Amz-Object-Lock-Legal-Hold") {
	case "":
	case "ON":
		opt.LegalHold = true
	case "OFF":
	default:
		return errInvalidArgument("x-amz-object-lock-legal-hold must be ON or OFF")
	}
	return nil
}

// writeConditions reads S3's conditional writes: If-None-Match: * (create
// only) and If-Match (replace only that version). They are checked when the
// write commits, so two racing writers cannot both pass.
func writeConditions(h http.Header, opt *storage.PutOptions) *Error {
	if v := h.Get("If-None-Match"); v != "" {
		if v != "*" {
			return errNotImplemented("If-None-Match on a write with anything but *")
		}
		opt.IfNoneMatch = true
	}
	if v := h.Get("If-Match"); v != "" {
		opt.IfMatch = strings.Trim(v, `"`)
	}
	return nil
}

// storedHeaders are the standard headers of a write that S3 keeps with the
// object and sends back with it.
func storedHeaders(h http.Header) (map[string]string, *Error) {
	var m map[string]string
	n := 0
	for _, name := range []string{"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires"} {
		v := h.Get(name)
		if name == "Content-Encoding" {
			v = storedContentEncoding(h) // without the aws-chunked of the upload
		}
		if v == "" {
			continue
		}
		if m == nil {
			m = map[string]string{}
		}
		m[name] = v
		n += len(name) + len(v)
	}
	if n > 8<<10 { // S3's limit on a request's headers
		return nil, errInvalidArgument("the Cache-Control, Content-Disposition, Content-Encoding, Content-Language and Expires headers are more than 8 KiB")
	}
	return m, nil
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

// parseTagQuery reads x-amz-tagging: a URL-encoded query of tags.
func parseTagQuery(v string) (map[string]string, *Error) {
	vals, err := url.ParseQuery(v)
	if err != nil {
		return nil, &Error{http.StatusBadRequest, "InvalidTag", "x-amz-tagging must be URL-encoded key=value pairs"}
	}
	tags := map[string]string{}
	for k, vs := range vals {
		if len(vs) != 1 {
			return nil, &Error{http.StatusBadRequest, "InvalidTag", "cannot provide multiple tags with the same key"}
		}
		tags[k] = vs[0]
	}
	if err := storage.ValidTags(tags); err != nil {
		return nil, &Error{http.StatusBadRequest, "InvalidTag", err.Error()}
	}
	return tags, nil
}

// object looks up the addressed version (the current one, or ?versionId),
// answering a delete marker as S3 does.
func (g *Gateway) object(q *request) (*storage.Object, *Error) {
	vid := q.query.Get("versionId")
	obj, err := g.objects.HeadVersion(q.ctx, q.p, q.bucket, q.key, vid)
	if err == nil {
		return obj, nil
	}
	if consensus.ErrorReason(err) == storage.ReasonDeleteMarker && obj != nil {
		q.w.Header().Set("X-Amz-Delete-Marker", "true")
		q.w.Header().Set("X-Amz-Version-Id", obj.VersionIDOrNull())
		if vid != "" {
			return nil, errMethodNotAllowed()
		}
	}
	if vid != "" && consensus.ErrorCode(err) == consensus.CodeNotFound && consensus.ErrorReason(err) == "" {
		return nil, errNoSuchVersion()
	}
	return nil, toS3Error(err, errNoSuchKey())
}

func (g *Gateway) getObject(q *request) *Error {
	obj, serr := g.object(q)
	if serr != nil {
		return serr
	}
	h := q.w.Header()
	setVersionHeader(h, obj)
	h.Set("ETag", `"`+obj.ETag+`"`)
	h.Set("Last-Modified", obj.Modified.UTC().Format(http.TimeFormat))
	if status := readConditions(q.r.Header, obj); status != 0 {
		if status == http.StatusNotModified {
			q.w.WriteHeader(status)
			return nil
		}
		return errPreconditionFailed()
	}
	start, size := int64(0), obj.Size
	var seg *storage.Segment
	if v := q.query.Get("partNumber"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errInvalidArgument("partNumber must be a positive integer")
		}
		if start, size, seg = partRange(obj, n); start < 0 {
			return &Error{http.StatusRequestedRangeNotSatisfiable, "InvalidPartNumber", "the requested partnumber is not satisfiable"}
		}
		h.Set("X-Amz-Mp-Parts-Count", strconv.Itoa(max(len(obj.Parts), 1)))
	}
	off, n, partial, rerr := parseRange(q.r.Header.Get("Range"), size)
	if rerr != nil {
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return rerr
	}
	off += start
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	setObjectHeaders(h, obj)
	responseOverrides(h, q.query)
	if strings.EqualFold(q.r.Header.Get("X-Amz-Checksum-Mode"), "ENABLED") {
		setChecksumHeaders(h, obj, seg, partial)
	}
	status := http.StatusOK
	switch {
	case partial:
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off-start, off-start+n-1, size))
	case seg != nil && len(obj.Parts) > 0:
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+size-1, obj.Size))
	}
	if q.r.Method == http.MethodHead {
		q.w.WriteHeader(status)
		return nil
	}
	return g.sendBody(q, obj, off, n, status)
}

// sendBody streams bytes [off, off+n) of obj. The status line goes with the
// first byte, so a read that fails before it can still answer with an
// error; one that fails later cuts the connection, so the client never
// takes a short body for the whole.
func (g *Gateway) sendBody(q *request, obj *storage.Object, off, n int64, status int) *Error {
	body := &statusOnWrite{w: q.w, status: status}
	if err := g.objects.Read(q.ctx, obj, off, n, body); err != nil {
		if !body.sent {
			h := q.w.Header()
			for k := range h {
				if k != "X-Amz-Request-Id" && k != "Server" && !strings.HasPrefix(k, "Access-Control-") && k != "Vary" {
					h.Del(k)
				}
			}
			g.log.Warn("object read failed", "bucket", q.bucket, "key", q.key, "err", err)
			return toS3Error(err, nil)
		}
		g.log.Warn("object read failed mid-response", "bucket", q.bucket, "key", q.key, "err", err)
		panic(http.ErrAbortHandler)
	}
	if !body.sent {
		q.w.WriteHeader(status) // an empty object or range
	}
	return nil
}

// setVersionHeader sends x-amz-version-id for versions that have one.
func setVersionHeader(h http.Header, obj *storage.Object) {
	if obj.VersionID != "" && obj.VersionID != storage.NullVersion {
		h.Set("X-Amz-Version-Id", obj.VersionID)
	}
}

// setObjectHeaders sends what S3 returns about an object with GET and HEAD.
func setObjectHeaders(h http.Header, obj *storage.Object) {
	ct := obj.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	for k, v := range obj.Headers {
		h.Set(k, v)
	}
	for k, v := range obj.Meta {
		// As S3 does, in lower case (the names are stored so): clients
		// that keep a header's case, as botocore does, show the name as
		// it comes, and Set would send X-Amz-Meta-Study for study.
		h["x-amz-meta-"+k] = []string{v}
	}
	if len(obj.Tags) > 0 {
		h.Set("X-Amz-Tagging-Count", strconv.Itoa(len(obj.Tags)))
	}
	if r := obj.Retention; r != nil {
		h.Set("X-Amz-Object-Lock-Mode", r.Mode)
		h.Set("X-Amz-Object-Lock-Retain-Until-Date", r.Until.UTC().Format(time.RFC3339))
	}
	if obj.LegalHold {
		h.Set("X-Amz-Object-Lock-Legal-Hold", "ON")
	}
	h.Set("X-Amz-Storage-Class", "STANDARD")
}

// setChecksumHeaders sends the stored checksum when the client asks for it
// (x-amz-checksum-mode: ENABLED): the object's for a whole object, a part's
// for a part of a composite one, and none for a range, as S3 does.
func setChecksumHeaders(h http.Header, obj *storage.Object, seg *storage.Segment, partial bool) {
	c := obj.Checksum
	if c == nil || partial {
		return
	}
	algo := checksumAlgo(c.Algorithm)
	switch {
	case seg != nil && len(obj.Parts) > 0:
		if c.Type == "COMPOSITE" && seg.Checksum != "" {
			h.Set(algo.header(), seg.Checksum)
			h.Set("X-Amz-Checksum-Type", "COMPOSITE")
		}
	default:
		h.Set(algo.header(), c.Value)
		h.Set("X-Amz-Checksum-Type", c.Type)
	}
}

// responseOverrides applies the response-* query parameters of a GET.
func responseOverrides(h http.Header, q url.Values) {
	for param, header := range map[string]string{
		"response-content-type": "Content-Type", "response-content-language": "Content-Language",
		"response-expires": "Expires", "response-cache-control": "Cache-Control",
		"response-content-disposition": "Content-Disposition", "response-content-encoding": "Content-Encoding",
	} {
		if v := q.Get(param); v != "" {
			h.Set(header, v)
		}
	}
}

// partRange returns where part n of an object lies (start -1: no such
// part). A single-part object is its own part 1.
func partRange(obj *storage.Object, n int) (int64, int64, *storage.Segment) {
	if len(obj.Parts) == 0 {
		if n != 1 {
			return -1, 0, nil
		}
		return 0, obj.Size, &storage.Segment{}
	}
	if n > len(obj.Parts) {
		return -1, 0, nil
	}
	start := int64(0)
	for i := 0; i < n-1; i++ {
		start += obj.Parts[i].Size
	}
	return start, obj.Parts[n-1].Size, &obj.Parts[n-1]
}

// readConditions checks a read's preconditions as S3 (and RFC 7232) order
// them: 0 to go on, 304 Not Modified or 412 Precondition Failed.
func readConditions(h http.Header, obj *storage.Object) int {
	etag := `"` + obj.ETag + `"`
	mod := obj.Modified.Truncate(time.Second)
	im, inm := h.Get("If-Match"), h.Get("If-None-Match")
	if im != "" {
		if !etagMatches(im, etag) {
			return http.StatusPreconditionFailed
		}
	} else if t, err := http.ParseTime(h.Get("If-Unmodified-Since")); err == nil && mod.After(t) {
		return http.StatusPreconditionFailed
	}
	if inm != "" {
		if etagMatches(inm, etag) {
			return http.StatusNotModified
		}
	} else if t, err := http.ParseTime(h.Get("If-Modified-Since")); err == nil && !mod.After(t) {
		return http.StatusNotModified
	}
	return 0
}

// etagMatches reports whether a list of ETags (or *) names etag.
func etagMatches(list, etag string) bool {
	for _, v := range strings.Split(list, ",") {
		v = strings.TrimSpace(v)
		if v == "*" || v == etag || `"`+v+`"` == etag {
			return true
		}
	}
	return false
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
	h := q.r.Header
	if h.Get("If-Match") != "" || h.Get("X-Amz-If-Match-Last-Modified-Time") != "" || h.Get("X-Amz-If-Match-Size") != "" {
		return errNotImplemented("conditional deletes")
	}
	opt := storage.DeleteOptions{VersionID: q.query.Get("versionId"), Bypass: strings.EqualFold(h.Get("X-Amz-Bypass-Governance-Retention"), "true")}
	res, err := g.objects.DeleteObject(q.ctx, q.p, q.bucket, q.key, opt)
	switch {
	case err == nil:
		if res.VersionID != "" && (opt.VersionID != "" || res.DeleteMarker) {
			q.w.Header().Set("X-Amz-Version-Id", res.VersionID)
		}
		if res.DeleteMarker {
			q.w.Header().Set("X-Amz-Delete-Marker", "true")
		}
	case consensus.ErrorCode(err) == consensus.CodeNotFound && !strings.HasPrefix(err.Error(), "bucket "):
		// S3 answers 204 for a key that is not there
	default:
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// copySource reads x-amz-copy-source: /bucket/key, URL-encoded, with an
// optional ?versionId.
func copySource(v string) (bucket, key, versionID string, serr *Error) {
	v = strings.TrimPrefix(v, "/")
	path, query, _ := strings.Cut(v, "?")
	src, err := url.PathUnescape(path)
	if err != nil {
		return "", "", "", errInvalidArgument("bad x-amz-copy-source")
	}
	bucket, key, ok := strings.Cut(src, "/")
	if !ok || bucket == "" || key == "" {
		return "", "", "", errInvalidArgument("x-amz-copy-source must be /bucket/key")
	}
	if query != "" {
		qv, err := url.ParseQuery(query)
		if err != nil {
			return "", "", "", errInvalidArgument("bad x-amz-copy-source")
		}
		versionID = qv.Get("versionId")
	}
	return bucket, key, versionID, nil
}

// sourceConditions checks x-amz-copy-source-if-* against the source.
func sourceConditions(h http.Header, src *storage.Object) *Error {
	cond := http.Header{}
	for _, name := range []string{"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if v := h.Get("X-Amz-Copy-Source-" + name); v != "" {
			cond.Set(name, v)
		}
	}
	if readConditions(cond, src) != 0 {
		return errPreconditionFailed() // S3 answers 412 for all four
	}
	return nil
}

func (g *Gateway) copyObject(q *request) *Error {
	h := q.r.Header
	sb, sk, svid, serr := copySource(h.Get("X-Amz-Copy-Source"))
	if serr != nil {
		return serr
	}
	src, err := g.objects.HeadVersion(q.ctx, q.p, sb, sk, svid)
	if err != nil {
		if consensus.ErrorReason(err) == storage.ReasonDeleteMarker {
			return errInvalidArgument("the copy source is a delete marker")
		}
		return toS3Error(err, errNoSuchKey())
	}
	if serr := sourceConditions(h, src); serr != nil {
		return serr
	}
	opt, serr := q.putOptions()
	if serr != nil {
		return serr
	}
	if _, _, serr := q.body(); serr != nil { // a copy has no body, but its signature may cover one
		return serr
	}
	switch h.Get("X-Amz-Metadata-Directive") {
	case "", "COPY":
		if sb == q.bucket && sk == q.key && svid == "" && h.Get("X-Amz-Tagging-Directive") != "REPLACE" && opt.Retention == nil {
			return &Error{http.StatusBadRequest, "InvalidRequest", "this copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes"}
		}
		opt.ContentType, opt.Meta, opt.Headers = src.ContentType, src.Meta, src.Headers
	case "REPLACE":
	default:
		return errInvalidArgument("x-amz-metadata-directive must be COPY or REPLACE")
	}
	switch h.Get("X-Amz-Tagging-Directive") {
	case "", "COPY":
		opt.Tags = src.Tags
	case "REPLACE":
	default:
		return errInvalidArgument("x-amz-tagging-directive must be COPY or REPLACE")
	}
	sum, serr := copyChecksum(h, src)
	if serr != nil {
		return serr
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(g.objects.Read(q.ctx, src, 0, -1, pw))
	}()
	var body io.Reader = pr
	if sum != nil {
		body = io.TeeReader(pr, sum)
		opt.Checksum = sum.checksum
	}
	dst, err := g.objects.Put(q.ctx, q.p, q.bucket, q.key, src.Size, body, opt)
	pr.CloseWithError(errors.New("copy finished"))
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	setVersionHeader(q.w.Header(), dst)
	if src.VersionID != "" && src.VersionID != storage.NullVersion {
		q.w.Header().Set("X-Amz-Copy-Source-Version-Id", src.VersionID)
	}
	res := copyObjectResult{ETag: `"` + dst.ETag + `"`, LastModified: s3Time(dst.Modified)}
	if c := dst.Checksum; c != nil {
		*res.field(checksumAlgo(c.Algorithm)) = c.Value
		res.ChecksumType = c.Type
	}
	return writeXML(q.w, http.StatusOK, res)
}
