package ui

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"golang.org/x/crypto/ssh"
)

// vmURL links a VM's page, or one of its sub-pages ("console", "serial").
func vmURL(id, sub string) templ.SafeURL {
	u := "/vms/" + url.PathEscape(id)
	if sub != "" {
		u += "/" + sub
	}
	return templ.URL(u)
}

// vmAction is where a VM's forms post to, and its panel's refresh.
func vmAction(id, action string) string { return "/vms/" + url.PathEscape(id) + "/" + action }

func ipsText(vm *hypervisor.VM) string {
	if ips := vm.IPs(); len(ips) > 0 {
		return strings.Join(ips, ", ")
	}
	return "—"
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// stateClass colours a state badge: green when running, red on error,
// amber while something is under way.
func stateClass(state string) string {
	switch state {
	case hypervisor.StateRunning:
		return "ok"
	case hypervisor.StateError:
		return "bad"
	case hypervisor.StateScheduling, hypervisor.StateBuilding, hypervisor.StateStopping, hypervisor.StateDeleting:
		return "warn"
	}
	return ""
}

// vmOps are the power operations that make sense for a VM now, in the
// order the buttons show; delete has its own button.
func vmOps(vm *hypervisor.VM) []string {
	st := vm.Status.State
	switch vm.Desired {
	case hypervisor.DesiredRunning:
		ops := []string{}
		if st == hypervisor.StateRunning {
			ops = append(ops, hypervisor.OpReboot, hypervisor.OpPause)
		}
		if st == hypervisor.StateError {
			ops = append(ops, hypervisor.OpStart) // try again
		}
		return append(ops, hypervisor.OpStop, hypervisor.OpForceStop)
	case hypervisor.DesiredPaused:
		return []string{hypervisor.OpResume, hypervisor.OpStop, hypervisor.OpForceStop}
	case hypervisor.DesiredStopped:
		if st == hypervisor.StateStopping {
			return []string{hypervisor.OpStart, hypervisor.OpForceStop}
		}
		return []string{hypervisor.OpStart}
	}
	return nil
}

// opConfirm asks before an operation that stops or interrupts the guest,
// naming the VM (htmx's hx-confirm); starting and resuming need no
// question.
func opConfirm(v *view, op, name string) templ.Attributes {
	switch op {
	case hypervisor.OpStop, hypervisor.OpForceStop, hypervisor.OpReboot, hypervisor.OpPause:
		return templ.Attributes{"hx-confirm": v.Tf("vmconfirm."+op, name)}
	}
	return nil
}

// knownOps are the operations the op route accepts.
var knownOps = []string{hypervisor.OpStart, hypervisor.OpStop, hypervisor.OpForceStop, hypervisor.OpReboot,
	hypervisor.OpPause, hypervisor.OpResume, hypervisor.OpDelete}

func renameValue(d vmData) string {
	if d.Rename != "" {
		return d.Rename
	}
	return d.VM.Name
}

// eventWho is who or what an event came from: a user, else a node.
func eventWho(e hypervisor.Event) string {
	if e.User != "" {
		return e.User
	}
	return dash(e.Node)
}

func dataDisksText(ds []hypervisor.DataDisk) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = strconv.FormatInt(d.SizeGiB, 10) + " GiB"
	}
	return strings.Join(parts, ", ")
}

// sshKeyText names an SSH public key by its fingerprint and comment, as
// ssh-keygen -l does.
func sshKeyText(k string) string {
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
	if err != nil {
		return k
	}
	return strings.TrimSpace(ssh.FingerprintSHA256(pub) + " " + comment)
}

// imageChoice describes an image in the create form's list.
func imageChoice(img *hypervisor.Image) string {
	s := img.Name + " — " + sizeText(img.VirtualSize)
	if os := osText(img); os != "—" {
		s += ", " + os
	}
	return s
}

// computeUnavailable answers when the agent runs without compute.
func (s *server) computeUnavailable(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusServiceUnavailable, messagePage(v, v.T("error.title"), v.T("vms.unavailable")))
}

// imageNames maps the images the viewer can see from ID to name.
func (s *server) imageNames(v *view) map[string]string {
	names := map[string]string{}
	if s.images != nil {
		for _, img := range s.images.List(v.p, "") {
			names[img.ID] = img.Name
		}
	}
	return names
}

// vmsData is the VM list as the request's filter has it (vmFilter), with
// the VMs it names in vm= ticked (the list refreshes without losing them).
func (s *server) vmsData(v *view, r *http.Request) (vmsData, error) {
	vms, err := s.compute.ListVMs(v.p, "")
	if err != nil {
		return vmsData{}, err
	}
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		q = r.PostForm
	}
	f := vmFilter{Q: strings.TrimSpace(q.Get("q")), State: q.Get("state"), Node: q.Get("node"), Project: q.Get("project"),
		Sort: q.Get("sort"), Desc: q.Get("dir") == "desc"}
	if !slices.Contains([]string{"name", "state", "node", "project", "created"}, f.Sort) {
		f.Sort = "name"
	}
	ticked := map[string]bool{}
	for _, id := range q["vm"] {
		ticked[id] = true
	}
	projects, writable := s.projectNames(v)
	images := s.imageNames(v)
	d := vmsData{CanCreate: len(writable) > 0, Filter: f, Total: len(vms)}
	// The choices: what the VMs have, and what the filter names even when
	// no VM has it now (so the refresh keeps it).
	states, nodes, pnames := map[string]bool{f.State: f.State != ""}, map[string]bool{f.Node: f.Node != ""}, map[string]string{}
	if f.Project != "" {
		pnames[f.Project] = or(projects[f.Project], f.Project)
	}
	for _, vm := range vms {
		row := vmRow{VM: vm, ProjectName: or(projects[vm.ProjectID], vm.ProjectID), ImageName: or(images[vm.Spec.Image], vm.Spec.Image),
			CanChange: hypervisor.CanChangeVM(v.p, &vm), Selected: ticked[vm.ID]}
		states[vm.Status.State] = true
		if vm.Node != "" {
			nodes[vm.Node] = true
		}
		pnames[vm.ProjectID] = row.ProjectName
		if f.matches(row) {
			d.VMs = append(d.VMs, row)
		}
	}
	for _, set := range []map[string]bool{states, nodes} {
		delete(set, "")
	}
	d.States, d.Nodes = slices.Sorted(maps.Keys(states)), slices.Sorted(maps.Keys(nodes))
	for id, name := range pnames {
		d.Projects = append(d.Projects, identity.Project{ID: id, Name: name})
	}
	slices.SortFunc(d.Projects, func(a, b identity.Project) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	sortVMs(d.VMs, f)
	return d, nil
}

func (f vmFilter) matches(r vmRow) bool {
	return (f.Q == "" || strings.Contains(strings.ToLower(r.Name), strings.ToLower(f.Q))) &&
		(f.State == "" || r.Status.State == f.State) &&
		(f.Node == "" || r.Node == f.Node) &&
		(f.Project == "" || r.ProjectID == f.Project)
}

// sortVMs orders the list by the filter's key, then by name and ID, so
// equal keys keep one order from refresh to refresh.
func sortVMs(rows []vmRow, f vmFilter) {
	key := func(r vmRow) string {
		switch f.Sort {
		case "state":
			return r.Status.State
		case "node":
			return r.Node
		case "project":
			return r.ProjectName
		}
		return strings.ToLower(r.Name)
	}
	slices.SortStableFunc(rows, func(a, b vmRow) int {
		c := strings.Compare(key(a), key(b))
		if f.Sort == "created" {
			c = a.CreatedAt.Compare(b.CreatedAt)
		}
		if f.Desc {
			c = -c
		}
		if c == 0 {
			c = cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
		}
		return c
	})
}

// sortURL is the list ordered by key: ascending, or the other way when it
// is ordered by key already; the filter stays.
func (f vmFilter) sortURL(key string) string {
	q := url.Values{"sort": {key}}
	if f.Sort == key && !f.Desc {
		q.Set("dir", "desc")
	}
	for k, val := range map[string]string{"q": f.Q, "state": f.State, "node": f.Node, "project": f.Project} {
		if val != "" {
			q.Set(k, val)
		}
	}
	return "/vms?" + q.Encode()
}

func (f vmFilter) ariaSort(key string) string {
	switch {
	case f.Sort != key:
		return "none"
	case f.Desc:
		return "descending"
	}
	return "ascending"
}

// rowOps are the list's per-row buttons: start a stopped VM, shut down a
// running one, delete. The VM's page has them all.
func rowOps(vm *hypervisor.VM) []string {
	var ops []string
	for _, op := range vmOps(vm) {
		if op == hypervisor.OpStart || op == hypervisor.OpStop {
			ops = append(ops, op)
		}
	}
	return append(ops, hypervisor.OpDelete)
}

// rowConfirm is opConfirm, and delete's question too.
func rowConfirm(v *view, op, name string) templ.Attributes {
	if op == hypervisor.OpDelete {
		return templ.Attributes{"hx-confirm": v.Tf("vm.delete_confirm", name)}
	}
	return opConfirm(v, op, name)
}

// bulkOps are what the list's bulk form does.
var bulkOps = []string{hypervisor.OpStart, hypervisor.OpStop, hypervisor.OpDelete}

// bulkVMs asks once, naming every ticked VM the viewer may change, then
// acts on each and says how it went.
func (s *server) bulkVMs(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	op := r.PostFormValue("op")
	if !slices.Contains(bulkOps, op) {
		s.notFound(w, r)
		return
	}
	d, err := s.vmsData(v, &http.Request{Method: http.MethodGet, URL: &url.URL{}})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	ids := r.PostForm["vm"]
	var picked []vmRow
	for _, row := range d.VMs {
		if slices.Contains(ids, row.ID) && row.CanChange {
			picked = append(picked, row)
		}
	}
	skipped := len(slices.Compact(slices.Sorted(slices.Values(ids)))) - len(picked)
	if len(picked) == 0 {
		v.err = v.T("vms.bulk_none")
		s.render(w, r, formStatus, vmsPage(v, d))
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		s.render(w, r, http.StatusOK, bulkConfirmPage(v, bulkData{Op: op, VMs: picked, Skipped: skipped}))
		return
	}
	var failed []string
	for _, row := range picked {
		if _, err := s.compute.Do(r.Context(), v.p, row.ID, op, 0); err != nil {
			s.logErr(r, err)
			failed = append(failed, row.Name+": "+errorText(v.tr, err))
		}
	}
	if len(failed) > 0 {
		d, _ = s.vmsData(v, &http.Request{Method: http.MethodGet, URL: &url.URL{}})
		v.err = v.Tf("vms.bulk_failed", len(picked)-len(failed), len(picked), strings.Join(failed, "; "))
		s.render(w, r, formStatus, vmsPage(v, d))
		return
	}
	s.redirect(w, r, "/vms?done=bulk-"+op+"&name="+strconv.Itoa(len(picked)))
}

// or is a, or b when a is empty: a name, or the ID it stands for.
func or(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

func (s *server) vms(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	d, err := s.vmsData(v, r)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	q := r.URL.Query()
	if name := q.Get("deleted"); name != "" {
		v.flash = v.Tf("vms.deleted", name)
	} else if done, ok := strings.CutPrefix(q.Get("done"), "bulk-"); ok && slices.Contains(bulkOps, done) {
		n, _ := strconv.Atoi(q.Get("name"))
		v.flash = v.Tf("vms.bulk_done."+done, n)
	} else if done := q.Get("done"); slices.Contains(knownOps, done) && q.Get("name") != "" {
		v.flash = v.Tf("vms.row_done", q.Get("name"), v.T("vmdone."+done))
	}
	s.render(w, r, http.StatusOK, vmsPage(v, d))
}

// vmsFragment is the htmx auto-refresh of the VM list.
func (s *server) vmsFragment(w http.ResponseWriter, r *http.Request, v *view) {
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	d, err := s.vmsData(v, r)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, vmsPanel(v, d))
}

func (s *server) newVMData(v *view, f vmForm) newVMData {
	_, writable := s.projectNames(v)
	d := newVMData{Projects: writable, Flavors: s.id.ListFlavors(), Form: f}
	if s.images != nil {
		d.Images = s.images.List(v.p, "")
	}
	sort.Slice(d.Flavors, func(i, j int) bool { return d.Flavors[i].Name < d.Flavors[j].Name })
	if d.Form.Project == "" && len(writable) > 0 {
		d.Form.Project = writable[0].ID
	}
	d.VolumesOK = s.volumes != nil && s.volumes.CanPlace()
	s.vmNetworks(v, &d)
	return d
}

func (s *server) newVM(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	s.render(w, r, http.StatusOK, newVMPage(v, s.newVMData(v, vmForm{})))
}

func (s *server) createVM(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	f := vmForm{Name: strings.TrimSpace(r.PostFormValue("name")), Project: r.PostFormValue("project"),
		Image: r.PostFormValue("image"), Flavor: r.PostFormValue("flavor"), SSHKeys: r.PostFormValue("ssh_keys"),
		UserData: r.PostFormValue("user_data"), DataDisk: strings.TrimSpace(r.PostFormValue("data_disk_gib")),
		BootDisk: r.PostFormValue("boot_disk"), BootSize: strings.TrimSpace(r.PostFormValue("boot_volume_gib"))}
	if err := r.ParseForm(); err == nil && s.networks != nil && r.PostFormValue("networks_shown") != "" {
		// The form had the network boxes (a form without them gets the
		// default network): none ticked is a mistake to point out.
		f.Networks, f.Groups = append([]string{}, r.PostForm["network"]...), r.PostForm["security_group"]
	}
	again := func(field, msg string) {
		f.ErrField, f.Err = field, msg
		s.render(w, r, formStatus, newVMPage(v, s.newVMData(v, f)))
	}
	req := hypervisor.VMCreate{Name: f.Name, Project: f.Project, Image: f.Image, Flavor: f.Flavor, UserData: f.UserData,
		Networks: f.Networks, SecurityGroups: f.Groups}
	if f.Networks != nil && len(f.Networks) == 0 {
		again("networks", v.T("vmnew.networks_none"))
		return
	}
	for _, line := range strings.Split(f.SSHKeys, "\n") {
		if k := strings.TrimSpace(line); k != "" {
			req.SSHKeys = append(req.SSHKeys, k)
		}
	}
	if f.DataDisk != "" {
		n, err := strconv.ParseInt(f.DataDisk, 10, 64)
		if err != nil {
			again("data_disk", v.Tf("common.bad_number", v.T("vmnew.disk")))
			return
		}
		req.DataDisks = []int64{n}
	}
	switch {
	case f.BootDisk == "local":
		req.LocalDisk = true // the size field belongs to the other choice
	case f.BootSize != "":
		n, ok := parseGiB(f.BootSize)
		if !ok {
			again("boot_size", v.Tf("common.bad_number", v.T("vmnew.boot_size")))
			return
		}
		if fl, err := s.id.GetFlavor(f.Flavor); err == nil {
			if fl.LocalDisk {
				again("boot_size", v.Tf("vmnew.flavor_local", fl.Name))
				return
			}
			if n < fl.DiskGiB {
				again("boot_size", v.Tf("vmnew.boot_too_small", fl.Name, fl.DiskGiB))
				return
			}
		}
		req.BootVolumeGiB = n
	}
	vm, err := s.compute.CreateVM(r.Context(), v.p, req)
	if err != nil {
		s.logErr(r, err)
		if nameRefused(err) {
			again("name", errorText(v.tr, err)) // next to the name
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, newVMPage(v, s.newVMData(v, f)))
		return
	}
	s.redirect(w, r, string(vmURL(vm.ID, ""))+"?done=create")
}

// vmData loads a VM's page.
func (s *server) vmData(v *view, ref string) (vmData, error) {
	vm, err := s.compute.VM(v.p, ref)
	if err != nil {
		return vmData{}, err
	}
	evs, err := s.compute.Events(v.p, vm.ID)
	if err != nil {
		return vmData{}, err
	}
	d := vmData{VM: *vm, Events: evs, CanChange: hypervisor.CanChangeVM(v.p, vm), Admin: v.p.IsClusterAdmin(),
		ProjectName: vm.ProjectID, FlavorName: vm.Spec.Flavor, ImageName: vm.Spec.Image}
	if pr, err := s.id.GetProject(v.p, vm.ProjectID); err == nil {
		d.ProjectName = pr.Name
	}
	d.Flavors = s.id.ListFlavors()
	sort.Slice(d.Flavors, func(i, j int) bool { return d.Flavors[i].Name < d.Flavors[j].Name })
	for _, f := range d.Flavors {
		if f.ID == vm.Spec.Flavor {
			d.FlavorName = f.Name
		}
	}
	if s.images != nil {
		if img, err := s.images.Get(v.p, vm.Spec.Image); err == nil {
			d.ImageName = img.Name
		}
	}
	d.Volumes = s.vmVolumes(v, vm)
	if s.networks != nil {
		fs, err := s.networks.ListFloatingIPs(v.p, vm.ProjectID)
		if err == nil {
			for _, f := range fs {
				if f.Owner == vm.ID {
					d.Floating = append(d.Floating, f.IP+" → "+f.FixedIP)
				}
			}
		}
		for _, nic := range vm.NICs {
			if nic.IP == "" {
				continue
			}
			nw := s.networks.LocalNetwork(v.p, nic.Network)
			if nw == nil { // not here yet, or not the viewer's to see: say nothing of it
				continue
			}
			row := reachRow{IP: nic.IP, Network: nw.Name, Kind: "nat"}
			switch {
			case nw.IsVLAN():
				row.Kind, row.VLAN = "vlan", nw.VLAN
			case nw.IsOverlay():
				row.Kind = "project"
			}
			for _, f := range fs {
				if f.Owner == vm.ID && f.FixedIP == nic.IP {
					row.Floating = append(row.Floating, f.IP)
				}
			}
			d.Reach = append(d.Reach, row)
		}
	}
	return d, nil
}

// bootDiskKind is "volume" for a VM that boots from a replicated volume,
// "local" for one whose boot disk lives on its node.
func bootDiskKind(vm *hypervisor.VM) string {
	if vm.Spec.BootVolume != "" {
		return "volume"
	}
	return "local"
}

func boolAttr(b bool) string { return strconv.FormatBool(b) }

func (s *server) vm(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	d, err := s.vmData(v, r.PathValue("vm"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	d.MoveTo = s.moveTargets(v, &d.VM) // the whole page only: not on every refresh
	s.addUsage(v, r, &d)
	if done := r.URL.Query().Get("done"); done != "" {
		v.flash = v.Tor("vmdone."+done, "")
	}
	s.render(w, r, http.StatusOK, vmPage(v, d))
}

// vmFragment is the htmx auto-refresh of a VM's panel. Once the VM is gone
// (deleted here or elsewhere), htmx is sent to the list instead.
func (s *server) vmFragment(w http.ResponseWriter, r *http.Request, v *view) {
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	d, err := s.vmData(v, r.PathValue("vm"))
	if consensus.ErrorCode(err) == consensus.CodeNotFound {
		w.Header().Set("HX-Redirect", "/vms")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, vmPanel(v, d))
}

// vmFormError shows a VM's page again with err above it.
func (s *server) vmFormError(w http.ResponseWriter, r *http.Request, v *view, ref, rename string, err error) {
	s.logErr(r, err)
	v.err = errorText(v.tr, err)
	if consensus.ErrorCode(err) == consensus.CodePreconditionFailed {
		v.err = v.T("vm.changed")
	}
	d, lerr := s.vmData(v, ref)
	if lerr != nil {
		s.failPage(w, r, v, lerr)
		return
	}
	d.Rename = rename
	d.MoveTo = s.moveTargets(v, &d.VM)
	s.addUsage(v, r, &d)
	s.render(w, r, formStatus, vmPage(v, d))
}

// vmOp carries out a power operation. Buttons send no version: what they
// ask for is meant whatever the VM did meanwhile, and the service refuses
// what no longer makes sense (rebooting a stopped VM).
func (s *server) vmOp(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	ref, op := r.PathValue("vm"), r.PathValue("op")
	known := false
	for _, k := range knownOps {
		known = known || k == op
	}
	if !known {
		s.notFound(w, r)
		return
	}
	vm, err := s.compute.Do(r.Context(), v.p, ref, op, 0)
	if err != nil && r.PostFormValue("from") == "list" { // a row's button: say it on the list
		s.logErr(r, err)
		d, lerr := s.vmsData(v, &http.Request{Method: http.MethodGet, URL: &url.URL{}})
		if lerr != nil {
			s.failPage(w, r, v, lerr)
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, vmsPage(v, d))
		return
	}
	if err != nil {
		s.vmFormError(w, r, v, ref, "", err)
		return
	}
	if op == hypervisor.OpDelete {
		s.redirect(w, r, "/vms?deleted="+url.QueryEscape(vm.Name))
		return
	}
	if r.PostFormValue("from") == "list" { // a row's button: back to the list
		s.redirect(w, r, "/vms?done="+url.QueryEscape(op)+"&name="+url.QueryEscape(vm.Name))
		return
	}
	s.redirect(w, r, string(vmURL(vm.ID, ""))+"?done="+url.QueryEscape(op))
}

func formVersion(r *http.Request) uint64 {
	n, _ := strconv.ParseUint(r.PostFormValue("version"), 10, 64)
	return n
}

func (s *server) renameVM(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	ref, name := r.PathValue("vm"), strings.TrimSpace(r.PostFormValue("name"))
	vm, err := s.compute.Rename(r.Context(), v.p, ref, name, formVersion(r))
	if err != nil {
		s.vmFormError(w, r, v, ref, name, err)
		return
	}
	s.redirect(w, r, string(vmURL(vm.ID, ""))+"?done=rename")
}

// moveTargets are the other nodes a cluster admin may move a VM whose
// disks are all volumes to, stopped or running (live); nil for anyone
// else and any other VM (the cluster checks the rest when asked: fills,
// room, cordons).
func (s *server) moveTargets(v *view, vm *hypervisor.VM) []string {
	stopped := vm.Desired == hypervisor.DesiredStopped && vm.Status.State == hypervisor.StateStopped
	running := vm.Desired == hypervisor.DesiredRunning && vm.Status.State == hypervisor.StateRunning && vm.Status.Pending == ""
	if !v.p.IsClusterAdmin() || vm.Node == "" || vm.Migration != nil || !stopped && !running ||
		vm.Spec.BootVolume == "" || len(vm.Spec.DataDisks) > 0 || vm.UEFIOnNode() {
		return nil
	}
	hs, err := s.compute.Hosts(v.p)
	if err != nil {
		return nil
	}
	var out []string
	now := time.Now()
	for _, h := range hs {
		if h.Name != vm.Node && h.Cordon == nil && h.Error == "" && hypervisor.HostAlive(h.Host, now) {
			out = append(out, h.Name)
		}
	}
	sort.Strings(out)
	return out
}

func (s *server) migrateVM(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	ref := r.PathValue("vm")
	vm, err := s.compute.Migrate(r.Context(), v.p, ref, r.PostFormValue("node"), r.PostFormValue("post_copy") == "on", formVersion(r))
	if err != nil {
		s.vmFormError(w, r, v, ref, "", err)
		return
	}
	done := "migrate"
	if vm.Migration != nil {
		done = "migrate_live"
	}
	s.redirect(w, r, string(vmURL(vm.ID, ""))+"?done="+done)
}

func (s *server) cancelMigration(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	ref := r.PathValue("vm")
	vm, err := s.compute.CancelMigration(r.Context(), v.p, ref)
	if err != nil {
		s.vmFormError(w, r, v, ref, "", err)
		return
	}
	s.redirect(w, r, string(vmURL(vm.ID, ""))+"?done=migrate_cancel")
}

// setVMHA switches a VM's high availability on or off.
func (s *server) setVMHA(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	ref := r.PathValue("vm")
	off := r.PostFormValue("enabled") != "true"
	vm, err := s.compute.SetHA(r.Context(), v.p, ref, &off, nil, formVersion(r))
	if err != nil {
		s.vmFormError(w, r, v, ref, "", err)
		return
	}
	done := "ha_on"
	if off {
		done = "ha_off"
	}
	s.redirect(w, r, string(vmURL(vm.ID, ""))+"?done="+done)
}

// haText says in the reader's language whether a VM restarts on another
// node if its node dies, and if it cannot, why.
func haText(v *view, vm *hypervisor.VM) string {
	switch {
	case vm.HA == "on" && vm.Spec.HAPriority != 0:
		return v.Tf("vm.ha.on_priority", vm.Spec.HAPriority)
	case vm.HA == "on":
		return v.T("vm.ha.on")
	case vm.HA == "off":
		return v.T("vm.ha.off")
	}
	return v.Tf("vm.ha.unavailable", haWhy(v, strings.TrimPrefix(vm.HA, "unavailable: ")))
}

// haWhy translates why a VM is not restarted elsewhere (hypervisor.Protected,
// the failover controller's notes), or shows it as it is.
func haWhy(v *view, why string) string {
	for _, k := range []struct{ has, key string }{
		{"switched off", "ha.why.off"}, {"local disks", "ha.why.local"}, {"UEFI", "ha.why.uefi"},
		{"no node has", "ha.why.room"}, {"no node can run", "ha.why.room"},
	} {
		if strings.Contains(why, k.has) {
			return v.T(k.key)
		}
	}
	return why
}

// eventMessage is a history line in the reader's language where the
// catalog knows its kind's sentence; else as the cluster wrote it.
func eventMessage(v *view, e hypervisor.Event) string {
	if e.Kind != "failover" {
		return keyedEvent(v, e)
	}
	from, at, to, why, ok := hypervisor.FailoverParts(e.Message)
	switch {
	case !ok:
		return e.Message
	case to != "":
		return v.Tf("vmevent.failover.restarted", from, v.time(at), to)
	}
	return v.Tf("vmevent.failover.stayed", from, v.time(at), haWhy(v, why))
}

func (s *server) resizeVM(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	ref := r.PathValue("vm")
	vm, err := s.compute.Resize(r.Context(), v.p, ref, r.PostFormValue("flavor"), formVersion(r))
	if err != nil {
		s.vmFormError(w, r, v, ref, "", err)
		return
	}
	s.redirect(w, r, string(vmURL(vm.ID, ""))+"?done=resize")
}

// keyedEvent says a history line in the reader's language from its key
// (hypervisor/events.go); a line without one, or with a key this node's
// catalogues do not know (a newer node wrote it), is said as written.
func keyedEvent(v *view, e hypervisor.Event) string {
	tmpl, ok := v.tr.msgs["vmevent.msg."+e.Key]
	if e.Key == "" || !ok || strings.Count(tmpl, "%s") != len(e.Args) {
		return e.Message
	}
	args := make([]any, len(e.Args))
	for i, a := range e.Args {
		args[i] = a
		if i < len(e.Inner) && e.Inner[i] != nil {
			args[i] = messageText(v.tr, e.Inner[i]) // a reason, in the reader's words
		}
	}
	switch e.Key {
	case "state", "state_error":
		args[0] = v.Tor("vmstate."+e.Args[0], e.Args[0])
	case "requested": // an operation, or a desired state (older lines)
		op := e.Args[0]
		if o, ok := desiredOps[op]; ok {
			op = o
		}
		args[0] = v.Tor("vmop."+op, op)
	case "ha":
		args[0] = v.Tor("vmevent.ha."+e.Args[0], e.Args[0])
	}
	return fmt.Sprintf(tmpl, args...)
}

// pendingText says a VM's pending change in the reader's language when it
// is the one the node words the same every time, a smaller memory at the
// next start (hypervisor's worker.resize); anything else (a hot-plug QEMU
// refused, with its reason; a volume being opened) is said as the node
// said it. The node's words stay in the tooltip.
func pendingText(v *view, vm *hypervisor.VM) string {
	if s := vm.Status.PendingSaid; s != nil && s.Message == vm.Status.Pending { // made from a format: what it waits for
		return messageText(v.tr, vm.Status.PendingSaid)
	}
	if vm.Status.Pending == fmt.Sprint([]string{fmt.Sprintf("%d MiB at the next start", vm.Spec.RAMMiB)}) {
		return v.Tf("vm.pending_next", v.Tf("vm.pending_ram", vm.Spec.RAMMiB))
	}
	return vm.Status.Pending
}

// desiredOps names the operation that asks for a desired state.
var desiredOps = map[string]string{
	hypervisor.DesiredRunning: hypervisor.OpStart, hypervisor.DesiredStopped: hypervisor.OpStop,
	hypervisor.DesiredPaused: hypervisor.OpPause, hypervisor.DesiredDeleted: hypervisor.OpDelete,
}

// addUsage adds a VM's usage graphs to its page (the whole page only: the
// panel refreshes itself).
func (s *server) addUsage(v *view, r *http.Request, d *vmData) {
	if d.VM.Desired != hypervisor.DesiredDeleted {
		u := s.usageData(v, r, d.VM.ID, usageSpan(r))
		d.Usage = &u
	}
}

// noRoomRE reads the scheduler's refusal (hypervisor/scheduler.go): what
// the VM needs, its anti-affinity group, the cordoned nodes.
var noRoomRE = regexp.MustCompile(`^no node has (\d+) vCPUs, (\d+) MiB and (\d+) GiB of disk free(?: outside anti-affinity group "([^"]*)")?(?: \((\d+) of (\d+) nodes cordoned\))?$`)

// saidText is msg in the reader's language when said is msg made from a
// format the catalogue knows, and msg as it came otherwise.
func saidText(v *view, msg string, said *consensus.Error) string {
	if said != nil && said.Message == msg {
		return messageText(v.tr, said)
	}
	return msg
}

// vmStatusError is a VM's error in the reader's language: from its format
// where its node made it from one, else as vmErrorText says it.
func vmStatusError(v *view, st hypervisor.VMStatus) string {
	if st.ErrorSaid != nil && st.ErrorSaid.Message == st.Error {
		return messageText(v.tr, st.ErrorSaid)
	}
	return vmErrorText(v, st.Error)
}

// vmErrorText is a VM's error in the reader's language where it is the
// scheduler's (no node has room for it), with all its details; other
// errors (QEMU's own words) are shown as they came, as is everything on
// an English page. The original stays in the tooltip.
func vmErrorText(v *view, msg string) string {
	m := noRoomRE.FindStringSubmatch(msg)
	if m == nil || v.lang() == langEN {
		return msg
	}
	s := v.Tf("vmerr.no_room", m[1], m[2], m[3])
	if m[4] != "" {
		s += v.Tf("vmerr.group", m[4])
	}
	if m[5] != "" {
		s += v.Tf("vmerr.cordoned", m[5], m[6])
	}
	return s
}
