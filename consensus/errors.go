package consensus

import (
	"errors"
	"fmt"
)

// Stable error codes shared by every domain. The API maps them to HTTP statuses.
const (
	CodeInvalid            = "invalid_argument"
	CodeNotFound           = "not_found"
	CodeAlreadyExists      = "already_exists"
	CodeConflict           = "conflict"
	CodePreconditionFailed = "precondition_failed"
	CodeQuotaExceeded      = "quota_exceeded"
	CodeForbidden          = "forbidden"
	CodeUnavailable        = "unavailable"
)

// Error is a rejection with a stable machine-readable code. It survives the trip
// from the leader's FSM back to the node that forwarded the command.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Reason narrows Code for a domain's own callers (the S3 gateway tells
	// InvalidPart from other invalid arguments by it); "" if none.
	Reason string `json:"reason,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Reasonf returns an *Error with the given code and reason.
func Reasonf(code, reason, format string, args ...any) error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ErrorReason returns the reason of the first *Error in err's chain, or "".
func ErrorReason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// ErrorCode returns the code of the first *Error in err's chain, or "".
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ErrNoLeader is returned when no leader is known within the request's deadline.
var ErrNoLeader = &Error{Code: CodeUnavailable, Message: "no cluster leader"}
