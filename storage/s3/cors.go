package s3

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/storage"
)

// CORS: a bucket's rules decide which browser origins may use it. Preflight
// requests (OPTIONS) carry no credentials and are answered from the rules
// alone; every other request from a browser gets the headers of the rule
// that matches it, errors included, so a web app can read why it failed.

// corsRule returns the bucket's first rule that allows origin to use
// method with the given request headers, as S3 picks it.
func corsRule(b *storage.Bucket, origin, method string, headers []string) *storage.CORSRule {
	for i := range b.CORS {
		r := &b.CORS[i]
		if !anyMatch(r.AllowedOrigins, origin, false) || !contains(r.AllowedMethods, method) {
			continue
		}
		ok := true
		for _, h := range headers {
			if !anyMatch(r.AllowedHeaders, h, true) {
				ok = false
				break
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

// anyMatch reports whether s matches a pattern with at most one "*".
func anyMatch(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			p, s = strings.ToLower(p), strings.ToLower(s)
		}
		pre, suf, wild := strings.Cut(p, "*")
		if (!wild && p == s) || (wild && len(s) >= len(pre)+len(suf) && strings.HasPrefix(s, pre) && strings.HasSuffix(s, suf)) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// allowOrigin sets the headers that let the browser read a response.
func allowOrigin(h http.Header, r *storage.CORSRule, origin string) {
	if contains(r.AllowedOrigins, "*") {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Allow-Methods", strings.Join(r.AllowedMethods, ", "))
	if len(r.ExposeHeaders) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(r.ExposeHeaders, ", "))
	}
}

// corsHeaders adds the CORS headers to a browser's request to a bucket.
func (g *Gateway) corsHeaders(q *request) {
	origin := q.r.Header.Get("Origin")
	if origin == "" || q.bucket == "" || q.r.Method == http.MethodOptions {
		return
	}
	q.w.Header().Add("Vary", "Origin")
	b := g.objects.BucketOf(q.bucket)
	if b == nil {
		return
	}
	if r := corsRule(b, origin, q.r.Method, nil); r != nil {
		allowOrigin(q.w.Header(), r, origin)
	}
}

// preflight answers a CORS preflight request from the bucket's rules.
func (g *Gateway) preflight(q *request) *Error {
	origin, method := q.r.Header.Get("Origin"), q.r.Header.Get("Access-Control-Request-Method")
	if origin == "" || method == "" {
		return &Error{http.StatusBadRequest, "BadRequest", "insufficient information: a CORS preflight names Origin and Access-Control-Request-Method"}
	}
	var headers []string
	for _, v := range q.r.Header.Values("Access-Control-Request-Headers") {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				headers = append(headers, h)
			}
		}
	}
	h := q.w.Header()
	h.Add("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")
	b := g.objects.BucketOf(q.bucket)
	if b == nil || len(b.CORS) == 0 {
		return &Error{http.StatusForbidden, "AccessForbidden", "CORSResponse: CORS is not enabled for this bucket"}
	}
	r := corsRule(b, origin, method, headers)
	if r == nil {
		return &Error{http.StatusForbidden, "AccessForbidden", "CORSResponse: this CORS request is not allowed; this is usually because the evaluation of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec"}
	}
	allowOrigin(h, r, origin)
	if len(headers) > 0 {
		h.Set("Access-Control-Allow-Headers", strings.Join(headers, ", "))
	}
	if r.MaxAgeSeconds > 0 {
		h.Set("Access-Control-Max-Age", strconv.Itoa(r.MaxAgeSeconds))
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}
