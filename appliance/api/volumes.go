package api

import (
	"net/http"
	"strconv"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/volume"
)

type extendRequest struct {
	SizeGiB int64 `json:"size_gib"`
}

// volumeRoutes are block volumes': a project's readers see them, its
// members change them; attaching to a node's host is cluster admins'.
func (s *Server) volumeRoutes() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "GET", Path: v1 + "/volumes", Summary: "Block volumes you can see, optionally of one project", Tag: "volumes",
			Response: []volume.Volume{}, Query: []string{"project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				vs, err := s.volumes.List(p, r.URL.Query().Get("project"))
				return ok(w, vs, 0, err)
			}},
		{Method: "POST", Path: v1 + "/volumes", Summary: "Create a block volume of size_gib GiB, replicated across nodes", Tag: "volumes",
			Request: volume.Create{}, Response: volume.Volume{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body volume.Create
				if err := decode(r, &body); err != nil {
					return err
				}
				v, err := s.volumes.Create(r.Context(), p, body)
				return created(w, v, volumeVersion(v, err), err)
			}},
		{Method: "GET", Path: v1 + "/volumes/{volume}", Summary: "A block volume, by ID or name: size, state, replicas, attachment", Tag: "volumes",
			Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				v, err := s.volumes.Get(p, r.PathValue("volume"))
				return ok(w, v, volumeVersion(v, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/volumes/{volume}", Summary: "Delete a detached block volume and its replicas; honours If-Match", Tag: "volumes",
			Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				v, err := s.volumes.Delete(r.Context(), p, r.PathValue("volume"), im)
				return ok(w, v, 0, err)
			}},
		{Method: "POST", Path: v1 + "/volumes/{volume}/extend", Summary: "Grow a block volume to size_gib GiB; honours If-Match", Tag: "volumes",
			Request: extendRequest{}, Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body extendRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				v, err := s.volumes.Extend(r.Context(), p, r.PathValue("volume"), body.SizeGiB, im)
				return ok(w, v, volumeVersion(v, err), err)
			}},
		{Method: "POST", Path: v1 + "/volumes/{volume}/upload", Summary: "Write a qcow2 or raw disk image (the request body) into a detached block volume, replacing its contents", Tag: "volumes",
			Upload: true, Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.compute == nil {
					return consensus.Errorf(consensus.CodeUnavailable, "volume uploads are not available on this node")
				}
				if _, err := s.compute.UploadVolume(r.Context(), p, r.PathValue("volume"), r.Body); err != nil {
					return err
				}
				v, err := s.volumes.Get(p, r.PathValue("volume"))
				return ok(w, v, volumeVersion(v, err), err)
			}},
		{Method: "GET", Path: v1 + "/volumes/{volume}/download", Summary: "A detached block volume as a qcow2 (default) or raw disk image", Tag: "volumes",
			Query: []string{"format"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.compute == nil {
					return consensus.Errorf(consensus.CodeUnavailable, "volume downloads are not available on this node")
				}
				format := r.URL.Query().Get("format")
				return s.compute.DownloadVolume(r.Context(), p, r.PathValue("volume"), format, func(n int64) {
					w.Header().Set("Content-Type", "application/octet-stream")
					w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
				}, w)
			}},
		{Method: "POST", Path: v1 + "/volumes/{volume}/export", Summary: "Serve a detached block volume read-only to backup tools (NBD over TLS on the node's export port) and grant a client certificate for it", Tag: "volumes",
			Response: volume.ExportGrant{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if p.Delegated() {
					return errDelegatedExport
				}
				g, err := s.volumes.Export(r.Context(), p, "", r.PathValue("volume"))
				return ok(w, g, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/volumes/{volume}/export", Summary: "End a block volume's export", Tag: "volumes",
			Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				v, err := s.volumes.Unexport(r.Context(), p, "", r.PathValue("volume"))
				return ok(w, v, volumeVersion(v, err), err)
			}},
		{Method: "POST", Path: v1 + "/volumes/{volume}/attach", Summary: "Attach a block volume to a VM, or to a node's host (cluster admin); honours If-Match", Tag: "volumes",
			Request: volume.AttachTo{}, Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body volume.AttachTo
				if err := decode(r, &body); err != nil {
					return err
				}
				v, err := s.volumes.Attach(r.Context(), p, r.PathValue("volume"), body, im)
				return ok(w, v, volumeVersion(v, err), err)
			}},
		{Method: "POST", Path: v1 + "/volumes/{volume}/detach", Summary: "Detach a block volume; honours If-Match", Tag: "volumes",
			Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				v, err := s.volumes.Detach(r.Context(), p, r.PathValue("volume"), im)
				return ok(w, v, volumeVersion(v, err), err)
			}},
		{Method: "POST", Path: v1 + "/volumes/{volume}/snapshots", Summary: "Snapshot a block volume: crash-consistent, quiesced through qemu-guest-agent when its VM's guest runs one; 201 once taken, 202 while its writer is still taking it", Tag: "volumes",
			Request: snapshotRequest{}, Response: volume.Volume{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body snapshotRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				v, err := s.volumes.CreateSnapshot(r.Context(), p, r.PathValue("volume"), body.Name)
				if err == nil && v.State == volume.StateCreating {
					writeJSON(w, http.StatusAccepted, v, v.Version)
					return nil
				}
				return created(w, v, volumeVersion(v, err), err)
			}},
		{Method: "GET", Path: v1 + "/snapshots", Summary: "Volume snapshots you can see, optionally of one project or one volume", Tag: "volumes",
			Response: []volume.Volume{}, Query: []string{"project", "volume"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				vs, err := s.volumes.ListSnapshots(p, r.URL.Query().Get("project"), r.URL.Query().Get("volume"))
				return ok(w, vs, 0, err)
			}},
		{Method: "GET", Path: v1 + "/snapshots/{snapshot}", Summary: "A volume snapshot, by ID or name", Tag: "volumes",
			Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				v, err := s.volumes.GetSnapshot(p, r.PathValue("snapshot"))
				return ok(w, v, volumeVersion(v, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/snapshots/{snapshot}", Summary: "Delete a volume snapshot (volumes made from it keep their data); honours If-Match", Tag: "volumes",
			Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				v, err := s.volumes.DeleteSnapshot(r.Context(), p, r.PathValue("snapshot"), im)
				return ok(w, v, 0, err)
			}},
		{Method: "POST", Path: v1 + "/snapshots/{snapshot}/export", Summary: "Serve a volume snapshot read-only to backup tools (NBD over TLS on the node's export port) and grant a client certificate for it", Tag: "volumes",
			Response: volume.ExportGrant{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if p.Delegated() {
					return errDelegatedExport
				}
				g, err := s.volumes.Export(r.Context(), p, volume.KindSnapshot, r.PathValue("snapshot"))
				return ok(w, g, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/snapshots/{snapshot}/export", Summary: "End a volume snapshot's export", Tag: "volumes",
			Response: volume.Volume{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				v, err := s.volumes.Unexport(r.Context(), p, volume.KindSnapshot, r.PathValue("snapshot"))
				return ok(w, v, volumeVersion(v, err), err)
			}},
	}
}

type snapshotRequest struct {
	Name string `json:"name"`
}

func volumeVersion(v *volume.Volume, err error) uint64 {
	if err != nil || v == nil {
		return 0
	}
	return v.Version
}

// errDelegatedExport refuses a hub user an export: its client certificate
// would read the volume after the hub's grant is gone.
var errDelegatedExport = errorf(http.StatusForbidden, consensus.CodeForbidden, "a hub user cannot export a site's volumes: ask the site's admin")
