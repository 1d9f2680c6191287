package ui

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/cairnhq/cairn/hypervisor"
)

// imageAction is where an image's forms post to.
func imageAction(id, action string) string { return "/images/" + url.PathEscape(id) + "/" + action }

// visibilities are the choices of the visibility selects: publishing to
// every user takes a cluster admin, but an image already public keeps the
// choice so the select shows what is.
func visibilities(admin bool, current string) []string {
	out := []string{hypervisor.VisibilityPrivate, hypervisor.VisibilityProject}
	if admin || current == hypervisor.VisibilityPublic {
		out = append(out, hypervisor.VisibilityPublic)
	}
	return out
}

func osText(img *hypervisor.Image) string {
	return dash(strings.TrimSpace(img.OSType + " " + img.OSVersion))
}

// minText is an image's minimum disk and RAM, if it states any.
func minText(v *view, img *hypervisor.Image) string {
	if img.MinDiskGiB == 0 && img.MinRAMMiB == 0 {
		return "—"
	}
	return v.Tf("images.minimum_text", img.MinDiskGiB, img.MinRAMMiB)
}

// shortSum is enough of a checksum to compare by eye.
func shortSum(sum string) string {
	if len(sum) > 12 {
		return sum[:12] + "…"
	}
	return sum
}

func (s *server) imagesData(v *view, query string) imagesData {
	names, writable := s.projectNames(v)
	d := imagesData{Query: query, Projects: writable, Admin: v.admin()}
	for _, img := range s.images.List(v.p, query) {
		d.Images = append(d.Images, imageRow{Image: img, ProjectName: or(names[img.ProjectID], img.ProjectID), CanChange: hypervisor.CanChangeImage(v.p, &img)})
	}
	if len(writable) > 0 {
		d.Import.Project = writable[0].ID
	}
	return d
}

func (s *server) imagesUnavailable(w http.ResponseWriter, r *http.Request, v *view) bool {
	if s.images == nil {
		s.computeUnavailable(w, r, v)
		return true
	}
	return false
}

func (s *server) imagesPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "images"
	if s.imagesUnavailable(w, r, v) {
		return
	}
	q := r.URL.Query()
	d := s.imagesData(v, strings.TrimSpace(q.Get("q")))
	switch name := q.Get("name"); q.Get("done") {
	case "uploaded", "imported":
		v.flash = v.Tf("images.added", name)
	case "deleted":
		v.flash = v.Tf("images.deleted", name)
	case "visibility":
		v.flash = v.Tf("images.changed", name)
	}
	s.render(w, r, http.StatusOK, imagesPage(v, d))
}

// imagesFormError shows the image list again with err above it.
func (s *server) imagesFormError(w http.ResponseWriter, r *http.Request, v *view, f *importForm, err error) {
	s.logErr(r, err)
	if f != nil && nameRefused(err) {
		f.NameErr = errorText(v.tr, err) // next to the name
	} else {
		v.err = errorText(v.tr, err)
	}
	d := s.imagesData(v, "")
	if f != nil {
		d.Import = *f
	}
	s.render(w, r, formStatus, imagesPage(v, d))
}

// imagesDone is the list after a change, with its message.
func imagesDone(done, name string) string {
	return "/images?" + url.Values{"done": {done}, "name": {name}}.Encode()
}

// uploadImage stores the request body as an image; its attributes are
// query parameters. The images page's script sends the file as the raw
// body, so it streams to the service's spool file. Like a bucket upload,
// the answer is plain text; Location is the list to load.
func (s *server) uploadImage(w http.ResponseWriter, r *http.Request, v *view) {
	if s.images == nil {
		plainText(w, http.StatusServiceUnavailable, v.T("vms.unavailable"))
		return
	}
	if r.ContentLength < 0 {
		plainText(w, http.StatusLengthRequired, v.T("objects.no_length"))
		return
	}
	q := r.URL.Query()
	spec := hypervisor.ImageSpec{Name: strings.TrimSpace(q.Get("name")), Project: q.Get("project"),
		Visibility: q.Get("visibility"), OSType: q.Get("os_type")}
	err := s.images.CheckRoom(r.Context(), v.p, spec, r.ContentLength)
	var img *hypervisor.Image
	if err == nil {
		img, err = s.images.Upload(r.Context(), v.p, spec, r.Body)
	}
	if err != nil {
		s.logErr(r, err)
		plainText(w, httpStatus(err), errorText(v.tr, err))
		return
	}
	w.Header().Set("Location", imagesDone("uploaded", img.Name))
	plainText(w, http.StatusCreated, v.Tf("images.added", img.Name))
}

// importImage fetches an image from a URL on the hospital's network. The
// request lasts as long as the download; the form's button is disabled
// meanwhile.
func (s *server) importImage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "images"
	if s.imagesUnavailable(w, r, v) {
		return
	}
	f := importForm{Name: strings.TrimSpace(r.PostFormValue("name")), URL: strings.TrimSpace(r.PostFormValue("url")),
		Project: r.PostFormValue("project"), Visibility: r.PostFormValue("visibility"), OSType: r.PostFormValue("os_type")}
	spec := hypervisor.ImageSpec{Name: f.Name, Project: f.Project, Visibility: f.Visibility, OSType: f.OSType}
	img, err := s.images.Import(r.Context(), v.p, spec, f.URL)
	if err != nil {
		s.imagesFormError(w, r, v, &f, err)
		return
	}
	s.redirect(w, r, imagesDone("imported", img.Name))
}

func (s *server) setImageVisibility(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "images"
	if s.imagesUnavailable(w, r, v) {
		return
	}
	vis := r.PostFormValue("visibility")
	img, err := s.images.Update(r.Context(), v.p, r.PathValue("image"), nil, &vis, formVersion(r))
	if err != nil {
		s.imagesFormError(w, r, v, nil, err)
		return
	}
	s.redirect(w, r, imagesDone("visibility", img.Name))
}

func (s *server) deleteImage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "images"
	if s.imagesUnavailable(w, r, v) {
		return
	}
	ref := r.PathValue("image")
	name := ref
	if img, err := s.images.Get(v.p, ref); err == nil {
		name = img.Name
	}
	if err := s.images.Delete(r.Context(), v.p, ref, formVersion(r)); err != nil {
		s.imagesFormError(w, r, v, nil, err)
		return
	}
	s.redirect(w, r, imagesDone("deleted", name))
}
