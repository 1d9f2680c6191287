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
	n, err := io.Copy(spool, io.LimitReader(up.limit(form.File), maxObjectSize+1))
	if err != nil {
		return toS3Error(err, nil)
	}
	if n > maxObjectSize {
		return errEntityTooLarge()
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return errInternal(err)
	}
	obj, err := g.objects.Put(ctx, p, q.bucket, up.Key, n, spool, opt)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	h := q.w.Header()
	h.Set("ETag", `"`+obj.ETag+`"`)
	setVersionHeader(h, obj)
	location := "/" + url.PathEscape(q.bucket) + "/" + url.PathEscape(up.Key)
	h.Set("Location", location)
	if to := up.redirect(q.bucket, obj.ETag); to != "" {
		h.Set("Location", to)
		q.w.WriteHeader(http.StatusSeeOther)
		return nil
	}
	if up.SuccessStatus == http.StatusCreated {
		body := postResponse(q.bucket, up.Key, obj.ETag, location)
		h.Set("Content-Type", "application/xml")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		q.w.WriteHeader(http.StatusCreated)
		_, _ = q.w.Write(body)
		return nil
	}
	q.w.WriteHeader(up.SuccessStatus)
	return nil
}
