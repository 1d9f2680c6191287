// Package s3 is the S3-compatible gateway over the object layer: AWS
// Signature V4 (headers and presigned URLs), buckets, objects (PUT, GET with
// Range, HEAD, DELETE, copy), ListObjectsV2 with prefix, delimiter and
// pagination, user metadata, Content-MD5 and x-amz-content-sha256 checks,
// and S3 XML errors. Access keys come from appliance/identity; each belongs to
// a user and a project, and buckets are created in that project. Only the
// agent wires it.
package s3
