package s3

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/storage"
)

// intParam reads a non-negative integer query parameter; listings cap
// their page sizes at 1000, as S3 does.
func intParam(qs url.Values, name string, def int) (int, *Error) {
	v := qs.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errInvalidArgument(name + " must be a non-negative integer")
	}
	if strings.HasPrefix(name, "max-") {
		n = min(n, 1000)
	}
	return n, nil
}

// encoder returns how listed keys are written: as they are, or URL-encoded
// (encoding-type=url), which keys with control characters need in XML.
func encoder(qs url.Values) (func(string) string, *Error) {
	switch qs.Get("encoding-type") {
	case "":
		return func(s string) string { return s }, nil
	case "url":
		return func(s string) string { return awsEncode(s, false) }, nil
	}
	return nil, errInvalidArgument("encoding-type must be url")
}

// commonPrefixOf returns the common prefix key rolls up into under
// delimiter, if it does.
func commonPrefixOf(key, prefix, delim string) (string, bool) {
	if delim == "" || !strings.HasPrefix(key, prefix) {
		return "", false
	}
	i := strings.Index(key[len(prefix):], delim)
	if i < 0 {
		return "", false
	}
	return key[:len(prefix)+i+len(delim)], true
}

// pastPrefix is a start key after every key under cp. Keys are UTF-8, in
// which the byte 0xff never occurs.
func pastPrefix(cp string) string { return cp + "\xff" }

// resumeAfter is where a listing resumes after a marker: past every key of
// the marker's common prefix if the marker is one (as S3 hands them out in
// NextMarker), else right after the marker.
func resumeAfter(marker, prefix, delim string) string {
	if cp, ok := commonPrefixOf(marker, prefix, delim); ok && cp == marker {
		return pastPrefix(marker)
	}
	return marker
}

// listObjects is ListObjectsV2 (list-type=2) and the older ListObjects
// (markers), which many backup tools still use.
func (g *Gateway) listObjects(q *request) *Error {
	qs := q.query
	v2 := false
	switch qs.Get("list-type") {
	case "":
	case "2":
		v2 = true
	default:
		return errInvalidArgument("list-type must be 2")
	}
	prefix, delim := qs.Get("prefix"), qs.Get("delimiter")
	maxKeys, serr := intParam(qs, "max-keys", 1000)
	if serr != nil {
		return serr
	}
	enc, serr := encoder(qs)
	if serr != nil {
		return serr
	}
	after := resumeAfter(qs.Get("marker"), prefix, delim)
	if v2 {
		after = resumeAfter(qs.Get("start-after"), prefix, delim)
		if tok := qs.Get("continuation-token"); tok != "" {
			b, err := base64.RawURLEncoding.DecodeString(tok)
			if err != nil {
				return errInvalidArgument("the continuation token provided is incorrect")
			}
			after = string(b) // our own: already where to resume
		}
	}
	res := listBucketResult{Name: q.bucket, Prefix: enc(prefix), Delimiter: enc(delim), MaxKeys: maxKeys, EncodingType: qs.Get("encoding-type")}
	if v2 {
		res.StartAfter, res.ContinuationToken = enc(qs.Get("start-after")), qs.Get("continuation-token")
	} else {
		m := enc(qs.Get("marker"))
		res.Marker = &m
	}
	fetchOwner := !v2 || qs.Get("fetch-owner") == "true"
	last, count := "", 0
	o := q.owner()
	for {
		page, more, err := g.objects.List(q.ctx, q.p, q.bucket, prefix, after, 1000)
		if err != nil {
			return toS3Error(err, errNoSuchBucket())
		}
		restart := false
		for _, obj := range page {
			if count == maxKeys {
				res.IsTruncated = true
				break
			}
			count++
			if cp, rolled := commonPrefixOf(obj.Key, prefix, delim); rolled {
				// One entry for the whole prefix; go on past it.
				res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(cp)})
				last, after, restart = cp, pastPrefix(cp), true
				break
			}
			last, after = obj.Key, obj.Key
			e := objectXML{Key: enc(obj.Key), LastModified: s3Time(obj.Modified), ETag: `"` + obj.ETag + `"`, Size: obj.Size, StorageClass: "STANDARD"}
			if fetchOwner {
				e.Owner = &o
			}
			if c := obj.Checksum; c != nil {
				e.ChecksumAlgorithm, e.ChecksumType = c.Algorithm, c.Type
			}
			res.Contents = append(res.Contents, e)
		}
		if res.IsTruncated || (!more && !restart) {
			break
		}
	}
	if v2 {
		res.KeyCount = &count
		if res.IsTruncated {
			res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(after))
		}
	} else if res.IsTruncated {
		res.NextMarker = enc(last)
	}
	return writeXML(q.w, http.StatusOK, res)
}

// listVersions is ListObjectVersions: every version and delete marker, by
// key and newest first.
func (g *Gateway) listVersions(q *request) *Error {
	qs := q.query
	prefix, delim := qs.Get("prefix"), qs.Get("delimiter")
	maxKeys, serr := intParam(qs, "max-keys", 1000)
	if serr != nil {
		return serr
	}
	enc, serr := encoder(qs)
	if serr != nil {
		return serr
	}
	keyMarker, vidMarker := qs.Get("key-marker"), qs.Get("version-id-marker")
	if vidMarker != "" && keyMarker == "" {
		return errInvalidArgument("a version-id-marker needs a key-marker")
	}
	res := listVersionsResult{Name: q.bucket, Prefix: enc(prefix), KeyMarker: enc(keyMarker), VersionIDMarker: vidMarker,
		MaxKeys: maxKeys, Delimiter: enc(delim), EncodingType: qs.Get("encoding-type")}
	if vidMarker == "" {
		keyMarker = resumeAfter(keyMarker, prefix, delim)
	}
	o := q.owner()
	count := 0
	for {
		page, more, err := g.objects.ListVersions(q.ctx, q.p, q.bucket, prefix, keyMarker, vidMarker, 1000)
		if err != nil {
			return toS3Error(err, errNoSuchBucket())
		}
		restart := false
		for _, v := range page {
			if count == maxKeys {
				res.IsTruncated = true
				break
			}
			count++
			if cp, rolled := commonPrefixOf(v.Key, prefix, delim); rolled {
				// One entry for the whole prefix; go on past it.
				res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(cp)})
				res.NextKeyMarker, res.NextVersionIDMarker = enc(cp), ""
				keyMarker, vidMarker, restart = pastPrefix(cp), "", true
				break
			}
			keyMarker, vidMarker = v.Key, v.VersionIDOrNull()
			res.Entries = append(res.Entries, versionEntryOf(&v, enc, o))
			res.NextKeyMarker, res.NextVersionIDMarker = enc(v.Key), v.VersionIDOrNull()
		}
		if res.IsTruncated || (!more && !restart) {
			break
		}
	}
	if !res.IsTruncated {
		res.NextKeyMarker, res.NextVersionIDMarker = "", ""
	}
	return writeXML(q.w, http.StatusOK, res)
}

func versionEntryOf(v *storage.Object, enc func(string) string, o owner) versionEntry {
	e := versionEntry{Key: enc(v.Key), VersionID: v.VersionIDOrNull(), IsLatest: v.IsLatest(),
		LastModified: s3Time(v.Modified), Owner: o}
	if v.Delete {
		e.XMLName.Local = "DeleteMarker"
		return e
	}
	e.XMLName.Local = "Version"
	size := v.Size
	e.ETag, e.Size, e.StorageClass = `"`+v.ETag+`"`, &size, "STANDARD"
	return e
}
