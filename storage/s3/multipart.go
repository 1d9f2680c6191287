package s3

import (
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/storage"
)

type initiateResult struct {
	XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
	NS       string   `xml:"xmlns,attr"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	UploadID string   `xml:"UploadId"`
}

type completeRequest struct {
	Parts []struct {
		PartNumber int    `xml:"PartNumber"`
		ETag       string `xml:"ETag"`
	} `xml:"Part"`
}

type completeResult struct {
	XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
	NS       string   `xml:"xmlns,attr"`
	Location string   `xml:"Location"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	ETag     string   `xml:"ETag"`
}

type partXML struct {
	PartNumber   int    `xml:"PartNumber"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
}

type listPartsResult struct {
	XMLName  xml.Name  `xml:"ListPartsResult"`
	NS       string    `xml:"xmlns,attr"`
	Bucket   string    `xml:"Bucket"`
	Key      string    `xml:"Key"`
	UploadID string    `xml:"UploadId"`
	Parts    []partXML `xml:"Part"`
}

type uploadXML struct {
	Key       string `xml:"Key"`
	UploadID  string `xml:"UploadId"`
	Initiated string `xml:"Initiated"`
}

type listUploadsResult struct {
	XMLName xml.Name    `xml:"ListMultipartUploadsResult"`
	NS      string      `xml:"xmlns,attr"`
	Bucket  string      `xml:"Bucket"`
	Prefix  string      `xml:"Prefix"`
	Uploads []uploadXML `xml:"Upload"`
}

func (g *Gateway) createUpload(q *request) *Error {
	u, err := g.objects.CreateUpload(q.ctx, q.p, q.bucket, q.key, storage.PutOptions{ContentType: q.r.Header.Get("Content-Type"), Meta: userMeta(q.r.Header)})
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	return writeXML(q.w, http.StatusOK, initiateResult{NS: s3NS, Bucket: q.bucket, Key: q.key, UploadID: u.ID})
}

func (g *Gateway) uploadPart(q *request) *Error {
	qs := q.r.URL.Query()
	n, err := strconv.Atoi(qs.Get("partNumber"))
	if err != nil {
		return errInvalidArgument("partNumber must be an integer")
	}
	if q.r.ContentLength < 0 {
		return errMissingContentLength()
	}
	var sum []byte
	if m := q.r.Header.Get("Content-Md5"); m != "" {
		if sum, err = base64.StdEncoding.DecodeString(m); err != nil || len(sum) != 16 {
			return errInvalidDigest()
		}
	}
	etag, err := g.objects.UploadPart(q.ctx, q.p, q.bucket, q.key, qs.Get("uploadId"), n, q.r.ContentLength, q.body(), sum)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.Header().Set("ETag", `"`+etag+`"`)
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) completeUpload(q *request) *Error {
	var req completeRequest
	if err := xml.NewDecoder(io.LimitReader(q.body(), 1<<20)).Decode(&req); err != nil {
		if se, ok := err.(*Error); ok {
			return se
		}
		return &Error{http.StatusBadRequest, "MalformedXML", "the XML you provided was not well-formed"}
	}
	list := make([]storage.CompletePart, len(req.Parts))
	for i, p := range req.Parts {
		list[i] = storage.CompletePart{Number: p.PartNumber, ETag: strings.Trim(p.ETag, `"`)}
	}
	obj, err := g.objects.CompleteUpload(q.ctx, q.p, q.bucket, q.key, q.r.URL.Query().Get("uploadId"), list)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	return writeXML(q.w, http.StatusOK, completeResult{NS: s3NS, Location: "/" + q.bucket + "/" + q.key, Bucket: q.bucket, Key: q.key, ETag: `"` + obj.ETag + `"`})
}

func (g *Gateway) abortUpload(q *request) *Error {
	if err := g.objects.AbortUpload(q.ctx, q.p, q.bucket, q.key, q.r.URL.Query().Get("uploadId")); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (g *Gateway) listParts(q *request) *Error {
	uid := q.r.URL.Query().Get("uploadId")
	parts, err := g.objects.ListParts(q.ctx, q.p, q.bucket, q.key, uid)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	res := listPartsResult{NS: s3NS, Bucket: q.bucket, Key: q.key, UploadID: uid}
	for _, p := range parts {
		res.Parts = append(res.Parts, partXML{PartNumber: p.Number, LastModified: p.Modified.Format(time.RFC3339), ETag: `"` + p.Segment.ETag + `"`, Size: p.Segment.Size})
	}
	return writeXML(q.w, http.StatusOK, res)
}

func (g *Gateway) listUploads(q *request) *Error {
	prefix := q.r.URL.Query().Get("prefix")
	ups, err := g.objects.ListUploads(q.ctx, q.p, q.bucket, prefix)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	res := listUploadsResult{NS: s3NS, Bucket: q.bucket, Prefix: prefix}
	for _, u := range ups {
		res.Uploads = append(res.Uploads, uploadXML{Key: u.Key, UploadID: u.ID, Initiated: u.Initiated.Format(time.RFC3339)})
	}
	return writeXML(q.w, http.StatusOK, res)
}
