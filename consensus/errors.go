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
	// Key names the message for callers that say it in another language
	// (the UI's catalogues have "msg."+Key), with Args its parameters as
	// text; Message stays the English sentence. "" if none.
	Key  string   `json:"key,omitempty"`
	Args []string `json:"args,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Errorm returns an *Error with the given code whose message has a stable
// key: format and args make the English Message, and args (as %v) are the
// translation's parameters, in the same order.
func Errorm(code, key, format string, args ...any) error {
	e := &Error{Code: code, Key: key, Message: fmt.Sprintf(format, args...)}
	for _, a := range args {
		e.Args = append(e.Args, fmt.Sprint(a))
	}
	return e
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
