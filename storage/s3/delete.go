package s3

import (
	"encoding/xml"
	"io"
	"net/http"
)

type deleteRequest struct {
	Quiet   bool `xml:"Quiet"`
	Objects []struct {
		Key string `xml:"Key"`
	} `xml:"Object"`
}

type deletedXML struct {
	Key string `xml:"Key"`
}

type deleteErrorXML struct {
	Key     string `xml:"Key"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type deleteResult struct {
	XMLName xml.Name         `xml:"DeleteResult"`
	NS      string           `xml:"xmlns,attr"`
	Deleted []deletedXML     `xml:"Deleted"`
	Errors  []deleteErrorXML `xml:"Error"`
}

// deleteObjects is S3's multi-object delete: up to 1000 keys in one request,
// each deleted (and audited) on its own; a missing key counts as deleted.
func (g *Gateway) deleteObjects(q *request) *Error {
	var req deleteRequest
	if err := xml.NewDecoder(io.LimitReader(q.body(), 2<<20)).Decode(&req); err != nil {
		if se, ok := err.(*Error); ok {
			return se
		}
		return &Error{http.StatusBadRequest, "MalformedXML", "the XML you provided was not well-formed"}
	}
	if len(req.Objects) == 0 || len(req.Objects) > 1000 {
		return &Error{http.StatusBadRequest, "MalformedXML", "a delete request names 1 to 1000 objects"}
	}
	if _, err := g.objects.Bucket(q.ctx, q.p, q.bucket); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	res := deleteResult{NS: s3NS}
	for _, o := range req.Objects {
		err := g.objects.Delete(q.ctx, q.p, q.bucket, o.Key)
		if err != nil && toS3Error(err, nil).Code != "NoSuchKey" {
			e := toS3Error(err, nil)
			res.Errors = append(res.Errors, deleteErrorXML{Key: o.Key, Code: e.Code, Message: e.Message})
			continue
		}
		if !req.Quiet {
			res.Deleted = append(res.Deleted, deletedXML{Key: o.Key})
		}
	}
	return writeXML(q.w, http.StatusOK, res)
}
