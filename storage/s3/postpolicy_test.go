package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/signer"
)

const (
	awsExampleKey    = "AKIAIOSFODNN7EXAMPLE"
	awsExampleSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	postAccessKey    = "AKIAPOSTEXAMPLE"
	postSecret       = "post/secret+EXAMPLE"
	postBucket       = "photos"
)

// formPart is one part of a multipart/form-data body, in the order sent.
type formPart struct {
	name, value string
	file        bool
	filename    string // for a file part; noFileName sends no filename parameter at all
}

const noFileName = "\x00none"

// formRequest builds the POST a browser would send.
func formRequest(t *testing.T, parts []formPart) *http.Request {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, p := range parts {
		var w io.Writer
		var err error
		switch {
		case p.file && p.filename == noFileName:
			w, err = mw.CreatePart(textproto.MIMEHeader{"Content-Disposition": {`form-data; name="` + p.name + `"`}})
		case p.file:
			w, err = mw.CreateFormFile(p.name, p.filename)
		default:
			w, err = mw.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, p.value); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "http://s3.cairn.test/"+postBucket, &body)
	r.Header.Set("Content-Type", mw.FormDataContentType())
	return r
}

// withFile returns fields in a fixed order, then the file part.
func withFile(fields map[string]string, filename, content string) []formPart {
	var parts []formPart
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		parts = append(parts, formPart{name: name, value: fields[name]})
	}
	return append(parts, formPart{name: "file", file: true, filename: filename, value: content})
}

// minioForm has minio-go build the form fields of a presigned POST, as a
// real client does: set builds the policy, v2 picks signature version 2.
func minioForm(t *testing.T, v2 bool, set func(p *minio.PostPolicy) error) map[string]string {
	t.Helper()
	creds := credentials.NewStaticV4(postAccessKey, postSecret, "")
	if v2 {
		creds = credentials.NewStaticV2(postAccessKey, postSecret, "")
	}
	c, err := minio.New("s3.cairn.test", &minio.Options{Creds: creds, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	p := minio.NewPostPolicy()
	if err := p.SetBucket(postBucket); err != nil {
		t.Fatal(err)
	}
	if err := p.SetExpires(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := set(p); err != nil {
		t.Fatal(err)
	}
	_, form, err := c.PresignedPostPolicy(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return form
}

// photoForm is the V4 form the refusal cases start from.
func photoForm(t *testing.T) map[string]string {
	form := minioForm(t, false, func(p *minio.PostPolicy) error {
		return errors.Join(
			p.SetKeyStartsWith("uploads/"),
			p.SetContentTypeStartsWith("image/"),
			p.SetContentLengthRange(1, 1<<20),
			p.SetUserMetadata("owner", "alice"),
			p.SetSuccessStatusAction("201"),
		)
	})
	form["key"] = "uploads/${filename}"
	form["Content-Type"] = "image/png"
	return form
}

// postOutcome parses and verifies a form; if it verifies, it also streams
// the file through limit, returning what was read.
func postOutcome(t *testing.T, r *http.Request, bucket, secret string, now time.Time) (*postUpload, []byte, *Error) {
	t.Helper()
	f, err := parsePostForm(r)
	if err != nil {
		return nil, nil, err
	}
	ak, err := f.accessKey()
	if err != nil {
		return nil, nil, err
	}
	if ak != postAccessKey && ak != awsExampleKey {
		t.Fatalf("access key %q", ak)
	}
	u, err := f.verify(bucket, secret, now)
	if err != nil {
		return nil, nil, err
	}
	got, rerr := io.ReadAll(u.limit(f.File))
	if rerr != nil {
		var se *Error
		if !errors.As(rerr, &se) {
			t.Fatalf("reading the file: %v", rerr)
		}
		return u, got, se
	}
	return u, got, nil
}

func TestPostPolicyMinioV4(t *testing.T) {
	form := photoForm(t)
	content := strings.Repeat("png!", 1000)
	u, got, err := postOutcome(t, formRequest(t, withFile(form, "cat.png", content)), postBucket, postSecret, time.Now())
	if err != nil {
		t.Fatalf("minio-go's V4 form is refused: %v", err)
	}
	if string(got) != content {
		t.Fatalf("file: read %d bytes, want %d", len(got), len(content))
	}
	want := postUpload{AccessKey: postAccessKey, Key: "uploads/cat.png", ContentType: "image/png", MinSize: 1, MaxSize: 1 << 20, SuccessStatus: 201}
	if u.AccessKey != want.AccessKey || u.Key != want.Key || u.ContentType != want.ContentType || u.MinSize != want.MinSize ||
		u.MaxSize != want.MaxSize || u.SuccessStatus != want.SuccessStatus || u.Meta["owner"] != "alice" || len(u.Meta) != 1 {
		t.Fatalf("got %+v\nwant %+v with meta owner=alice", u, want)
	}
}

func TestPostPolicyMinioV2(t *testing.T) {
	form := minioForm(t, true, func(p *minio.PostPolicy) error { return p.SetKey("notes/a.txt") })
	if _, ok := form["AWSAccessKeyId"]; !ok {
		t.Fatalf("minio-go did not build a V2 form: %v", form)
	}
	u, got, err := postOutcome(t, formRequest(t, withFile(form, "a.txt", "hello")), postBucket, postSecret, time.Now())
	if err != nil {
		t.Fatalf("minio-go's V2 form is refused: %v", err)
	}
	if u.Key != "notes/a.txt" || u.AccessKey != postAccessKey || u.MaxSize != -1 || u.SuccessStatus != 204 || string(got) != "hello" {
		t.Fatalf("%+v %q", u, got)
	}
	form["signature"] = form["signature"][:4] + "AAAA" + form["signature"][8:]
	if _, _, err := postOutcome(t, formRequest(t, withFile(form, "a.txt", "hello")), postBucket, postSecret, time.Now()); err == nil || err.Code != "SignatureDoesNotMatch" {
		t.Fatalf("tampered V2 signature: %v", err)
	}
}

// AWS's own example ("Example: Browser-Based Upload using HTTP POST (Using
// AWS Signature Version 4)"): its policy, signature and form, byte for byte.
func TestPostPolicyAWSExample(t *testing.T) {
	const policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9"
	parts := []formPart{
		{name: "key", value: "user/user1/${filename}"},
		{name: "acl", value: "public-read"},
		{name: "success_action_redirect", value: "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html"},
		{name: "Content-Type", value: "image/jpeg"},
		{name: "x-amz-meta-uuid", value: "14365123651274"},
		{name: "x-amz-server-side-encryption", value: "AES256"},
		{name: "X-Amz-Credential", value: "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"},
		{name: "X-Amz-Algorithm", value: "AWS4-HMAC-SHA256"},
		{name: "X-Amz-Date", value: "20151229T000000Z"},
		{name: "x-amz-meta-tag", value: ""},
		{name: "Policy", value: policy},
		{name: "X-Amz-Signature", value: "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"},
		{name: "file", file: true, filename: `C:\Users\mary\MyPhoto.jpg`, value: "jpeg bytes"},
		{name: "submit", value: "Upload to Amazon S3"}, // after the file: ignored
	}
	noon := time.Date(2015, 12, 29, 12, 0, 0, 0, time.UTC)
	u, got, err := postOutcome(t, formRequest(t, parts), "sigv4examplebucket", awsExampleSecret, noon)
	if err != nil {
		t.Fatalf("AWS's example does not verify: %v", err)
	}
	if u.Key != "user/user1/MyPhoto.jpg" || u.ContentType != "image/jpeg" || u.ACL != "public-read" || u.MaxSize != -1 ||
		u.Meta["uuid"] != "14365123651274" || u.Meta["tag"] != "" || len(u.Meta) != 2 || string(got) != "jpeg bytes" ||
		u.Fields["x-amz-server-side-encryption"] != "AES256" {
		t.Fatalf("%+v", u)
	}
	if r := u.redirect("sigv4examplebucket", "abc"); r != "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html?bucket=sigv4examplebucket&key=user%2Fuser1%2FMyPhoto.jpg&etag=%22abc%22" {
		t.Fatalf("redirect %s", r)
	}
	// The policy expires at noon on the 30th, and names its bucket.
	if _, _, err := postOutcome(t, formRequest(t, parts), "sigv4examplebucket", awsExampleSecret, noon.Add(24*time.Hour)); err == nil || err.Code != "AccessDenied" || err.Message != "Invalid according to Policy: Policy expired." {
		t.Fatalf("at expiry: %v", err)
	}
	if _, _, err := postOutcome(t, formRequest(t, parts), "otherbucket", awsExampleSecret, noon); err == nil || !strings.Contains(err.Message, `"$bucket"`) {
		t.Fatalf("another bucket: %v", err)
	}
	// A condition on a field the form lacks fails, even starts-with "" (S3 does so).
	noTag := slices.DeleteFunc(slices.Clone(parts), func(p formPart) bool { return p.name == "x-amz-meta-tag" })
	if _, _, err := postOutcome(t, formRequest(t, noTag), "sigv4examplebucket", awsExampleSecret, noon); err == nil || !strings.Contains(err.Message, `["starts-with", "$x-amz-meta-tag", ""]`) {
		t.Fatalf("absent field: %v", err)
	}
}

func TestPostPolicyRefusals(t *testing.T) {
	type outcome struct{ code, msg string } // code "" means accepted
	for _, c := range []struct {
		name   string
		change func(form map[string]string)
		bucket string
		secret string
		later  time.Duration
		want   outcome
	}{
		{name: "valid", want: outcome{}},
		{name: "expired", later: 2 * time.Hour, want: outcome{"AccessDenied", "Invalid according to Policy: Policy expired."}},
		{name: "field not in the policy", change: func(f map[string]string) { f["x-amz-meta-extra"] = "1" },
			want: outcome{"AccessDenied", "Invalid according to Policy: Extra input fields: x-amz-meta-extra"}},
		{name: "x-ignore- field", change: func(f map[string]string) { f["x-ignore-tracking"] = "1" }, want: outcome{}},
		{name: "starts-with violated", change: func(f map[string]string) { f["Content-Type"] = "text/html" },
			want: outcome{"AccessDenied", `Invalid according to Policy: Policy Condition failed: ["starts-with", "$Content-Type", "image/"]`}},
		{name: "content-type list", change: func(f map[string]string) { f["Content-Type"] = "image/png, image/gif" }, want: outcome{}},
		{name: "content-type list with a stranger", change: func(f map[string]string) { f["Content-Type"] = "image/png,text/plain" },
			want: outcome{"AccessDenied", "$Content-Type"}},
		{name: "key outside its prefix", change: func(f map[string]string) { f["key"] = "secrets/${filename}" },
			want: outcome{"AccessDenied", `["starts-with", "$key", "uploads/"]`}},
		{name: "eq violated", change: func(f map[string]string) { f["x-amz-meta-owner"] = "mallory" },
			want: outcome{"AccessDenied", `["eq", "$x-amz-meta-owner", "alice"]`}},
		{name: "conditioned field absent", change: func(f map[string]string) { delete(f, "x-amz-meta-owner") },
			want: outcome{"AccessDenied", `["eq", "$x-amz-meta-owner", "alice"]`}},
		{name: "another bucket", bucket: "other", want: outcome{"AccessDenied", `["eq", "$bucket", "photos"]`}},
		{name: "bucket field disagrees with the URL", change: func(f map[string]string) { f["bucket"] = "other" },
			want: outcome{"AccessDenied", `["eq", "$bucket", "photos"]`}},
		{name: "tampered policy", change: func(f map[string]string) {
			p, _ := base64.StdEncoding.DecodeString(f["policy"])
			f["policy"] = base64.StdEncoding.EncodeToString(bytes.Replace(p, []byte(`"uploads/"`), []byte(`""`), 1))
		}, want: outcome{"SignatureDoesNotMatch", ""}},
		{name: "tampered signature", change: func(f map[string]string) {
			s := []byte(f["x-amz-signature"])
			s[10] ^= 1
			f["x-amz-signature"] = string(s)
		}, want: outcome{"SignatureDoesNotMatch", ""}},
		{name: "wrong secret", secret: "not the secret", want: outcome{"SignatureDoesNotMatch", ""}},
		{name: "signature missing", change: func(f map[string]string) { delete(f, "x-amz-signature") },
			want: outcome{"InvalidArgument", "'X-Amz-Signature'"}},
		{name: "anonymous", change: func(f map[string]string) {
			for _, n := range []string{"x-amz-signature", "x-amz-algorithm", "x-amz-credential", "x-amz-date"} {
				delete(f, n)
			}
		}, want: outcome{"AccessDenied", "anonymous"}},
		{name: "x-amz-date off the credential's day", change: func(f map[string]string) { f["x-amz-date"] = "20000101T000000Z" },
			want: outcome{"InvalidArgument", "x-amz-date"}},
		{name: "key missing", change: func(f map[string]string) { delete(f, "key") }, want: outcome{"InvalidArgument", "'key'"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			form := photoForm(t)
			if c.change != nil {
				c.change(form)
			}
			bucket, secret := postBucket, postSecret
			if c.bucket != "" {
				bucket = c.bucket
			}
			if c.secret != "" {
				secret = c.secret
			}
			_, _, err := postOutcome(t, formRequest(t, withFile(form, "cat.png", "png")), bucket, secret, time.Now().Add(c.later))
			switch {
			case c.want.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want.code == "":
			case err == nil:
				t.Fatalf("accepted, want %s", c.want.code)
			case err.Code != c.want.code || !strings.Contains(err.Message, c.want.msg):
				t.Fatalf("got %v, want %s containing %q", err, c.want.code, c.want.msg)
			case err.Status < 400 || err.Status >= 500:
				t.Fatalf("status %d", err.Status)
			}
		})
	}
}

func TestPostPolicySizeRange(t *testing.T) {
	form := minioForm(t, false, func(p *minio.PostPolicy) error {
		return errors.Join(p.SetKey("k"), p.SetContentLengthRange(5, 10))
	})
	for size, want := range map[int]string{0: "EntityTooSmall", 4: "EntityTooSmall", 5: "", 10: "", 11: "EntityTooLarge", 3 << 20: "EntityTooLarge"} {
		u, got, err := postOutcome(t, formRequest(t, withFile(form, "f", strings.Repeat("x", size))), postBucket, postSecret, time.Now())
		switch {
		case want == "" && err != nil:
			t.Errorf("%d bytes: %v", size, err)
		case want != "" && (err == nil || err.Code != want):
			t.Errorf("%d bytes: %v, want %s", size, err, want)
		case u == nil:
			t.Errorf("%d bytes: refused before streaming: %v", size, err)
		case len(got) > 10:
			t.Errorf("%d bytes: %d bytes were handed over past the maximum", size, len(got))
		case want == "" && len(got) != size:
			t.Errorf("%d bytes: read %d", size, len(got))
		}
	}
}

func TestPostLimitReader(t *testing.T) {
	// Reads one byte at a time, so the edge is crossed inside a Read.
	u := &postUpload{MinSize: 2, MaxSize: 3}
	r := u.limit(io.MultiReader(strings.NewReader("ab"), strings.NewReader("cd")))
	got, err := io.ReadAll(r)
	var se *Error
	if string(got) != "abc" || !errors.As(err, &se) || se.Code != "EntityTooLarge" {
		t.Fatalf("%q %v", got, err)
	}
	if n, err := r.Read(make([]byte, 8)); n != 0 || !errors.As(err, &se) {
		t.Fatalf("a broken range reads on: %d %v", n, err)
	}
	unbounded := &postUpload{MaxSize: -1}
	if got, err := io.ReadAll(unbounded.limit(strings.NewReader(strings.Repeat("y", 1<<16)))); err != nil || len(got) != 1<<16 {
		t.Fatalf("no range: %d %v", len(got), err)
	}
}

func TestPostFilename(t *testing.T) {
	for _, c := range []struct{ filename, key string }{
		{"cat.png", "uploads/cat.png"},
		{`C:\fakepath\cat.png`, "uploads/cat.png"},
		{"a/b/cat.png", "uploads/cat.png"},
		{noFileName, "uploads/${filename}"}, // S3 keeps the variable when there is no filename at all
	} {
		form := photoForm(t)
		u, _, err := postOutcome(t, formRequest(t, withFile(form, c.filename, "png")), postBucket, postSecret, time.Now())
		if err != nil || u.Key != c.key {
			t.Errorf("%q: %v %+v, want key %q", c.filename, err, u, c.key)
		}
	}
	// "${filename}" is expanded in every field before the conditions are checked.
	form := minioForm(t, false, func(p *minio.PostPolicy) error {
		return errors.Join(p.SetKey("k"), p.SetUserMetadata("name", "cat.png"))
	})
	form["x-amz-meta-name"] = "${filename}"
	if u, _, err := postOutcome(t, formRequest(t, withFile(form, "cat.png", "png")), postBucket, postSecret, time.Now()); err != nil || u.Meta["name"] != "cat.png" {
		t.Fatalf("%v %+v", err, u)
	}
}

func TestPostRepeatedField(t *testing.T) {
	// AWS: repeated fields are matched as their values joined by commas.
	form := minioForm(t, false, func(p *minio.PostPolicy) error {
		return errors.Join(p.SetKey("k"), p.SetUserMetadata("tag", "Ninja,Stallman"))
	})
	delete(form, "x-amz-meta-tag")
	parts := append([]formPart{{name: "x-amz-meta-tag", value: "Ninja"}, {name: "X-Amz-Meta-Tag", value: "Stallman"}}, withFile(form, "f", "x")...)
	if u, _, err := postOutcome(t, formRequest(t, parts), postBucket, postSecret, time.Now()); err != nil || u.Meta["tag"] != "Ninja,Stallman" {
		t.Fatalf("%v %+v", err, u)
	}
}

func TestPostFileNotLast(t *testing.T) {
	form := photoForm(t)
	parts := withFile(form, "cat.png", "png")
	// Fields after the file are ignored, covered by the policy or not...
	extra := append(slices.Clone(parts), formPart{name: "x-amz-meta-late", value: "1"})
	if _, _, err := postOutcome(t, formRequest(t, extra), postBucket, postSecret, time.Now()); err != nil {
		t.Fatalf("a field after the file counted: %v", err)
	}
	// ...so a needed field placed after it is missing.
	for _, late := range []string{"key", "policy"} {
		var moved []formPart
		var tail formPart
		for _, p := range parts {
			if p.name == late {
				tail = p
			} else {
				moved = append(moved, p)
			}
		}
		_, _, err := postOutcome(t, formRequest(t, append(moved, tail)), postBucket, postSecret, time.Now())
		if err == nil || err.Code != "InvalidArgument" || !strings.Contains(strings.ToLower(err.Message), "'"+late+"'") {
			t.Errorf("%s after the file: %v", late, err)
		}
	}
}

func TestPostFormLimits(t *testing.T) {
	big := func(n int) string { return strings.Repeat("v", n) }
	var many []formPart
	for i := range 400 {
		many = append(many, formPart{name: "x-ignore-" + strconv.Itoa(i), value: "1"})
	}
	for name, parts := range map[string][]formPart{
		"one field over 20 KiB": {{name: "key", value: big(21 << 10)}, {name: "file", file: true, filename: "f"}},
		"fields together over":  {{name: "a", value: big(11 << 10)}, {name: "b", value: big(11 << 10)}, {name: "file", file: true, filename: "f"}},
		"many fields":           append(many, formPart{name: "file", file: true, filename: "f"}),
		"huge part header":      {{name: "file", file: true, filename: big(64 << 10)}},
	} {
		if _, err := parsePostForm(formRequest(t, parts)); err == nil || err.Code != "MaxPostPreDataLengthExceeded" {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Just under the limit, with a file far larger than it: the cap lifts at the file.
	file := big(1 << 20)
	f, err := parsePostForm(formRequest(t, []formPart{{name: "x-ignore-pad", value: big(19 << 10)}, {name: "file", file: true, filename: "f", value: file}}))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(f.File); err != nil || string(got) != file {
		t.Fatalf("file after a full preamble: %d bytes, %v", len(got), err)
	}

	for name, c := range map[string]struct{ ctype, body, code string }{
		"not multipart": {"application/x-www-form-urlencoded", "key=a", "PreconditionFailed"},
		"no boundary":   {"multipart/form-data", "--x\r\n", "MalformedPOSTRequest"},
		"garbage":       {"multipart/form-data; boundary=xyz", "\x00\x01 not a form", "MalformedPOSTRequest"},
		"part with no name": {"multipart/form-data; boundary=xyz",
			"--xyz\r\nContent-Disposition: form-data\r\n\r\nv\r\n--xyz--\r\n", "MalformedPOSTRequest"},
		"no file": {"multipart/form-data; boundary=xyz",
			"--xyz\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--xyz--\r\n", "InvalidArgument"},
	} {
		r := httptest.NewRequest("POST", "http://s3.cairn.test/b", strings.NewReader(c.body))
		r.Header.Set("Content-Type", c.ctype)
		if _, err := parsePostForm(r); err == nil || err.Code != c.code {
			t.Errorf("%s: %v, want %s", name, err, c.code)
		}
	}
}

// The file is streamed: parsePostForm returns while the client is still
// blocked writing it, and the content arrives intact afterwards.
func TestPostFormStreams(t *testing.T) {
	var pre bytes.Buffer
	mw := multipart.NewWriter(&pre)
	_ = mw.WriteField("key", "k")
	if _, err := mw.CreateFormFile("file", "big.bin"); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	const chunks, chunkSize = 64, 64 << 10
	var written atomic.Int32
	want := sha256.New()
	chunk := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, chunkSize) }
	for i := range chunks {
		want.Write(chunk(i))
	}
	go func() {
		_, _ = pw.Write(pre.Bytes())
		for i := range chunks {
			if _, err := pw.Write(chunk(i)); err != nil {
				return
			}
			written.Add(1)
		}
		_, _ = io.WriteString(pw, "\r\n--"+mw.Boundary()+"--\r\n")
		_ = pw.Close()
	}()
	defer pr.Close()
	r := httptest.NewRequest("POST", "http://s3.cairn.test/b", pr)
	r.Header.Set("Content-Type", mw.FormDataContentType())
	f, err := parsePostForm(r)
	if err != nil {
		t.Fatal(err)
	}
	if n := written.Load(); n != 0 {
		t.Fatalf("%d chunks of the file were consumed before the form was handed over", n)
	}
	got := sha256.New()
	n, rerr := io.Copy(got, f.File)
	if rerr != nil || n != chunks*chunkSize || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("streamed %d bytes, %v", n, rerr)
	}
}

// Policies written by hand, as an application's backend may, signed by
// minio-go's V2 signer.
func TestPostHandWrittenPolicies(t *testing.T) {
	const exp = `"expiration": "2030-01-01T00:00:00Z"`
	for doc, want := range map[string]string{
		`{` + exp + `, "conditions": [{"bucket": "photos"}, ["starts-with", "$key", ""], ["content-length-range", "1", "9"]]}`: "",
		`{` + exp + `, "conditions": [["eq", "$bucket", "photos"], ["eq", "key", "k"]]}`:                                       `["eq", "key", "k"]`, // a name without $ never matches
		`{` + exp + `, "conditions": [["starts-with", "$key", ""]]}`:                                                           "",                   // no bucket condition: the signer's choice
		`{` + exp + `, "conditions": [{"bucket": "other"}, ["starts-with", "$key", ""]]}`:                                      `["eq", "$bucket", "other"]`,
	} {
		b64 := base64.StdEncoding.EncodeToString([]byte(doc))
		form := map[string]string{"key": "k", "AWSAccessKeyId": postAccessKey, "policy": b64, "signature": signer.PostPresignSignatureV2(b64, postSecret)}
		_, _, err := postOutcome(t, formRequest(t, withFile(form, "f", "x")), postBucket, postSecret, time.Now())
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", doc, err)
		case want != "" && (err == nil || err.Code != "AccessDenied" || !strings.Contains(err.Message, want)):
			t.Errorf("%s: %v, want AccessDenied with %s", doc, err, want)
		}
	}
}

func TestPostPolicyDocuments(t *testing.T) {
	const exp = `"expiration": "2030-01-01T00:00:00Z"`
	for doc, want := range map[string]string{
		`{` + exp + `, "conditions": [{"bucket": "b"}, ["StArTs-WiTh", "$KeY", "a/"]]}`:                      "",
		`{"expiration": "2030-01-01T00:00:00.000Z", "conditions": [["eq", "$key", "k"]]}`:                    "",
		`{` + exp + `, "conditions": [["content-length-range", "5", "10"]]}`:                                 "",
		`{` + exp + `, "conditions": [["content-length-range", 1, 100], ["content-length-range", 5, 1000]]}`: "",
		`not json`: "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["eq", "$key", "k"],]}`:                     "InvalidPolicyDocument", // AWS's docs have such commas; JSON does not
		`{"EXPIRATION": "2030-01-01T00:00:00Z", "conditions": []}`:                "InvalidPolicyDocument",
		`{"conditions": [["eq", "$key", "k"]]}`:                                   "InvalidPolicyDocument",
		`{` + exp + `}`:                                                           "InvalidPolicyDocument",
		`{` + exp + `, "conditions": {"key": "k"}}`:                               "InvalidPolicyDocument",
		`{"expiration": "2030-01-01T00:00:00+02:00", "conditions": []}`:           "InvalidPolicyDocument",
		`{"expiration": "2030-01-01 00:00:00 UTC", "conditions": []}`:             "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [{"bucket": "b", "key": "k"}]}`:              "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [{}]}`:                                       "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [{"Content-Length": 6199034}]}`:              "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["in", "$key", "k"]]}`:                      "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["eq", "$key"]]}`:                           "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [[]]}`:                                       "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [7]}`:                                        "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["content-length-range", 0]]}`:              "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["content-length-range", 0, 512.0]]}`:       "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["content-length-range", -1, 0]]}`:          "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["content-length-range", 10, 5]]}`:          "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["content-length-range", "test", "10"]]}`:   "AccessDenied",
		`{` + exp + `, "conditions": [["starts-with", "$bucket", ""]]}`:           "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [["starts-with", "$x-amz-credential", ""]]}`: "InvalidPolicyDocument",
		`{` + exp + `, "conditions": []} {}`:                                      "InvalidPolicyDocument",
		`{` + exp + `, "conditions": [], "statement": []}`:                        "InvalidPolicyDocument",
	} {
		p, err := parsePolicy(base64.StdEncoding.EncodeToString([]byte(doc)))
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", doc, err)
		case want != "" && (err == nil || err.Code != want):
			t.Errorf("%s: %v, want %s", doc, err, want)
		case want == "" && p.expiration.Year() != 2030:
			t.Errorf("%s: expiration %v", doc, p.expiration)
		}
	}
	// Several ranges all hold: the tightest bounds win, whatever their order.
	p, err := parsePolicy(base64.StdEncoding.EncodeToString([]byte(`{` + exp + `, "conditions": [["content-length-range", 5, 1000], ["content-length-range", 1, 100], {"Key": "k"}]}`)))
	if err != nil || p.minSize != 5 || p.maxSize != 100 || len(p.conds) != 1 || p.conds[0] != (postCond{"eq", "$Key", "k"}) {
		t.Fatalf("%v %+v", err, p)
	}
	if _, err := parsePolicy("not base64!"); err == nil || err.Code != "InvalidPolicyDocument" {
		t.Fatalf("bad base64: %v", err)
	}
}

func TestPostResponse(t *testing.T) {
	body := postResponse("photos", "a/b c.png", "d41d8cd98f00b204e9800998ecf8427e", "https://photos.s3.cairn.test/a%2Fb%20c.png")
	if !bytes.HasPrefix(body, []byte("<?xml")) || bytes.Contains(body, []byte("xmlns")) {
		t.Fatalf("%s", body)
	}
	var got postResponseXML
	if err := xml.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.XMLName.Local != "PostResponse" || got.Bucket != "photos" || got.Key != "a/b c.png" ||
		got.ETag != `"d41d8cd98f00b204e9800998ecf8427e"` || got.Location != "https://photos.s3.cairn.test/a%2Fb%20c.png" {
		t.Fatalf("%+v", got)
	}
	if again := postResponse("photos", "a/b c.png", `"d41d8cd98f00b204e9800998ecf8427e"`, got.Location); !bytes.Equal(again, body) {
		t.Fatalf("a quoted etag is quoted again: %s", again)
	}

	u := &postUpload{Key: "dir/my file.png"}
	for redirect, want := range map[string]string{
		"https://app.example/done":         "https://app.example/done?bucket=photos&key=dir%2Fmy+file.png&etag=%22e1%22",
		"https://app.example/done?x=1#top": "https://app.example/done?x=1&bucket=photos&key=dir%2Fmy+file.png&etag=%22e1%22#top",
		"/done":                            "", // S3 then answers with the status
		"javascript:alert(1)":              "",
		"":                                 "",
	} {
		u.SuccessRedirect = redirect
		if got := u.redirect("photos", "e1"); got != want {
			t.Errorf("%q: %q, want %q", redirect, got, want)
		}
	}
}
