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
func errNoSuchVersion() *Error {
	return &Error{http.StatusNotFound, "NoSuchVersion", "the specified version does not exist"}
}
func errNoSuchUpload() *Error {
	return &Error{http.StatusNotFound, "NoSuchUpload", "the specified multipart upload does not exist"}
}
func errInvalidRange() *Error {
	return &Error{http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "the requested range is not satisfiable"}
}
func errNotImplemented(what string) *Error {
	return &Error{http.StatusNotImplemented, "NotImplemented", what + " is not implemented"}
}
func errMethodNotAllowed() *Error {
	return &Error{http.StatusMethodNotAllowed, "MethodNotAllowed", "the specified method is not allowed against this resource"}
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
func errMalformedXML(msg string) *Error {
	return &Error{http.StatusBadRequest, "MalformedXML", msg}
}
func errPreconditionFailed() *Error {
	return &Error{http.StatusPreconditionFailed, "PreconditionFailed", "at least one of the preconditions you specified did not hold"}
}
func errInvalidBucketState(msg string) *Error {
	return &Error{http.StatusConflict, "InvalidBucketState", msg}
}
func errInternal(err error) *Error {
	return &Error{http.StatusInternalServerError, "InternalError", "we encountered an internal error; please try again (" + err.Error() + ")"}
}

// toS3Error maps the object layer's errors to S3 codes; notFound is the
// answer for a plain not-found (NoSuchBucket or NoSuchKey).
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
	case errors.Is(err, storage.ErrBadDigest):
		return errBadDigest()
	case errors.Is(err, storage.ErrIncomplete):
		return &Error{http.StatusBadRequest, "IncompleteBody", "you did not provide the number of bytes specified by the Content-Length HTTP header"}
	}
	switch consensus.ErrorReason(err) {
	case storage.ReasonInvalidPart:
		return &Error{http.StatusBadRequest, "InvalidPart", err.Error()}
	case storage.ReasonInvalidPartOrder:
		return &Error{http.StatusBadRequest, "InvalidPartOrder", err.Error()}
	case storage.ReasonEntityTooSmall:
		return &Error{http.StatusBadRequest, "EntityTooSmall", err.Error()}
	case storage.ReasonMetadataTooLarge:
		return &Error{http.StatusBadRequest, "MetadataTooLarge", err.Error()}
	case "no_such_version":
		return errNoSuchVersion()
	}
	switch consensus.ErrorCode(err) {
	case consensus.CodeNotFound:
		if strings.HasPrefix(err.Error(), "upload ") {
			return errNoSuchUpload()
		}
		if strings.HasPrefix(err.Error(), "bucket ") {
			return errNoSuchBucket()
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
	case consensus.CodePreconditionFailed:
		return errPreconditionFailed()
	case consensus.CodeConflict:
		if strings.Contains(err.Error(), "is not empty") {
			return &Error{http.StatusConflict, "BucketNotEmpty", "the bucket you tried to delete is not empty"}
		}
		return errInvalidBucketState(err.Error())
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
