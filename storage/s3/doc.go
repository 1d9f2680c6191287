// Package s3 is the S3-compatible gateway over the object layer. Every
// request is routed through one table of (method, target, subresource)
// (router.go); what it does not name is refused with 501 NotImplemented
// and changes nothing. Authentication is AWS SigV4 and SigV2 in headers and
// presigned URLs (auth.go, sigv4.go, sigv2.go) and presigned POST forms
// (postpolicy.go); bodies are checked as their signature requires, aws-
// chunked included (chunked.go), with flexible checksums (checksum.go).
// Handlers: buckets.go, objects.go, objectattrs.go, multipart.go, list.go,
// delete.go, bucketconfig.go, cors.go, post.go. Access keys come from
// appliance/identity; each belongs to a user and a project, and buckets are
// created in that project. Only the agent wires it.
package s3
