package s3

import (
	"net/http"
	"strings"

	"github.com/cairnhq/cairn/storage"
)

// A bucket's CORS and lifecycle configurations.

func (g *Gateway) getCORS(q *request) *Error {
	b, serr := g.bucket(q)
	if serr != nil {
		return serr
	}
	if len(b.CORS) == 0 {
		return &Error{http.StatusNotFound, "NoSuchCORSConfiguration", "the CORS configuration does not exist"}
	}
	var doc corsConfiguration
	for _, r := range b.CORS {
		doc.Rules = append(doc.Rules, corsRuleXML{ID: r.ID, AllowedOrigins: r.AllowedOrigins, AllowedMethods: r.AllowedMethods,
			AllowedHeaders: r.AllowedHeaders, ExposeHeaders: r.ExposeHeaders, MaxAgeSeconds: r.MaxAgeSeconds})
	}
	return writeXML(q.w, http.StatusOK, doc)
}

func (g *Gateway) putCORS(q *request) *Error {
	var doc corsConfiguration
	if serr := q.xmlBody(&doc, 64<<10); serr != nil {
		return serr
	}
	if len(doc.Rules) == 0 || len(doc.Rules) > 100 {
		return errMalformedXML("a CORS configuration has 1 to 100 rules")
	}
	var rules []storage.CORSRule
	for _, r := range doc.Rules {
		if len(r.AllowedOrigins) == 0 || len(r.AllowedMethods) == 0 {
			return errMalformedXML("every CORS rule names at least one AllowedOrigin and one AllowedMethod")
		}
		for _, m := range r.AllowedMethods {
			switch m {
			case "GET", "PUT", "POST", "DELETE", "HEAD":
			default:
				return errInvalidRequest("found unsupported HTTP method in CORS config: " + m)
			}
		}
		for _, o := range append(append([]string{}, r.AllowedOrigins...), r.AllowedHeaders...) {
			if strings.Count(o, "*") > 1 {
				return errInvalidRequest("an AllowedOrigin or AllowedHeader has at most one wildcard: " + o)
			}
		}
		rules = append(rules, storage.CORSRule{ID: r.ID, AllowedOrigins: r.AllowedOrigins, AllowedMethods: r.AllowedMethods,
			AllowedHeaders: r.AllowedHeaders, ExposeHeaders: r.ExposeHeaders, MaxAgeSeconds: r.MaxAgeSeconds})
	}
	if _, err := g.objects.SetCORS(q.ctx, q.p, q.bucket, rules); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) deleteCORS(q *request) *Error {
	if _, _, serr := q.body(); serr != nil {
		return serr
	}
	if _, err := g.objects.SetCORS(q.ctx, q.p, q.bucket, nil); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (g *Gateway) getLifecycle(q *request) *Error {
	b, serr := g.bucket(q)
	if serr != nil {
		return serr
	}
	if len(b.Lifecycle) == 0 {
		return &Error{http.StatusNotFound, "NoSuchLifecycleConfiguration", "the lifecycle configuration does not exist"}
	}
	var doc lifecycleConfiguration
	for _, r := range b.Lifecycle {
		doc.Rules = append(doc.Rules, lifecycleRuleDoc(r))
	}
	return writeXML(q.w, http.StatusOK, doc)
}

func lifecycleRuleDoc(r storage.LifecycleRule) lifecycleRuleXML {
	x := lifecycleRuleXML{ID: r.ID, Status: "Disabled", Filter: &lifecycleFilter{}}
	if r.Enabled {
		x.Status = "Enabled"
	}
	switch tags := taggingOf(r.Tags).TagSet; {
	case len(tags) == 0:
		p := r.Prefix
		x.Filter.Prefix = &p
	case len(tags) == 1 && r.Prefix == "":
		x.Filter.Tag = &tags[0]
	default:
		x.Filter.And = &andExpr{Prefix: r.Prefix, Tags: tags}
	}
	if r.ExpirationDays > 0 || r.ExpiredDeleteMarker {
		x.Expiration = &expirationXML{Days: r.ExpirationDays, ExpiredObjectDeleteMarker: r.ExpiredDeleteMarker}
	}
	if r.NoncurrentDays > 0 {
		x.NoncurrentVersionExpiration = &noncurrentExpirationXML{NoncurrentDays: r.NoncurrentDays, NewerNoncurrentVersions: r.NewerNoncurrentVersions}
	}
	if r.AbortIncompleteUploadDays > 0 {
		x.AbortIncompleteMultipartUpload = &abortUploadXML{DaysAfterInitiation: r.AbortIncompleteUploadDays}
	}
	return x
}

func (g *Gateway) putLifecycle(q *request) *Error {
	var doc lifecycleConfiguration
	if serr := q.xmlBody(&doc, 256<<10); serr != nil {
		return serr
	}
	if len(doc.Rules) == 0 || len(doc.Rules) > 1000 {
		return errMalformedXML("a lifecycle configuration has 1 to 1000 rules")
	}
	rules := make([]storage.LifecycleRule, 0, len(doc.Rules))
	ids := map[string]bool{}
	for _, x := range doc.Rules {
		r, serr := lifecycleRule(x)
		if serr != nil {
			return serr
		}
		if r.ID != "" && ids[r.ID] {
			return errInvalidArgument("rule ID must be unique; found the same ID for more than one rule: " + r.ID)
		}
		ids[r.ID] = true
		rules = append(rules, r)
	}
	if _, err := g.objects.SetLifecycle(q.ctx, q.p, q.bucket, rules); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// lifecycleRule reads one rule, refusing what Cairn would not carry out
// (transitions between storage classes, size filters, expiry by date)
// rather than storing a rule that silently does less than it says.
func lifecycleRule(x lifecycleRuleXML) (storage.LifecycleRule, *Error) {
	r := storage.LifecycleRule{ID: x.ID}
	switch x.Status {
	case "Enabled":
		r.Enabled = true
	case "Disabled":
	default:
		return r, errMalformedXML("a rule's Status is Enabled or Disabled")
	}
	if len(x.Transitions) > 0 || len(x.NoncurrentTransitions) > 0 {
		return r, errNotImplemented("lifecycle transitions (Cairn has one storage class)")
	}
	if x.Prefix != nil {
		r.Prefix = *x.Prefix
	}
	if f := x.Filter; f != nil {
		if x.Prefix != nil {
			return r, errMalformedXML("a rule has a Filter or a Prefix, not both")
		}
		if f.ObjectSizeGreaterThan != nil || f.ObjectSizeLessThan != nil || (f.And != nil && (f.And.ObjectSizeGreaterThan != nil || f.And.ObjectSizeLessThan != nil)) {
			return r, errNotImplemented("lifecycle filters by object size")
		}
		switch {
		case f.Prefix != nil:
			r.Prefix = *f.Prefix
		case f.Tag != nil:
			r.Tags = map[string]string{f.Tag.Key: f.Tag.Value}
		case f.And != nil:
			r.Prefix = f.And.Prefix
			r.Tags = map[string]string{}
			for _, t := range f.And.Tags {
				r.Tags[t.Key] = t.Value
			}
		}
	}
	if e := x.Expiration; e != nil {
		if e.Date != "" {
			return r, errNotImplemented("lifecycle expiration by date (use Days)")
		}
		if e.Days < 0 || (e.Days > 0 && e.ExpiredObjectDeleteMarker) {
			return r, errMalformedXML("an Expiration has Days (at least 1) or ExpiredObjectDeleteMarker, not both")
		}
		r.ExpirationDays, r.ExpiredDeleteMarker = e.Days, e.ExpiredObjectDeleteMarker
	}
	if n := x.NoncurrentVersionExpiration; n != nil {
		if n.NoncurrentDays < 1 || n.NewerNoncurrentVersions < 0 || n.NewerNoncurrentVersions > 100 {
			return r, errInvalidArgument("NoncurrentDays must be at least 1, NewerNoncurrentVersions 0 to 100")
		}
		r.NoncurrentDays, r.NewerNoncurrentVersions = n.NoncurrentDays, n.NewerNoncurrentVersions
	}
	if a := x.AbortIncompleteMultipartUpload; a != nil {
		if a.DaysAfterInitiation < 1 {
			return r, errInvalidArgument("DaysAfterInitiation must be at least 1")
		}
		if len(r.Tags) > 0 {
			return r, errInvalidArgument("AbortIncompleteMultipartUpload cannot be specified with tags")
		}
		r.AbortIncompleteUploadDays = a.DaysAfterInitiation
	}
	if r.ExpirationDays == 0 && !r.ExpiredDeleteMarker && r.NoncurrentDays == 0 && r.AbortIncompleteUploadDays == 0 {
		return r, errMalformedXML("a rule has at least one action")
	}
	return r, nil
}

func (g *Gateway) deleteLifecycle(q *request) *Error {
	if _, _, serr := q.body(); serr != nil {
		return serr
	}
	if _, err := g.objects.SetLifecycle(q.ctx, q.p, q.bucket, nil); err != nil {
		return toS3Error(err, errNoSuchBucket())
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}
