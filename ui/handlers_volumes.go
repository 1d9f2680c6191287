package ui

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/storage/volume"
)

// volumeURL links a volume's page.
func volumeURL(id string) templ.SafeURL { return templ.URL("/volumes/" + url.PathEscape(id)) }

// volumeAction is where a volume's forms post to.
func volumeAction(id, action string) string { return "/volumes/" + url.PathEscape(id) + "/" + action }

// volumeNameRE is the volume service's rule for names, checked here too so
// the message is in the reader's language.
var volumeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// volumeActions are the actions the action route accepts.
var volumeActions = []string{"attach", "detach", "extend", "delete", "snapshot", "clone"}

// redundancy says in plain words how many copies of a volume there are and
// whether they are all up to date; tech is the same in storage terms (the
// replicas and their states) for the details line.
type redundancy struct {
	Text  string
	Class string // the badge colour: ok, warn or bad
	Tech  string
}

// volumeRedundancy describes a volume's copies from its replicas' states.
func volumeRedundancy(v *view, vol *volume.Volume) redundancy {
	n := len(vol.Replicas)
	var tech []string
	behind, rebuilding := 0, 0
	for _, r := range vol.Replicas {
		tech = append(tech, r.Node+": "+r.State)
		switch r.State {
		case volume.ReplicaInSync:
		case volume.ReplicaRebuilding:
			behind++
			rebuilding++
		default:
			behind++
		}
	}
	d := redundancy{Tech: v.Tf("volred.tech", n, strings.Join(tech, ", "))}
	switch {
	case vol.State == volume.StateCreating:
		d.Text, d.Class = v.T("volred.creating"), "warn"
	case vol.State == volume.StateError:
		d.Text, d.Class = v.T("volred.error"), "bad"
	case n == 0:
		d.Text, d.Class = v.T("volred.none"), "bad"
	case behind == n:
		d.Text, d.Class = v.Tf("volred.all_behind", n), "bad"
	case behind > 0 && rebuilding > 0:
		d.Text, d.Class = v.Tf("volred.catching_up", behind, n), "warn"
	case behind > 0:
		d.Text, d.Class = v.Tf("volred.behind", behind, n), "warn"
	case n == 1:
		d.Text, d.Class = v.T("volred.single"), "warn"
	default:
		d.Text, d.Class = v.Tf("volred.ok", n), "ok"
	}
	return d
}

// volumeStateClass colours a volume's state badge.
func volumeStateClass(state string) string {
	switch state {
	case volume.StateAvailable, volume.StateInUse:
		return "ok"
	case volume.StateError:
		return "bad"
	case volume.StateCreating:
		return "warn"
	}
	return ""
}

// volumeRow is a volume with what the pages show for its references.
type volumeRow struct {
	volume.Volume
	ProjectName string
	VMName      string // the VM it is attached to, "" when none
	VM          *hypervisor.VM
	CanChange   bool
	Origin      string // what it was made from when a snapshot or a clone, in words
}

// canDetach: a data volume of a VM (a running one is asked to let go of
// it first) not already being let go of, or (for cluster admins) a volume
// exported on a node's host. The service checks again.
func (r volumeRow) canDetach(v *view) bool {
	a := r.Attachment
	switch {
	case !r.CanChange || a == nil:
		return false
	case a.VM == "":
		return v.admin()
	}
	return !a.Boot && !a.Firmware && !a.Detaching
}

// canDelete: only a detached volume that is not being made.
func (r volumeRow) canDelete() bool {
	return r.CanChange && r.Attachment == nil && r.State != volume.StateCreating
}

// canExtend: an available volume grows, attached or not (a running VM
// sees the new size at once).
func (r volumeRow) canExtend() bool {
	return r.CanChange && (r.State == volume.StateAvailable || r.State == volume.StateInUse)
}

// canAttach: a detached, available volume goes to a VM of its project.
func (r volumeRow) canAttach() bool {
	return r.CanChange && r.Attachment == nil && r.State == volume.StateAvailable
}

// volumeUnavailable answers when the agent runs without volumes.
func (s *server) volumeUnavailable(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusServiceUnavailable, messagePage(v, v.T("error.title"), v.T("volumes.unavailable")))
}

// vmIndex maps the VMs the viewer can see by ID.
func (s *server) vmIndex(v *view) map[string]*hypervisor.VM {
	out := map[string]*hypervisor.VM{}
	if s.compute == nil {
		return out
	}
	vms, err := s.compute.ListVMs(v.p, "")
	if err != nil {
		return out
	}
	for i := range vms {
		out[vms[i].ID] = &vms[i]
	}
	return out
}

func (s *server) volumeRow(v *view, vol volume.Volume, projects map[string]string, vms map[string]*hypervisor.VM) volumeRow {
	row := volumeRow{Volume: vol, ProjectName: or(projects[vol.ProjectID], vol.ProjectID), CanChange: v.p.Can(vol.ProjectID, identity.RoleMember)}
	if a := vol.Attachment; a != nil && a.VM != "" {
		row.VM = vms[a.VM]
		row.VMName = a.VM
		if row.VM != nil {
			row.VMName = row.VM.Name
		}
	}
	if vol.MadeFrom != nil {
		if o, err := s.volumes.Origin(v.p, vol.ID); err == nil {
			row.Origin = volumeOrigin(v, o)
		}
	}
	return row
}

func (s *server) volumesData(v *view, f volumeForm) (volumesData, error) {
	vols, err := s.volumes.List(v.p, "")
	if err != nil {
		return volumesData{}, err
	}
	projects, writable := s.projectNames(v)
	vms := s.vmIndex(v)
	d := volumesData{Projects: writable, Form: f, CanPlace: s.volumes.CanPlace()}
	for _, vol := range vols {
		d.Volumes = append(d.Volumes, s.volumeRow(v, vol, projects, vms))
	}
	d.Snapshots = s.snapshotRows(v, vols)
	if s.images != nil {
		for _, img := range s.images.List(v.p, "") {
			if img.DiskFormat != hypervisor.FormatISO {
				d.Images = append(d.Images, img)
			}
		}
	}
	if d.Form.Project == "" && len(writable) > 0 {
		d.Form.Project = writable[0].ID
	}
	return d, nil
}

func (s *server) volumesPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "volumes"
	if s.volumes == nil {
		s.volumeUnavailable(w, r, v)
		return
	}
	d, err := s.volumesData(v, volumeForm{})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	q := r.URL.Query()
	if name := q.Get("deleted"); name != "" {
		v.flash = v.Tf("volumes.deleted", name)
	}
	if key, ok := snapshotDone[q.Get("done")]; ok {
		v.flash = v.Tf(key, q.Get("name"))
	}
	s.render(w, r, http.StatusOK, volumesPage(v, d))
}

// volumesFragment is the htmx auto-refresh of the volume list.
func (s *server) volumesFragment(w http.ResponseWriter, r *http.Request, v *view) {
	if s.volumes == nil {
		s.volumeUnavailable(w, r, v)
		return
	}
	d, err := s.volumesData(v, volumeForm{})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, volumesPanel(v, d))
}

// volumeFragment is the htmx auto-refresh of a volume's facts. Once the
// volume is gone, htmx is sent to the list instead.
func (s *server) volumeFragment(w http.ResponseWriter, r *http.Request, v *view) {
	if s.volumes == nil {
		s.volumeUnavailable(w, r, v)
		return
	}
	d, err := s.volumeData(v, r.PathValue("volume"))
	if consensus.ErrorCode(err) == consensus.CodeNotFound {
		w.Header().Set("HX-Redirect", "/volumes")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, volumeFacts(v, d))
}

// parseGiB reads a size field: a whole number of GiB, at least 1.
func parseGiB(s string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n, err == nil && n >= 1
}

func (s *server) createVolume(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "volumes"
	if s.volumes == nil {
		s.volumeUnavailable(w, r, v)
		return
	}
	f := volumeForm{Name: strings.TrimSpace(r.PostFormValue("name")), Size: strings.TrimSpace(r.PostFormValue("size_gib")),
		Image: r.PostFormValue("image"), Project: r.PostFormValue("project")}
	again := func(field, msg string) {
		f.ErrField, f.Err = field, msg
		d, err := s.volumesData(v, f)
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		s.render(w, r, formStatus, volumesPage(v, d))
	}
	if !volumeNameRE.MatchString(f.Name) {
		again("name", v.T("volumes.name_bad"))
		return
	}
	size, ok := parseGiB(f.Size)
	if !ok {
		again("size", v.T("volumes.size_bad"))
		return
	}
	vol, err := s.volumes.Create(r.Context(), v.p, volume.Create{Name: f.Name, SizeGiB: size, Project: f.Project, Image: f.Image})
	if err != nil {
		s.logErr(r, err)
		again(createErrField(err), errorText(v.tr, err))
		return
	}
	s.redirect(w, r, string(volumeURL(vol.ID))+"?done=create")
}

// createErrField is the create form's field a refusal is about, so its
// message shows next to it: names clash or break the rules, sizes exceed
// the quota or the limits, images are not found or do not fit.
func createErrField(err error) string {
	var e *consensus.Error
	msg := ""
	if errors.As(err, &e) {
		msg = strings.ToLower(e.Message)
	}
	switch code := consensus.ErrorCode(err); {
	case code == consensus.CodeAlreadyExists:
		return "name"
	case code == consensus.CodeQuotaExceeded:
		return "size"
	case strings.Contains(msg, "image"):
		return "image"
	case strings.Contains(msg, "gib"):
		return "size"
	case strings.Contains(msg, "project"):
		return "project"
	case strings.Contains(msg, "name"):
		return "name"
	}
	return ""
}

// volumeData loads a volume's page.
func (s *server) volumeData(v *view, ref string) (volumeData, error) {
	vol, err := s.volumes.Get(v.p, ref)
	if err != nil {
		return volumeData{}, err
	}
	projects, _ := s.projectNames(v)
	vms := s.vmIndex(v)
	d := volumeData{Row: s.volumeRow(v, *vol, projects, vms), Image: dash(sourceImage(vol))}
	if s.images != nil && vol.Source != nil && vol.Source.Image != "" {
		if img, err := s.images.Get(v.p, vol.Source.Image); err == nil {
			d.Image = img.Name
		}
	}
	if snaps, err := s.volumes.ListSnapshots(v.p, "", vol.ID); err == nil {
		for _, sn := range snaps {
			d.Snapshots = append(d.Snapshots, sn.Name)
		}
	}
	for _, vm := range vms {
		if vm.ProjectID == vol.ProjectID && vm.Desired != hypervisor.DesiredDeleted && hypervisor.CanChangeVM(v.p, vm) {
			d.VMs = append(d.VMs, *vm)
		}
	}
	sort.Slice(d.VMs, func(i, j int) bool { return d.VMs[i].Name < d.VMs[j].Name })
	return d, nil
}

func sourceImage(vol *volume.Volume) string {
	if vol.Source == nil {
		return ""
	}
	return vol.Source.Image
}

func (s *server) volumePage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "volumes"
	if s.volumes == nil {
		s.volumeUnavailable(w, r, v)
		return
	}
	d, err := s.volumeData(v, r.PathValue("volume"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if done := r.URL.Query().Get("done"); done != "" {
		if a := d.Row.Attachment; done == "detach" && a != nil && a.Detaching {
			done = "detaching" // a running VM lets go of it first
		}
		v.flash = v.Tor("voldone."+done, "")
	}
	s.render(w, r, http.StatusOK, volumePage(v, d))
}

// volumeAction attaches, detaches, extends or deletes a volume. The
// buttons are offered only when the action is allowed; a refusal that
// happens anyway (the VM was started meanwhile) shows the service's reason
// next to the form it came from. The forms send no version: a volume's
// version moves with every change of a copy's state, and what the buttons
// ask for is meant whatever happened meanwhile (the service refuses what
// no longer makes sense, as it does for VMs' power buttons).
func (s *server) volumeAction(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "volumes"
	if s.volumes == nil {
		s.volumeUnavailable(w, r, v)
		return
	}
	ref, action := r.PathValue("volume"), r.PathValue("action")
	known := false
	for _, a := range volumeActions {
		known = known || a == action
	}
	if !known {
		s.notFound(w, r)
		return
	}
	again := func(field, msg, value string) {
		d, err := s.volumeData(v, ref)
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		d.ErrAction, d.Err, d.Typed = field, msg, value
		if !d.Row.CanChange {
			v.err = msg // there is no form to show it next to
		}
		s.render(w, r, formStatus, volumePage(v, d))
	}
	refused := func(err error, value string) {
		s.logErr(r, err)
		again(action, errorText(v.tr, err), value)
	}
	const ver = 0
	var (
		vol *volume.Volume
		err error
	)
	switch action {
	case "attach":
		vm := r.PostFormValue("vm")
		if vm == "" {
			again(action, v.T("volume.pick_vm"), "")
			return
		}
		vol, err = s.volumes.Attach(r.Context(), v.p, ref, volume.AttachTo{VM: vm}, ver)
	case "detach":
		vol, err = s.volumes.Detach(r.Context(), v.p, ref, ver)
	case "extend":
		in := strings.TrimSpace(r.PostFormValue("size_gib"))
		size, ok := parseGiB(in)
		if !ok {
			again(action, v.T("volumes.size_bad"), in)
			return
		}
		if cur, gerr := s.volumes.Get(v.p, ref); gerr == nil && size <= cur.SizeGiB() {
			again(action, v.Tf("volume.grow_only", cur.SizeGiB()), in)
			return
		}
		if vol, err = s.volumes.Extend(r.Context(), v.p, ref, size, ver); err != nil {
			refused(err, in)
			return
		}
	case "snapshot":
		s.snapshotVolume(w, r, v, ref, again)
		return
	case "clone":
		s.cloneVolume(w, r, v, ref, again)
		return
	case "delete":
		if vol, err = s.volumes.Delete(r.Context(), v.p, ref, ver); err == nil {
			s.redirect(w, r, "/volumes?deleted="+url.QueryEscape(vol.Name))
			return
		}
	}
	if err != nil {
		refused(err, "")
		return
	}
	s.redirect(w, r, string(volumeURL(vol.ID))+"?done="+action)
}

// vmVolumes lists the volumes attached to a VM, the boot volume first.
func (s *server) vmVolumes(v *view, vm *hypervisor.VM) []volumeRow {
	if s.volumes == nil {
		return nil
	}
	vols, err := s.volumes.List(v.p, vm.ProjectID)
	if err != nil {
		return nil
	}
	var out []volumeRow
	for _, vol := range vols {
		if a := vol.Attachment; a != nil && a.VM == vm.ID {
			row := volumeRow{Volume: vol, VMName: vm.Name, VM: vm}
			if a.Boot {
				out = append([]volumeRow{row}, out...)
			} else {
				out = append(out, row)
			}
		}
	}
	return out
}
