package s3

import (
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/storage"
)

type initiateResult struct {
	XMLName           xml.Name `xml:"InitiateMultipartUploadResult"`
	Bucket            string   `xml:"Bucket"`
	Key               string   `xml:"Key"`
	UploadID          string   `xml:"UploadId"`
	ChecksumAlgorithm string   `xml:"ChecksumAlgorithm,omitempty"`
	ChecksumType      string   `xml:"ChecksumType,omitempty"`
}

type completeRequest struct {
	XMLName xml.Name `xml:"CompleteMultipartUpload"`
	Parts   []struct {
		PartNumber int    `xml:"PartNumber"`
		ETag       string `xml:"ETag"`
		checksumXML
	} `xml:"Part"`
}

type completeResult struct {
	XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
	Location string   `xml:"Location"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	ETag     string   `xml:"ETag"`
	checksumXML
}

type partXML struct {
	PartNumber   int    `xml:"PartNumber"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
	checksumXML
}

type listPartsResult struct {
	XMLName              xml.Name  `xml:"ListPartsResult"`
	Bucket               string    `xml:"Bucket"`
	Key                  string    `xml:"Key"`
	UploadID             string    `xml:"UploadId"`
	Initiator            owner     `xml:"Initiator"`
	Owner                owner     `xml:"Owner"`
	StorageClass         string    `xml:"StorageClass"`
	PartNumberMarker     int       `xml:"PartNumberMarker"`
	NextPartNumberMarker int       `xml:"NextPartNumberMarker"`
	MaxParts             int       `xml:"MaxParts"`
	IsTruncated          bool      `xml:"IsTruncated"`
	ChecksumAlgorithm    string    `xml:"ChecksumAlgorithm,omitempty"`
	ChecksumType         string    `xml:"ChecksumType,omitempty"`
	Parts                []partXML `xml:"Part"`
}

type uploadXML struct {
	Key          string `xml:"Key"`
	UploadID     string `xml:"UploadId"`
	Initiator    owner  `xml:"Initiator"`
	Owner        owner  `xml:"Owner"`
	StorageClass string `xml:"StorageClass"`
	Initiated    string `xml:"Initiated"`
}

type listUploadsResult struct {
	XMLName            xml.Name       `xml:"ListMultipartUploadsResult"`
	Bucket             string         `xml:"Bucket"`
	KeyMarker          string         `xml:"KeyMarker"`
	UploadIDMarker     string         `xml:"UploadIdMarker"`
	NextKeyMarker      string         `xml:"NextKeyMarker,omitempty"`
	NextUploadIDMarker string         `xml:"NextUploadIdMarker,omitempty"`
	Prefix             string         `xml:"Prefix"`
	Delimiter          string         `xml:"Delimiter,omitempty"`
	MaxUploads         int            `xml:"MaxUploads"`
	EncodingType       string         `xml:"EncodingType,omitempty"`
	IsTruncated        bool           `xml:"IsTruncated"`
	Uploads            []uploadXML    `xml:"Upload"`
	CommonPrefixes     []commonPrefix `xml:"CommonPrefixes"`
}

func (g *Gateway) createUpload(q *request) *Error {
	opt, serr := q.putOptions()
	if serr != nil {
		return serr
	}
	sum, serr := uploadChecksum(q.r.Header)
	if serr != nil {
		return serr
	}
	if sum != nil {
		opt.Checksum = func() *storage.Checksum { return sum }
	}
	if _, _, serr := q.body(); serr != nil {
		return serr
	}
	u, err := g.objects.CreateUpload(q.ctx, q.p, q.bucket, q.key, opt)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	res := initiateResult{Bucket: q.bucket, Key: q.key, UploadID: u.ID}
	if sum != nil {
		res.ChecksumAlgorithm, res.ChecksumType = sum.Algorithm, sum.Type
		q.w.Header().Set("X-Amz-Checksum-Algorithm", sum.Algorithm)
		q.w.Header().Set("X-Amz-Checksum-Type", sum.Type)
	}
	return writeXML(q.w, http.StatusOK, res)
}

// uploadChecksum reads the algorithm and type a multipart upload's object
// checksum is to have: COMPOSITE (a checksum of the parts' checksums) or
// FULL_OBJECT (of all the bytes; CRCs only, combined from the parts').
func uploadChecksum(h http.Header) (*storage.Checksum, *Error) {
	name, typ := h.Get("X-Amz-Checksum-Algorithm"), strings.ToUpper(h.Get("X-Amz-Checksum-Type"))
	if name == "" {
		if typ != "" {
			return nil, errInvalidRequest("x-amz-checksum-type needs x-amz-checksum-algorithm")
		}
		return nil, nil
	}
	algo, ok := parseChecksumAlgo(name)
	if !ok {
		return nil, errInvalidRequest("unknown checksum algorithm " + name)
	}
	if typ == "" {
		typ = "COMPOSITE"
		if algo == "CRC64NVME" {
			typ = "FULL_OBJECT"
		}
	}
	switch {
	case typ != "COMPOSITE" && typ != "FULL_OBJECT":
		return nil, errInvalidRequest("x-amz-checksum-type must be COMPOSITE or FULL_OBJECT")
	case typ == "FULL_OBJECT" && !algo.isCRC():
		return nil, errInvalidRequest("the FULL_OBJECT checksum type needs a CRC algorithm")
	case typ == "COMPOSITE" && algo == "CRC64NVME":
		return nil, errInvalidRequest("CRC64NVME checksums are FULL_OBJECT only")
	}
	return &storage.Checksum{Algorithm: string(algo), Type: typ}, nil
}

func (g *Gateway) uploadPart(q *request) *Error {
	if q.r.Header.Get("X-Amz-Copy-Source") != "" {
		return g.uploadPartCopy(q)
	}
	n, serr := partNumber(q)
	if serr != nil {
		return serr
	}
	opt := storage.PartOptions{}
	if m := q.r.Header.Get("Content-Md5"); m != "" {
		b, err := base64.StdEncoding.DecodeString(m)
		if err != nil || len(b) != 16 {
			return errInvalidDigest()
		}
		opt.MD5 = b
	}
	u, err := g.objects.Upload(q.ctx, q.p, q.bucket, q.key, q.query.Get("uploadId"))
	if err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	algo, _, declared := q.pl.checksum()
	if u.Checksum != nil && (!declared || string(algo) != u.Checksum.Algorithm) {
		// Without each part's checksum the object's cannot be computed.
		return errInvalidRequest("this upload was created with a " + u.Checksum.Algorithm + " checksum: each part needs one (x-amz-checksum-" + strings.ToLower(u.Checksum.Algorithm) + ")")
	}
	rd, size, serr := q.body()
	if serr != nil {
		return serr
	}
	if size < 0 {
		return errMissingContentLength()
	}
	if size > maxPartSize {
		return errEntityTooLarge()
	}
	if u.Checksum != nil {
		opt.Checksum = func() string { _, v, _ := q.pl.checksum(); return v }
	}
	etag, err := g.objects.UploadPart(q.ctx, q.p, q.bucket, q.key, u.ID, n, size, rd, opt)
	if err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	q.w.Header().Set("ETag", `"`+etag+`"`)
	if _, v, ok := q.pl.checksum(); ok {
		q.w.Header().Set(algo.header(), v)
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// maxPartSize is S3's largest part.
const maxPartSize = 5 << 30

func partNumber(q *request) (int, *Error) {
	n, err := strconv.Atoi(q.query.Get("partNumber"))
	if err != nil || n < 1 || n > storage.MaxParts {
		return 0, errInvalidArgument("partNumber must be an integer from 1 to 10000")
	}
	return n, nil
}

// uploadPartCopy is UploadPartCopy: a part made of (a range of) another
// object, so clients compose objects on the server.
func (g *Gateway) uploadPartCopy(q *request) *Error {
	h := q.r.Header
	n, serr := partNumber(q)
	if serr != nil {
		return serr
	}
	sb, sk, svid, serr := copySource(h.Get("X-Amz-Copy-Source"))
	if serr != nil {
		return serr
	}
	src, err := g.objects.HeadVersion(q.ctx, q.p, sb, sk, svid)
	if err != nil {
		return toS3Error(err, errNoSuchKey())
	}
	if serr := sourceConditions(h, src); serr != nil {
		return serr
	}
	off, size := int64(0), src.Size
	if rg := h.Get("X-Amz-Copy-Source-Range"); rg != "" {
		o, k, partial, rerr := parseRange(rg, src.Size)
		if rerr != nil || !partial || strings.HasPrefix(strings.TrimPrefix(rg, "bytes="), "-") {
			return errInvalidArgument("x-amz-copy-source-range must be bytes=first-last within the source object")
		}
		off, size = o, k
	}
	if size > maxPartSize {
		return errEntityTooLarge()
	}
	u, err := g.objects.Upload(q.ctx, q.p, q.bucket, q.key, q.query.Get("uploadId"))
	if err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	if _, _, serr := q.body(); serr != nil {
		return serr
	}
	opt := storage.PartOptions{}
	var body io.Reader
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(g.objects.Read(q.ctx, src, off, size, pw)) }()
	defer pr.Close()
	body = pr
	var sum *summer
	if u.Checksum != nil {
		sum = newSummer(checksumAlgo(u.Checksum.Algorithm))
		body = io.TeeReader(pr, sum)
		opt.Checksum = func() string { return sum.value() }
	}
	etag, err := g.objects.UploadPart(q.ctx, q.p, q.bucket, q.key, u.ID, n, size, body, opt)
	if err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	if src.VersionID != "" && src.VersionID != storage.NullVersion {
		q.w.Header().Set("X-Amz-Copy-Source-Version-Id", src.VersionID)
	}
	res := copyPartResult{ETag: `"` + etag + `"`, LastModified: s3Time(g.now())}
	if sum != nil {
		*res.field(sum.algo) = sum.value()
	}
	return writeXML(q.w, http.StatusOK, res)
}

func (g *Gateway) completeUpload(q *request) *Error {
	var req completeRequest
	if serr := q.xmlBodyAnyway(&req, 4<<20); serr != nil {
		return serr
	}
	if len(req.Parts) == 0 {
		return errMalformedXML("a completion lists at least one part")
	}
	list := make([]storage.CompletePart, len(req.Parts))
	for i, p := range req.Parts {
		_, v, k := p.given()
		if k > 1 {
			return errInvalidRequest("a part has one checksum")
		}
		list[i] = storage.CompletePart{Number: p.PartNumber, ETag: strings.Trim(p.ETag, `"`), Checksum: v}
		// S3 judges the order of the whole list before any part's size.
		if i > 0 && list[i].Number <= list[i-1].Number {
			return &Error{http.StatusBadRequest, "InvalidPartOrder", "the list of parts was not in ascending order; parts must be ordered by part number"}
		}
	}
	opt := storage.CompleteOptions{Checksum: func(u *storage.Upload, parts []storage.Part) (*storage.Checksum, error) {
		c, err := objectChecksum(u, parts)
		if err != nil {
			return nil, err
		}
		// The client may send the object's checksum too: it must agree.
		if want := q.r.Header.Get(checksumAlgo(c.Algorithm).header()); want != "" && want != c.Value {
			return nil, errChecksumMismatch(checksumAlgo(c.Algorithm))
		}
		return c, nil
	}}
	var po storage.PutOptions
	if serr := writeConditions(q.r.Header, &po); serr != nil {
		return serr
	}
	opt.IfMatch, opt.IfNoneMatch = po.IfMatch, po.IfNoneMatch
	obj, err := g.objects.CompleteUpload(q.ctx, q.p, q.bucket, q.key, q.query.Get("uploadId"), list, opt)
	if err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	setVersionHeader(q.w.Header(), obj)
	res := completeResult{Location: "/" + q.bucket + "/" + q.key, Bucket: q.bucket, Key: q.key, ETag: `"` + obj.ETag + `"`}
	if c := obj.Checksum; c != nil {
		*res.field(checksumAlgo(c.Algorithm)) = c.Value
		res.ChecksumType = c.Type
	}
	return writeXML(q.w, http.StatusOK, res)
}

// objectChecksum is a multipart object's checksum from its parts':
// COMPOSITE, a checksum of their checksums; FULL_OBJECT, their CRCs
// combined into the CRC of all the bytes.
func objectChecksum(u *storage.Upload, parts []storage.Part) (*storage.Checksum, error) {
	algo := checksumAlgo(u.Checksum.Algorithm)
	raws := make([][]byte, len(parts))
	sizes := make([]int64, len(parts))
	for i, p := range parts {
		raw, ok := algo.decode(p.Segment.Checksum)
		if !ok {
			return nil, errInvalidRequest("part " + strconv.Itoa(p.Number) + " has no " + u.Checksum.Algorithm + " checksum")
		}
		raws[i], sizes[i] = raw, p.Segment.Size
	}
	c := &storage.Checksum{Algorithm: u.Checksum.Algorithm, Type: u.Checksum.Type}
	if c.Type == "FULL_OBJECT" {
		sum, err := combineCRC(algo, raws, sizes)
		if err != nil {
			return nil, err
		}
		c.Value = base64.StdEncoding.EncodeToString(sum)
	} else {
		c.Value = compositeChecksum(algo, raws)
	}
	return c, nil
}

func (g *Gateway) abortUpload(q *request) *Error {
	if err := g.objects.AbortUpload(q.ctx, q.p, q.bucket, q.key, q.query.Get("uploadId")); err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (g *Gateway) listParts(q *request) *Error {
	uid := q.query.Get("uploadId")
	maxParts, serr := intParam(q.query, "max-parts", 1000)
	if serr != nil {
		return serr
	}
	marker, serr := intParam(q.query, "part-number-marker", 0)
	if serr != nil {
		return serr
	}
	u, err := g.objects.Upload(q.ctx, q.p, q.bucket, q.key, uid)
	if err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	parts, err := g.objects.ListParts(q.ctx, q.p, q.bucket, q.key, uid)
	if err != nil {
		return toS3Error(err, errNoSuchUpload())
	}
	o := q.owner()
	res := listPartsResult{Bucket: q.bucket, Key: q.key, UploadID: uid, Initiator: o, Owner: o, StorageClass: "STANDARD",
		PartNumberMarker: marker, MaxParts: maxParts}
	if c := u.Checksum; c != nil {
		res.ChecksumAlgorithm, res.ChecksumType = c.Algorithm, c.Type
	}
	for _, p := range parts {
		if p.Number <= marker {
			continue
		}
		if len(res.Parts) == maxParts {
			res.IsTruncated = true
			break
		}
		px := partXML{PartNumber: p.Number, LastModified: s3Time(p.Modified), ETag: `"` + p.Segment.ETag + `"`, Size: p.Segment.Size}
		if u.Checksum != nil && p.Segment.Checksum != "" {
			*px.field(checksumAlgo(u.Checksum.Algorithm)) = p.Segment.Checksum
		}
		res.Parts = append(res.Parts, px)
		res.NextPartNumberMarker = p.Number
	}
	return writeXML(q.w, http.StatusOK, res)
}

func (g *Gateway) listUploads(q *request) *Error {
	qs := q.query
	prefix, delim := qs.Get("prefix"), qs.Get("delimiter")
	keyMarker, idMarker := qs.Get("key-marker"), qs.Get("upload-id-marker")
	maxUploads, serr := intParam(qs, "max-uploads", 1000)
	if serr != nil {
		return serr
	}
	enc, serr := encoder(qs)
	if serr != nil {
		return serr
	}
	ups, err := g.objects.ListUploads(q.ctx, q.p, q.bucket, prefix)
	if err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	o := q.owner()
	res := listUploadsResult{Bucket: q.bucket, KeyMarker: enc(keyMarker), UploadIDMarker: idMarker, Prefix: enc(prefix),
		Delimiter: enc(delim), MaxUploads: maxUploads, EncodingType: qs.Get("encoding-type")}
	lastCP, count := "", 0
	for _, u := range ups {
		if keyMarker != "" && (u.Key < keyMarker || (u.Key == keyMarker && (idMarker == "" || u.ID <= idMarker))) {
			continue
		}
		if cp, ok := commonPrefixOf(u.Key, prefix, delim); ok {
			if cp == lastCP || (keyMarker != "" && strings.HasPrefix(keyMarker, cp)) {
				continue
			}
			if count == maxUploads {
				res.IsTruncated = true
				break
			}
			lastCP = cp
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(cp)})
			res.NextKeyMarker, res.NextUploadIDMarker = enc(cp), ""
			count++
			continue
		}
		if count == maxUploads {
			res.IsTruncated = true
			break
		}
		res.Uploads = append(res.Uploads, uploadXML{Key: enc(u.Key), UploadID: u.ID, Initiator: o, Owner: o, StorageClass: "STANDARD", Initiated: s3Time(u.Initiated)})
		res.NextKeyMarker, res.NextUploadIDMarker = enc(u.Key), u.ID
		count++
	}
	if !res.IsTruncated {
		res.NextKeyMarker, res.NextUploadIDMarker = "", ""
	}
	return writeXML(q.w, http.StatusOK, res)
}
