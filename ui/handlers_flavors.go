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
		in, label, field string
		out              *int64
	}{{f.VCPUs, "flavors.vcpus", "vcpus", &spec.VCPUs}, {f.RAMMiB, "flavors.ram", "ram_mib", &spec.RAMMiB}, {f.DiskGiB, "flavors.disk", "disk_gib", &spec.DiskGiB}} {
		x, err := strconv.ParseInt(n.in, 10, 64)
		if err != nil {
			f.ErrField, f.Err = n.field, v.Tf("common.bad_number", v.T(n.label))
			s.render(w, r, formStatus, flavorsPage(v, s.id.ListFlavors(), f))
			return
		}
		*n.out = x
	}
	if _, err := s.id.CreateFlavor(r.Context(), v.p, spec); err != nil {
		s.logErr(r, err)
		if nameRefused(err) {
			f.ErrField, f.Err = "name", errorText(v.tr, err)
		} else {
			v.err = errorText(v.tr, err)
		}
		s.render(w, r, formStatus, flavorsPage(v, s.id.ListFlavors(), f))
		return
	}
	s.redirect(w, r, "/flavors?created="+url.QueryEscape(f.Name))
}
