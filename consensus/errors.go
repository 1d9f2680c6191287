package consensus

import (
	"errors"
	"fmt"
	"strings"
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
	// Format is the English format Message was made from, for an error
	// without a Key: a catalogue of formats says it in another language,
	// with Args the text of each of the format's verbs, in order. "" if
	// none.
	Format string `json:"format,omitempty"`
	// Inner holds, at a parameter's index, the *Error that parameter
	// printed (a refusal quoted in another's words), so it too can be said
	// in another language; nil if no parameter was one.
	Inner []*Error `json:"inner,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code. Its format is the message's
// ID in translation catalogues, so it must be a literal.
func Errorf(code, format string, args ...any) error {
	return newError(code, "", format, args)
}

// NewError is Errorf for a sentinel that callers test with errors.Is.
func NewError(code, format string, args ...any) *Error {
	return newError(code, "", format, args)
}

func newError(code, reason, format string, args []any) *Error {
	e := &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
	verbs := FormatVerbs(format)
	if len(verbs) != len(args) {
		return e // a miscounted format (go vet's to catch) is said as it is
	}
	e.Format, e.Args = format, Params(format, args...)
	for i, v := range verbs {
		if inner := quoted(v, args[i]); inner != nil {
			if e.Inner == nil {
				e.Inner = make([]*Error, len(verbs))
			}
			e.Inner[i] = inner
		}
	}
	return e
}

// quoted returns the *Error a verb printed whole, if it printed one: its
// argument is an error whose text is that *Error's message. A nil pointer
// or an Error method that panics (which fmt survives) is no *Error.
func quoted(verb string, arg any) (inner *Error) {
	defer func() {
		if recover() != nil {
			inner = nil
		}
	}()
	err, ok := arg.(error)
	if !ok || (verb != "%v" && verb != "%s") || !errors.As(err, &inner) || inner == nil || inner.Message != err.Error() {
		return nil
	}
	return inner
}

// Params returns the text each of format's verbs makes of its argument, in
// order: a message's parameters, for a catalogue that says it in another
// language with the English format as its ID. Nil if the verbs are not
// understood (see FormatVerbs) or miscounted.
func Params(format string, args ...any) []string {
	verbs := FormatVerbs(format)
	if len(verbs) != len(args) {
		return nil
	}
	params := make([]string, len(verbs))
	for i, v := range verbs {
		params[i] = fmt.Sprintf(v, args[i])
	}
	return params
}

// FormatVerbs returns each formatting verb of format with its flags, width
// and precision ("%q", "%.1f"), in order; "%%" is not a verb. Formats that
// index their arguments ("%[2]s") or take a width from one ("%*d") are not
// understood: the result is nil, and the message goes untranslated.
func FormatVerbs(format string) []string {
	var verbs []string
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		j := i + 1
		for j < len(format) && strings.IndexByte("+-# 0123456789.", format[j]) >= 0 {
			j++
		}
		if j == len(format) || format[j] == '[' || format[j] == '*' {
			return nil
		}
		if format[j] != '%' {
			verbs = append(verbs, format[i:j+1])
		}
		i = j
	}
	return verbs
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
	return newError(code, reason, format, args)
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
var ErrNoLeader = NewError(CodeUnavailable, "no cluster leader")
