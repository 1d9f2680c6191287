package s3

import (
	"encoding/xml"
	"errors"
	"net/http"
	"strings"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// Error is an S3 error: a standard code, an HTTP status and a message,
// rendered as S3's XML error document.
type Error struct {
	Status  int    `xml:"-"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errAccessDenied(msg string) *Error { return &Error{http.StatusForbidden, "AccessDenied", msg} }
func errSignatureDoesNotMatch() *Error {
	return &Error{http.StatusForbidden, "SignatureDoesNotMatch", "the request signature we calculated does not match the signature you provided"}
}
func errRequestTimeTooSkewed() *Error {
	return &Error{http.StatusForbidden, "RequestTimeTooSkewed", "the difference between the request time and the server's time is too large"}
}
func errInvalidAccessKey() *Error {
	return &Error{http.StatusForbidden, "InvalidAccessKeyId", "the access key does not exist"}
}
func errMalformedAuth() *Error {
	return &Error{http.StatusBadRequest, "AuthorizationHeaderMalformed", "the authorization header or credential scope is malformed"}
}
func errSignatureVersion() *Error {
	return &Error{http.StatusBadRequest, "InvalidRequest", "only AWS Signature Version 4 is supported"}
}
func errMissingContentSHA256() *Error {
	return &Error{http.StatusBadRequest, "InvalidRequest", "missing x-amz-content-sha256"}
}
func errContentSHA256Mismatch() *Error {
	return &Error{http.StatusBadRequest, "XAmzContentSHA256Mismatch", "the provided x-amz-content-sha256 does not match what was computed"}
}
func errNoSuchBucket() *Error {
	return &Error{http.StatusNotFound, "NoSuchBucket", "the specified bucket does not exist"}
}
func errNoSuchKey() *Error {
	return &Error{http.StatusNotFound, "NoSuchKey", "the specified key does not exist"}
}
func errInvalidRange() *Error {
	return &Error{http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "the requested range is not satisfiable"}
}
func errNotImplemented(what string) *Error {
	return &Error{http.StatusNotImplemented, "NotImplemented", what + " is not implemented"}
}
func errMissingContentLength() *Error {
	return &Error{http.StatusLengthRequired, "MissingContentLength", "you must provide the Content-Length HTTP header"}
}
func errInvalidArgument(msg string) *Error {
	return &Error{http.StatusBadRequest, "InvalidArgument", msg}
}
func errInvalidBucketName(msg string) *Error {
	return &Error{http.StatusBadRequest, "InvalidBucketName", msg}
}
func errBadDigest() *Error {
	return &Error{http.StatusBadRequest, "BadDigest", "the Content-MD5 you specified did not match what we received"}
}
func errInvalidDigest() *Error {
	return &Error{http.StatusBadRequest, "InvalidDigest", "the Content-MD5 you specified is not valid"}
}
func errEntityTooLarge() *Error {
	return &Error{http.StatusBadRequest, "EntityTooLarge", "your proposed upload exceeds the maximum allowed object size (5 TiB)"}
}
func errAuthorizationQueryParameters(msg string) *Error {
	return &Error{http.StatusBadRequest, "AuthorizationQueryParametersError", msg}
}

// toS3Error maps the object layer's errors to S3 codes.
func toS3Error(err error, notFound *Error) *Error {
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	switch {
	case errors.Is(err, storage.ErrNoSpace):
		return &Error{http.StatusInsufficientStorage, "InsufficientStorage", "not enough storage is available to store the object"}
	case errors.Is(err, storage.ErrUnavailable):
		return &Error{http.StatusServiceUnavailable, "ServiceUnavailable", "too few disks are reachable; retry later"}
	case errors.Is(err, storage.ErrInvalidPart):
		return &Error{http.StatusBadRequest, "InvalidPart", err.Error()}
	case errors.Is(err, storage.ErrInvalidPartOrder):
		return &Error{http.StatusBadRequest, "InvalidPartOrder", err.Error()}
	case errors.Is(err, storage.ErrEntityTooSmall):
		return &Error{http.StatusBadRequest, "EntityTooSmall", err.Error()}
	case errors.Is(err, storage.ErrBadDigest):
		return errBadDigest()
	case errors.Is(err, storage.ErrIncomplete):
		return &Error{http.StatusBadRequest, "IncompleteBody", "you did not provide the number of bytes specified by the Content-Length HTTP header"}
	}
	switch consensus.ErrorCode(err) {
	case consensus.CodeNotFound:
		if strings.HasPrefix(err.Error(), "upload ") {
			return &Error{http.StatusNotFound, "NoSuchUpload", "the specified multipart upload does not exist"}
		}
		if notFound != nil {
			return notFound
		}
		return errNoSuchKey()
	case consensus.CodeForbidden:
		return errAccessDenied(err.Error())
	case consensus.CodeQuotaExceeded:
		return &Error{http.StatusForbidden, "QuotaExceeded", err.Error()}
	case consensus.CodeAlreadyExists:
		return &Error{http.StatusConflict, "BucketAlreadyExists", "the requested bucket name is not available"}
	case consensus.CodeConflict:
		return &Error{http.StatusConflict, "BucketNotEmpty", "the bucket you tried to delete is not empty"}
	case consensus.CodeInvalid:
		return errInvalidArgument(err.Error())
	case consensus.CodeUnavailable:
		return &Error{http.StatusServiceUnavailable, "ServiceUnavailable", "the cluster has no leader right now; retry"}
	}
	return &Error{http.StatusInternalServerError, "InternalError", "we encountered an internal error; please try again"}
}

type errorDoc struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource"`
	RequestID string   `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, r *http.Request, e *Error, requestID string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.Status)
	if r.Method == http.MethodHead {
		return // HEAD responses carry no body
	}
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(errorDoc{Code: e.Code, Message: e.Message, Resource: r.URL.Path, RequestID: requestID})
}
