package s3

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, as S3 clients send it: in the Authorization
// header, or in the query string of a presigned URL.

const (
	sigAlgorithm    = "AWS4-HMAC-SHA256"
	amzDateFormat   = "20060102T150405Z"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	maxSkew         = 15 * time.Minute
	maxPresignAge   = 7 * 24 * time.Hour
)

// sigV4 is a parsed SigV4 signature, before its secret is known.
type sigV4 struct {
	akid, date, region, service string
	signedHeaders               []string
	signature                   string
	amzDate                     time.Time
	payloadHash                 string
	presigned                   bool
	expires                     time.Duration
}

func (s *sigV4) accessKey() string { return s.akid }

// parseV4Query reads a presigned URL's signature.
func parseV4Query(r *http.Request) (*sigV4, *Error) {
	q := r.URL.Query()
	if q.Get("X-Amz-Algorithm") != sigAlgorithm {
		return nil, errAuthorizationQueryParameters("only AWS4-HMAC-SHA256 presigned URLs are supported")
	}
	s := &sigV4{presigned: true, signature: q.Get("X-Amz-Signature"), payloadHash: unsignedPayload}
	if v := q.Get("X-Amz-Content-Sha256"); v != "" {
		s.payloadHash = v
	}
	if err := s.parseCredential(q.Get("X-Amz-Credential")); err != nil {
		return nil, err
	}
	s.signedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > maxPresignAge {
		return nil, errAuthorizationQueryParameters("X-Amz-Expires must be 1 to 604800 seconds")
	}
	s.expires = time.Duration(secs) * time.Second
	if s.amzDate, err = time.Parse(amzDateFormat, q.Get("X-Amz-Date")); err != nil {
		return nil, errAuthorizationQueryParameters("bad X-Amz-Date")
	}
	if s.signature == "" {
		return nil, errAuthorizationQueryParameters("missing X-Amz-Signature")
	}
	return s, s.check(r)
}

// parseV4Header reads the signature of the Authorization header.
func parseV4Header(r *http.Request) (*sigV4, *Error) {
	rest, _ := strings.CutPrefix(r.Header.Get("Authorization"), sigAlgorithm+" ")
	s := &sigV4{payloadHash: r.Header.Get("X-Amz-Content-Sha256")}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			if err := s.parseCredential(v); err != nil {
				return nil, err
			}
		case "SignedHeaders":
			s.signedHeaders = strings.Split(v, ";")
		case "Signature":
			s.signature = v
		}
	}
	if s.akid == "" || s.signature == "" || len(s.signedHeaders) == 0 {
		return nil, errMalformedAuth()
	}
	if s.payloadHash == "" {
		return nil, errMissingContentSHA256()
	}
	d := r.Header.Get("X-Amz-Date")
	var err error
	if d != "" {
		s.amzDate, err = time.Parse(amzDateFormat, d)
	} else {
		s.amzDate, err = http.ParseTime(r.Header.Get("Date"))
	}
	if err != nil {
		return nil, errAccessDenied("missing or bad X-Amz-Date")
	}
	return s, s.check(r)
}

func (s *sigV4) parseCredential(v string) *Error {
	parts := strings.Split(v, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return errMalformedAuth()
	}
	s.akid, s.date, s.region, s.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// check refuses a scope that does not match the date or service, and a
// request whose Host or x-amz-* headers are not signed: those would let
// whoever holds a signed request (a presigned URL above all) add
// x-amz-copy-source, x-amz-meta-*, checksums... that the signer never saw.
func (s *sigV4) check(r *http.Request) *Error {
	if s.amzDate.UTC().Format("20060102") != s.date || s.service != "s3" {
		return errMalformedAuth()
	}
	isSigned := make(map[string]bool, len(s.signedHeaders))
	for _, h := range s.signedHeaders {
		isSigned[h] = true
	}
	if !isSigned["host"] {
		if s.presigned {
			return errAuthorizationQueryParameters("X-Amz-SignedHeaders must include host")
		}
		return errMalformedAuth()
	}
	var unsigned []string
	for name := range r.Header {
		if n := strings.ToLower(name); strings.HasPrefix(n, "x-amz-") && !isSigned[n] {
			unsigned = append(unsigned, n)
		}
	}
	if len(unsigned) > 0 {
		sort.Strings(unsigned)
		return errHeadersNotSigned(unsigned)
	}
	return nil
}

// verify checks the signature with the secret at time now.
func (s *sigV4) verify(r *http.Request, secret string, now time.Time) (*payload, *Error) {
	if s.presigned {
		if now.Before(s.amzDate.Add(-maxSkew)) {
			return nil, errAccessDenied("request is not valid yet")
		}
		if now.After(s.amzDate.Add(s.expires)) {
			return nil, errRequestExpired()
		}
	} else if d := now.Sub(s.amzDate); d > maxSkew || d < -maxSkew {
		return nil, errRequestTimeTooSkewed()
	}
	key := s.signingKey(secret)
	want := s.sign(r, key, false)
	if !hmac.Equal([]byte(want), []byte(s.signature)) {
		// Clients built on Go's url.Values (minio-go, aws-sdk-go v1) sort
		// the query by raw name rather than by encoded name. Both orders
		// cover the same names and values, so accepting either lets no
		// one change what was signed.
		if want = s.sign(r, key, true); !hmac.Equal([]byte(want), []byte(s.signature)) {
			return nil, errSignatureDoesNotMatch()
		}
	}
	var signer *chunkSigner
	if !s.presigned {
		// Chunks chain from this signature, with the same key and scope.
		signer = &chunkSigner{key: key, date: s.amzDate.UTC().Format(amzDateFormat), scope: s.scope(), prev: want}
	}
	return newPayload(r, s.payloadHash, signer)
}

// compute returns the hex signature of r as the client must have made it.
func (s *sigV4) compute(r *http.Request, secret string) string {
	return s.sign(r, s.signingKey(secret), false)
}

func (s *sigV4) scope() string {
	return strings.Join([]string{s.date, s.region, s.service, "aws4_request"}, "/")
}

func (s *sigV4) signingKey(secret string) []byte {
	key := hmacSHA256([]byte("AWS4"+secret), s.date)
	for _, part := range []string{s.region, s.service, "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	return key
}

// sign signs r's canonical request; rawOrder sorts the query by the names
// before encoding, as Go's url.Values.Encode does.
func (s *sigV4) sign(r *http.Request, key []byte, rawOrder bool) string {
	canonical := strings.Join([]string{
		r.Method,
		awsEncode(r.URL.Path, false),
		canonicalQuery(r.URL.Query(), s.presigned, rawOrder),
		canonicalHeaders(r, s.signedHeaders),
		strings.Join(s.signedHeaders, ";"),
		s.payloadHash,
	}, "\n")
	toSign := strings.Join([]string{sigAlgorithm, s.amzDate.UTC().Format(amzDateFormat), s.scope(), hexSHA256([]byte(canonical))}, "\n")
	return hex.EncodeToString(hmacSHA256(key, toSign))
}

func canonicalQuery(q url.Values, presigned, rawOrder bool) string {
	type kv struct{ k, v, raw string }
	var pairs []kv
	for k, vs := range q {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, kv{awsEncode(k, true), awsEncode(v, true), k})
		}
	}
	sort.SliceStable(pairs, func(i, j int) bool {
		if rawOrder { // values of one name keep their order, as Encode keeps them
			return pairs[i].raw < pairs[j].raw
		}
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, name := range names {
		var v string
		switch name {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		case "transfer-encoding":
			// Go's server moves it out of the header map (botocore signs
			// it with the aws-chunked uploads it streams unsized).
			v = strings.Join(r.TransferEncoding, ",")
		default:
			vals := r.Header.Values(name)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		b.WriteString(name + ":" + v + "\n")
	}
	return b.String()
}

// awsEncode percent-encodes every byte but A-Z a-z 0-9 - _ . ~ (and '/'
// unless encodeSlash), as SigV4 requires.
func awsEncode(s string, encodeSlash bool) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !encodeSlash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
