package identity

import (
	"encoding/json"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// Role is a user's role in one project.
type Role string

// Project roles, weakest first.
const (
	RoleReader Role = "reader"
	RoleMember Role = "member"
	RoleAdmin  Role = "admin"
)

func (r Role) valid() bool { return r == RoleReader || r == RoleMember || r == RoleAdmin }

// rank orders roles so "at least member" is a comparison.
func (r Role) rank() int {
	switch r {
	case RoleReader:
		return 1
	case RoleMember:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// User is a person or automation account.
type User struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	DisplayName  string `json:"display_name,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"` // never leaves the service
	ClusterAdmin bool   `json:"cluster_admin"`
	// Disabled: the user cannot sign in, and no token or S3 key of theirs
	// is accepted, until a cluster admin enables them again. Disabling
	// revokes their sessions and API tokens; S3 keys are kept, refused.
	Disabled  bool      `json:"disabled,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"`
}

// Project groups resources, members and a quota.
type Project struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
	Version     uint64    `json:"version"`
}

// Membership gives a user a role in a project. ID is "<project>/<user>".
type Membership struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	UserID    string `json:"user_id"`
	Role      Role   `json:"role"`
	Version   uint64 `json:"version"`
}

// Token kinds.
const (
	TokenSession = "session" // from a login, expires
	TokenAPI     = "api"     // long-lived, for automation
)

// Token is a bearer credential. Only a hash of its secret is stored.
type Token struct {
	ID         string    `json:"id"`
	UserID     string    `json:"user_id"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name,omitempty"`
	SecretHash []byte    `json:"secret_hash,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	Version    uint64    `json:"version"`
}

// Flavor is a VM size.
type Flavor struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	VCPUs   int64  `json:"vcpus"`
	RAMMiB  int64  `json:"ram_mib"`
	DiskGiB int64  `json:"disk_gib"`
	// LocalDisk: VMs of this size keep their boot disk on their node
	// (scratch space, lost with the node) instead of a replicated volume.
	LocalDisk bool      `json:"local_disk,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"`
}

// Resources is an amount of everything a quota limits.
type Resources struct {
	Instances   int64 `json:"instances"`
	VCPUs       int64 `json:"vcpus"`
	RAMMiB      int64 `json:"ram_mib"`
	DiskGiB     int64 `json:"disk_gib"`
	ObjectGiB   int64 `json:"object_gib"`
	FloatingIPs int64 `json:"floating_ips"`
	// Objects counts what object storage keeps per object in the replicated
	// state (objects, older versions, delete markers, uploads in progress
	// and their parts): each costs memory on every node whatever its size.
	Objects int64 `json:"objects"`
	// Volumes counts block volumes, VolumeGiB their provisioned size (each
	// replica holds it all) and that of their snapshots (as Cinder's
	// gigabytes quota does), Snapshots their snapshots.
	Volumes   int64 `json:"volumes"`
	VolumeGiB int64 `json:"volume_gib"`
	Snapshots int64 `json:"snapshots"`
	// Networks counts a project's own networks, Ports its VMs' NICs on
	// any network (Neutron's network and port quotas).
	Networks int64 `json:"networks"`
	Ports    int64 `json:"ports"`
	Routers  int64 `json:"routers"`
}

// UnmarshalJSON takes a missing "objects", "volumes", "volume_gib",
// "snapshots", "networks", "ports" or "routers" as Unlimited: limits written before they existed (in the
// log, in snapshots, from older clients) did not limit them. Like every row and command it ignores fields
// it does not know, so a newer node's state decodes here; the API refuses
// unknown fields itself (appliance/api).
func (r *Resources) UnmarshalJSON(b []byte) error {
	type plain Resources
	var v struct {
		plain
		Objects   *int64 `json:"objects"`
		Volumes   *int64 `json:"volumes"`
		VolumeGiB *int64 `json:"volume_gib"`
		Snapshots *int64 `json:"snapshots"`
		Networks  *int64 `json:"networks"`
		Ports     *int64 `json:"ports"`
		Routers   *int64 `json:"routers"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Resources(v.plain)
	for _, f := range []struct {
		dst *int64
		src *int64
	}{{&r.Objects, v.Objects}, {&r.Volumes, v.Volumes}, {&r.VolumeGiB, v.VolumeGiB}, {&r.Snapshots, v.Snapshots}, {&r.Networks, v.Networks}, {&r.Ports, v.Ports}, {&r.Routers, v.Routers}} {
		*f.dst = Unlimited
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	return nil
}

// Unlimited in a quota field means no limit.
const Unlimited = -1

// Quota is a project's limits and what it uses now. ID is the project ID.
type Quota struct {
	ID      string    `json:"project_id"`
	Limits  Resources `json:"limits"`
	Usage   Resources `json:"usage"`
	Version uint64    `json:"version"`
}

// UnmarshalJSON reads a quota row; its usage of a resource it did not
// record yet is zero, not unlimited.
func (q *Quota) UnmarshalJSON(b []byte) error {
	type plain Quota
	var v plain
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*q = Quota(v)
	q.Usage = q.Usage.clampZero()
	return nil
}

// DefaultQuota is what a new project gets until a cluster admin changes it.
var DefaultQuota = Resources{Instances: 10, VCPUs: 20, RAMMiB: 51200, DiskGiB: 1000, ObjectGiB: 1000, FloatingIPs: 5, Objects: 1_000_000,
	Volumes: 20, VolumeGiB: 1000, Snapshots: 50, Networks: 100, Ports: 500, Routers: 10}

// AuditEntry records one mutating request and its result.
type AuditEntry struct {
	ID        string    `json:"id"` // zero-padded Raft index: sorts by time of commit
	Time      time.Time `json:"time"`
	UserID    string    `json:"user_id,omitempty"`
	UserName  string    `json:"user,omitempty"`
	ProjectID string    `json:"project_id,omitempty"`
	Action    string    `json:"action"`   // e.g. project.create
	Resource  string    `json:"resource"` // the ID or name acted on
	Result    string    `json:"result"`   // "success" or an error code
	Message   string    `json:"message,omitempty"`
	// Key and Args name a refusal's Message (consensus.Errorm's), or
	// Format and Args (consensus.Errorf's), for pages in another language.
	Key        string             `json:"key,omitempty"`
	Format     string             `json:"format,omitempty"`
	Args       []string           `json:"args,omitempty"`
	Inner      []*consensus.Error `json:"inner,omitempty"` // refusals quoted in Args, by index
	RemoteAddr string             `json:"remote_addr,omitempty"`
	Node       string             `json:"node,omitempty"`  // which node took the request
	Count      int                `json:"count,omitempty"` // attempts this entry stands for, when batched (failed logins)
}
