package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// Error is an API error: an HTTP status and a stable machine-readable code.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Key or Format is the message's stable ID, and Args its parameters,
	// for a client that says it in another language (the web UI's
	// catalogues hold both); none for most of the API's own errors.
	Key    string   `json:"key,omitempty"`
	Format string   `json:"format,omitempty"`
	Args   []string `json:"args,omitempty"`
}

func (e *Error) Error() string { return e.Message }

func errorf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// Codes the API adds to those of consensus and identity.
const (
	codeNotFoundRoute   = "route_not_found"
	codeMethod          = "method_not_allowed"
	codeTooLarge        = "payload_too_large"
	codeBadJSON         = "bad_request"
	codeInternal        = "internal"
	codeUnsupportedType = "unsupported_media_type"
)

// statusOf maps domain codes to HTTP statuses.
var statusOf = map[string]int{
	consensus.CodeInvalid:            http.StatusBadRequest,
	identity.CodeUnauthenticated:     http.StatusUnauthorized,
	consensus.CodeForbidden:          http.StatusForbidden,
	consensus.CodeQuotaExceeded:      http.StatusForbidden,
	consensus.CodeNotFound:           http.StatusNotFound,
	consensus.CodeAlreadyExists:      http.StatusConflict,
	consensus.CodeConflict:           http.StatusConflict,
	consensus.CodePreconditionFailed: http.StatusPreconditionFailed,
	consensus.CodeUnavailable:        http.StatusServiceUnavailable,
	storage.CodeInsufficientStorage:  http.StatusInsufficientStorage,
	identity.CodeTooManyAttempts:     http.StatusTooManyRequests,
	identity.CodeUserDisabled:        http.StatusForbidden,
}

// toAPIError turns any error into an *Error; unknown errors are 500s whose
// detail stays in the log, not in the response.
func toAPIError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var ce *consensus.Error
	if errors.As(err, &ce) {
		if st, ok := statusOf[ce.Code]; ok {
			return &Error{Status: st, Code: ce.Code, Message: ce.Message, Key: ce.Key, Format: ce.Format, Args: ce.Args}
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body is larger than the limit")
	}
	return errorf(http.StatusInternalServerError, codeInternal, "internal error")
}

// retryAfter sets Retry-After on a refusal that says when to come back: a
// login during its backoff, or one that found every password slot busy.
func retryAfter(w http.ResponseWriter, err error) {
	var te *identity.ThrottledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", strconv.Itoa(te.RetrySeconds()))
	case errors.Is(err, identity.ErrBusy):
		w.Header().Set("Retry-After", "1")
	}
}

func writeError(w http.ResponseWriter, err *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(err.Status)
	_ = json.NewEncoder(w).Encode(err)
}
