package ui

import (
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage/volume"
)

// snapshotAction is where a snapshot's forms post to.
func snapshotAction(id, action string) string {
	return "/snapshots/" + url.PathEscape(id) + "/" + action
}

// snapshotRow is a snapshot with the name of the volume it was taken of.
type snapshotRow struct {
	volume.Volume
	OfName    string // "" when that volume was deleted since
	CanChange bool
}

// snapshotDone are the outcomes the volume list announces after a redirect.
var snapshotDone = map[string]string{
	"snap_taken":   "volumes.snap_taken",
	"snap_taking":  "volumes.snap_taking",
	"snap_deleted": "volumes.snap_deleted",
}

// canSnapshot: a volume whose data is all there, and not already having
// a snapshot taken. A clone takes one too.
func (r volumeRow) canSnapshot() bool {
	return r.CanChange && (r.State == volume.StateAvailable || r.State == volume.StateInUse) &&
		!r.Unfilled() && r.Snapshotting == ""
}

// snapshotRows lists the snapshots the viewer can see, newest first, with
// their volumes' names.
func (s *server) snapshotRows(v *view, vols []volume.Volume) []snapshotRow {
	snaps, err := s.volumes.ListSnapshots(v.p, "", "")
	if err != nil {
		return nil
	}
	names := map[string]string{}
	for _, vol := range vols {
		names[vol.ID] = vol.Name
	}
	out := make([]snapshotRow, 0, len(snaps))
	for _, sn := range snaps {
		out = append(out, snapshotRow{Volume: sn, OfName: names[sn.Of], CanChange: v.p.Can(sn.ProjectID, identity.RoleMember)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out
}

// volumeOrigin says in words what a volume made from a snapshot, or as a
// clone, started as; "" for one made blank or from an image.
func volumeOrigin(v *view, o *volume.Origin) string {
	switch {
	case o == nil:
		return ""
	case o.Snapshot != "" && o.VolumeName != "":
		return v.Tf("volorigin.snapshot_of", o.Snapshot, o.VolumeName)
	case o.Snapshot != "":
		return v.Tf("volorigin.snapshot", o.Snapshot)
	case o.VolumeName != "":
		return v.Tf("volorigin.volume", o.VolumeName, v.time(o.At))
	}
	return v.Tf("volorigin.deleted", v.time(o.At))
}

// snapshotVolume (the volume page's Snapshot form) snapshots a volume and
// sends the viewer to the list of snapshots.
func (s *server) snapshotVolume(w http.ResponseWriter, r *http.Request, v *view, ref string, again func(field, msg, value string)) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if !volumeNameRE.MatchString(name) {
		again("snapshot", v.T("volumes.name_bad"), name)
		return
	}
	snap, err := s.volumes.CreateSnapshot(r.Context(), v.p, ref, name)
	if err != nil {
		s.logErr(r, err)
		again("snapshot", errorText(v.tr, err), name)
		return
	}
	done := "snap_taken"
	if snap.State == volume.StateCreating {
		done = "snap_taking"
	}
	s.redirect(w, r, "/volumes?done="+done+"&name="+url.QueryEscape(snap.Name))
}

// cloneVolume (the volume page's Clone form) makes a new volume with the
// data the volume has now, in its project.
func (s *server) cloneVolume(w http.ResponseWriter, r *http.Request, v *view, ref string, again func(field, msg, value string)) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if !volumeNameRE.MatchString(name) {
		again("clone", v.T("volumes.name_bad"), name)
		return
	}
	src, err := s.volumes.Get(v.p, ref)
	if err == nil {
		src, err = s.volumes.Create(r.Context(), v.p, volume.Create{Name: name, Project: src.ProjectID, Source: src.ID})
	}
	if err != nil {
		s.logErr(r, err)
		again("clone", errorText(v.tr, err), name)
		return
	}
	s.redirect(w, r, string(volumeURL(src.ID))+"?done=clone")
}

// snapshotForm is what a snapshot's "new volume" form posted, kept to
// show it again next to a refusal.
type snapshotForm struct {
	Snapshot string // the snapshot's ID
	Action   string // "volume" or "delete"
	Name     string
	Size     string
	Err      string
}

// snapshotAct makes a volume from a snapshot or deletes it. A refusal is
// shown next to the snapshot's form on the volume list.
func (s *server) snapshotAct(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "volumes"
	if s.volumes == nil {
		s.volumeUnavailable(w, r, v)
		return
	}
	ref, action := r.PathValue("snapshot"), r.PathValue("action")
	if action != "volume" && action != "delete" {
		s.notFound(w, r)
		return
	}
	sn, err := s.volumes.GetSnapshot(v.p, ref)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	f := snapshotForm{Snapshot: sn.ID, Action: action, Name: strings.TrimSpace(r.PostFormValue("name")), Size: strings.TrimSpace(r.PostFormValue("size_gib"))}
	again := func(msg string) {
		f.Err = msg
		d, err := s.volumesData(v, volumeForm{})
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		d.SnapForm = f
		if !v.p.Can(sn.ProjectID, identity.RoleMember) {
			v.err = msg // there is no form to show it next to
		}
		s.render(w, r, formStatus, volumesPage(v, d))
	}
	if action == "delete" {
		if _, err := s.volumes.DeleteSnapshot(r.Context(), v.p, sn.ID, 0); err != nil {
			s.logErr(r, err)
			again(errorText(v.tr, err))
			return
		}
		s.redirect(w, r, "/volumes?done=snap_deleted&name="+url.QueryEscape(sn.Name))
		return
	}
	if !volumeNameRE.MatchString(f.Name) {
		again(v.T("volumes.name_bad"))
		return
	}
	var size int64 // the snapshot's
	if f.Size != "" {
		n, ok := parseGiB(f.Size)
		if !ok {
			again(v.T("volumes.size_bad"))
			return
		}
		size = n
	}
	vol, err := s.volumes.Create(r.Context(), v.p, volume.Create{Name: f.Name, SizeGiB: size, Project: sn.ProjectID, Snapshot: sn.ID})
	if err != nil {
		s.logErr(r, err)
		again(errorText(v.tr, err))
		return
	}
	s.redirect(w, r, string(volumeURL(vol.ID))+"?done=from_snapshot")
}
