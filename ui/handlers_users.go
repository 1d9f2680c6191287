package ui

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
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
	switch q := r.URL.Query(); q.Get("done") {
	case "disable":
		v.flash = v.Tf("users.disabled_done", q.Get("name"))
	case "enable":
		v.flash = v.Tf("users.enabled_done", q.Get("name"))
	case "delete":
		v.flash = v.Tf("users.deleted_done", q.Get("name"))
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
		f.Password2Err = v.T("err.password_mismatch")
		s.render(w, r, formStatus, usersPage(v, s.userList(v), f))
		return
	}
	spec := identity.UserSpec{Name: f.Name, DisplayName: f.DisplayName, Password: pw, ClusterAdmin: f.ClusterAdmin}
	if _, err := s.id.CreateUser(r.Context(), v.p, spec); err != nil {
		s.logErr(r, err)
		switch msg := errorText(v.tr, err); {
		case ruleError(err) != "":
			f.PasswordErr = msg
		case nameRefused(err):
			f.NameErr = msg
		default:
			v.err = msg
		}
		s.render(w, r, formStatus, usersPage(v, s.userList(v), f))
		return
	}
	s.redirect(w, r, string(userURL(f.Name))+"?created="+url.QueryEscape(f.Name)) // the new user's own page
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

func userURL(name string) templ.SafeURL { return templ.URL("/users/" + url.PathEscape(name)) }

func userAction(name, action string) string {
	return "/users/" + url.PathEscape(name) + "/" + action
}

// user shows one user's page to cluster admins.
func (s *server) user(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "users"
	if !v.admin() {
		s.failPage(w, r, v, consensus.Errorf(consensus.CodeForbidden, "only cluster admins manage users"))
		return
	}
	u, err := s.id.GetUser(v.p, r.PathValue("user"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if r.URL.Query().Get("saved") != "" {
		v.flash = v.Tf("user.saved", u.Name)
	} else if r.URL.Query().Get("created") == u.Name {
		v.flash = v.Tf("users.created", u.Name)
	}
	s.render(w, r, http.StatusOK, userPage(v, *u, userEditForm{DisplayName: u.DisplayName, ClusterAdmin: u.ClusterAdmin}))
}

// editUser saves a user's full name and administrator flag, if the user
// is still as the form showed it (its version).
func (s *server) editUser(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "users"
	name := r.PathValue("user")
	f := userEditForm{DisplayName: strings.TrimSpace(r.PostFormValue("display_name")), ClusterAdmin: r.PostFormValue("cluster_admin") == "true"}
	version, _ := strconv.ParseUint(r.PostFormValue("version"), 10, 64)
	up := identity.UserUpdate{DisplayName: &f.DisplayName}
	if v.admin() {
		up.ClusterAdmin = &f.ClusterAdmin
	}
	u, err := s.id.UpdateUser(r.Context(), v.p, name, up, version)
	if err != nil {
		s.logErr(r, err)
		cur, gerr := s.id.GetUser(v.p, name)
		if gerr != nil {
			s.failPage(w, r, v, err)
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, userPage(v, *cur, f))
		return
	}
	s.redirect(w, r, "/users/"+url.PathEscape(u.Name)+"?saved=1")
}

// userAct disables, enables or deletes a user, from the list or their page.
func (s *server) userAct(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "users"
	name := r.PathValue("user")
	var err error
	switch action := r.PathValue("action"); action {
	case "disable", "enable":
		off := action == "disable"
		_, err = s.id.UpdateUser(r.Context(), v.p, name, identity.UserUpdate{Disabled: &off}, 0)
	case "delete":
		err = s.id.DeleteUser(r.Context(), v.p, name, 0)
	default:
		s.failPage(w, r, v, consensus.Errorf(consensus.CodeNotFound, "no user action %q", action))
		return
	}
	if err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, usersPage(v, s.userList(v), userForm{}))
		return
	}
	s.redirect(w, r, "/users?done="+r.PathValue("action")+"&name="+url.QueryEscape(name))
}
