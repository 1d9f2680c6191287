package federation

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// Inventory is what a site tells its hub of itself: trimmed from its own
// API's answers, so the hub's copy says what the site says. The site's
// leader sends it when it changes (and on each new session, which is how
// the hub catches up after the site was away), and only its digest as a
// heartbeat otherwise.
type Inventory struct {
	Version  string            `json:"version"` // the site's software
	Protocol int               `json:"protocol"`
	Leader   string            `json:"leader"`
	Health   string            `json:"health"` // ok, or degraded while Alerts has any
	Alerts   []Alert           `json:"alerts,omitempty"`
	Nodes    []InvNode         `json:"nodes"`
	Capacity InvCapacity       `json:"capacity"`
	Projects []InvProject      `json:"projects"`
	VMs      []InvVM           `json:"vms"`
	Volumes  []InvVolume       `json:"volumes"`
	Images   []InvImage        `json:"images"`
	Buckets  []InvBucket       `json:"buckets"`
	Errors   map[string]string `json:"errors,omitempty"` // parts the site could not read, and why
}

// Alert is one thing a site's admin should look at: critical ones make
// the site degraded, warnings (such as a site too small to lose a node)
// do not.
//
// Kind is a capacity reason's (hypervisor.Reason) or node_down,
// degraded_volumes, vm_error; Node, Names and Count are its particulars,
// from which a page words it in its language; Text says it in English.
type Alert struct {
	Kind     string   `json:"kind"`
	Severity string   `json:"severity"` // critical or warning
	Node     string   `json:"node,omitempty"`
	Names    []string `json:"names,omitempty"`
	Count    int64    `json:"count,omitempty"`
	Text     string   `json:"text"`
}

// InvNode is one node of a site.
type InvNode struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Healthy   bool   `json:"healthy"`
	Leader    bool   `json:"leader,omitempty"`
	CPUs      int64  `json:"cpus,omitempty"`
	RAMMiB    int64  `json:"host_ram_mib,omitempty"`
	VMs       int    `json:"vms"`
	DiskBytes uint64 `json:"disk_bytes"`
	DiskFree  uint64 `json:"disk_free_bytes"`
	Cordoned  bool   `json:"cordoned,omitempty"`
}

// InvCapacity is a site's capacity and what is used of it.
type InvCapacity struct {
	VCPUs        int64  `json:"vcpus"`
	UsedVCPUs    int64  `json:"used_vcpus"`
	RAMMiB       int64  `json:"ram_mib"`
	UsedRAMMiB   int64  `json:"used_ram_mib"`
	StorageBytes uint64 `json:"storage_bytes"` // raw
	StorageFree  uint64 `json:"storage_free_bytes"`
	NPlusOne     bool   `json:"n_plus_one"`
}

// FreeStoragePercent is the share of raw storage free, 0-100 (100 for a
// site with no disks: nothing is short).
func (c InvCapacity) FreeStoragePercent() float64 {
	if c.StorageBytes == 0 {
		return 100
	}
	return 100 * float64(c.StorageFree) / float64(c.StorageBytes)
}

// InvProject is a project with what its resources use.
type InvProject struct {
	Name        string `json:"name"`
	VMs         int    `json:"vms"`
	VCPUs       int64  `json:"vcpus"`
	RAMMiB      int64  `json:"ram_mib"`
	VolumeBytes int64  `json:"volume_bytes"`
	BucketBytes int64  `json:"bucket_bytes"`
}

// InvVM is a VM.
type InvVM struct {
	Name    string `json:"name"`
	Project string `json:"project"`
	State   string `json:"state"`
	Node    string `json:"node,omitempty"`
	VCPUs   int64  `json:"vcpus"`
	RAMMiB  int64  `json:"ram_mib"`
}

// InvVolume is a block volume.
type InvVolume struct {
	Name      string `json:"name"`
	Project   string `json:"project"`
	SizeBytes int64  `json:"size_bytes"`
	State     string `json:"state"`
	Degraded  bool   `json:"degraded,omitempty"`
}

// InvImage is an image.
type InvImage struct {
	Name    string `json:"name"`
	Project string `json:"project"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
}

// InvBucket is an S3 bucket.
type InvBucket struct {
	Name    string `json:"name"`
	Project string `json:"project"`
	Objects int64  `json:"objects"`
	Bytes   int64  `json:"bytes"`
}

// Sort orders the lists by name, so that the same content has the same
// digest.
func (inv *Inventory) Sort() {
	slices.SortFunc(inv.Nodes, func(a, b InvNode) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(inv.Projects, func(a, b InvProject) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(inv.VMs, func(a, b InvVM) int { return cmp.Or(cmp.Compare(a.Project, b.Project), cmp.Compare(a.Name, b.Name)) })
	slices.SortFunc(inv.Volumes, func(a, b InvVolume) int {
		return cmp.Or(cmp.Compare(a.Project, b.Project), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(inv.Images, func(a, b InvImage) int { return cmp.Or(cmp.Compare(a.Project, b.Project), cmp.Compare(a.Name, b.Name)) })
	slices.SortFunc(inv.Buckets, func(a, b InvBucket) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortStableFunc(inv.Alerts, func(a, b Alert) int { return cmp.Compare(a.Kind, b.Kind) })
}

// DegradedVolumes counts the site's volumes below full redundancy.
func (inv *Inventory) DegradedVolumes() int {
	n := 0
	for _, v := range inv.Volumes {
		if v.Degraded {
			n++
		}
	}
	return n
}

// Approx rounds a figure that moves all the time (free bytes, objects) to
// three significant digits, so that a busy site's inventory changes when
// the figure does in earnest, not at every write.
func Approx[T int64 | uint64](v T) T {
	var scale T = 1
	for v/scale >= 1000 {
		scale *= 10
	}
	return v / scale * scale
}

// Digest names an inventory's content; the hub's is the one that counts
// (it answers each push with it).
func Digest(inv *Inventory) string {
	b, err := json.Marshal(inv)
	if err != nil {
		panic(err) // plain data
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// SiteInventory is the hub's cached copy of a site's inventory, and what
// it knows of the site's session. It lives in the hub's replicated state,
// so every hub node answers alike and a hub restart keeps it.
type SiteInventory struct {
	SiteID    string     `json:"site_id"`
	Digest    string     `json:"digest,omitempty"`
	Inventory *Inventory `json:"inventory,omitempty"`
	// UpdatedAt is when the inventory last changed; ContactAt when the
	// site was last heard from (a push or a heartbeat).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	ContactAt time.Time `json:"contact_at,omitzero"`
	// The session as the hub node holding it last recorded it.
	Connected bool   `json:"connected"`
	Session   string `json:"session,omitempty"`
	HubNode   string `json:"hub_node,omitempty"`
	From      string `json:"from,omitempty"`
}

// pushInventoryCmd records a site's push: a whole inventory, or (nil)
// only that the site is there with the digest the hub holds.
type pushInventoryCmd struct {
	SiteID    string     `json:"site_id"`
	Serial    string     `json:"serial"`
	Digest    string     `json:"digest"`
	Inventory *Inventory `json:"inventory,omitempty"`
	// The session it came on: a push says the session is up (its start,
	// recorded apart, may have been lost or overtaken).
	Session string    `json:"session,omitempty"`
	HubNode string    `json:"hub_node,omitempty"`
	From    string    `json:"from,omitempty"`
	At      time.Time `json:"at"`
}

// errWholeInventory asks a site for its whole inventory: the hub holds
// another digest than the heartbeat's (or none).
var errWholeInventory = consensus.NewError(consensus.CodeConflict, "the hub holds another inventory: send the whole of it")

func applyPushInventory(tx *consensus.Tx, c *pushInventoryCmd) (any, error) {
	if !allowed(tx.Txn, c.SiteID, c.Serial) {
		return nil, errRevoked
	}
	cur := consensus.First[SiteInventory](tx.Txn, tInventory, "id", c.SiteID)
	next := SiteInventory{SiteID: c.SiteID}
	if cur != nil {
		next = *cur
	}
	if c.Inventory == nil {
		if cur == nil || cur.Digest != c.Digest {
			return nil, errWholeInventory
		}
	} else {
		next.Inventory, next.Digest, next.UpdatedAt = c.Inventory, c.Digest, c.At
	}
	if c.At.After(next.ContactAt) {
		next.ContactAt = c.At
		if c.Session != "" {
			next.Connected, next.Session, next.HubNode, next.From = true, c.Session, c.HubNode, c.From
		}
	}
	return nil, tx.Insert(tInventory, &next)
}

// sessionCmd records a site's session coming up on a hub node, or (not
// Connected) that session ending: only the session that is recorded ends
// it, so a late end of an old session does not hide a new one.
type sessionCmd struct {
	SiteID    string    `json:"site_id"`
	Session   string    `json:"session"`
	HubNode   string    `json:"hub_node"`
	From      string    `json:"from,omitempty"`
	Connected bool      `json:"connected"`
	At        time.Time `json:"at"`
}

func applySession(tx *consensus.Tx, c *sessionCmd) (any, error) {
	if consensus.First[Site](tx.Txn, tSites, "id", c.SiteID) == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "no site %s", c.SiteID)
	}
	cur := consensus.First[SiteInventory](tx.Txn, tInventory, "id", c.SiteID)
	next := SiteInventory{SiteID: c.SiteID}
	if cur != nil {
		next = *cur
	}
	if !c.Connected {
		if next.Session != c.Session {
			return nil, nil
		}
		next.Connected = false
		return nil, tx.Insert(tInventory, &next)
	}
	next.Connected, next.Session, next.HubNode, next.From = true, c.Session, c.HubNode, c.From
	if c.At.After(next.ContactAt) {
		next.ContactAt = c.At
	}
	return nil, tx.Insert(tInventory, &next)
}

// StaleAfter is how long a site may go unheard before the hub shows it
// unreachable: three heartbeats.
const StaleAfter = 3 * heartbeatEvery

// heartbeatEvery is how often a site whose inventory did not change says
// it is there.
const heartbeatEvery = 30 * time.Second

// Reachable tells whether the site has a session, as recorded, and was
// heard from lately.
//
// A site that never sent an inventory (older software) is reachable
// while its session is recorded.
func (s *SiteInventory) Reachable(now time.Time) bool {
	return s != nil && s.Connected && (s.Inventory == nil || now.Sub(s.ContactAt) < StaleAfter)
}
