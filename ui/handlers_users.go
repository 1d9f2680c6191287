package ui

import (
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
)

func (s *server) userList(v *view) []identity.User {
	us := s.id.ListUsers(v.p)
	sort.Slice(us, func(i, j int) bool { return us[i].Name < us[j].Name })
	return us
}

func (s *server) users(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "users"
	if name := r.URL.Query().Get("created"); name != "" {
		v.flash = v.Tf("users.created", name)
	}
	if name := r.URL.Query().Get("reset"); name != "" {
		v.flash = v.Tf("users.reset_done", name)
	}
	s.render(w, r, http.StatusOK, usersPage(v, s.userList(v), userForm{}))
}

func (s *server) createUser(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "users"
	f := userForm{
		Name:         strings.TrimSpace(r.PostFormValue("name")),
		DisplayName:  strings.TrimSpace(r.PostFormValue("display_name")),
		ClusterAdmin: r.PostFormValue("cluster_admin") == "true",
	}
	pw := r.PostFormValue("password")
	if pw != r.PostFormValue("password2") {
		v.err = v.T("err.password_mismatch")
		s.render(w, r, formStatus, usersPage(v, s.userList(v), f))
		return
	}
	spec := identity.UserSpec{Name: f.Name, DisplayName: f.DisplayName, Password: pw, ClusterAdmin: f.ClusterAdmin}
	if _, err := s.id.CreateUser(r.Context(), v.p, spec); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, usersPage(v, s.userList(v), f))
		return
	}
	s.redirect(w, r, "/users?created="+url.QueryEscape(f.Name))
}

// resetPassword sets another user's password (cluster admins); the service
// revokes that user's sessions and API tokens with it.
func (s *server) resetPassword(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "users"
	name := strings.TrimSpace(r.PostFormValue("user"))
	pw := r.PostFormValue("password")
	if pw != r.PostFormValue("password2") {
		v.err = v.T("err.password_mismatch")
		s.render(w, r, formStatus, usersPage(v, s.userList(v), userForm{}))
		return
	}
	if _, err := s.id.UpdateUser(r.Context(), v.p, name, identity.UserUpdate{Password: &pw}, 0); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, usersPage(v, s.userList(v), userForm{}))
		return
	}
	s.redirect(w, r, "/users?reset="+url.QueryEscape(name))
}
