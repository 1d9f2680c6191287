package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestFormatVerbs(t *testing.T) {
	for format, want := range map[string][]string{
		"volume %q is %d GiB":            {"%q", "%d"},
		"ratio %.1f, %+v, 100%% and %5d": {"%.1f", "%+v", "%5d"},
		"no verbs at all":                nil,
		"indexed %[2]s %[1]s":            nil, // not understood: untranslated
		"star %*d":                       nil,
		"dangling %":                     nil,
	} {
		if got := FormatVerbs(format); !reflect.DeepEqual(got, want) {
			t.Errorf("FormatVerbs(%q) = %q, want %q", format, got, want)
		}
	}
}

// An error made from a format keeps the format and each verb's text, and
// both survive the trip from the leader to the node that forwarded the
// command, so that node's pages can say it in their language.
func TestErrorfKeepsFormatAndArgs(t *testing.T) {
	err := Errorf(CodeConflict, "volume %q is %d GiB (%.1f%% used): %v", "scans", 20, 42.25, errors.New("busy"))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatal(err)
	}
	want := &Error{Code: CodeConflict, Message: `volume "scans" is 20 GiB (42.2% used): busy`,
		Format: "volume %q is %d GiB (%.1f%% used): %v", Args: []string{`"scans"`, "20", "42.2", "busy"}}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("got %+v\nwant %+v", e, want)
	}
	b, _ := json.Marshal(e)
	var back Error
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(&back, want) {
		t.Fatalf("round trip: %+v (%v)", back, err)
	}
	r := Reasonf(CodeInvalid, "bad_part", "part %d is missing", 3)
	if !errors.As(r, &e) || e.Reason != "bad_part" || e.Format != "part %d is missing" || !reflect.DeepEqual(e.Args, []string{"3"}) {
		t.Fatalf("Reasonf: %+v", e)
	}
	// A refusal quoted in another's words travels with it.
	inner := Errorf(CodeNotFound, "node %s is not reachable", "n2")
	if !errors.As(Errorf(CodeConflict, "draining %s: %v", "n1", inner), &e) || len(e.Inner) != 2 || e.Inner[0] != nil || e.Inner[1] != inner {
		t.Fatalf("inner: %+v", e)
	}
	b, _ = json.Marshal(e)
	back = Error{}
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(&back, e) {
		t.Fatalf("round trip with inner: %+v (%v)", back, err)
	}
	// ... but not one wrapped in words that are not its own.
	if !errors.As(Errorf(CodeConflict, "draining %s: %v", "n1", fmt.Errorf("ping: %w", inner)), &e) || e.Inner != nil {
		t.Fatalf("wrapped inner: %+v", e)
	}
	// A nil *Error, or an error whose Error panics, prints as fmt prints it
	// and is not quoted.
	var none *Error
	if !errors.As(Errorf(CodeConflict, "draining %s: %v", "n1", none), &e) || e.Inner != nil || e.Message != "draining n1: <nil>" {
		t.Fatalf("typed nil: %+v", e)
	}
	var wrapped *wrapErr
	if !errors.As(Errorf(CodeConflict, "draining %s: %v", "n1", wrapped), &e) || e.Inner != nil {
		t.Fatalf("panicking Error: %+v", e)
	}
	// A miscounted call is said as fmt says it, and not translated.
	if !errors.As(Errorf(CodeInvalid, "%s and %s", "one"), &e) || e.Format != "" || e.Args != nil {
		t.Fatalf("miscounted: %+v", e)
	}
}

// wrapErr's Error and Unwrap need a value: on a nil pointer they panic.
type wrapErr struct{ err error }

func (w *wrapErr) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapErr) Unwrap() error { return w.err }
