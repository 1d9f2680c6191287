package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Storage's commands (range 128-255). Numbers are never reused.
const (
	MsgAddDisk      consensus.MessageType = 128
	MsgReportDisks  consensus.MessageType = 129
	MsgSetDiskState consensus.MessageType = 130
	MsgRemoveDisk   consensus.MessageType = 131
)

// Disk states, set by an admin.
const (
	DiskActive   = "active"   // takes new shards
	DiskDraining = "draining" // takes none; its shards move away, then it can be removed
)

// Disk health, reported by the node that owns the disk.
const (
	HealthUnknown = "unknown" // not reported yet
	HealthOK      = "ok"
	HealthFailed  = "failed"
)

// Disk is one disk offered to the pool: desired (node, path, state) set by the
// admin or the node's --disk flags, observed (health, capacity) reported by
// the node.
type Disk struct {
	ID         string `json:"id"`
	Node       string `json:"node"`
	Path       string `json:"path"`
	State      string `json:"state"`
	Health     string `json:"health"`
	Error      string `json:"error,omitempty"`
	TotalBytes uint64 `json:"total_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
	// Device is the filesystem the disk's directory is on, as its node
	// reports it ("major:minor"): two disks of one node with the same
	// device are one filesystem, whose space is counted once and whose
	// failure takes both. "" until a node that knows reports it.
	Device     string    `json:"device,omitempty"`
	ReportedAt time.Time `json:"reported_at,omitzero"`
	// Marker is the token of the disk's identity marker, set by its node's
	// first report; from then on a path without that marker is not opened.
	Marker    string    `json:"marker,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"` // changes with desired state only, not with reports
	// Remaining counts, for a draining disk, the objects and multipart parts
	// that still have a shard on it: the drain's progress. Computed on read,
	// never stored.
	Remaining int `json:"remaining,omitempty"`
}

// DiskID names a disk by its node and path, so adding the same disk twice is
// caught.
func DiskID(node, path string) string {
	h := sha256.Sum256([]byte(node + "\x00" + filepath.Clean(path)))
	return node + "-" + hex.EncodeToString(h[:3])
}

const tDisks = "disks"

type diskReport struct {
	ID     string `json:"id"`
	Marker string `json:"marker,omitempty"`
	Health string `json:"health"`
	Error  string `json:"error,omitempty"`
	Total  uint64 `json:"total"`
	Free   uint64 `json:"free"`
	Device string `json:"device,omitempty"`
}

type reportDisksCmd struct {
	Node    string       `json:"node"`
	At      time.Time    `json:"at"`
	Reports []diskReport `json:"reports"`
}

type setDiskStateCmd struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	IfMatch uint64 `json:"if_match,omitempty"`
}

type removeDiskCmd struct {
	ID      string `json:"id"`
	IfMatch uint64 `json:"if_match,omitempty"`
}

// Register adds storage's tables and commands.
func Register(reg *consensus.Registry) {
	consensus.RegisterTable[Disk](reg, &memdb.TableSchema{Name: tDisks, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"node": {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "Node"}},
	}})
	consensus.Handle(reg, MsgAddDisk, "AddDisk", applyAddDisk)
	consensus.Handle(reg, MsgReportDisks, "ReportDisks", applyReportDisks)
	consensus.Handle(reg, MsgSetDiskState, "SetDiskState", applySetDiskState)
	consensus.Handle(reg, MsgRemoveDisk, "RemoveDisk", applyRemoveDisk)
	registerObjects(reg)
}

func getDisk(tx *memdb.Txn, id string) *Disk { return consensus.First[Disk](tx, tDisks, "id", id) }

func applyAddDisk(tx *consensus.Tx, d *Disk) (any, error) {
	if getDisk(tx.Txn, d.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "disk %s (%s on %s) is already in the pool", d.ID, d.Path, d.Node)
	}
	row := *d
	row.State, row.Health, row.Version = DiskActive, HealthUnknown, tx.Index
	return &row, tx.Insert(tDisks, &row)
}

// applyReportDisks records what a node observed. Reports for disks that were
// removed meanwhile are ignored; reports never bump the version, so an
// admin's If-Match is not defeated by the node's periodic reports.
func applyReportDisks(tx *consensus.Tx, c *reportDisksCmd) (any, error) {
	for _, r := range c.Reports {
		cur := getDisk(tx.Txn, r.ID)
		if cur == nil || cur.Node != c.Node {
			continue
		}
		row := *cur
		row.Health, row.Error, row.TotalBytes, row.FreeBytes, row.ReportedAt = r.Health, r.Error, r.Total, r.Free, c.At
		if r.Device != "" {
			row.Device = r.Device // an older node's report (none) keeps what is known
		}
		if row.Marker == "" {
			row.Marker = r.Marker // the first marker stays the disk's
		}
		if err := tx.Insert(tDisks, &row); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func applySetDiskState(tx *consensus.Tx, c *setDiskStateCmd) (any, error) {
	cur := getDisk(tx.Txn, c.ID)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "disk %q not found", c.ID)
	}
	if c.IfMatch != 0 && c.IfMatch != cur.Version {
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "disk %s is at version %d, not %d", c.ID, cur.Version, c.IfMatch)
	}
	row := *cur
	row.State, row.Version = c.State, tx.Index
	return &row, tx.Insert(tDisks, &row)
}

func applyRemoveDisk(tx *consensus.Tx, c *removeDiskCmd) (any, error) {
	cur := getDisk(tx.Txn, c.ID)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "disk %q not found", c.ID)
	}
	if c.IfMatch != 0 && c.IfMatch != cur.Version {
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "disk %s is at version %d, not %d", c.ID, cur.Version, c.IfMatch)
	}
	if cur.State != DiskDraining {
		return nil, consensus.Errorf(consensus.CodeConflict, "disk %s is %s; drain it before removing it", c.ID, cur.State)
	}
	// Removing a disk that still holds shards or volume replicas would
	// drop redundancy on the floor: the healer and the volume repair move
	// them off first, and then it can go.
	if n := diskHolds(tx.Txn, c.ID); n > 0 {
		return nil, consensus.Errorf(consensus.CodeConflict, "disk %s still holds data of %d objects, parts or volumes; wait for the drain to finish", c.ID, n)
	}
	return nil, tx.Delete(tDisks, cur)
}

// Cluster is what the storage service needs from the consensus node.
type Cluster interface {
	Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error)
	ConsistentRead(ctx context.Context) error
	Store() *consensus.Store
	Name() string
}

// Service is storage's business logic for the API, the UI and the CLI.
type Service struct {
	c  Cluster
	id *identity.Service
}

// NewService returns the storage service; mutations are audited through id.
func NewService(c Cluster, id *identity.Service) *Service { return &Service{c: c, id: id} }

// ListDisks returns every disk in the pool, by node and path (cluster admins).
func (s *Service) ListDisks(p *identity.Principal) ([]Disk, error) {
	if !p.IsClusterAdmin() {
		return nil, consensus.Errorf(consensus.CodeForbidden, "not allowed to see the disks")
	}
	txn := s.c.Store().ReadTxn()
	ds := listDisks(txn, "")
	for i := range ds {
		withRemaining(txn, &ds[i])
	}
	return ds, nil
}

// withRemaining fills in a draining disk's progress.
func withRemaining(txn *memdb.Txn, d *Disk) {
	if d.State == DiskDraining {
		d.Remaining = diskHolds(txn, d.ID)
	}
}

// GetDisk returns one disk (cluster admins).
func (s *Service) GetDisk(p *identity.Principal, id string) (*Disk, error) {
	if !p.IsClusterAdmin() {
		return nil, consensus.Errorf(consensus.CodeForbidden, "not allowed to see the disks")
	}
	txn := s.c.Store().ReadTxn()
	d := getDisk(txn, id)
	if d == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "disk %q not found", id)
	}
	out := *d
	withRemaining(txn, &out)
	return &out, nil
}

func listDisks(tx *memdb.Txn, node string) []Disk {
	out := []Disk{}
	it, err := tx.Get(tDisks, "id")
	if err != nil {
		return out
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if d := obj.(*Disk); node == "" || d.Node == node {
			out = append(out, *d)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Path < out[j].Path
	})
	return out
}

// AddDisk offers a directory (or a mounted device) on a node to the pool. The
// node opens it and reports its health and capacity.
func (s *Service) AddDisk(ctx context.Context, p *identity.Principal, node, path string) (*Disk, error) {
	const action = "disk.add"
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, path, "", consensus.Errorf(consensus.CodeForbidden, "not allowed to manage disks"))
	}
	if node == "" || !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		return nil, s.id.Deny(ctx, p, action, path, "", consensus.Errorf(consensus.CodeInvalid, "a disk needs a node and a clean absolute path other than /, got %q on %q", path, node))
	}
	d := Disk{ID: DiskID(node, path), Node: node, Path: path, CreatedAt: time.Now().UTC()}
	var out Disk
	if err := s.id.Mutate(ctx, p, action, d.ID, "", MsgAddDisk, d, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetDiskState drains a disk (no new shards) or makes it active again.
func (s *Service) SetDiskState(ctx context.Context, p *identity.Principal, id, state string, ifMatch uint64) (*Disk, error) {
	action := "disk." + state
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, id, "", consensus.Errorf(consensus.CodeForbidden, "not allowed to manage disks"))
	}
	if state != DiskActive && state != DiskDraining {
		return nil, s.id.Deny(ctx, p, action, id, "", consensus.Errorf(consensus.CodeInvalid, "disk state must be active or draining, not %q", state))
	}
	var out Disk
	if err := s.id.Mutate(ctx, p, action, id, "", MsgSetDiskState, setDiskStateCmd{ID: id, State: state, IfMatch: ifMatch}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveDisk takes a drained disk out of the pool.
func (s *Service) RemoveDisk(ctx context.Context, p *identity.Principal, id string, ifMatch uint64) error {
	const action = "disk.remove"
	if !p.IsClusterAdmin() {
		return s.id.Deny(ctx, p, action, id, "", consensus.Errorf(consensus.CodeForbidden, "not allowed to manage disks"))
	}
	return s.id.Mutate(ctx, p, action, id, "", MsgRemoveDisk, removeDiskCmd{ID: id, IfMatch: ifMatch}, nil)
}

// SharedDevices maps each disk that shares its node's filesystem with
// another disk to the IDs of the others: their space is counted once, and
// they do not protect against each other's failure.
func SharedDevices(disks []Disk) map[string][]string {
	groups := map[string][]string{}
	for _, d := range disks {
		if d.Device != "" {
			k := d.Node + "\x00" + d.Device
			groups[k] = append(groups[k], d.ID)
		}
	}
	out := map[string][]string{}
	for _, ids := range groups {
		if len(ids) < 2 {
			continue
		}
		for _, id := range ids {
			for _, other := range ids {
				if other != id {
					out[id] = append(out[id], other)
				}
			}
		}
	}
	return out
}
