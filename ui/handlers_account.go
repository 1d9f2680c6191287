package ui

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
)

// accountTokens lists the caller's sessions and API tokens (everyone's for
// a cluster admin), newest first, with their owners' names.
func (s *server) accountTokens(v *view) []tokenRow {
	names := map[string]string{}
	for _, u := range s.id.ListUsers(v.p) {
		names[u.ID] = u.Name
	}
	var rows []tokenRow
	for _, t := range s.id.ListTokens(v.p) {
		rows = append(rows, tokenRow{Token: t, User: cmp.Or(names[t.UserID], t.UserID), Current: t.ID == v.p.TokenID})
	}
	slices.SortFunc(rows, func(a, b tokenRow) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return rows
}

func (s *server) account(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "account"
	switch r.URL.Query().Get("done") {
	case "password":
		v.flash = v.T("account.password_changed")
	case "revoked":
		v.flash = v.T("account.revoked")
	case "lifetime":
		v.flash = v.T("account.lifetime_saved")
	}
	s.render(w, r, http.StatusOK, accountPage(v, s.accountTokens(v), s.id.Settings()))
}

// changePassword changes the caller's own password; the service revokes
// their other sessions and tokens with it.
func (s *server) changePassword(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "account"
	pw, cur := r.PostFormValue("password"), r.PostFormValue("current")
	if pw != r.PostFormValue("password2") {
		v.err = v.T("err.password_mismatch")
		s.render(w, r, formStatus, accountPage(v, s.accountTokens(v), s.id.Settings()))
		return
	}
	if _, err := s.id.UpdateUser(r.Context(), v.p, v.p.User.ID, identity.UserUpdate{Password: &pw, CurrentPassword: &cur}, 0); err != nil {
		s.logErr(r, err)
		status := formStatus
		var te *identity.ThrottledError
		if errors.As(err, &te) {
			status = http.StatusTooManyRequests
			w.Header().Set("Retry-After", strconv.Itoa(te.RetrySeconds()))
			v.err = v.Tf("login.throttled", te.RetrySeconds())
		} else {
			v.err = errorText(v.tr, err)
		}
		s.render(w, r, status, accountPage(v, s.accountTokens(v), s.id.Settings()))
		return
	}
	s.redirect(w, r, "/account?done=password")
}

func (s *server) revokeToken(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "account"
	if err := s.id.RevokeToken(r.Context(), v.p, r.PathValue("id")); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, httpStatus(err), accountPage(v, s.accountTokens(v), s.id.Settings()))
		return
	}
	s.redirect(w, r, "/account?done=revoked")
}

// setTokenLifetime sets the cluster's maximum API token lifetime, in days
// (cluster admins).
func (s *server) setTokenLifetime(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "account"
	days, err := strconv.ParseInt(strings.TrimSpace(r.PostFormValue("days")), 10, 64)
	version, verr := strconv.ParseUint(r.PostFormValue("version"), 10, 64)
	if err != nil || verr != nil || days < 1 || days > 3650 {
		v.err = v.Tf("common.bad_number", v.T("account.lifetime_days"))
		s.render(w, r, formStatus, accountPage(v, s.accountTokens(v), s.id.Settings()))
		return
	}
	st := s.id.Settings()
	st.MaxTokenLifetimeSeconds = days * 86400
	if _, err := s.id.SetSettings(r.Context(), v.p, st, version); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, accountPage(v, s.accountTokens(v), s.id.Settings()))
		return
	}
	s.redirect(w, r, "/account?done=lifetime")
}
