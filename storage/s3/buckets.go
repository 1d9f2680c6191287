package s3

import (
	"net/http"
	"sort"
	"strings"

	"github.com/cairnhq/cairn/storage"
)

// Cairn is one region to S3 clients.
const region = "us-east-1"

func (g *Gateway) listBuckets(q *request) *Error {
	bs, err := g.objects.ListBuckets(q.ctx, q.p)
	if err != nil {
		return toS3Error(err, nil)
	}
	res := listAllMyBucketsResult{Owner: q.owner()}
	for _, b := range bs {
		res.Buckets = append(res.Buckets, bucketXML{Name: b.ID, CreationDate: s3Time(b.CreatedAt)})
	}
	return writeXML(q.w, http.StatusOK, res)
}

// owner is the requester as S3 names owners: buckets and objects belong to
// the project, and the key's user stands for it.
func (q *request) owner() owner {
	return owner{ID: q.project, DisplayName: q.p.User.Name}
}

func (g *Gateway) createBucket(q *request) *Error {
	rd, size, serr := q.body()
	if serr != nil {
		return serr
	}
	if size != 0 {
		var cfg createBucketConfiguration
		if serr := q.xmlBodyFrom(rd, &cfg); serr != nil {
			return serr
		}
		if c := cfg.LocationConstraint; c != "" && c != region {
			return &Error{http.StatusBadRequest, "InvalidLocationConstraint", "Cairn has one region, " + region}
		}
	}
	if acl := q.r.Header.Get("X-Amz-Acl"); acl != "" && acl != "private" {
		return errACL()
	}
	if q.r.Header.Get("X-Amz-Grant-Full-Control") != "" || q.r.Header.Get("X-Amz-Grant-Read") != "" || q.r.Header.Get("X-Amz-Grant-Write") != "" {
		return errACL()
	}
	opt := storage.BucketOptions{ObjectLock: strings.EqualFold(q.r.Header.Get("X-Amz-Bucket-Object-Lock-Enabled"), "true")}
	if _, err := g.objects.CreateBucketWith(q.ctx, q.p, q.project, q.bucket, opt); err != nil {
		if ae := toS3Error(err, nil); ae.Code == "InvalidArgument" {
			return errInvalidBucketName(err.Error())
		}
		if ae := toS3Error(err, nil); ae.Code == "BucketAlreadyExists" {
			if b := g.objects.BucketOf(q.bucket); b != nil && b.ProjectID == q.project {
				return &Error{http.StatusConflict, "BucketAlreadyOwnedByYou", "you already own this bucket"}
			}
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
	q.w.Header().Set("X-Amz-Bucket-Region", region)
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

// bucket reads the addressed bucket, for the configuration GETs.
func (g *Gateway) bucket(q *request) (*storage.Bucket, *Error) {
	b, err := g.objects.Bucket(q.ctx, q.p, q.bucket)
	if err != nil {
		return nil, toS3Error(err, errNoSuchBucket())
	}
	return b, nil
}

func (g *Gateway) location(q *request) *Error {
	if _, serr := g.bucket(q); serr != nil {
		return serr
	}
	// us-east-1 is the empty LocationConstraint, as S3 answers it.
	return writeXML(q.w, http.StatusOK, locationConstraint{})
}

func (g *Gateway) getVersioning(q *request) *Error {
	b, serr := g.bucket(q)
	if serr != nil {
		return serr
	}
	return writeXML(q.w, http.StatusOK, versioningConfiguration{Status: b.Versioning})
}

func (g *Gateway) putVersioning(q *request) *Error {
	var cfg versioningConfiguration
	if serr := q.xmlBody(&cfg, 64<<10); serr != nil {
		return serr
	}
	if cfg.MfaDelete == "Enabled" {
		return errNotImplemented("MFA delete")
	}
	if cfg.Status != storage.VersioningEnabled && cfg.Status != storage.VersioningSuspended {
		return errMalformedXML("Status must be Enabled or Suspended")
	}
	if _, err := g.objects.SetVersioning(q.ctx, q.p, q.bucket, cfg.Status); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) getBucketTagging(q *request) *Error {
	b, serr := g.bucket(q)
	if serr != nil {
		return serr
	}
	if len(b.Tags) == 0 {
		return &Error{http.StatusNotFound, "NoSuchTagSet", "the TagSet does not exist"}
	}
	return writeXML(q.w, http.StatusOK, taggingOf(b.Tags))
}

func (g *Gateway) putBucketTagging(q *request) *Error {
	tags, serr := q.tagSet()
	if serr != nil {
		return serr
	}
	if _, err := g.objects.SetBucketTags(q.ctx, q.p, q.bucket, tags); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (g *Gateway) deleteBucketTagging(q *request) *Error {
	if _, err := g.objects.SetBucketTags(q.ctx, q.p, q.bucket, nil); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// Access is by project: the owner (the project) has full control and no
// one else has any. ACL reads say so; an ACL write is accepted only when it
// says the same (a canned "private", or a policy granting only the owner).

func (g *Gateway) getBucketACL(q *request) *Error {
	if _, serr := g.bucket(q); serr != nil {
		return serr
	}
	return writeXML(q.w, http.StatusOK, q.ownerACL())
}

func (g *Gateway) putBucketACL(q *request) *Error {
	if _, serr := g.bucket(q); serr != nil {
		return serr
	}
	if serr := q.privateACL(); serr != nil {
		return serr
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (q *request) ownerACL() accessControlPolicy {
	o := q.owner()
	return accessControlPolicy{Owner: o, Grants: []grant{{
		Grantee:    grantee{XMLNSXSI: "http://www.w3.org/2001/XMLSchema-instance", Type: "CanonicalUser", ID: o.ID, DisplayName: o.DisplayName},
		Permission: "FULL_CONTROL",
	}}}
}

func errACL() *Error {
	return &Error{http.StatusNotImplemented, "NotImplemented",
		"access control lists are not implemented: access is by project, and only the private ACL (the owner's full control) is accepted"}
}

// privateACL accepts an ACL write that changes nothing: x-amz-acl: private,
// or a policy document whose only grant is the owner's full control.
func (q *request) privateACL() *Error {
	h := q.r.Header
	for _, name := range []string{"X-Amz-Grant-Full-Control", "X-Amz-Grant-Read", "X-Amz-Grant-Write", "X-Amz-Grant-Read-Acp", "X-Amz-Grant-Write-Acp"} {
		if h.Get(name) != "" {
			return errACL()
		}
	}
	rd, size, serr := q.body()
	if serr != nil {
		return serr
	}
	if acl := h.Get("X-Amz-Acl"); acl != "" {
		if acl != "private" || size > 0 {
			return errACL()
		}
		return nil
	}
	if size == 0 {
		return &Error{http.StatusBadRequest, "MissingSecurityHeader", "an ACL write needs x-amz-acl or an AccessControlPolicy"}
	}
	var req aclRequest
	if serr := q.xmlBodyFrom(rd, &req); serr != nil {
		return serr
	}
	if len(req.Grants) == 0 {
		return errACL() // no grant at all: not the private ACL
	}
	for _, gr := range req.Grants {
		if gr.Permission != "FULL_CONTROL" || gr.Grantee.URI != "" || (gr.Grantee.ID != q.project && gr.Grantee.ID != req.Owner.ID) {
			return errACL()
		}
	}
	return nil
}

func (g *Gateway) getObjectLockConfig(q *request) *Error {
	b, serr := g.bucket(q)
	if serr != nil {
		return serr
	}
	if b.Lock == nil {
		return &Error{http.StatusNotFound, "ObjectLockConfigurationNotFoundError", "object lock configuration does not exist for this bucket"}
	}
	res := objectLockConfiguration{ObjectLockEnabled: "Enabled"}
	if b.Lock.Mode != "" {
		res.DefaultRetention = &defaultRetention{Mode: b.Lock.Mode, Days: b.Lock.Days, Years: b.Lock.Years}
	}
	return writeXML(q.w, http.StatusOK, res)
}

func (g *Gateway) putObjectLockConfig(q *request) *Error {
	var cfg objectLockConfiguration
	if serr := q.xmlBody(&cfg, 64<<10); serr != nil {
		return serr
	}
	if cfg.ObjectLockEnabled != "Enabled" {
		return errMalformedXML("ObjectLockEnabled must be Enabled")
	}
	var lc storage.ObjectLockConfig
	if d := cfg.DefaultRetention; d != nil {
		lc = storage.ObjectLockConfig{Mode: d.Mode, Days: d.Days, Years: d.Years}
	}
	if _, err := g.objects.SetObjectLockConfig(q.ctx, q.p, q.bucket, lc); err != nil {
		if toS3Error(err, nil).Code == "InvalidArgument" {
			return errMalformedXML(err.Error())
		}
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// taggingOf renders tags in key order, so the document is stable.
func taggingOf(tags map[string]string) tagging {
	t := tagging{TagSet: []tagXML{}}
	for _, k := range sortedKeys(tags) {
		t.TagSet = append(t.TagSet, tagXML{Key: k, Value: tags[k]})
	}
	return t
}

// tagSet reads a Tagging document.
func (q *request) tagSet() (map[string]string, *Error) {
	var t tagging
	if serr := q.xmlBody(&t, 64<<10); serr != nil {
		return nil, serr
	}
	tags := map[string]string{}
	for _, tg := range t.TagSet {
		if _, dup := tags[tg.Key]; dup {
			return nil, &Error{http.StatusBadRequest, "InvalidTag", "cannot provide multiple tags with the same key"}
		}
		tags[tg.Key] = tg.Value
	}
	if err := storage.ValidTags(tags); err != nil {
		return nil, &Error{http.StatusBadRequest, "InvalidTag", err.Error()}
	}
	return tags, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
