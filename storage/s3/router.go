package s3

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// Every S3 request is routed by (method, what it addresses, subresource)
// through one table. S3 names most operations by a query key on the bucket
// or object ("?tagging", "?acl", "?uploads"): a gateway that routes on
// method and path alone runs PutObject for PUT ?tagging and DeleteObject for
// DELETE ?tagging, and replaces or deletes data. So a request that names a
// subresource without a route here is refused with 501 NotImplemented before
// anything runs, and so is a state-changing request with a query key this
// file does not know: it may be a subresource S3 added after this was written.

// scope is what a request addresses.
type scope uint8

const (
	onService scope = iota // no bucket: ListBuckets
	onBucket
	onObject
)

func (s scope) String() string {
	return [...]string{"the service", "a bucket", "an object"}[s]
}

// route is one S3 operation.
type route struct {
	method string
	scope  scope
	sub    string // the subresource the query names; "" for none
	op     string // S3's name for the operation, for logs
	serve  func(*Gateway, *request) *Error
	// params are the other query keys a write takes (versionId,
	// partNumber); a write with any other key is refused. Reads take any.
	params []string
}

// routes is the whole S3 surface Cairn serves. Anything else is refused.
var routes = []route{
	{http.MethodGet, onService, "", "ListBuckets", (*Gateway).listBuckets, nil},

	{http.MethodPut, onBucket, "", "CreateBucket", (*Gateway).createBucket, nil},
	{http.MethodHead, onBucket, "", "HeadBucket", (*Gateway).headBucket, nil},
	{http.MethodDelete, onBucket, "", "DeleteBucket", (*Gateway).deleteBucket, nil},
	{http.MethodGet, onBucket, "", "ListObjects", (*Gateway).listObjects, nil},
	{http.MethodGet, onBucket, "location", "GetBucketLocation", (*Gateway).location, nil},
	{http.MethodGet, onBucket, "uploads", "ListMultipartUploads", (*Gateway).listUploads, nil},
	{http.MethodGet, onBucket, "versions", "ListObjectVersions", (*Gateway).listVersions, nil},
	{http.MethodPost, onBucket, "delete", "DeleteObjects", (*Gateway).deleteObjects, nil},
	{http.MethodGet, onBucket, "versioning", "GetBucketVersioning", (*Gateway).getVersioning, nil},
	{http.MethodPut, onBucket, "versioning", "PutBucketVersioning", (*Gateway).putVersioning, nil},
	{http.MethodGet, onBucket, "tagging", "GetBucketTagging", (*Gateway).getBucketTagging, nil},
	{http.MethodPut, onBucket, "tagging", "PutBucketTagging", (*Gateway).putBucketTagging, nil},
	{http.MethodDelete, onBucket, "tagging", "DeleteBucketTagging", (*Gateway).deleteBucketTagging, nil},
	{http.MethodGet, onBucket, "acl", "GetBucketAcl", (*Gateway).getBucketACL, nil},
	{http.MethodPut, onBucket, "acl", "PutBucketAcl", (*Gateway).putBucketACL, nil},
	{http.MethodGet, onBucket, "object-lock", "GetObjectLockConfiguration", (*Gateway).getObjectLockConfig, nil},
	{http.MethodPut, onBucket, "object-lock", "PutObjectLockConfiguration", (*Gateway).putObjectLockConfig, nil},
	{http.MethodGet, onBucket, "cors", "GetBucketCors", (*Gateway).getCORS, nil},
	{http.MethodPut, onBucket, "cors", "PutBucketCors", (*Gateway).putCORS, nil},
	{http.MethodDelete, onBucket, "cors", "DeleteBucketCors", (*Gateway).deleteCORS, nil},
	{http.MethodGet, onBucket, "lifecycle", "GetBucketLifecycleConfiguration", (*Gateway).getLifecycle, nil},
	{http.MethodPut, onBucket, "lifecycle", "PutBucketLifecycleConfiguration", (*Gateway).putLifecycle, nil},
	{http.MethodDelete, onBucket, "lifecycle", "DeleteBucketLifecycle", (*Gateway).deleteLifecycle, nil},

	{http.MethodPut, onObject, "", "PutObject", (*Gateway).putOrCopyObject, nil},
	{http.MethodGet, onObject, "", "GetObject", (*Gateway).getObject, nil},
	{http.MethodHead, onObject, "", "HeadObject", (*Gateway).getObject, nil},
	{http.MethodDelete, onObject, "", "DeleteObject", (*Gateway).deleteObject, []string{"versionId"}},
	{http.MethodPost, onObject, "uploads", "CreateMultipartUpload", (*Gateway).createUpload, nil},
	{http.MethodPut, onObject, "uploadId", "UploadPart", (*Gateway).uploadPart, []string{"partNumber"}},
	{http.MethodPost, onObject, "uploadId", "CompleteMultipartUpload", (*Gateway).completeUpload, nil},
	{http.MethodDelete, onObject, "uploadId", "AbortMultipartUpload", (*Gateway).abortUpload, nil},
	{http.MethodGet, onObject, "uploadId", "ListParts", (*Gateway).listParts, nil},
	{http.MethodGet, onObject, "tagging", "GetObjectTagging", (*Gateway).getObjectTagging, nil},
	{http.MethodPut, onObject, "tagging", "PutObjectTagging", (*Gateway).putObjectTagging, []string{"versionId"}},
	{http.MethodDelete, onObject, "tagging", "DeleteObjectTagging", (*Gateway).deleteObjectTagging, []string{"versionId"}},
	{http.MethodGet, onObject, "acl", "GetObjectAcl", (*Gateway).getObjectACL, nil},
	{http.MethodPut, onObject, "acl", "PutObjectAcl", (*Gateway).putObjectACL, []string{"versionId"}},
	{http.MethodGet, onObject, "retention", "GetObjectRetention", (*Gateway).getRetention, nil},
	{http.MethodPut, onObject, "retention", "PutObjectRetention", (*Gateway).putRetention, []string{"versionId"}},
	{http.MethodGet, onObject, "legal-hold", "GetObjectLegalHold", (*Gateway).getLegalHold, nil},
	{http.MethodPut, onObject, "legal-hold", "PutObjectLegalHold", (*Gateway).putLegalHold, []string{"versionId"}},
	{http.MethodGet, onObject, "attributes", "GetObjectAttributes", (*Gateway).getAttributes, nil},
}

// subresources are the query keys with which S3 names an operation on a
// bucket or object, implemented or not (S3 API reference, 2026). versionId
// and partNumber are parameters of other operations, listed below.
var subresources = keySet(
	"abac", "accelerate", "acl", "analytics", "attributes", "cors", "delete",
	"encryption", "intelligent-tiering", "inventory", "legal-hold", "lifecycle",
	"location", "logging", "metadataConfiguration", "metadataInventoryTable",
	"metadataJournalTable", "metadataTable", "metrics", "notification",
	"object-lock", "ownershipControls", "policy", "policyStatus",
	"publicAccessBlock", "renameObject", "replication", "requestPayment",
	"restore", "retention", "select", "session", "tagging", "torrent", "uploadId",
	"uploads", "versioning", "versions", "website",
)

// authParams are the query keys of presigned requests, and the operation
// hint AWS SDKs add (x-id); any request may carry them.
var authParams = keySet(
	"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
	"X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
	"X-Amz-Content-Sha256", "AWSAccessKeyId", "Expires", "Signature", "x-id",
)

func keySet(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// match finds the route of a request, or the refusal it gets.
func match(method string, sc scope, q url.Values) (*route, *Error) {
	var subs []string
	for k := range q {
		if subresources[k] {
			subs = append(subs, k)
		}
	}
	sort.Strings(subs)
	if len(subs) > 1 {
		return nil, errInvalidArgument("a request names at most one subresource, not " + strings.Join(subs, " and "))
	}
	sub := ""
	if len(subs) == 1 {
		sub = subs[0]
	}
	var rt *route
	for i := range routes {
		if r := &routes[i]; r.method == method && r.scope == sc && r.sub == sub {
			rt = r
			break
		}
	}
	if rt == nil {
		if sub != "" {
			return nil, errNotImplemented(method + " ?" + sub + " on " + sc.String())
		}
		for k := range q {
			if !authParams[k] {
				return nil, errNotImplemented(method + " ?" + k + " on " + sc.String())
			}
		}
		return nil, errMethodNotAllowed()
	}
	if method == http.MethodGet || method == http.MethodHead {
		return rt, nil // S3 ignores query keys a read does not use, and so do we
	}
	// A write with a query key it does not take is refused: the key may
	// name a subresource S3 added since, whose request would otherwise be
	// taken for a plain PUT, POST or DELETE.
	var unknown []string
	for k := range q {
		if k != sub && !authParams[k] && !slices.Contains(rt.params, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, errNotImplemented(rt.op + " with the query parameter " + strings.Join(unknown, ", "))
	}
	return rt, nil
}
