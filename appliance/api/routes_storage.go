package api

import (
	"net/http"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// StorageHealth is the pool's redundancy and repair progress.
type StorageHealth struct {
	Node             string              `json:"node"`              // who answered: scrub figures are this node's
	DefaultLayout    string              `json:"default_layout"`    // k+m new objects get unless their bucket chose another
	DegradedSegments int64               `json:"degraded_segments"` // object segments below full redundancy now
	Scrub            storage.RepairStats `json:"scrub"`
	Heal             storage.RepairStats `json:"heal"`             // meaningful on the leader
	GC               storage.GCStats     `json:"gc"`               // this node's sweep for orphan shards
	MultipartExpiry  storage.GCStats     `json:"multipart_expiry"` // abandoned uploads aborted; meaningful on the leader
}

type inlineBudgetRequest struct {
	Budget int64 `json:"inline_budget"` // bytes, 1 to 4 GiB
}

type layoutRequest struct {
	Data   int `json:"data"` // 0 and 0: back to the cluster default
	Parity int `json:"parity"`
}

type s3CredRequest struct {
	Project string `json:"project"`
}

type diskRequest struct {
	Node string `json:"node"`
	Path string `json:"path"`
}

func (s *Server) storageRoutes() []route {
	const v1 = "/api/v1"
	setState := func(state string) handlerFunc {
		return func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
			im, err := ifMatch(r)
			if err != nil {
				return err
			}
			d, err := s.storage.SetDiskState(r.Context(), p, r.PathValue("disk"), state, im)
			return ok(w, d, versionOfDisk(d, err), err)
		}
	}
	return []route{
		{Method: "POST", Path: v1 + "/s3/credentials", Summary: "Create an S3 access key for yourself in a project; the secret is shown once", Tag: "storage",
			Request: s3CredRequest{}, Response: identity.S3Credential{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body s3CredRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				c, err := s.id.CreateS3Credential(r.Context(), p, body.Project)
				return created(w, c, 0, err)
			}},
		{Method: "GET", Path: v1 + "/s3/credentials", Summary: "Your S3 access keys (all for cluster admins), without secrets", Tag: "storage",
			Response: []identity.S3Credential{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return ok(w, s.id.ListS3Credentials(p), 0, nil)
			}},
		{Method: "DELETE", Path: v1 + "/s3/credentials/{key}", Summary: "Revoke an S3 access key", Tag: "storage", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return noContent(w, s.id.DeleteS3Credential(r.Context(), p, r.PathValue("key")))
			}},
		{Method: "GET", Path: v1 + "/storage", Summary: "Storage health: objects below full redundancy, scrub, heal and garbage-collection progress (cluster admin)", Tag: "storage",
			Response: StorageHealth{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if !p.IsClusterAdmin() {
					return errorf(http.StatusForbidden, consensus.CodeForbidden, "not allowed to see storage health")
				}
				if s.health == nil {
					return errorf(http.StatusServiceUnavailable, consensus.CodeUnavailable, "storage health is not available on this node")
				}
				h, err := s.health(r.Context())
				return ok(w, h, 0, err)
			}},
		{Method: "GET", Path: v1 + "/storage/inline", Summary: "Bytes of small objects the pool keeps inline in its replicated state, and its budget for them (cluster admin)", Tag: "storage",
			Response: storage.InlineUsage{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.objects == nil {
					return errorf(http.StatusServiceUnavailable, consensus.CodeUnavailable, "object storage is not available on this node")
				}
				u, err := s.objects.Inline(p)
				return ok(w, u, 0, err)
			}},
		{Method: "PUT", Path: v1 + "/storage/inline", Summary: "Set the pool's budget for small objects kept inline (cluster admin): past it, small objects are erasure-coded like the rest; a budget below what is inline keeps what is there", Tag: "storage",
			Request: inlineBudgetRequest{}, Response: storage.InlineUsage{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.objects == nil {
					return errorf(http.StatusServiceUnavailable, consensus.CodeUnavailable, "object storage is not available on this node")
				}
				var body inlineBudgetRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				if err := s.objects.SetInlineBudget(r.Context(), p, body.Budget); err != nil {
					return err
				}
				u, err := s.objects.Inline(p)
				return ok(w, u, 0, err)
			}},
		{Method: "GET", Path: v1 + "/buckets", Summary: "Buckets you can see, with their layout (nil: the cluster default)", Tag: "storage",
			Response: []storage.Bucket{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.objects == nil {
					return errorf(http.StatusServiceUnavailable, consensus.CodeUnavailable, "object storage is not available on this node")
				}
				bs, err := s.objects.ListBuckets(r.Context(), p)
				return ok(w, bs, 0, err)
			}},
		{Method: "PUT", Path: v1 + "/buckets/{bucket}/layout", Summary: "Choose the erasure layout (k+m) of a bucket's new objects (project admin)", Tag: "storage",
			Request: layoutRequest{}, Response: storage.Bucket{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if s.objects == nil {
					return errorf(http.StatusServiceUnavailable, consensus.CodeUnavailable, "object storage is not available on this node")
				}
				var body layoutRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				b, err := s.objects.SetBucketLayout(r.Context(), p, r.PathValue("bucket"), body.Data, body.Parity)
				return ok(w, b, 0, err)
			}},
		{Method: "GET", Path: v1 + "/disks", Summary: "Disks in the storage pool, with health and capacity (cluster admin)", Tag: "storage",
			Response: []storage.Disk{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				ds, err := s.storage.ListDisks(p)
				return ok(w, ds, 0, err)
			}},
		{Method: "POST", Path: v1 + "/disks", Summary: "Offer a directory or mounted disk on a node to the pool (cluster admin)", Tag: "storage",
			Request: diskRequest{}, Response: storage.Disk{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body diskRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				d, err := s.storage.AddDisk(r.Context(), p, body.Node, body.Path)
				return created(w, d, versionOfDisk(d, err), err)
			}},
		{Method: "GET", Path: v1 + "/disks/{disk}", Summary: "One disk (cluster admin)", Tag: "storage", Response: storage.Disk{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				d, err := s.storage.GetDisk(p, r.PathValue("disk"))
				return ok(w, d, versionOfDisk(d, err), err)
			}},
		{Method: "POST", Path: v1 + "/disks/{disk}/drain", Summary: "Stop placing shards on a disk so it can be removed; honours If-Match", Tag: "storage",
			Response: storage.Disk{}, handler: setState(storage.DiskDraining)},
		{Method: "POST", Path: v1 + "/disks/{disk}/activate", Summary: "Place shards on a disk again; honours If-Match", Tag: "storage",
			Response: storage.Disk{}, handler: setState(storage.DiskActive)},
		{Method: "DELETE", Path: v1 + "/disks/{disk}", Summary: "Remove a drained disk from the pool; honours If-Match", Tag: "storage", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				return noContent(w, s.storage.RemoveDisk(r.Context(), p, r.PathValue("disk"), im))
			}},
	}
}

func versionOfDisk(d *storage.Disk, err error) uint64 {
	if err != nil || d == nil {
		return 0
	}
	return d.Version
}
