package s3

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/storage"
)

// An object version's attributes that change without a new version: tags,
// ACL (always the owner's), retention and legal hold; and
// GetObjectAttributes.

func (g *Gateway) getObjectTagging(q *request) *Error {
	obj, serr := g.object(q)
	if serr != nil {
		return serr
	}
	setVersionHeader(q.w.Header(), obj)
	return writeXML(q.w, http.StatusOK, taggingOf(obj.Tags))
}

func (g *Gateway) putObjectTagging(q *request) *Error {
	tags, serr := q.tagSet()
	if serr != nil {
		return serr
	}
	return g.setTags(q, tags, http.StatusOK)
}

func (g *Gateway) deleteObjectTagging(q *request) *Error {
	if _, _, serr := q.body(); serr != nil {
		return serr
	}
	return g.setTags(q, nil, http.StatusNoContent)
}

func (g *Gateway) setTags(q *request, tags map[string]string, status int) *Error {
	obj, err := g.objects.SetObjectTags(q.ctx, q.p, q.bucket, q.key, q.query.Get("versionId"), tags)
	if err != nil {
		return toS3Error(err, q.missingVersion())
	}
	setVersionHeader(q.w.Header(), obj)
	q.w.WriteHeader(status)
	return nil
}

// missingVersion is the not-found answer for the addressed version.
func (q *request) missingVersion() *Error {
	if q.query.Get("versionId") != "" {
		return errNoSuchVersion()
	}
	return errNoSuchKey()
}

func (g *Gateway) getObjectACL(q *request) *Error {
	obj, serr := g.object(q)
	if serr != nil {
		return serr
	}
	setVersionHeader(q.w.Header(), obj)
	return writeXML(q.w, http.StatusOK, q.ownerACL())
}

func (g *Gateway) putObjectACL(q *request) *Error {
	if _, serr := g.object(q); serr != nil {
		return serr
	}
	if serr := q.privateACL(); serr != nil {
		return serr
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) getRetention(q *request) *Error {
	obj, serr := g.object(q)
	if serr != nil {
		return serr
	}
	if b := g.objects.BucketOf(q.bucket); b == nil || b.Lock == nil {
		return errInvalidRequest("bucket is missing object lock configuration")
	}
	if obj.Retention == nil {
		return &Error{http.StatusNotFound, "NoSuchObjectLockConfiguration", "the specified object does not have an object lock configuration"}
	}
	return writeXML(q.w, http.StatusOK, retentionXML{Mode: obj.Retention.Mode, RetainUntilDate: obj.Retention.Until.UTC().Format(time.RFC3339)})
}

func (g *Gateway) putRetention(q *request) *Error {
	var doc retentionXML
	if serr := q.xmlBody(&doc, 64<<10); serr != nil {
		return serr
	}
	var r *storage.Retention
	if doc.Mode != "" || doc.RetainUntilDate != "" {
		t, err := time.Parse(time.RFC3339, doc.RetainUntilDate)
		if err != nil || (doc.Mode != storage.LockGovernance && doc.Mode != storage.LockCompliance) {
			return errMalformedXML("a retention has a Mode (GOVERNANCE or COMPLIANCE) and a RetainUntilDate")
		}
		if !t.After(g.now()) {
			return errInvalidArgument("the retain until date must be in the future")
		}
		r = &storage.Retention{Mode: doc.Mode, Until: t.UTC()}
	}
	bypass := strings.EqualFold(q.r.Header.Get("X-Amz-Bypass-Governance-Retention"), "true")
	obj, err := g.objects.SetRetention(q.ctx, q.p, q.bucket, q.key, q.query.Get("versionId"), r, bypass)
	if err != nil {
		return lockError(err, q.missingVersion())
	}
	setVersionHeader(q.w.Header(), obj)
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// lockError answers a bucket without object lock as S3 does.
func lockError(err error, notFound *Error) *Error {
	se := toS3Error(err, notFound)
	if se.Code == "InvalidArgument" && strings.Contains(err.Error(), "no object lock") {
		return errInvalidRequest("bucket is missing object lock configuration")
	}
	return se
}

func (g *Gateway) getLegalHold(q *request) *Error {
	obj, serr := g.object(q)
	if serr != nil {
		return serr
	}
	if b := g.objects.BucketOf(q.bucket); b == nil || b.Lock == nil {
		return errInvalidRequest("bucket is missing object lock configuration")
	}
	status := "OFF"
	if obj.LegalHold {
		status = "ON"
	}
	return writeXML(q.w, http.StatusOK, legalHoldXML{Status: status})
}

func (g *Gateway) putLegalHold(q *request) *Error {
	var doc legalHoldXML
	if serr := q.xmlBody(&doc, 64<<10); serr != nil {
		return serr
	}
	if doc.Status != "ON" && doc.Status != "OFF" {
		return errMalformedXML("a legal hold's Status is ON or OFF")
	}
	obj, err := g.objects.SetLegalHold(q.ctx, q.p, q.bucket, q.key, q.query.Get("versionId"), doc.Status == "ON")
	if err != nil {
		return lockError(err, q.missingVersion())
	}
	setVersionHeader(q.w.Header(), obj)
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// getAttributes is GetObjectAttributes: the attributes the client names in
// x-amz-object-attributes, parts paginated.
func (g *Gateway) getAttributes(q *request) *Error {
	want := map[string]bool{}
	for _, v := range q.r.Header.Values("X-Amz-Object-Attributes") {
		for _, a := range strings.Split(v, ",") {
			want[strings.TrimSpace(a)] = true
		}
	}
	if len(want) == 0 {
		return errInvalidArgument("x-amz-object-attributes names at least one of ETag, Checksum, ObjectParts, StorageClass, ObjectSize")
	}
	maxParts, err := strconv.Atoi(q.r.Header.Get("X-Amz-Max-Parts"))
	if err != nil || maxParts <= 0 || maxParts > 1000 {
		maxParts = 1000
	}
	marker, _ := strconv.Atoi(q.r.Header.Get("X-Amz-Part-Number-Marker"))
	obj, serr := g.object(q)
	if serr != nil {
		return serr
	}
	h := q.w.Header()
	setVersionHeader(h, obj)
	h.Set("Last-Modified", obj.Modified.UTC().Format(http.TimeFormat))
	res := getObjectAttributesResponse{}
	if want["ETag"] {
		res.ETag = obj.ETag
	}
	if want["StorageClass"] {
		res.StorageClass = "STANDARD"
	}
	if want["ObjectSize"] {
		size := obj.Size
		res.ObjectSize = &size
	}
	if want["Checksum"] && obj.Checksum != nil {
		c := &checksumXML{ChecksumType: obj.Checksum.Type}
		*c.field(checksumAlgo(obj.Checksum.Algorithm)) = obj.Checksum.Value
		res.Checksum = c
	}
	if want["ObjectParts"] && len(obj.Parts) > 0 {
		op := &objectParts{TotalPartsCount: len(obj.Parts), PartNumberMarker: marker, MaxParts: maxParts}
		for i, seg := range obj.Parts {
			n := i + 1
			if n <= marker {
				continue
			}
			if len(op.Parts) == maxParts {
				op.IsTruncated = true
				break
			}
			p := objectPartXML{PartNumber: n, Size: seg.Size}
			if obj.Checksum != nil && seg.Checksum != "" {
				*p.field(checksumAlgo(obj.Checksum.Algorithm)) = seg.Checksum
			}
			op.Parts = append(op.Parts, p)
			op.NextPartNumberMarker = n
		}
		res.ObjectParts = op
	}
	return writeXML(q.w, http.StatusOK, res)
}
