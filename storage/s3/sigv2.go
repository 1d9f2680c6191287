package s3

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 2, which older tools (s3cmd, some backup software)
// still send: base64(HMAC-SHA1(secret, StringToSign)) in
// "Authorization: AWS AKID:SIG", or presigned in the query string
// (AWSAccessKeyId, Expires, Signature). It signs no payload hash, so bodies
// are checked only by Content-MD5 (the gateway) and flexible checksums.

// sigV2 is a parsed SigV2 signature, before its secret is known.
type sigV2 struct {
	akid       string
	signature  string // base64, as sent
	presigned  bool
	expires    string // presigned: Expires as sent (it is signed as text), Unix seconds
	hostBucket string // the bucket the Host names (virtual-host style); see withHostBucket
}

func (s *sigV2) accessKey() string { return s.akid }

func parseV2Header(r *http.Request) (*sigV2, *Error) {
	cred, _ := strings.CutPrefix(r.Header.Get("Authorization"), "AWS ")
	i := strings.LastIndexByte(cred, ':')
	if i <= 0 || i == len(cred)-1 {
		return nil, errMalformedAuth()
	}
	return &sigV2{akid: cred[:i], signature: cred[i+1:]}, nil
}

func parseV2Query(r *http.Request) (*sigV2, *Error) {
	q := r.URL.Query()
	s := &sigV2{akid: q.Get("AWSAccessKeyId"), signature: q.Get("Signature"), expires: q.Get("Expires"), presigned: true}
	if s.akid == "" || s.signature == "" || s.expires == "" {
		return nil, errAuthorizationQueryParameters("a SigV2 presigned URL needs AWSAccessKeyId, Expires and Signature")
	}
	if _, err := strconv.ParseUint(s.expires, 10, 63); err != nil {
		return nil, errAuthorizationQueryParameters("Expires must be a time in Unix seconds")
	}
	return s, nil
}

// verify checks the signature with the secret at time now.
func (s *sigV2) verify(r *http.Request, secret string, now time.Time) (*payload, *Error) {
	if s.presigned {
		secs, _ := strconv.ParseInt(s.expires, 10, 64)
		exp := time.Unix(secs, 0)
		if now.After(exp) {
			return nil, errRequestExpired()
		}
		if exp.Sub(now) > maxPresignAge {
			return nil, errAuthorizationQueryParameters("Expires must be at most 7 days ahead")
		}
	} else {
		d := r.Header.Get("X-Amz-Date")
		if d == "" {
			d = r.Header.Get("Date")
		}
		t, ok := parseHTTPDate(d)
		if !ok {
			return nil, errMissingDate()
		}
		if skew := now.Sub(t); skew > maxSkew || skew < -maxSkew {
			return nil, errRequestTimeTooSkewed()
		}
	}
	if !s.matches(r, secret) {
		return nil, errSignatureDoesNotMatch()
	}
	if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
		return nil, errInvalidRequest("aws-chunked bodies need SigV4 in the Authorization header")
	}
	return newPayload(r, unsignedPayload, nil)
}

// matches tells whether the signature is r's. A sub-resource sent with an
// empty value ("?tagging=") is signed by some clients (botocore) as
// "tagging=" and by others (minio-go) as "tagging"; both name the same
// request, so either is accepted.
func (s *sigV2) matches(r *http.Request, secret string) bool {
	for _, bare := range []bool{false, true} {
		if hmac.Equal([]byte(s.sign(r, secret, bare)), []byte(s.signature)) {
			return true
		}
	}
	return false
}

// compute returns the base64 signature of r as the client must have made it.
func (s *sigV2) compute(r *http.Request, secret string) string { return s.sign(r, secret, false) }

func (s *sigV2) sign(r *http.Request, secret string, bare bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(s.stringToSign(r, bare)))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// stringToSign is Method\nContent-MD5\nContent-Type\nDate\nCanonicalizedAmzHeaders CanonicalizedResource.
func (s *sigV2) stringToSign(r *http.Request, bare bool) string {
	date := r.Header.Get("Date")
	switch {
	case s.presigned:
		date = s.expires
	case r.Header.Get("X-Amz-Date") != "":
		date = "" // x-amz-date is signed among the amz headers instead
	}
	return r.Method + "\n" + r.Header.Get("Content-Md5") + "\n" + r.Header.Get("Content-Type") + "\n" +
		date + "\n" + canonicalAmzHeaders(r.Header) + s.canonicalResource(r, bare)
}

// canonicalAmzHeaders lists the x-amz-* headers, lowercased and sorted, each
// with its values trimmed and joined by commas.
func canonicalAmzHeaders(h http.Header) string {
	vals := map[string][]string{}
	var names []string
	for k, vs := range h {
		n := strings.ToLower(k)
		if !strings.HasPrefix(n, "x-amz-") {
			continue
		}
		if _, seen := vals[n]; !seen {
			names = append(names, n)
		}
		for _, v := range vs {
			vals[n] = append(vals[n], strings.TrimSpace(v))
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n + ":" + strings.Join(vals[n], ",") + "\n")
	}
	return b.String()
}

// canonicalResource is "/" + the bucket when the Host names it, the path as
// the client sent it (still percent-encoded, in its own case), and the
// sub-resources S3 signs, sorted, with their decoded values; bare leaves
// the "=" off empty ones.
func (s *sigV2) canonicalResource(r *http.Request, bare bool) string {
	var b strings.Builder
	if s.hostBucket != "" {
		b.WriteString("/" + s.hostBucket)
	}
	b.WriteString(requestPath(r))
	type param struct{ name, text string }
	var subs []param
	for _, part := range strings.Split(r.URL.RawQuery, "&") {
		k, v, hasValue := strings.Cut(part, "=")
		k, err := url.QueryUnescape(k)
		if err != nil || !isSubresource(k) {
			continue
		}
		p := param{k, k}
		if hasValue && (v != "" || !bare) {
			if v, err = url.QueryUnescape(v); err != nil {
				continue
			}
			p.text += "=" + v
		}
		subs = append(subs, p)
	}
	sort.SliceStable(subs, func(i, j int) bool { return subs[i].name < subs[j].name })
	for i, p := range subs {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(p.text)
	}
	return b.String()
}

// requestPath is the path of the request line, undecoded: SigV2 signs it
// literally, and decoding and re-encoding it would not give back the
// client's spelling (lowercase hex, say).
func requestPath(r *http.Request) string {
	if u := r.RequestURI; strings.HasPrefix(u, "/") {
		p, _, _ := strings.Cut(u, "?")
		return p
	}
	if p := r.URL.EscapedPath(); p != "" {
		return p
	}
	return "/"
}

// isSubresource tells the query parameters SigV2 signs.
func isSubresource(k string) bool {
	switch k {
	case "acl", "cors", "delete", "lifecycle", "location", "logging", "notification", "partNumber", "policy",
		"requestPayment", "response-cache-control", "response-content-disposition", "response-content-encoding",
		"response-content-language", "response-content-type", "response-expires", "restore", "tagging", "torrent",
		"uploadId", "uploads", "versionId", "versioning", "versions", "website", "object-lock", "retention",
		"legal-hold", "accelerate", "encryption", "replication", "select", "select-type":
		return true
	}
	return false
}

// parseHTTPDate reads the date forms clients send in Date and x-amz-date.
func parseHTTPDate(s string) (time.Time, bool) {
	if t, err := http.ParseTime(s); err == nil {
		return t, true
	}
	for _, f := range []string{time.RFC1123Z, time.RFC1123} {
		if t, err := time.Parse(f, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
