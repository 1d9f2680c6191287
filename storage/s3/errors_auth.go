package s3

import (
	"net/http"
	"strings"
)

// Errors of authentication and of checking request bodies, beside the
// general ones in errors.go.

func errInvalidRequest(msg string) *Error {
	return &Error{http.StatusBadRequest, "InvalidRequest", msg}
}

func errUnsupportedAuth() *Error {
	return &Error{http.StatusBadRequest, "InvalidArgument", "unsupported Authorization type: use AWS Signature Version 4 or 2"}
}

func errMultipleAuth() *Error {
	return &Error{http.StatusBadRequest, "InvalidArgument", "only one auth mechanism allowed: the Authorization header, X-Amz-Algorithm or Signature query parameters"}
}

func errHeadersNotSigned(names []string) *Error {
	return &Error{http.StatusForbidden, "AccessDenied", "there were headers present in the request which were not signed: " + strings.Join(names, ", ")}
}

func errMissingDate() *Error {
	return &Error{http.StatusForbidden, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"}
}

func errRequestExpired() *Error { return errAccessDenied("Request has expired") }

func errInvalidContentSHA256() *Error {
	return &Error{http.StatusBadRequest, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING- mode or a hex SHA-256"}
}

func errMissingDecodedLength() *Error {
	return &Error{http.StatusLengthRequired, "MissingContentLength", "you must provide the x-amz-decoded-content-length header with an aws-chunked body"}
}

func errIncompleteBody(msg string) *Error {
	return &Error{http.StatusBadRequest, "IncompleteBody", msg}
}

// errChecksumMismatch is S3's answer to a flexible checksum that does not
// match the body.
func errChecksumMismatch(a checksumAlgo) *Error {
	return &Error{http.StatusBadRequest, "BadDigest", "the " + a.header() + " you specified did not match the calculated checksum"}
}
