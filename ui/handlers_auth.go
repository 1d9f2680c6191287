package ui

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
)

// setupPage shows the first-run form while no cluster admin exists.
func (s *server) setupPage(w http.ResponseWriter, r *http.Request) {
	if !s.id.SetupNeeded() {
		s.redirect(w, r, "/login")
		return
	}
	v := s.newView(r, s.translator(r))
	v.csrf = s.csrfToken(csrfPre, preSession(w, r))
	s.render(w, r, http.StatusOK, setupPage(v, setupForm{}))
}

// setupSubmit creates the first cluster admin and signs them in, so the
// person at the console goes straight on to the dashboard.
func (s *server) setupSubmit(w http.ResponseWriter, r *http.Request) {
	if !s.id.SetupNeeded() {
		s.redirect(w, r, "/login")
		return
	}
	v := s.newView(r, s.translator(r))
	pre := preSessionValue(r)
	if !s.csrfOK(r, csrfPre, pre) {
		v.csrf = s.csrfToken(csrfPre, preSession(w, r))
		s.refuseCSRF(w, r, v)
		return
	}
	v.csrf = s.csrfToken(csrfPre, pre)
	f := setupForm{Code: strings.TrimSpace(r.PostFormValue("code")), Username: strings.TrimSpace(r.PostFormValue("username"))}
	pw := r.PostFormValue("password")
	if pw != r.PostFormValue("password2") {
		v.err = v.T("err.password_mismatch")
		s.render(w, r, formStatus, setupPage(v, f))
		return
	}
	if _, err := s.id.Setup(r.Context(), f.Code, f.Username, pw); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, setupPage(v, f))
		return
	}
	s.log.Info("first cluster admin created", "user", f.Username, "remote", r.RemoteAddr)
	token, t, err := s.id.Login(r.Context(), f.Username, pw)
	if err != nil {
		// The admin exists; they can sign in by hand.
		s.logErr(r, err)
		s.redirect(w, r, "/login")
		return
	}
	setSession(w, token, t.ExpiresAt)
	s.redirect(w, r, "/dashboard")
}

func (s *server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.id.SetupNeeded() {
		s.redirect(w, r, "/setup")
		return
	}
	next := safeNext(r.URL.Query().Get("next"))
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if _, err := s.id.Authenticate(r.Context(), c.Value); err == nil {
			s.redirect(w, r, next)
			return
		}
	}
	v := s.newView(r, s.translator(r))
	v.csrf = s.csrfToken(csrfPre, preSession(w, r))
	if r.URL.Query().Get("done") == "signed_out" {
		v.flash = v.T("login.signed_out")
	}
	s.render(w, r, http.StatusOK, loginPage(v, "", next))
}

func (s *server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	v := s.newView(r, s.translator(r))
	pre := preSessionValue(r)
	if !s.csrfOK(r, csrfPre, pre) {
		v.csrf = s.csrfToken(csrfPre, preSession(w, r))
		s.refuseCSRF(w, r, v)
		return
	}
	v.csrf = s.csrfToken(csrfPre, pre)
	user := strings.TrimSpace(r.PostFormValue("username"))
	next := safeNext(r.PostFormValue("next"))
	token, t, err := s.id.Login(r.Context(), user, r.PostFormValue("password"))
	if err != nil {
		s.logErr(r, err)
		status := formStatus
		var te *identity.ThrottledError
		switch {
		case errors.As(err, &te):
			status = http.StatusTooManyRequests
			w.Header().Set("Retry-After", strconv.Itoa(te.RetrySeconds()))
			v.err = v.Tf("login.throttled", te.RetrySeconds())
		case errors.Is(err, identity.ErrBusy):
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
			v.err = v.T("login.busy")
		case identity.IsCode(err, identity.CodeUserDisabled):
			v.err = v.T("login.disabled")
		case identity.IsCode(err, identity.CodeUnauthenticated):
			v.err = v.T("login.failed")
		default:
			v.err = errorText(v.tr, err)
		}
		s.render(w, r, status, loginPage(v, user, next))
		return
	}
	setSession(w, token, t.ExpiresAt)
	s.redirect(w, r, next)
}

// logout revokes the session token on the cluster, not just the cookie, so a
// copied cookie stops working too.
func (s *server) logout(w http.ResponseWriter, r *http.Request, v *view) {
	if err := s.id.Logout(r.Context(), v.p); err != nil {
		s.logErr(r, err)
	}
	clearCookie(w, sessionCookie)
	s.redirect(w, r, "/login?done=signed_out")
}
