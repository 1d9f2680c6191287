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

// projectURL links a project by name: names are unique and URL-safe, and
// staff recognise them in the address bar.
func projectURL(name string) templ.SafeURL {
	return templ.URL("/projects/" + url.PathEscape(name))
}

func (s *server) projectList(v *view) []identity.Project {
	ps := s.id.ListProjects(v.p)
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}

func (s *server) projects(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "projects"
	if name := r.URL.Query().Get("created"); name != "" {
		v.flash = v.Tf("projects.created", name)
	} else if name := r.URL.Query().Get("deleted"); name != "" {
		v.flash = v.Tf("projects.deleted", name)
	}
	s.render(w, r, http.StatusOK, projectsPage(v, s.projectList(v), projectForm{}))
}

func (s *server) createProject(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "projects"
	f := projectForm{Name: strings.TrimSpace(r.PostFormValue("name")), Description: strings.TrimSpace(r.PostFormValue("description"))}
	if _, err := s.id.CreateProject(r.Context(), v.p, identity.ProjectSpec{Name: f.Name, Description: f.Description}); err != nil {
		s.logErr(r, err)
		if nameRefused(err) {
			f.NameErr = errorText(v.tr, err)
		} else {
			v.err = errorText(v.tr, err)
		}
		s.render(w, r, formStatus, projectsPage(v, s.projectList(v), f))
		return
	}
	s.redirect(w, r, string(projectURL(f.Name))+"?created="+url.QueryEscape(f.Name)) // the new project's own page
}

// projectData loads the project page; err is set only when the project
// itself cannot be shown.
func (s *server) projectData(v *view, ref string) (projectData, error) {
	pr, err := s.id.GetProject(v.p, ref)
	if err != nil {
		return projectData{}, err
	}
	members, err := s.id.ListMembers(v.p, pr.ID)
	if err != nil {
		return projectData{}, err
	}
	d := projectData{Project: *pr, Members: members, CanManage: v.p.Can(pr.ID, identity.RoleAdmin), Member: memberForm{Role: string(identity.RoleMember)}}
	if d.CanManage && v.admin() { // others may not list users: they type a name
		d.Users = s.userList(v)
	}
	q, err := s.id.GetQuota(v.p, pr.ID)
	if err != nil {
		d.QuotaErr = errorText(v.tr, err)
		return d, nil
	}
	d.Quota, d.QuotaVer = s.quotaRows(q), q.Version
	return d, nil
}

// quotaRows lays a quota out in a fixed, readable order, marking the rows
// of features this appliance does not run.
func (s *server) quotaRows(q *identity.Quota) []quotaRow {
	l, u := q.Limits, q.Usage
	rows := []quotaRow{
		{Key: "quota.instances", Field: "instances", Usage: u.Instances, Limit: l.Instances},
		{Key: "quota.vcpus", Field: "vcpus", Usage: u.VCPUs, Limit: l.VCPUs},
		{Key: "quota.ram_mib", Field: "ram_mib", Usage: u.RAMMiB, Limit: l.RAMMiB},
		{Key: "quota.disk_gib", Field: "disk_gib", Usage: u.DiskGiB, Limit: l.DiskGiB},
		{Key: "quota.object_gib", Field: "object_gib", Usage: u.ObjectGiB, Limit: l.ObjectGiB},
		{Key: "quota.floating_ips", Field: "floating_ips", Usage: u.FloatingIPs, Limit: l.FloatingIPs},
		{Key: "quota.objects", Field: "objects", Usage: u.Objects, Limit: l.Objects},
		{Key: "quota.volumes", Field: "volumes", Usage: u.Volumes, Limit: l.Volumes},
		{Key: "quota.volume_gib", Field: "volume_gib", Usage: u.VolumeGiB, Limit: l.VolumeGiB},
		{Key: "quota.snapshots", Field: "snapshots", Usage: u.Snapshots, Limit: l.Snapshots},
		{Key: "quota.networks", Field: "networks", Usage: u.Networks, Limit: l.Networks},
		{Key: "quota.ports", Field: "ports", Usage: u.Ports, Limit: l.Ports},
		{Key: "quota.routers", Field: "routers", Usage: u.Routers, Limit: l.Routers},
	}
	unused := map[string]bool{}
	for _, f := range []struct {
		off    bool
		fields []string
	}{
		{s.compute == nil, []string{"instances", "vcpus", "ram_mib", "disk_gib"}},
		{s.objects == nil, []string{"object_gib", "objects"}},
		{s.volumes == nil, []string{"volumes", "volume_gib", "snapshots"}},
		{s.networks == nil, []string{"networks", "ports", "routers", "floating_ips"}},
	} {
		for _, name := range f.fields {
			unused[name] = f.off
		}
	}
	for i := range rows {
		rows[i].Input = itoa(rows[i].Limit)
		// Hidden only while nothing uses it: usage always shows.
		rows[i].Unused = unused[rows[i].Field] && rows[i].Usage == 0
	}
	return rows
}

func (s *server) project(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "projects"
	d, err := s.projectData(v, r.PathValue("ref"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if name := r.URL.Query().Get("created"); name == d.Project.Name {
		v.flash = v.Tf("projects.created", name)
	}
	switch r.URL.Query().Get("saved") {
	case "member":
		v.flash = v.T("members.saved")
	case "quota":
		v.flash = v.T("quota.saved")
	case "removed":
		v.flash = v.Tf("members.removed", r.URL.Query().Get("name"))
	}
	s.render(w, r, http.StatusOK, projectPage(v, d))
}

func (s *server) setMember(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "projects"
	d, err := s.projectData(v, r.PathValue("ref"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	f := memberForm{User: strings.TrimSpace(r.PostFormValue("user")), Role: r.PostFormValue("role")}
	if err := s.id.SetMember(r.Context(), v.p, d.Project.ID, f.User, identity.Role(f.Role)); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		d.Member = f
		s.render(w, r, formStatus, projectPage(v, d))
		return
	}
	s.redirect(w, r, string(projectURL(d.Project.Name))+"?saved=member")
}

func (s *server) setQuota(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "projects"
	d, err := s.projectData(v, r.PathValue("ref"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if d.QuotaErr != "" {
		// Without the current quota there is nothing sound to overwrite.
		v.err = d.QuotaErr
		s.render(w, r, formStatus, projectPage(v, d))
		return
	}
	limits, bad := parseLimits(r, d.Quota)
	if bad != "" {
		v.err = v.Tf("err.detail", v.T("err.invalid_argument"), v.Tf("common.bad_number", v.T(bad)))
		s.render(w, r, formStatus, projectPage(v, d))
		return
	}
	version, _ := strconv.ParseUint(r.PostFormValue("version"), 10, 64)
	if _, err := s.id.SetQuota(r.Context(), v.p, d.Project.ID, limits, version); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		if identity.IsCode(err, consensus.CodePreconditionFailed) {
			// Someone changed the quota meanwhile: show theirs, not what was typed.
			v.err = v.T("quota.changed")
			if fresh, ferr := s.projectData(v, d.Project.ID); ferr == nil {
				d = fresh
			}
		}
		s.render(w, r, formStatus, projectPage(v, d))
		return
	}
	s.redirect(w, r, string(projectURL(d.Project.Name))+"?saved=quota")
}

// parseLimits reads the quota form into rows (so it can be shown again as
// typed) and into Resources. bad is the label key of the first field that is
// not a whole number.
func parseLimits(r *http.Request, rows []quotaRow) (identity.Resources, string) {
	vals := map[string]int64{}
	bad := ""
	for i := range rows {
		in := strings.TrimSpace(r.PostFormValue(rows[i].Field))
		rows[i].Input = in
		n, err := strconv.ParseInt(in, 10, 64)
		if err != nil && bad == "" {
			bad = rows[i].Key
		}
		vals[rows[i].Field] = n
	}
	return identity.Resources{
		Instances: vals["instances"], VCPUs: vals["vcpus"], RAMMiB: vals["ram_mib"],
		DiskGiB: vals["disk_gib"], ObjectGiB: vals["object_gib"], FloatingIPs: vals["floating_ips"], Objects: vals["objects"],
		Volumes: vals["volumes"], VolumeGiB: vals["volume_gib"], Snapshots: vals["snapshots"],
		Networks: vals["networks"], Ports: vals["ports"], Routers: vals["routers"],
	}, bad
}

func uitoa(n uint64) string { return strconv.FormatUint(n, 10) }

func projectAction(name, action string) string {
	return "/projects/" + url.PathEscape(name) + "/" + action
}

func memberRemove(project, user string) string {
	return "/projects/" + url.PathEscape(project) + "/members/" + url.PathEscape(user) + "/remove"
}

// userLabel is a user as a picker shows them: name, and full name if any.
func userLabel(u identity.User) string {
	if u.DisplayName == "" {
		return u.Name
	}
	return u.Name + " (" + u.DisplayName + ")"
}

func (s *server) removeMember(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "projects"
	d, err := s.projectData(v, r.PathValue("ref"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	user := r.PathValue("user")
	if err := s.id.RemoveMember(r.Context(), v.p, d.Project.ID, user); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, projectPage(v, d))
		return
	}
	s.redirect(w, r, string(projectURL(d.Project.Name))+"?saved=removed&name="+url.QueryEscape(user))
}

// deleteProject deletes a project that holds nothing; the refusal says
// what it still holds.
func (s *server) deleteProject(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "projects"
	d, err := s.projectData(v, r.PathValue("ref"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if err := s.id.DeleteProject(r.Context(), v.p, d.Project.ID, 0); err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, projectPage(v, d))
		return
	}
	s.redirect(w, r, "/projects?deleted="+url.QueryEscape(d.Project.Name))
}
