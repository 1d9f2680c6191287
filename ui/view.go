package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// view is what every page template gets: who is looking, in which language,
// and the bits of the current request the layout needs.
type view struct {
	tr    *translator
	p     *identity.Principal // nil on the login and setup pages
	csrf  string              // the form token for this session
	path  string              // the current page, for the language switch to return to
	nav   string              // the active nav entry
	loc   *time.Location
	flash string // a success message, already translated
	err   string // an error message, already translated
	hub   bool   // a federation hub's UI: its own navigation
	fed   bool   // a site that may join a hub: its federation page
}

func (s *server) newView(r *http.Request, tr *translator) *view {
	return &view{tr: tr, path: r.URL.RequestURI(), loc: s.loc, hub: s.hub != nil, fed: s.member != nil}
}

// T translates key.
func (v *view) T(key string) string { return v.tr.T(key) }

// Tf translates key and formats args into it.
func (v *view) Tf(key string, args ...any) string { return v.tr.Tf(key, args...) }

// Tor translates key, or shows fallback if the catalog lacks it: values from
// other packages (a new node role, a new audit action) may arrive before the
// catalog knows them, and their raw name beats a message key.
func (v *view) Tor(key, fallback string) string {
	if m, ok := v.tr.msgs[key]; ok {
		return m
	}
	return fallback
}

func (v *view) lang() string { return v.tr.lang }

func (v *view) signedIn() bool { return v.p != nil }

func (v *view) admin() bool { return v.p.IsClusterAdmin() }

func (v *view) userName() string {
	if v.p == nil {
		return ""
	}
	return v.p.User.Name
}

// langURL switches to language l and comes back to this page.
func (v *view) langURL(l string) templ.SafeURL {
	return templ.URL("/lang/" + l + "?next=" + url.QueryEscape(v.path))
}

// navClass marks the active nav entry for the stylesheet and screen readers.
func (v *view) navClass(name string) string {
	if v.nav == name {
		return "active"
	}
	return ""
}

func (v *view) ariaCurrent(name string) string {
	if v.nav == name {
		return "page"
	}
	return "false"
}

// time formats t in the appliance's zone, to the second: audit entries
// are read next to wall clocks and paper logs.
func (v *view) time(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.In(v.loc).Format("2006-01-02 15:04:05 MST")
}

// yesNo translates a boolean.
func (v *view) yesNo(b bool) string {
	if b {
		return v.T("common.yes")
	}
	return v.T("common.no")
}

// limit shows a quota limit, where -1 means no limit.
func (v *view) limit(n int64) string {
	if n == identity.Unlimited {
		return v.T("quota.unlimited")
	}
	return strconv.FormatInt(n, 10)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// errorText turns a service error into a message for the page: a translated
// label for its code and the service's own (English) message. Errors without
// a code are internal; their text stays in the log.
func errorText(tr *translator, err error) string {
	if key := ruleError(err); key != "" {
		return tr.T(key)
	}
	if key, _ := storageError(err); key != "" {
		return tr.Tf("err.detail", tr.T(key), tr.T(key+"_detail")) // English's detail is the error's own text
	}
	code := consensus.ErrorCode(err)
	switch code {
	case "":
		return tr.T("err.internal")
	case identity.CodeUnauthenticated:
		return tr.T("err.unauthenticated")
	}
	var e *consensus.Error
	errors.As(err, &e)
	if text, ok := keyedText(tr, e.Key, e.Args); ok {
		return text
	}
	label, msg := "err."+code, e.Message
	if _, known := tr.msgs[label]; !known {
		label = "err.unknown"
	}
	if text, ok := formatText(tr, e.Format, e.Args, e.Inner); ok {
		msg = text
	}
	return tr.Tf("err.detail", tr.T(label), msg)
}

// messageText is an error's message in the reader's language where the
// catalogue has it, else as the service said it.
func messageText(tr *translator, e *consensus.Error) string {
	if text, ok := keyedText(tr, e.Key, e.Args); ok {
		return text
	}
	if text, ok := formatText(tr, e.Format, e.Args, e.Inner); ok {
		return text
	}
	return e.Message
}

// formatText says an error made from an English format (consensus.Errorf)
// in the reader's language, its parameters in place; false if the catalogue
// has no such text with as many parameters, as English has none. A
// parameter the text puts in “…” is a word, such as a state or a kind of
// resource, said in the reader's words when the catalogue knows it; so is
// a parameter that printed another error (inner, at its index).
func formatText(tr *translator, format string, params []string, inner []*consensus.Error) (string, bool) {
	text, ok := tr.msgs["fmt."+format]
	verbs := verb.FindAllStringSubmatchIndex(text, -1)
	if format == "" || !ok || len(verbs) != len(params) {
		return "", false
	}
	args := make([]any, len(params))
	for i, p := range params {
		args[i] = p
		if i < len(inner) && inner[i] != nil {
			args[i] = messageText(tr, inner[i])
		}
	}
	next := 0 // the parameter a verb without an index takes, as in fmt
	for _, m := range verbs {
		i := next
		if m[2] >= 0 {
			n, _ := strconv.Atoi(text[m[2]+1 : m[3]-1])
			i = n - 1
		}
		next = i + 1
		if i < 0 || i >= len(params) || !strings.HasSuffix(text[:m[0]], "“") || !strings.HasPrefix(text[m[1]:], "”") {
			continue
		}
		for _, vocab := range []string{"vmstate.", "volstate.", "vmdesired.", "migphase.", "diskstate.", "repstate.", "qemustate.", "kind.", "quota."} {
			if w, ok := tr.msgs[vocab+params[i]]; ok {
				args[i] = w
				break
			}
		}
	}
	return fmt.Sprintf(text, args...), true
}

// ruleError returns the message key of identity's errors that name one rule
// the input broke, so the whole message is in the reader's language.
func ruleError(err error) string {
	for _, e := range []struct {
		key string
		err error
	}{
		{"err.password_short", identity.ErrPasswordTooShort},
		{"err.password_long", identity.ErrPasswordTooLong},
		{"err.password_has_name", identity.ErrPasswordHasName},
		{"err.current_password_needed", identity.ErrCurrentPasswordNeeded},
		{"err.current_password_wrong", identity.ErrCurrentPasswordWrong},
	} {
		if errors.Is(err, e.err) {
			return e.key
		}
	}
	return ""
}

// storageError returns the label key and the sentinel of the object store's
// errors that carry no code: they describe the pool, not the request.
func storageError(err error) (key string, sentinel error) {
	for _, e := range []struct {
		key string
		err error
	}{
		{"err.no_space", storage.ErrNoSpace},
		{"err.storage_unavailable", storage.ErrUnavailable},
		{"err.incomplete", storage.ErrIncomplete},
		{"err.bad_digest", storage.ErrBadDigest},
	} {
		if errors.Is(err, e.err) {
			return e.key, e.err
		}
	}
	return "", nil
}

// httpStatus maps a service error code to the status a page load answers with.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, storage.ErrNoSpace):
		return http.StatusInsufficientStorage
	case errors.Is(err, storage.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, storage.ErrIncomplete), errors.Is(err, storage.ErrBadDigest):
		return http.StatusBadRequest
	}
	switch consensus.ErrorCode(err) {
	case consensus.CodeInvalid:
		return http.StatusBadRequest
	case consensus.CodeNotFound:
		return http.StatusNotFound
	case consensus.CodeForbidden:
		return http.StatusForbidden
	case identity.CodeUnauthenticated:
		return http.StatusUnauthorized
	case consensus.CodeAlreadyExists, consensus.CodeConflict:
		return http.StatusConflict
	case consensus.CodePreconditionFailed:
		return http.StatusPreconditionFailed
	case consensus.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// render writes a page. A failed render has already sent the status line,
// so it can only be logged.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store") // pages show names and tokens; keep them out of shared caches
	pushCleanURL(w, r)
	w.WriteHeader(status)
	if err := c.Render(r.Context(), w); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("render page", "path", r.URL.Path, "err", err)
	}
}

// failPage shows a page that could not be loaded because of err.
func (s *server) failPage(w http.ResponseWriter, r *http.Request, v *view, err error) {
	s.logErr(r, err)
	s.render(w, r, httpStatus(err), messagePage(v, v.T("error.title"), errorText(v.tr, err)))
}

// logErr logs errors a user cannot fix; a rejected request is already in
// the audit log. A full or broken pool is the operator's to fix; an upload
// the browser gave up on is nobody's.
func (s *server) logErr(r *http.Request, err error) {
	if key, _ := storageError(err); key != "" {
		if key == "err.no_space" || key == "err.storage_unavailable" {
			s.log.Warn("storage request failed", "path", r.URL.Path, "err", err)
		}
		return
	}
	if code := consensus.ErrorCode(err); code == "" || code == consensus.CodeUnavailable {
		s.log.Error("request failed", "path", r.URL.Path, "err", err)
	}
}

// formStatus is what a form re-rendered with an error answers with. htmx is
// configured to swap it in, like any other response.
const formStatus = http.StatusUnprocessableEntity

// adminNav says whether a page belongs in the top bar's Administration
// menu, which then shows as the current place.
func adminNav(nav string) bool {
	switch nav {
	case "users", "flavors", "hosts", "storage", "federation", "audit":
		return true
	}
	return false
}

// nameRefused says whether a create was refused for its name: taken, or
// against the rule for names (said next to the name field).
func nameRefused(err error) bool {
	var e *consensus.Error
	return errors.As(err, &e) && (e.Key == "name_rule" || e.Code == consensus.CodeAlreadyExists && strings.HasSuffix(e.Key, "_exists"))
}

// verb is a formatting verb of a catalogue's text; they take strings only.
var verb = regexp.MustCompile(`%(\[\d+\])?[a-z]`)

// keyedText says a message with a stable key (consensus.Errorm's, an audit
// entry's) whole in the reader's language, its parameters in place; false
// if the catalogue has no such text with as many parameters.
func keyedText(tr *translator, key string, params []string) (string, bool) {
	text, known := tr.msgs["msg."+key]
	if key == "" || !known || len(verb.FindAllString(text, -1)) != len(params) {
		return "", false
	}
	args := make([]any, len(params))
	for i, a := range params {
		args[i] = a
	}
	switch {
	case key == "quota_exceeded" && len(args) > 0:
		args[0] = tr.T("quota." + params[0]) // the quota row's name
	case key == "not_found" && len(args) > 0:
		if k, ok := tr.msgs["kind."+params[0]]; ok {
			args[0] = k // what was not found, in the reader's words
		}
	}
	return fmt.Sprintf(text, args...), true
}
