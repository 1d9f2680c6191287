package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// storageUnavailable answers when the agent runs without storage.
func (s *server) storageUnavailable(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusServiceUnavailable, messagePage(v, v.T("error.title"), v.T("storage.unavailable")))
}

// storageData loads the storage page. Only the disk list is essential: the
// service refuses it to anyone but cluster admins, which refuses the page.
// The rest (redundancy needs a leader) degrades to a message in its place.
func (s *server) storageData(r *http.Request, v *view) (storageData, error) {
	disks, err := s.disks.ListDisks(v.p)
	if err != nil {
		return storageData{}, err
	}
	d := storageData{Disks: disks, HasDegraded: s.objects != nil, HasStats: s.repair != nil, Shared: storage.SharedDevices(disks)}
	if s.objects != nil {
		if d.Degraded, err = s.objects.Degraded(r.Context()); err != nil {
			s.logErr(r, err)
			d.DegradedErr = errorText(v.tr, err)
		}
	}
	if s.repair != nil {
		d.Scrub, d.Heal = s.repair()
	}
	if s.gc != nil {
		gc := s.gc()
		d.GC = &gc
	}
	if s.status != nil {
		for _, n := range s.status().Nodes {
			d.Nodes = append(d.Nodes, n.Name)
		}
	}
	return d, nil
}

func (s *server) storagePage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "storage"
	if s.disks == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	d, err := s.storageData(r, v)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	q := r.URL.Query()
	switch disk := q.Get("disk"); q.Get("done") {
	case "added":
		v.flash = v.Tf("disks.added", disk)
	case storage.DiskDraining:
		v.flash = v.Tf("disks.drained", disk)
	case storage.DiskActive:
		v.flash = v.Tf("disks.activated", disk)
	case "removed":
		v.flash = v.Tf("disks.removed", disk)
	}
	d.Form.Node = s.selfName()
	s.render(w, r, http.StatusOK, storagePage(v, d))
}

// storageFragment is the htmx auto-refresh of the storage panel.
func (s *server) storageFragment(w http.ResponseWriter, r *http.Request, v *view) {
	if s.disks == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	d, err := s.storageData(r, v)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, storagePanel(v, d))
}

// selfName is this node's name, the likeliest home of a disk being added
// from its own console.
func (s *server) selfName() string {
	if s.status == nil {
		return ""
	}
	return s.status().Self
}

// storageFormError shows the storage page again with err above it.
func (s *server) storageFormError(w http.ResponseWriter, r *http.Request, v *view, f diskForm, err error) {
	s.logErr(r, err)
	v.err = errorText(v.tr, err)
	if consensus.ErrorCode(err) == consensus.CodePreconditionFailed {
		v.err = v.T("disks.changed")
	}
	d, lerr := s.storageData(r, v)
	if lerr != nil {
		s.failPage(w, r, v, lerr)
		return
	}
	d.Form = f
	s.render(w, r, formStatus, storagePage(v, d))
}

func (s *server) addDisk(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "storage"
	if s.disks == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	f := diskForm{Node: strings.TrimSpace(r.PostFormValue("node")), Path: strings.TrimSpace(r.PostFormValue("path"))}
	disk, err := s.disks.AddDisk(r.Context(), v.p, f.Node, f.Path)
	if err != nil {
		s.storageFormError(w, r, v, f, err)
		return
	}
	s.redirect(w, r, storageDone("added", disk.Path+" ("+disk.Node+")"))
}

// setDiskState drains a disk or makes it active again. The version the page
// showed guards against acting on a disk someone else changed meanwhile.
func (s *server) setDiskState(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "storage"
	if s.disks == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	state := r.PostFormValue("state")
	version, _ := strconv.ParseUint(r.PostFormValue("version"), 10, 64)
	disk, err := s.disks.SetDiskState(r.Context(), v.p, r.PathValue("id"), state, version)
	if err != nil {
		s.storageFormError(w, r, v, diskForm{Node: s.selfName()}, err)
		return
	}
	s.redirect(w, r, storageDone(disk.State, disk.Path+" ("+disk.Node+")"))
}

func (s *server) removeDisk(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "storage"
	if s.disks == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	id := r.PathValue("id")
	name := id
	if d, err := s.disks.GetDisk(v.p, id); err == nil {
		name = d.Path + " (" + d.Node + ")"
	}
	version, _ := strconv.ParseUint(r.PostFormValue("version"), 10, 64)
	if err := s.disks.RemoveDisk(r.Context(), v.p, id, version); err != nil {
		s.storageFormError(w, r, v, diskForm{Node: s.selfName()}, err)
		return
	}
	s.redirect(w, r, storageDone("removed", name))
}

func storageDone(done, disk string) string {
	return "/storage?" + url.Values{"done": {done}, "disk": {disk}}.Encode()
}

// diskURL is where a disk's actions post to.
func diskURL(id, action string) string {
	return "/storage/disks/" + url.PathEscape(id) + "/" + action
}

// gibText shows bytes as GiB with one decimal: disks are sized in GiB.
func gibText(b uint64) string {
	return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64)
}

// usedPercent is how full a disk is, 0-100; 0 before its first report.
func usedPercent(d storage.Disk) int64 {
	if d.TotalBytes == 0 || d.FreeBytes > d.TotalBytes {
		return 0
	}
	return int64((d.TotalBytes - d.FreeBytes) * 100 / d.TotalBytes)
}

// sizeText shows a byte count in binary units, to three significant digits.
func sizeText(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f := float64(n)
	unit := 0
	for f >= 1024 && unit < 5 {
		f /= 1024
		unit++
	}
	units := [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	switch {
	case f < 10:
		return fmt.Sprintf("%.2f %s", f, units[unit])
	case f < 100:
		return fmt.Sprintf("%.1f %s", f, units[unit])
	}
	return fmt.Sprintf("%.0f %s", f, units[unit])
}
