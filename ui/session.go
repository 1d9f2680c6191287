package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/cairnhq/cairn/appliance/identity"
)

// Cookie names. The __Host- prefix makes browsers refuse the cookie unless it
// is Secure, has Path=/ and no Domain, so a sibling host cannot plant one.
const (
	sessionCookie = "__Host-cairn-session"
	preCookie     = "__Host-cairn-pre" // binds the CSRF token of the login and setup forms
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token" // the same token, sent by scripts whose body is not a form (uploads)
)

// CSRF token kinds: a token minted for the login form is never valid for a
// signed-in form, and the other way round.
const (
	csrfPre     = "pre"
	csrfSession = "session"
)

// maxFormBytes bounds a form body; the largest form (quota) is far smaller.
const maxFormBytes = 64 << 10

// authedHandler serves a page for a signed-in user.
type authedHandler func(w http.ResponseWriter, r *http.Request, v *view)

// authed resolves the session cookie to a principal on every request, so a
// revoked or expired token stops working at once, and checks the CSRF token
// of every POST.
func (s *server) authed(h authedHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr := s.translator(r)
		if s.id.SetupNeeded() {
			s.redirect(w, r, "/setup")
			return
		}
		c, err := r.Cookie(sessionCookie)
		if err != nil || c.Value == "" {
			s.toLogin(w, r)
			return
		}
		p, err := s.id.Authenticate(r.Context(), c.Value)
		if identity.IsCode(err, identity.CodeUnauthenticated) {
			clearCookie(w, sessionCookie)
			s.toLogin(w, r)
			return
		}
		if err != nil {
			// The cluster cannot answer (no leader, say): sending the user
			// to the login page would only make them think they were logged out.
			s.failPage(w, r, s.newView(r, tr), err)
			return
		}
		v := s.newView(r, tr)
		v.p = p
		v.csrf = s.csrfToken(csrfSession, c.Value)
		if r.Method == http.MethodPost && !s.csrfOK(r, csrfSession, c.Value) {
			s.refuseCSRF(w, r, v)
			return
		}
		h(w, r, v)
	})
}

// toLogin sends an unauthenticated request to the login page. An htmx request
// (the dashboard refresh, say) would otherwise swap the login page into a
// fragment, and a script's upload would follow the redirect blindly, so
// both are told to load the page instead.
func (s *server) toLogin(w http.ResponseWriter, r *http.Request) {
	target := "/login"
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		target += "?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	if r.Header.Get("HX-Request") == "true" || r.Header.Get(csrfHeader) != "" {
		w.Header().Set("HX-Redirect", target)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	s.redirect(w, r, target)
}

// redirect answers with 303 See Other, so a POST is followed by a GET.
func (s *server) redirect(w http.ResponseWriter, r *http.Request, target string) {
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// safeNext keeps only a path on this site, so ?next= cannot send a user
// elsewhere after login. Browsers drop tabs and newlines from URLs and read
// '\\' as '/', so "/\t/evil.com" and "/\\evil.com" are "//evil.com" to them:
// anything with a control character or a backslash is refused outright, and so
// is a path that only decodes to "//" ("/%2F%2Fevil"), in case something on
// the way decodes it.
func safeNext(next string) string {
	const home = "/dashboard"
	if next == "" || len(next) > 2048 || hasBadRune(next) || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" ||
		!strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") || hasBadRune(u.Path) {
		return home
	}
	return next
}

func hasBadRune(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r == '\\' || unicode.IsControl(r) })
}

// csrfToken derives a form token from the session (or pre-session) secret.
// The key is random per process, so tokens cannot be computed elsewhere; after
// a restart old pages need a reload, which the refusal page says.
func (s *server) csrfToken(kind, binding string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(binding))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfOK checks the token a form posted, or a script sent in the
// X-CSRF-Token header, against the one its binding implies. An upload's body
// is a file, never parsed as a form, so only the header counts for it.
func (s *server) csrfOK(r *http.Request, kind, binding string) bool {
	if binding == "" {
		return false
	}
	got := r.Header.Get(csrfHeader)
	if got == "" && !streamsBody(r) {
		got = r.PostFormValue(csrfField)
	}
	return hmac.Equal([]byte(got), []byte(s.csrfToken(kind, binding)))
}

// preSession returns the pre-session secret that binds the CSRF token of the
// login and setup forms, setting the cookie when there is none yet.
func preSession(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(preCookie); err == nil && len(c.Value) >= 22 {
		return c.Value
	}
	v := randomString(16)
	http.SetCookie(w, &http.Cookie{Name: preCookie, Value: v, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	return v
}

// preSessionValue returns the pre-session secret the request carries, or "".
func preSessionValue(r *http.Request) string {
	if c, err := r.Cookie(preCookie); err == nil {
		return c.Value
	}
	return ""
}

// setSession stores the bearer token in the session cookie until it expires.
func setSession(w http.ResponseWriter, token string, expires time.Time) {
	c := &http.Cookie{Name: sessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode}
	if !expires.IsZero() {
		c.Expires = expires
	}
	http.SetCookie(w, c)
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails since Go 1.24
	return base64.RawURLEncoding.EncodeToString(b)
}
