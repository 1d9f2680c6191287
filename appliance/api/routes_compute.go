package api

import (
	"net/http"
	"strconv"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
)

type (
	renameRequest struct {
		Name string `json:"name"`
	}
	resizeRequest struct {
		Flavor string `json:"flavor"`
	}
	haRequest struct {
		Enabled  *bool `json:"enabled,omitempty"`
		Priority *int  `json:"priority,omitempty"`
	}
	imageUpdate struct {
		Name       *string `json:"name,omitempty"`
		Visibility *string `json:"visibility,omitempty"`
	}
	importRequest struct {
		hypervisor.ImageSpec
		URL string `json:"url"`
	}
)

func (s *Server) computeRoutes() []route {
	const v1 = "/api/v1"
	op := func(name, summary string) route {
		return route{Method: "POST", Path: v1 + "/vms/{vm}/" + name, Summary: summary + "; honours If-Match", Tag: "compute",
			Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				vm, err := s.compute.Do(r.Context(), p, r.PathValue("vm"), name, im)
				return ok(w, vm, versionOf(vm, err), err)
			}}
	}
	return []route{
		{Method: "GET", Path: v1 + "/vms", Summary: "VMs you can see, optionally of one project", Tag: "compute",
			Response: []hypervisor.VM{}, Query: []string{"project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				vms, err := s.compute.ListVMs(p, r.URL.Query().Get("project"))
				return ok(w, vms, 0, err)
			}},
		{Method: "POST", Path: v1 + "/vms", Summary: "Create a VM from an image and a flavor; it is placed, booted and given an address", Tag: "compute",
			Request: hypervisor.VMCreate{}, Response: hypervisor.VM{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body hypervisor.VMCreate
				if err := decode(r, &body); err != nil {
					return err
				}
				vm, err := s.compute.CreateVM(r.Context(), p, body)
				return created(w, vm, versionOf(vm, err), err)
			}},
		{Method: "GET", Path: v1 + "/vms/{vm}", Summary: "A VM, by ID or name: spec, state, node, addresses", Tag: "compute",
			Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				vm, err := s.compute.VM(p, r.PathValue("vm"))
				return ok(w, vm, versionOf(vm, err), err)
			}},
		{Method: "PATCH", Path: v1 + "/vms/{vm}", Summary: "Rename a VM; honours If-Match", Tag: "compute",
			Request: renameRequest{}, Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body renameRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				vm, err := s.compute.Rename(r.Context(), p, r.PathValue("vm"), body.Name, im)
				return ok(w, vm, versionOf(vm, err), err)
			}},
		{Method: "PUT", Path: v1 + "/vms/{vm}/ha", Summary: "Switch a VM's high availability (restart on another node when its node dies) on or off, or set its restart priority (cluster admins); honours If-Match", Tag: "compute",
			Request: haRequest{}, Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body haRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				var off *bool
				if body.Enabled != nil {
					off = new(!*body.Enabled)
				}
				vm, err := s.compute.SetHA(r.Context(), p, r.PathValue("vm"), off, body.Priority, im)
				return ok(w, vm, versionOf(vm, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/vms/{vm}", Summary: "Delete a VM and everything made for it; honours If-Match", Tag: "compute",
			Response: hypervisor.VM{}, Status: http.StatusAccepted, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				vm, err := s.compute.Do(r.Context(), p, r.PathValue("vm"), hypervisor.OpDelete, im)
				if err != nil {
					return err
				}
				writeJSON(w, http.StatusAccepted, vm, 0)
				return nil
			}},
		{Method: "GET", Path: v1 + "/vms/{vm}/events", Summary: "A VM's history: requests and state changes, oldest first", Tag: "compute",
			Response: []hypervisor.Event{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				evs, err := s.compute.Events(p, r.PathValue("vm"))
				return ok(w, evs, 0, err)
			}},
		{Method: "POST", Path: v1 + "/vms/{vm}/console", Summary: "A one-minute ticket for the VM's VNC and serial console WebSockets (project members)", Tag: "compute",
			Response: hypervisor.ConsoleTicket{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				t, err := s.compute.ConsoleTicket(r.Context(), p, r.PathValue("vm"))
				return ok(w, t, 0, err)
			}},
		{Method: "GET", Path: v1 + "/vms/{vm}/serial-log", Summary: "The tail of the VM's serial console log, as text", Tag: "compute",
			Query: []string{"bytes"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.consoles == nil {
					return errorf(http.StatusServiceUnavailable, "unavailable", "consoles are not available on this node")
				}
				n, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
				if n <= 0 || n > 4<<20 {
					n = 64 << 10
				}
				b, err := s.consoles.SerialLog(r.Context(), p, r.PathValue("vm"), n)
				if err != nil {
					return err
				}
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				_, _ = w.Write(b)
				return nil
			}},
		{Method: "GET", Path: v1 + "/vms/{vm}/usage", Summary: "The VM's CPU, memory, disk and network use over the last hour (10 s steps) or day (5 min means), from its node's samples", Tag: "compute",
			Query: []string{"span"}, Response: hypervisor.UsageHistory{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.usage == nil {
					return errorf(http.StatusServiceUnavailable, "unavailable", "usage graphs are not available on this node")
				}
				span := r.URL.Query().Get("span")
				if span == "" {
					span = hypervisor.SpanHour
				}
				h, err := s.usage.Usage(r.Context(), p, r.PathValue("vm"), span)
				return ok(w, h, 0, err)
			}},
		op(hypervisor.OpStart, "Start a stopped VM"),
		op(hypervisor.OpStop, "Shut a VM down with the ACPI power button, forcing it off after the node's timeout"),
		op(hypervisor.OpForceStop, "Power a VM off at once"),
		op(hypervisor.OpReboot, "Reset a running VM"),
		op(hypervisor.OpPause, "Pause a VM's vCPUs"),
		op(hypervisor.OpResume, "Resume a paused VM"),
		{Method: "POST", Path: v1 + "/vms/{vm}/resize", Summary: "Move a VM to another flavor: vCPUs and memory online where QEMU allows, else at the next start; honours If-Match", Tag: "compute",
			Request: resizeRequest{}, Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body resizeRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				vm, err := s.compute.Resize(r.Context(), p, r.PathValue("vm"), body.Flavor, im)
				return ok(w, vm, versionOf(vm, err), err)
			}},
		{Method: "POST", Path: v1 + "/vms/{vm}/migrate", Summary: "Move a VM whose disks are volumes to another node (to node, or where the scheduler would place it): a running VM moves live (its progress is the VM's migration field), a stopped one as it is (cluster admin); honours If-Match", Tag: "compute",
			Request: migrateRequest{}, Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body migrateRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				vm, err := s.compute.Migrate(r.Context(), p, r.PathValue("vm"), body.Node, body.PostCopy, im)
				return ok(w, vm, versionOf(vm, err), err)
			}},
		{Method: "POST", Path: v1 + "/vms/{vm}/migrate/cancel", Summary: "Stop a live migration before its switchover: the VM runs on where it was (cluster admin)", Tag: "compute",
			Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				vm, err := s.compute.CancelMigration(r.Context(), p, r.PathValue("vm"))
				return ok(w, vm, versionOf(vm, err), err)
			}},
		{Method: "POST", Path: v1 + "/vms/{vm}/convert-disk", Summary: "Move a stopped VM's local boot disk, and a UEFI VM's settings, onto replicated volumes (filled before the VM next starts); honours If-Match", Tag: "compute",
			Response: hypervisor.VM{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				vm, err := s.compute.ConvertDisk(r.Context(), p, r.PathValue("vm"), im)
				return ok(w, vm, versionOf(vm, err), err)
			}},
		{Method: "GET", Path: v1 + "/capacity", Summary: "The cluster's capacity: vCPUs, memory and storage per node and in all, what is used, and whether it can lose a node and restart every VM and keep every byte (N+1; cluster admin)", Tag: "compute",
			Response: hypervisor.Capacity{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				c, err := s.compute.Capacity(r.Context(), p, hypervisor.CapacitySources{Storage: s.storage, Objects: s.objects, Volumes: s.volumes})
				return ok(w, c, 0, err)
			}},
		{Method: "GET", Path: v1 + "/hosts", Summary: "Nodes' VM capacity and allocation (cluster admin)", Tag: "compute",
			Response: []hypervisor.HostView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				hs, err := s.compute.Hosts(p)
				return ok(w, hs, 0, err)
			}},
		{Method: "POST", Path: v1 + "/hosts/{host}/cordon", Summary: "Keep new VMs off a node, for maintenance; its VMs keep running (cluster admin)", Tag: "compute",
			Request: cordonRequest{}, Response: hypervisor.Cordon{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body cordonRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				c, err := s.compute.CordonNode(r.Context(), p, r.PathValue("host"), body.Reason)
				return ok(w, c, 0, err)
			}},
		{Method: "POST", Path: v1 + "/hosts/{host}/drain", Summary: "Cordon a node and move its VMs away: running ones live, stopped ones as they are; with restart, a VM that cannot move live is stopped, moved and started again; with convert, a VM with a local boot disk is stopped, its disk moved onto a volume, and it is moved and started again. Refused when the others have no room or the cluster would lose its quorum without the node (cluster admin); the cordon's drain field follows it", Tag: "compute",
			Request: drainRequest{}, Response: hypervisor.Cordon{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body drainRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				c, err := s.compute.DrainNode(r.Context(), p, r.PathValue("host"), hypervisor.DrainOptions{Restart: body.Restart, Convert: body.Convert})
				return ok(w, c, 0, err)
			}},
		{Method: "POST", Path: v1 + "/hosts/{host}/uncordon", Summary: "Let the scheduler place VMs on a node again, ending its drain (cluster admin)", Tag: "compute",
			Status: http.StatusNoContent, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return noContent(w, s.compute.UncordonNode(r.Context(), p, r.PathValue("host")))
			}},
		{Method: "GET", Path: v1 + "/compute/settings", Summary: "Overcommit ratios and the RAM kept for each host", Tag: "compute",
			Response: hypervisor.Settings{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				st := s.compute.Settings()
				return ok(w, st, st.Version, nil)
			}},
		{Method: "PUT", Path: v1 + "/compute/settings", Summary: "Change overcommit ratios and the host reserve (cluster admin); honours If-Match", Tag: "compute",
			Request: hypervisor.Settings{}, Response: hypervisor.Settings{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body hypervisor.Settings
				if err := decode(r, &body); err != nil {
					return err
				}
				st, err := s.compute.SetSettings(r.Context(), p, body, im)
				return ok(w, st, versionOf(st, err), err)
			}},
		{Method: "GET", Path: v1 + "/images", Summary: "Images you can see; q searches names, OS and descriptions", Tag: "images",
			Response: []hypervisor.Image{}, Query: []string{"q"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return ok(w, s.images.List(p, r.URL.Query().Get("q")), 0, nil)
			}},
		{Method: "GET", Path: v1 + "/images/{image}", Summary: "An image, by ID or name", Tag: "images",
			Response: hypervisor.Image{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				img, err := s.images.Get(p, r.PathValue("image"))
				return ok(w, img, versionOf(img, err), err)
			}},
		{Method: "POST", Path: v1 + "/images/upload", Summary: "Upload an image (qcow2, raw or ISO) as the request body; its attributes are query parameters", Tag: "images",
			Upload: true, Response: hypervisor.Image{}, Status: http.StatusCreated,
			Query: []string{"name", "project", "visibility", "min_disk_gib", "min_ram_mib", "os_type", "os_version", "description", "firmware"},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				spec, err := imageSpecFromQuery(r)
				if err != nil {
					return err
				}
				if err := s.images.CheckRoom(r.Context(), p, spec, r.ContentLength); err != nil {
					return err
				}
				img, err := s.images.Upload(r.Context(), p, spec, r.Body)
				return created(w, img, versionOf(img, err), err)
			}},
		{Method: "POST", Path: v1 + "/images/import", Summary: "Import an image from an http(s) URL on your network", Tag: "images",
			Request: importRequest{}, Response: hypervisor.Image{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body importRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				img, err := s.images.Import(r.Context(), p, body.ImageSpec, body.URL)
				return created(w, img, versionOf(img, err), err)
			}},
		{Method: "PATCH", Path: v1 + "/images/{image}", Summary: "Rename an image or change its visibility; honours If-Match", Tag: "images",
			Request: imageUpdate{}, Response: hypervisor.Image{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body imageUpdate
				if err := decode(r, &body); err != nil {
					return err
				}
				img, err := s.images.Update(r.Context(), p, r.PathValue("image"), body.Name, body.Visibility, im)
				return ok(w, img, versionOf(img, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/images/{image}", Summary: "Delete an image; VMs made from it keep running; honours If-Match", Tag: "images",
			Status: http.StatusNoContent, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				return noContent(w, s.images.Delete(r.Context(), p, r.PathValue("image"), im))
			}},
	}
}

// imageSpecFromQuery reads an upload's attributes from its query string,
// since its body is the image itself.
func imageSpecFromQuery(r *http.Request) (hypervisor.ImageSpec, error) {
	q := r.URL.Query()
	spec := hypervisor.ImageSpec{Name: q.Get("name"), Project: q.Get("project"), Visibility: q.Get("visibility"),
		OSType: q.Get("os_type"), OSVersion: q.Get("os_version"), Description: q.Get("description"), Firmware: q.Get("firmware")}
	for key, dst := range map[string]*int64{"min_disk_gib": &spec.MinDiskGiB, "min_ram_mib": &spec.MinRAMMiB} {
		if v := q.Get(key); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return spec, errorf(http.StatusBadRequest, "invalid_argument", key+" must be a whole number ≥ 0")
			}
			*dst = n
		}
	}
	return spec, nil
}

// drainRequest is the body of a drain: whether VMs that cannot move live
// may be stopped, moved and started again.
type drainRequest struct {
	Restart bool `json:"restart,omitempty"`
	// Convert: a VM with a local boot disk is stopped, its disk moved
	// onto a replicated volume, and it is moved and started again.
	Convert bool `json:"convert,omitempty"`
}

// cordonRequest is the body of a cordon: why, for the other admins.
type cordonRequest struct {
	Reason string `json:"reason,omitempty"`
}

// migrateRequest names where a VM goes; empty: the scheduler chooses.
// PostCopy lets a live migration go post-copy after its first pass over
// the guest's memory: sure to end, but a break of the stream or of either
// node while it is post-copy loses the guest's memory (it boots again
// from its volumes on the target).
type migrateRequest struct {
	Node     string `json:"node,omitempty"`
	PostCopy bool   `json:"post_copy,omitempty"`
}
