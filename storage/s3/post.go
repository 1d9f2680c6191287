package s3

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage"
)

// postObject is S3's POST Object: an HTML form uploads a file with a policy
// signed by an access key (presigned POST). The form's size is known only
// at its end, and an object's size must be known before its shards are
// written, so the file is spooled to a temporary file first.
func (g *Gateway) postObject(q *request) *Error {
	form, serr := parsePostForm(q.r)
	if serr != nil {
		return serr
	}
	ak, serr := form.accessKey()
	if serr != nil {
		return serr
	}
	ctx := identity.WithRemoteAddr(q.r.Context(), q.r.RemoteAddr)
	p, cred, err := g.id.ResolveS3(ctx, ak)
	if err != nil {
		if identity.IsCode(err, identity.CodeUnauthenticated) {
			return errInvalidAccessKey()
		}
		return toS3Error(err, nil)
	}
	up, serr := form.verify(q.bucket, cred.Secret, g.now())
	if serr != nil {
		return serr
	}
	q.ctx, q.p, q.project = ctx, p, cred.ProjectID
	if up.ACL != "" && up.ACL != "private" {
		return errACL()
	}
	opt := storage.PutOptions{ContentType: up.ContentType, Meta: up.Meta}
	// The form's fields are a PUT's headers: what Cairn does not do is
	// refused, object lock applies, a checksum is verified.
	h := http.Header{}
	for k, v := range up.Fields {
		h.Set(k, v)
	}
	if serr := refuseUnsupportedHeaders(h); serr != nil {
		return serr
	}
	if serr := lockOptions(h, &opt); serr != nil {
		return serr
	}
	if opt.Headers, serr = storedHeaders(h); serr != nil {
		return serr
	}
	var sum *summer
	var want string
	for _, a := range checksumAlgos() {
		if v := h.Get(a.header()); v != "" {
			if sum != nil {
				return errInvalidRequest("a form has one checksum")
			}
			sum, want = newSummer(a), v
		}
	}
	if t := up.Fields["tagging"]; t != "" {
		var doc tagging
		if serr := decodeXML([]byte(t), &doc); serr != nil {
			return serr
		}
		opt.Tags = map[string]string{}
		for _, tg := range doc.TagSet {
			opt.Tags[tg.Key] = tg.Value
		}
	}
	spool, err := os.CreateTemp("", "cairn-post-*")
	if err != nil {
		return errInternal(err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	var to io.Writer = spool
	if sum != nil {
		to = io.MultiWriter(spool, sum)
	}
	n, err := io.Copy(to, io.LimitReader(up.limit(form.File), maxObjectSize+1))
	if err != nil {
		return toS3Error(err, nil)
	}
	if n > maxObjectSize {
		return errEntityTooLarge()
	}
	if sum != nil {
		if sum.value() != want {
			return errChecksumMismatch(sum.algo)
		}
		opt.Checksum = sum.checksum
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return errInternal(err)
	}
	obj, err := g.objects.Put(ctx, p, q.bucket, up.Key, n, spool, opt)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	rh := q.w.Header()
	rh.Set("ETag", `"`+obj.ETag+`"`)
	setVersionHeader(rh, obj)
	location := "/" + url.PathEscape(q.bucket) + "/" + url.PathEscape(up.Key)
	rh.Set("Location", location)
	if to := up.redirect(q.bucket, obj.ETag); to != "" {
		rh.Set("Location", to)
		q.w.WriteHeader(http.StatusSeeOther)
		return nil
	}
	if up.SuccessStatus == http.StatusCreated {
		body := postResponse(q.bucket, up.Key, obj.ETag, location)
		rh.Set("Content-Type", "application/xml")
		rh.Set("Content-Length", strconv.Itoa(len(body)))
		q.w.WriteHeader(http.StatusCreated)
		_, _ = q.w.Write(body)
		return nil
	}
	q.w.WriteHeader(up.SuccessStatus)
	return nil
}
