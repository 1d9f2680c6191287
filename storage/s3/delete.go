package s3

import (
	"encoding/xml"
	"net/http"
	"strings"

	"github.com/cairnhq/cairn/storage"
)

type deleteRequest struct {
	XMLName xml.Name `xml:"Delete"`
	Quiet   bool     `xml:"Quiet"`
	Objects []struct {
		Key       string `xml:"Key"`
		VersionID string `xml:"VersionId"`
	} `xml:"Object"`
}

type deletedXML struct {
	Key                   string `xml:"Key"`
	VersionID             string `xml:"VersionId,omitempty"`
	DeleteMarker          bool   `xml:"DeleteMarker,omitempty"`
	DeleteMarkerVersionID string `xml:"DeleteMarkerVersionId,omitempty"`
}

type deleteErrorXML struct {
	Key       string `xml:"Key"`
	VersionID string `xml:"VersionId,omitempty"`
	Code      string `xml:"Code"`
	Message   string `xml:"Message"`
}

type deleteResult struct {
	XMLName xml.Name         `xml:"DeleteResult"`
	Deleted []deletedXML     `xml:"Deleted"`
	Errors  []deleteErrorXML `xml:"Error"`
}

// deleteObjects is S3's multi-object delete: up to 1000 keys (or versions)
// in one request, each deleted (and audited) on its own, with the same
// rules as DeleteObject; a missing key counts as deleted.
func (g *Gateway) deleteObjects(q *request) *Error {
	var req deleteRequest
	if serr := q.xmlBody(&req, 2<<20); serr != nil {
		return serr
	}
	if len(req.Objects) == 0 || len(req.Objects) > 1000 {
		return errMalformedXML("a delete request names 1 to 1000 objects")
	}
	if _, err := g.objects.Bucket(q.ctx, q.p, q.bucket); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	bypass := strings.EqualFold(q.r.Header.Get("X-Amz-Bypass-Governance-Retention"), "true")
	res := deleteResult{}
	for _, o := range req.Objects {
		r, err := g.objects.DeleteObject(q.ctx, q.p, q.bucket, o.Key, storage.DeleteOptions{VersionID: o.VersionID, Bypass: bypass})
		if err != nil {
			if e := toS3Error(err, errNoSuchKey()); e.Code != "NoSuchKey" {
				res.Errors = append(res.Errors, deleteErrorXML{Key: o.Key, VersionID: o.VersionID, Code: e.Code, Message: e.Message})
				continue
			}
			r = &storage.DeleteResult{}
		}
		if req.Quiet {
			continue
		}
		d := deletedXML{Key: o.Key, VersionID: o.VersionID}
		if r.DeleteMarker {
			d.DeleteMarker = true
			if o.VersionID == "" {
				d.DeleteMarkerVersionID = r.VersionID
			}
		}
		res.Deleted = append(res.Deleted, d)
	}
	return writeXML(q.w, http.StatusOK, res)
}
