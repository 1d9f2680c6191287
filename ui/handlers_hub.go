package ui

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/appliance/federation"
)

// The hub's pages (Deps.Hub set): what a hub user may see of the sites,
// as their grants give it.

func (s *server) sitesData(v *view) sitesData {
	d := sitesData{Sites: s.hub.ListSites(v.p, federation.SiteFilter{})}
	slices.SortFunc(d.Sites, func(a, b federation.SiteStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, st := range d.Sites {
		if !slices.Contains(d.Groups, st.Group) {
			d.Groups = append(d.Groups, st.Group)
		}
	}
	slices.Sort(d.Groups) // "" (no group) first
	return d
}

func (s *server) sitesPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "sites"
	s.render(w, r, http.StatusOK, sitesPage(v, s.sitesData(v)))
}

func (s *server) sitesFragment(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusOK, sitesPanel(v, s.sitesData(v)))
}

func (s *server) sitePage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "sites"
	d, err := s.hub.SiteDetail(v.p, r.PathValue("site"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, sitePage(v, d))
}

func (s *server) pushesData(v *view) pushesData {
	sd := s.sitesData(v)
	d := pushesData{Images: s.hub.Images(), Pushes: s.hub.Distributions(v.p, ""), Sites: sd.Sites, Groups: sd.Groups}
	slices.SortFunc(d.Pushes, func(a, b federation.Distribution) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.Site, b.Site)) // newest first, by site
	})
	return d
}

func (s *server) pushesPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "pushes"
	if r.URL.Query().Get("pushed") != "" {
		v.flash = v.T("pushes.started")
	}
	s.render(w, r, http.StatusOK, pushesPage(v, s.pushesData(v)))
}

func (s *server) pushesFragment(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusOK, pushesPanel(v, s.pushesData(v)))
}

// pushImage starts an image's push to a site or a group.
func (s *server) pushImage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "pushes"
	f := pushForm{Image: r.PostFormValue("image"), Target: r.PostFormValue("target"), Project: strings.TrimSpace(r.PostFormValue("project")), Rate: strings.TrimSpace(r.PostFormValue("rate_kib"))}
	again := func(msg string) {
		d := s.pushesData(v)
		f.Err, d.Form = msg, f
		s.render(w, r, formStatus, pushesPage(v, d))
	}
	spec := federation.PushSpec{Project: f.Project}
	if f.Rate != "" {
		n, err := strconv.ParseInt(f.Rate, 10, 64)
		if err != nil || n < 0 {
			again(v.Tf("common.bad_number", v.T("pushes.rate")))
			return
		}
		spec.RateKiB = n
	}
	switch kind, name, _ := strings.Cut(f.Target, ":"); kind {
	case "group":
		spec.Groups = []string{name}
	case "site":
		spec.Sites = []string{name}
	default:
		again(v.T("pushes.no_target"))
		return
	}
	if _, err := s.hub.PushImage(r.Context(), v.p, f.Image, spec); err != nil {
		s.logErr(r, err)
		again(errorText(v.tr, err))
		return
	}
	s.redirect(w, r, "/pushes?pushed=1")
}

// The site's federation page (Deps.Member set): cluster admins join a
// hub, see the session and leave.

func (s *server) federationPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "federation"
	if !v.admin() {
		s.render(w, r, http.StatusForbidden, messagePage(v, v.T("federation.title"), v.T("federation.admins_only")))
		return
	}
	switch {
	case r.URL.Query().Get("joined") != "":
		v.flash = v.T("federation.joined")
	case r.URL.Query().Get("left") != "":
		v.flash = v.T("federation.left")
	}
	s.render(w, r, http.StatusOK, federationPage(v, s.member.Status(), joinForm{}))
}

func (s *server) joinHub(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "federation"
	if !v.admin() {
		s.render(w, r, http.StatusForbidden, messagePage(v, v.T("federation.title"), v.T("federation.admins_only")))
		return
	}
	f := joinForm{HubURL: strings.TrimSpace(r.PostFormValue("hub_url"))}
	if _, err := s.member.Join(r.Context(), v.p, f.HubURL, strings.TrimSpace(r.PostFormValue("token"))); err != nil {
		s.logErr(r, err)
		f.Err = errorText(v.tr, err)
		s.render(w, r, formStatus, federationPage(v, s.member.Status(), f))
		return
	}
	s.redirect(w, r, "/federation?joined=1")
}

func (s *server) leaveHub(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "federation"
	if !v.admin() {
		s.render(w, r, http.StatusForbidden, messagePage(v, v.T("federation.title"), v.T("federation.admins_only")))
		return
	}
	// Done whatever the browser does meanwhile: the hub may have been
	// told already.
	if err := s.member.Leave(context.WithoutCancel(r.Context()), v.p); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, federationPage(v, s.member.Status(), joinForm{}))
		return
	}
	s.redirect(w, r, "/federation?left=1")
}
