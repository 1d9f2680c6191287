package ui

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
)

func (s *server) flavors(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "flavors"
	if name := r.URL.Query().Get("created"); name != "" {
		v.flash = v.Tf("flavors.created", name)
	}
	s.render(w, r, http.StatusOK, flavorsPage(v, s.id.ListFlavors(), flavorForm{}))
}

func (s *server) createFlavor(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "flavors"
	f := flavorForm{
		Name:      strings.TrimSpace(r.PostFormValue("name")),
		VCPUs:     strings.TrimSpace(r.PostFormValue("vcpus")),
		RAMMiB:    strings.TrimSpace(r.PostFormValue("ram_mib")),
		DiskGiB:   strings.TrimSpace(r.PostFormValue("disk_gib")),
		LocalDisk: r.PostFormValue("local_disk") == "true",
	}
	spec := identity.FlavorSpec{Name: f.Name, LocalDisk: f.LocalDisk}
	for _, n := range []struct {
		in, label string
		out       *int64
	}{{f.VCPUs, "flavors.vcpus", &spec.VCPUs}, {f.RAMMiB, "flavors.ram", &spec.RAMMiB}, {f.DiskGiB, "flavors.disk", &spec.DiskGiB}} {
		x, err := strconv.ParseInt(n.in, 10, 64)
		if err != nil {
			v.err = v.Tf("err.detail", v.T("err.invalid_argument"), v.Tf("common.bad_number", v.T(n.label)))
			s.render(w, r, formStatus, flavorsPage(v, s.id.ListFlavors(), f))
			return
		}
		*n.out = x
	}
	if _, err := s.id.CreateFlavor(r.Context(), v.p, spec); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, flavorsPage(v, s.id.ListFlavors(), f))
		return
	}
	s.redirect(w, r, "/flavors?created="+url.QueryEscape(f.Name))
}
