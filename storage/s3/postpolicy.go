package s3

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// POST Object: an HTML form uploads a file under a policy its owner signed
// in advance, so that a browser can upload without holding a secret. The
// gateway parses the form (parsePostForm), finds the secret of
// f.accessKey(), checks the form against its policy (verify), streams the
// file through limit, and answers with SuccessStatus (postResponse for 201)
// or a redirect.

const (
	// S3 allows the form 20 KiB before the file's content, boundaries and
	// part headers included.
	maxPostPreamble = 20 << 10
	// multipart's bufio reads up to this much past what it has parsed, so
	// the byte cap allows it on top of the preamble.
	multipartReadAhead = 4096
	// Far more fields than any real upload form carries.
	maxPostFields = 256
)

// postForm is a parsed, not yet verified, POST Object form: every field
// before the file, and the file itself still unread.
type postForm struct {
	Fields   map[string]string // lowercased field names → values; a repeated field's values joined by commas, as S3 does
	File     io.Reader         // the file part's content, streamed
	FileName string            // the file part's filename, without any directory
	// hasFileName is false when the file part had no filename parameter at
	// all; S3 then leaves ${filename} as it is.
	hasFileName bool
}

// postUpload is what a verified form allows: where the file goes, what it
// carries, and the limits to enforce while streaming it.
type postUpload struct {
	AccessKey        string
	Key              string
	ContentType      string            // the Content-Type field; S3 ignores the file part's own
	Meta             map[string]string // x-amz-meta-* fields, names lowercased without the prefix
	MinSize, MaxSize int64             // content-length-range, inclusive; MaxSize -1 if none
	SuccessStatus    int               // 200, 201 or 204 (default 204)
	SuccessRedirect  string            // success_action_redirect (or the older redirect), as sent; see redirect
	ACL              string            // the acl field, "" if none: the gateway decides what it accepts
	// Fields are all the form's fields after ${filename} substitution, for
	// what the gateway may support later (tagging, Cache-Control, checksums).
	Fields map[string]string
}

func errNotMultipart() *Error {
	return &Error{http.StatusPreconditionFailed, "PreconditionFailed", "bucket POST must be of the enclosure-type multipart/form-data"}
}
func errMalformedPOST() *Error {
	return &Error{http.StatusBadRequest, "MalformedPOSTRequest", "the body of your POST request is not well-formed multipart/form-data"}
}
func errPostFieldsTooLarge() *Error {
	return &Error{http.StatusBadRequest, "MaxPostPreDataLengthExceeded", "your POST request fields preceding the upload file were too large"}
}
func errPostMissingField(name string) *Error {
	return errInvalidArgument("bucket POST must contain a field named '" + name + "'; if it is specified, check the order of the fields")
}
func errInvalidPolicy(msg string) *Error {
	return &Error{http.StatusBadRequest, "InvalidPolicyDocument", "invalid policy: " + msg}
}

// errPolicyDenied keeps S3's wording, which upload libraries show to users.
func errPolicyDenied(msg string) *Error {
	return errAccessDenied("Invalid according to Policy: " + msg)
}
func errPostTooLarge() *Error {
	return &Error{http.StatusBadRequest, "EntityTooLarge", "your proposed upload exceeds the maximum allowed size"}
}
func errPostTooSmall() *Error {
	return &Error{http.StatusBadRequest, "EntityTooSmall", "your proposed upload is smaller than the minimum allowed size"}
}

// parsePostForm reads a multipart/form-data request up to the file part,
// the part named "file". S3 ignores any field after it, and so do we: reading
// on would mean buffering the file.
func parsePostForm(r *http.Request) (*postForm, *Error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return nil, errNotMultipart()
	}
	if params["boundary"] == "" {
		return nil, errMalformedPOST()
	}
	pre := &preambleReader{r: r.Body, left: maxPostPreamble + multipartReadAhead}
	mr := multipart.NewReader(pre, params["boundary"])
	f := &postForm{Fields: map[string]string{}}
	used := 0 // names and values: the part of the preamble we hold in memory
	for {
		part, err := mr.NextPart()
		if pre.exceeded {
			return nil, errPostFieldsTooLarge()
		}
		if err == io.EOF {
			return nil, errInvalidArgument("POST requires exactly one file upload per request")
		}
		if err != nil {
			return nil, errMalformedPOST()
		}
		name := strings.ToLower(part.FormName())
		if name == "" {
			return nil, errMalformedPOST()
		}
		if name == "file" {
			pre.lifted = true
			f.File = part
			_, dp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
			f.FileName, f.hasFileName = dp["filename"]
			// Browsers once sent the whole path; S3 keeps what follows the last slash or backslash.
			f.FileName = f.FileName[strings.LastIndexAny(f.FileName, `/\`)+1:]
			return f, nil
		}
		budget := maxPostPreamble - used - len(name)
		if len(f.Fields) == maxPostFields || budget < 0 {
			return nil, errPostFieldsTooLarge()
		}
		v, err := io.ReadAll(io.LimitReader(part, int64(budget)+1))
		switch {
		case pre.exceeded, len(v) > budget:
			return nil, errPostFieldsTooLarge()
		case err != nil:
			return nil, errMalformedPOST()
		}
		used += len(name) + len(v)
		if old, dup := f.Fields[name]; dup {
			f.Fields[name] = old + "," + string(v)
		} else {
			f.Fields[name] = string(v)
		}
	}
}

// preambleReader caps what the multipart parser may read until the file part
// is reached, so no part header or run of tiny parts can make it read (and
// hold) more. It records the overrun itself because multipart wraps errors.
type preambleReader struct {
	r        io.Reader
	left     int64
	lifted   bool // the file part is reached: its size is the policy's business
	exceeded bool
}

func (p *preambleReader) Read(b []byte) (int, error) {
	if p.lifted {
		return p.r.Read(b)
	}
	if p.left <= 0 {
		p.exceeded = true
		return 0, errPostFieldsTooLarge()
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.Read(b)
	p.left -= int64(n)
	return n, err
}

// scheme returns whether the form is signed with V4 (else V2), once every
// field that signature needs is present; a missing one is named as S3 names
// it. A form with neither is anonymous, which the gateway does not allow.
func (f *postForm) scheme() (v4 bool, err *Error) {
	has := func(name string) bool { _, ok := f.Fields[strings.ToLower(name)]; return ok }
	need := []string{"AWSAccessKeyId", "Signature", "Policy"}
	switch {
	case has("x-amz-algorithm") || has("x-amz-credential") || has("x-amz-signature"):
		v4, need = true, []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Signature", "Policy"}
	case !has("awsaccesskeyid") && !has("signature"):
		return false, errAccessDenied("anonymous access is not allowed")
	}
	for _, name := range need {
		if !has(name) {
			return false, errPostMissingField(name)
		}
	}
	return v4, nil
}

// accessKey returns the access key the form is signed with (V4: from
// x-amz-credential; V2: AWSAccessKeyId), for the caller to find its secret.
func (f *postForm) accessKey() (string, *Error) {
	v4, err := f.scheme()
	if err != nil {
		return "", err
	}
	if !v4 {
		if k := f.Fields["awsaccesskeyid"]; k != "" {
			return k, nil
		}
		return "", errInvalidArgument("AWSAccessKeyId must not be empty")
	}
	c, err := parsePostCredential(f.Fields["x-amz-credential"])
	return c.accessKey, err
}

type postCredential struct{ accessKey, date, region string }

func parsePostCredential(v string) (postCredential, *Error) {
	p := strings.Split(v, "/")
	if len(p) != 5 || p[3] != "s3" || p[4] != "aws4_request" {
		return postCredential{}, errInvalidArgument("x-amz-credential must be <access key>/<yyyymmdd>/<region>/s3/aws4_request")
	}
	if p[0] == "" {
		return postCredential{}, errInvalidArgument("a non-empty access key must be provided in the credential")
	}
	return postCredential{accessKey: p[0], date: p[1], region: p[2]}, nil
}

// verify checks the form's signature with secret, then its policy: the
// expiration against now, every condition against the form (the bucket
// condition against bucket; fields after ${filename} is expanded, as S3
// expands it before matching), and that every field S3 does not exempt is
// named by some condition, so a signed policy cannot be stretched with
// fields its signer never saw.
func (f *postForm) verify(bucket, secret string, now time.Time) (*postUpload, *Error) {
	ak, err := f.accessKey() // also checks that the signature's fields are all there
	if err != nil {
		return nil, err
	}
	v4, _ := f.scheme()
	// The signature covers the policy as sent, so it is checked before the
	// policy is decoded: nothing unauthenticated is interpreted.
	if err := f.checkSignature(v4, secret); err != nil {
		return nil, err
	}
	pol, err := parsePolicy(f.Fields["policy"])
	if err != nil {
		return nil, err
	}
	if !now.Before(pol.expiration) {
		return nil, errPolicyDenied("Policy expired.")
	}
	fields := make(map[string]string, len(f.Fields))
	for name, v := range f.Fields {
		if f.hasFileName {
			v = strings.ReplaceAll(v, "${filename}", f.FileName)
		}
		fields[name] = v
	}
	if _, ok := fields["key"]; !ok {
		return nil, errPostMissingField("key")
	}
	if fields["key"] == "" {
		return nil, errInvalidArgument("the key must not be empty")
	}
	covered := map[string]bool{}
	for _, c := range pol.conds {
		field := strings.ToLower(strings.TrimPrefix(c.name, "$"))
		got, present := fields[field]
		ok := present && c.holds(field, got)
		if field == "bucket" { // the bucket posted to, and the form's bucket field if it has one
			ok = c.holds(field, bucket) && (!present || ok)
		}
		if !strings.HasPrefix(c.name, "$") || !ok {
			return nil, errPolicyDenied(fmt.Sprintf("Policy Condition failed: [%q, %q, %q]", c.op, c.name, c.value))
		}
		covered[field] = true
	}
	var extra []string
	for name := range fields {
		if !covered[name] && !postExempt(name) {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return nil, errPolicyDenied("Extra input fields: " + strings.Join(extra, ", "))
	}
	u := newPostUpload(fields, pol)
	u.AccessKey = ak
	return u, nil
}

// postExempt names the fields S3 does not require a condition for: the
// signature and the policy themselves, V2's access key, and x-ignore-*.
func postExempt(name string) bool {
	switch name {
	case "policy", "x-amz-signature", "signature", "awsaccesskeyid":
		return true
	}
	return strings.HasPrefix(name, "x-ignore-")
}

// checkSignature checks the signature over the base64 policy: V4, hex
// HMAC-SHA256 under the credential's signing key; V2, base64 HMAC-SHA1.
func (f *postForm) checkSignature(v4 bool, secret string) *Error {
	policy := f.Fields["policy"]
	if !v4 {
		m := hmac.New(sha1.New, []byte(secret))
		m.Write([]byte(policy))
		if !hmac.Equal([]byte(base64.StdEncoding.EncodeToString(m.Sum(nil))), []byte(f.Fields["signature"])) {
			return errSignatureDoesNotMatch()
		}
		return nil
	}
	if f.Fields["x-amz-algorithm"] != sigAlgorithm {
		return errInvalidArgument("x-amz-algorithm must be " + sigAlgorithm)
	}
	c, err := parsePostCredential(f.Fields["x-amz-credential"])
	if err != nil {
		return err
	}
	// AWS: x-amz-date "is the same date you used in creating the signing key".
	d, perr := time.Parse(amzDateFormat, f.Fields["x-amz-date"])
	if perr != nil {
		return errInvalidArgument("x-amz-date must be an ISO 8601 basic time such as 20130728T000000Z")
	}
	if d.Format("20060102") != c.date {
		return errInvalidArgument("x-amz-date is not on the credential's date")
	}
	key := hmacSHA256([]byte("AWS4"+secret), c.date)
	for _, part := range []string{c.region, "s3", "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	want := hex.EncodeToString(hmacSHA256(key, policy))
	if !hmac.Equal([]byte(want), []byte(f.Fields["x-amz-signature"])) {
		return errSignatureDoesNotMatch()
	}
	return nil
}

func newPostUpload(fields map[string]string, pol *postPolicy) *postUpload {
	u := &postUpload{
		Key:           fields["key"],
		ContentType:   fields["content-type"],
		MinSize:       pol.minSize,
		MaxSize:       pol.maxSize,
		SuccessStatus: http.StatusNoContent,
		ACL:           fields["acl"],
		Fields:        fields,
	}
	switch s := fields["success_action_status"]; s {
	case "200", "201": // anything else, valid or not, is S3's default 204
		u.SuccessStatus, _ = strconv.Atoi(s)
	}
	if u.SuccessRedirect = fields["success_action_redirect"]; u.SuccessRedirect == "" {
		u.SuccessRedirect = fields["redirect"]
	}
	for name, v := range fields {
		if m, ok := strings.CutPrefix(name, "x-amz-meta-"); ok && m != "" {
			if u.Meta == nil {
				u.Meta = map[string]string{}
			}
			u.Meta[m] = v
		}
	}
	return u
}

// limit wraps the file so that reading it enforces content-length-range,
// since the size is only known while streaming. Read fails with
// EntityTooLarge (an *Error) before handing over a byte past MaxSize, and
// with EntityTooSmall at EOF below MinSize.
func (u *postUpload) limit(r io.Reader) io.Reader {
	return &sizeRange{r: r, min: u.MinSize, max: u.MaxSize}
}

type sizeRange struct {
	r        io.Reader
	n        int64
	min, max int64
	err      error // once the range is broken, every later Read says so
}

func (s *sizeRange) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.max >= 0 && int64(len(p)) > s.max-s.n+1 {
		p = p[:s.max-s.n+1] // one byte past the maximum is enough to know
	}
	k, err := s.r.Read(p)
	s.n += int64(k)
	switch {
	case s.max >= 0 && s.n > s.max:
		s.n--
		s.err = errPostTooLarge()
		return k - 1, s.err
	case err == io.EOF && s.n < s.min:
		s.err = errPostTooSmall()
		return k, s.err
	}
	return k, err
}

// redirect returns where to send the browser after a successful upload:
// SuccessRedirect with bucket, key and etag appended to its query as S3
// appends them, or "" when there is none or it is not an absolute http(s)
// URL, in which case S3 answers with SuccessStatus instead.
func (u *postUpload) redirect(bucket, etag string) string {
	loc, err := url.Parse(u.SuccessRedirect)
	if err != nil || (loc.Scheme != "http" && loc.Scheme != "https") || loc.Host == "" {
		return ""
	}
	base, frag, _ := strings.Cut(u.SuccessRedirect, "#")
	sep := "?"
	if loc.RawQuery != "" || strings.HasSuffix(base, "?") {
		sep = "&"
	}
	out := base + sep + "bucket=" + url.QueryEscape(bucket) + "&key=" + url.QueryEscape(u.Key) + "&etag=" + url.QueryEscape(quoteETag(etag))
	if frag != "" {
		out += "#" + frag
	}
	return out
}

func quoteETag(etag string) string {
	if strings.HasPrefix(etag, `"`) {
		return etag
	}
	return `"` + etag + `"`
}

type postResponseXML struct {
	XMLName  xml.Name `xml:"PostResponse"`
	Location string   `xml:"Location"`
	Bucket   string   `xml:"Bucket"`
	Key      string   `xml:"Key"`
	ETag     string   `xml:"ETag"`
}

// postResponse is the body S3 sends with success_action_status 201: no
// namespace, the key raw, the etag quoted (it may be passed either way).
// location is the object's URL; S3 percent-encodes the key in it, '/' too.
func postResponse(bucket, key, etag, location string) []byte {
	b, err := xml.Marshal(postResponseXML{Location: location, Bucket: bucket, Key: key, ETag: quoteETag(etag)})
	if err != nil {
		panic(err) // a struct of strings always marshals
	}
	return append([]byte(xml.Header), b...)
}

// postPolicy is a decoded policy document.
type postPolicy struct {
	expiration       time.Time
	conds            []postCond
	minSize, maxSize int64 // maxSize -1 when there is no content-length-range
}

// postCond is an eq or starts-with condition, its name as the policy spells it.
type postCond struct{ op, name, value string }

func (c postCond) holds(field, got string) bool {
	if c.op == "eq" {
		return got == c.value
	}
	if field == "content-type" { // AWS: a comma-separated Content-Type passes if every type does
		for t := range strings.SplitSeq(got, ",") {
			if !strings.HasPrefix(strings.TrimSpace(t), c.value) {
				return false
			}
		}
		return true
	}
	return strings.HasPrefix(got, c.value)
}

// parsePolicy decodes the base64 JSON policy. Decoding is strict, with
// S3's exact top-level names, because a condition the parser skipped would
// be a condition nobody enforces.
func parsePolicy(b64 string) (*postPolicy, *Error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errInvalidPolicy("invalid base64 encoding")
	}
	var doc map[string]json.RawMessage
	if err := strictJSON(raw, &doc); err != nil || doc == nil {
		return nil, errInvalidPolicy("invalid JSON")
	}
	for name := range doc {
		if name != "expiration" && name != "conditions" {
			return nil, errInvalidPolicy("unexpected: '" + strings.ToLower(name) + "'")
		}
	}
	p := &postPolicy{maxSize: -1}
	var exp string
	if doc["expiration"] == nil {
		return nil, errInvalidPolicy("policy missing expiration")
	}
	if strictJSON(doc["expiration"], &exp) != nil || !strings.HasSuffix(exp, "Z") {
		return nil, errInvalidPolicy("invalid 'expiration' value: " + string(doc["expiration"]))
	}
	if p.expiration, err = time.Parse(time.RFC3339Nano, exp); err != nil {
		return nil, errInvalidPolicy("invalid 'expiration' value: '" + exp + "'")
	}
	var conds []json.RawMessage
	if doc["conditions"] == nil {
		return nil, errInvalidPolicy("policy missing conditions")
	}
	if strictJSON(doc["conditions"], &conds) != nil || conds == nil {
		return nil, errInvalidPolicy("invalid 'conditions' value: must be a list")
	}
	for _, c := range conds {
		if err := p.addCondition(c); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

func (p *postPolicy) addCondition(raw json.RawMessage) *Error {
	var v any
	if strictJSON(raw, &v) != nil {
		return errInvalidPolicy("invalid JSON")
	}
	switch c := v.(type) {
	case map[string]any: // {"acl": "public-read"} is ["eq", "$acl", "public-read"]
		if len(c) != 1 {
			return errInvalidPolicy("invalid simple-condition: simple-conditions must have exactly one property specified")
		}
		for name, val := range c {
			s, ok := val.(string)
			if !ok {
				return errInvalidPolicy("invalid simple-condition: value must be a string")
			}
			p.conds = append(p.conds, postCond{"eq", "$" + name, s})
		}
		return nil
	case []any:
		if len(c) == 0 {
			return errInvalidPolicy("invalid condition: missing operation identifier")
		}
		op, ok := c[0].(string)
		if !ok {
			return errInvalidPolicy("invalid condition: missing operation identifier")
		}
		switch op = strings.ToLower(op); op {
		case "eq", "starts-with":
			if len(c) != 3 {
				return errInvalidPolicy("invalid " + op + ": wrong number of arguments")
			}
			name, ok1 := c[1].(string)
			val, ok2 := c[2].(string)
			if !ok1 || !ok2 {
				return errInvalidPolicy("invalid JSON")
			}
			if op == "starts-with" && !startsWithAllowed(strings.ToLower(strings.TrimPrefix(name, "$"))) {
				return errInvalidPolicy("starts-with is not allowed on " + name + ", which must match exactly")
			}
			p.conds = append(p.conds, postCond{op, name, val})
			return nil
		case "content-length-range":
			if len(c) != 3 {
				return errInvalidPolicy("invalid content-length-range: wrong number of arguments")
			}
			lo, err := policyInt(c, 1)
			if err != nil {
				return err
			}
			hi, err := policyInt(c, 2)
			if err != nil {
				return err
			}
			if lo < 0 || hi < lo {
				return errInvalidPolicy(fmt.Sprintf("invalid content-length-range: %d to %d", lo, hi))
			}
			// Several ranges must all hold, as several conditions on a field do.
			p.minSize = max(p.minSize, lo)
			if p.maxSize < 0 || hi < p.maxSize {
				p.maxSize = hi
			}
			return nil
		default:
			return errInvalidPolicy("invalid condition: unknown operation '" + op + "'")
		}
	}
	return errInvalidPolicy("invalid condition test: must be a list or object")
}

// startsWithAllowed refuses starts-with where AWS documents exact matching
// only and a prefix would loosen what the signer meant: the bucket and the
// signature's own fields.
func startsWithAllowed(field string) bool {
	switch field {
	case "bucket", "x-amz-algorithm", "x-amz-credential", "x-amz-date":
		return false
	}
	return true
}

// policyInt reads bound i of a content-length-range: a JSON integer or a
// decimal string, as S3 accepts. A fraction is not JSON to S3; a string
// that is not a number fails the condition, as it does on S3.
func policyInt(c []any, i int) (int64, *Error) {
	switch v := c[i].(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n, nil
		}
		return 0, errInvalidPolicy("invalid JSON")
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n, nil
		}
	}
	return 0, errPolicyDenied(fmt.Sprintf("Policy Condition failed: [\"content-length-range\", %q, %q]", fmt.Sprint(c[1]), fmt.Sprint(c[2])))
}
