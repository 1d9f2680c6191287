package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
	"github.com/hashicorp/go-memdb"
)

// Cluster is what the volume service needs from the consensus node.
type Cluster interface {
	Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error)
	ConsistentRead(ctx context.Context) error
	Store() *consensus.Store
	Name() string
}

// Provisioner creates, removes and resizes replicas on any node of the
// cluster (the replica protocol's client; the local host for this node).
type Provisioner interface {
	Create(ctx context.Context, node, diskID, replicaID string, size int64, layered bool) error
	Remove(ctx context.Context, node, replicaID string) error
	Resize(ctx context.Context, node, replicaID string, epoch uint64, size int64) error
}

// VMs attaches volumes to VMs and detaches them: compute checks the VM
// (its project, node and state) in the transaction that changes the
// volume. vol is the volume as the caller found it.
type VMs interface {
	AttachVolume(ctx context.Context, p *identity.Principal, vol *Volume, vmRef string, ifMatch uint64) (*Volume, error)
	DetachVolume(ctx context.Context, p *identity.Principal, vol *Volume, ifMatch uint64) (*Volume, error)
}

// ImageFinder resolves an image the caller may use in a project to its ID
// and virtual size; ISO images are refused (they are not disks).
type ImageFinder func(p *identity.Principal, projectID, ref string) (id string, virtualSize int64, err error)

// Deps are the service's collaborators.
type Deps struct {
	Cluster  Cluster
	Identity *identity.Service
	// Provisioner makes the replicas; nil: volumes cannot be created or
	// extended through this node.
	Provisioner Provisioner
	// VMs finds the VM a volume is attached to; nil: volumes attach to
	// nodes only.
	VMs VMs
	// Images finds the image a volume is made from; nil: volumes are
	// blank.
	Images ImageFinder
	// ExportAddr is this node's volume export port as clients reach it
	// (host:port); "": volumes are not exported through this node.
	ExportAddr string
	Logger     *slog.Logger
}

// Service is volumes' business logic for the API and the CLI: it
// authorizes, validates, places replicas and sends audited commands.
type Service struct {
	c    Cluster
	id   *identity.Service
	prov Provisioner
	vms  VMs
	imgs ImageFinder
	log  *slog.Logger
	// exportAddr is this node's volume export port (host:port), "" off.
	exportAddr string
	local      *NodeServer // this node's, for exports
}

// SetLocal gives the service this node's volume server: an export is
// granted once the volume is served.
func (s *Service) SetLocal(n *NodeServer) { s.local = n }

// NewService returns the volume service.
func NewService(d Deps) *Service {
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{c: d.Cluster, id: d.Identity, prov: d.Provisioner, vms: d.VMs, imgs: d.Images, log: log, exportAddr: d.ExportAddr}
}

// Create is the input for creating a volume.
type Create struct {
	Name    string `json:"name"`
	SizeGiB int64  `json:"size_gib"`
	Project string `json:"project,omitempty"` // name or ID; default: the caller's only project
	Image   string `json:"image,omitempty"`   // name or ID: the volume starts as a copy of it
	// Snapshot (name or ID): the volume is layered on it, copy-on-write;
	// Source: on a snapshot of that volume, taken now (a clone). Size
	// defaults to theirs.
	Snapshot string `json:"snapshot,omitempty"`
	Source   string `json:"source,omitempty"`
}

// AttachTo says what to attach a volume to: a VM, or (cluster admins) a
// node's host.
type AttachTo struct {
	VM   string `json:"vm,omitempty"`
	Node string `json:"node,omitempty"`
}

// MaxReplicas is how many copies a volume has on a cluster of at least
// that many nodes with an active disk.
const MaxReplicas = 3

// Names follow the rules of VM names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// opTimeout bounds the clean-up of a creation that failed, which runs even
// when the request that started it is gone.
const opTimeout = time.Minute

func invalid(format string, args ...any) error {
	return consensus.Errorf(consensus.CodeInvalid, format, args...)
}

func unavailable() error {
	return consensus.Errorf(consensus.CodeUnavailable, "volumes are not available on this node")
}

// canRead: a project's readers see its volumes; canChange: its members
// act on them (cluster admins are both everywhere, as with VMs).
func canRead(p *identity.Principal, v *Volume) bool   { return p.Can(v.ProjectID, identity.RoleReader) }
func canChange(p *identity.Principal, v *Volume) bool { return p.Can(v.ProjectID, identity.RoleMember) }

// project resolves a project reference the caller acts in.
func (s *Service) project(p *identity.Principal, ref string) (*identity.Project, error) {
	if ref == "" {
		ids := p.ProjectIDs()
		if len(ids) == 0 && p.IsClusterAdmin() {
			for _, pr := range s.id.ListProjects(p) {
				ids = append(ids, pr.ID)
			}
		}
		if len(ids) != 1 {
			return nil, invalid("you are in %d projects: say which one", len(ids))
		}
		ref = ids[0]
	}
	return s.id.GetProject(p, ref)
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Create places a volume's replicas, records it (charging the project),
// makes the replicas and marks it available. A replica that cannot be
// made undoes everything: no record, no charge, no replica is left.
func (s *Service) Create(ctx context.Context, p *identity.Principal, req Create) (*Volume, error) {
	return s.create(ctx, p, req, nil)
}

// CreateFromVMDisk is Create for a volume that takes over a stopped VM's
// local boot disk: its node fills the volume from the disk once the volume
// is attached to the VM (compute's convert-disk).
func (s *Service) CreateFromVMDisk(ctx context.Context, p *identity.Principal, req Create, vmID string) (*Volume, error) {
	return s.create(ctx, p, req, &Source{VMDisk: vmID})
}

func (s *Service) create(ctx context.Context, p *identity.Principal, req Create, src *Source) (*Volume, error) {
	const action = "volume.create"
	deny := func(project string, err error) (*Volume, error) {
		return nil, s.id.Deny(ctx, p, action, req.Name, project, err)
	}
	pr, err := s.project(p, req.Project)
	if err != nil {
		return deny("", err)
	}
	if !p.Can(pr.ID, identity.RoleMember) {
		return deny(pr.ID, consensus.Errorf(consensus.CodeForbidden, "not allowed to create volumes in project %s", pr.Name))
	}
	if !nameRE.MatchString(req.Name) {
		return deny(pr.ID, consensus.Errorm(consensus.CodeInvalid, "name_rule", "volume name %q must be 1-63 letters, digits, dots, dashes or underscores", req.Name))
	}
	froms := 0
	for _, f := range []string{req.Image, req.Snapshot, req.Source} {
		if f != "" {
			froms++
		}
	}
	if froms > 1 || froms == 1 && src != nil {
		return deny(pr.ID, invalid("a volume is made from one of an image, a snapshot or a source volume"))
	}
	var parent *Volume
	switch {
	case req.Snapshot != "":
		sn, err := s.freshKind(ctx, p, req.Snapshot, KindSnapshot)
		if err == nil && sn.ProjectID != pr.ID {
			err = notFound("snapshot", req.Snapshot)
		}
		if err != nil {
			return deny(pr.ID, err)
		}
		parent = sn
	case req.Source != "":
		v, err := s.fresh(ctx, p, req.Source)
		if err == nil && v.ProjectID != pr.ID {
			err = notFound("volume", req.Source)
		}
		if err != nil {
			return deny(pr.ID, err)
		}
		parent = v
	}
	if parent != nil && req.SizeGiB == 0 {
		req.SizeGiB = parent.SizeGiB()
	}
	if req.SizeGiB < 1 || req.SizeGiB > MaxSizeGiB {
		return deny(pr.ID, invalid("a volume is 1-%d GiB, not %d", MaxSizeGiB, req.SizeGiB))
	}
	if parent != nil && req.SizeGiB*GiB < parent.SizeBytes {
		return deny(pr.ID, invalid("%s is %d GiB: a volume made from it is at least that", parent.Name, parent.SizeGiB()))
	}
	if s.prov == nil {
		return deny(pr.ID, unavailable())
	}
	if err := identity.WouldFit(s.c.Store().ReadTxn(), pr.ID, identity.Resources{Volumes: 1, VolumeGiB: req.SizeGiB}); err != nil {
		return deny(pr.ID, err) // before a clone's snapshot is taken; checked again by the command
	}
	size := req.SizeGiB * GiB
	if req.Image != "" {
		if s.imgs == nil {
			return deny(pr.ID, consensus.Errorf(consensus.CodeUnavailable, "images are not available on this node"))
		}
		img, vsize, err := s.imgs(p, pr.ID, req.Image)
		if err != nil {
			return deny(pr.ID, err)
		}
		if vsize > size {
			return deny(pr.ID, invalid("image %s is %d GiB, larger than the %d GiB volume", req.Image, gib(vsize), req.SizeGiB))
		}
		src = &Source{Image: img}
	}
	id := newID("vol")
	reps, err := place(s.c.Store().ReadTxn(), id)
	if err != nil {
		return deny(pr.ID, err)
	}
	vol := Volume{ID: id, Name: req.Name, ProjectID: pr.ID, SizeBytes: size, Replicas: reps, Source: src, CreatedAt: time.Now().UTC()}
	if req.Source != "" {
		// Last, as it takes a snapshot of the source; not for a name the
		// command would refuse (checked again by it).
		if Named(s.c.Store().ReadTxn(), pr.ID, req.Name) {
			return deny(pr.ID, consensus.Errorm(consensus.CodeAlreadyExists, "volume_exists", "a volume or snapshot named %q already exists in this project", req.Name))
		}
		sn, err := s.cloneParent(ctx, p, action, parent.ID)
		if err != nil {
			return nil, err
		}
		parent = sn
	}
	if parent != nil {
		vol.Parent = parent.ID
	}
	var out Volume
	if err := s.id.Mutate(ctx, p, action, req.Name, pr.ID, MsgCreateVolume, createVolumeCmd{Volume: vol, Clone: req.Source != ""}, &out); err != nil {
		settled, serr := s.settle(ctx, err, id)
		if serr != nil {
			// Perhaps recorded: take the record back (no replica exists yet).
			s.undoCreate(ctx, id, nil)
			return nil, err
		}
		if settled == nil {
			return nil, err // refused, or not committed
		}
	}
	made := 0
	for _, r := range reps {
		made++ // a failed Create may have left part of the replica
		if err := s.makeReplica(ctx, r, size, vol.Parent != ""); err != nil {
			// (A node just back whose disk is not open yet, a node
			// gone: nothing is left of the volume, and a try a moment
			// later may well work.)
			err = consensus.Errorf(consensus.CodeUnavailable, "create volume %s: replica %s on %s: %v", req.Name, r.ID, r.Node, err)
			if v := s.undoCreate(ctx, id, reps[:made]); v != nil {
				return v, nil
			}
			return nil, err
		}
	}
	if _, err := s.c.Apply(ctx, MsgSetVolumeState, setVolumeStateCmd{ID: id, State: StateAvailable}, &out); err != nil {
		if v, serr := s.settle(ctx, err, id); serr == nil && v != nil && v.State == StateAvailable {
			return v, nil
		}
		if v := s.undoCreate(ctx, id, reps); v != nil {
			return v, nil // it was made available after all
		}
		return nil, fmt.Errorf("create volume %s: %w", req.Name, err)
	}
	return &out, nil
}

// settle finds out what an Apply that failed did: for a refusal (an error
// with a code) nothing; otherwise it reads the volume linearizably, even
// when the request that asked is gone.
func (s *Service) settle(ctx context.Context, err error, id string) (*Volume, error) {
	if c := consensus.ErrorCode(err); c != "" && c != consensus.CodeUnavailable {
		return nil, nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if err := s.c.ConsistentRead(rctx); err != nil {
		return nil, err
	}
	return getVolume(s.c.Store().ReadTxn(), id), nil
}

// undoCreate takes back a creation that failed: first the record (the
// state machine removes it only while it is still being created), then,
// once the record is known to be gone, the replicas made so far. If the
// volume turns out to be available (a command whose answer was lost did
// commit), nothing is undone and it is returned. If the record's fate
// cannot be settled, nothing is removed: the volume stays "creating",
// which its owner can delete once it is abandoned, and the nodes'
// sweepers remove replicas of no volume.
func (s *Service) undoCreate(ctx context.Context, id string, reps []Replica) *Volume {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	gone := false
	for attempt := 0; attempt < 3 && !gone; attempt++ {
		_, err := s.c.Apply(ctx, MsgDeleteVolume, deleteVolumeCmd{ID: id, Undo: true}, nil)
		if err == nil || consensus.ErrorCode(err) == consensus.CodeNotFound {
			gone = true
			break
		}
		// Refused or of unknown outcome: look.
		rctx, rcancel := context.WithTimeout(ctx, opTimeout)
		rerr := s.c.ConsistentRead(rctx)
		rcancel()
		if rerr != nil {
			continue
		}
		switch v := getVolume(s.c.Store().ReadTxn(), id); {
		case v == nil:
			gone = true
		case v.State != StateCreating:
			return v
		}
	}
	if !gone {
		s.log.Error("undo volume creation: the record's fate is unknown; it and its replicas are kept", "volume", id)
		return nil
	}
	for _, r := range reps {
		if err := s.prov.Remove(ctx, r.Node, r.ID); err != nil {
			s.log.Warn("undo volume creation: replica left to the sweeper", "volume", id, "replica", r.ID, "node", r.Node, "err", err)
		}
	}
	return nil
}

// place chooses a volume's replicas: one per node, on the node's active,
// healthy disk with the most free bytes, nodes with the most free space
// first, up to MaxReplicas.
func place(txn *memdb.Txn, volID string) ([]Replica, error) {
	order, err := placeable(txn, nil)
	if err != nil {
		return nil, err
	}
	var reps []Replica
	for i, c := range order[:min(MaxReplicas, len(order))] {
		reps = append(reps, Replica{ID: fmt.Sprintf("%s-r%d", volID, i), Node: c.Node, Disk: c.Disk, State: ReplicaInSync})
	}
	return reps, nil
}

// spot is where a replica can go: a node and its best disk.
type spot struct{ Node, Disk string }

// placeable lists, one per node, the active healthy disk with the most free
// bytes, nodes with the most free space first; skip says which disks not
// to use.
func placeable(txn *memdb.Txn, skip func(*storage.Disk) bool) ([]spot, error) {
	it, err := txn.Get("disks", "id")
	if err != nil {
		return nil, err
	}
	type node struct {
		name string
		best *storage.Disk
		free uint64
	}
	nodes := map[string]*node{}
	for o := it.Next(); o != nil; o = it.Next() {
		d := o.(*storage.Disk)
		if d.State != storage.DiskActive || d.Health != storage.HealthOK || d.FreeBytes == 0 || (skip != nil && skip(d)) {
			continue
		}
		n := nodes[d.Node]
		if n == nil {
			n = &node{name: d.Node}
			nodes[d.Node] = n
		}
		n.free += d.FreeBytes
		if n.best == nil || d.FreeBytes > n.best.FreeBytes || (d.FreeBytes == n.best.FreeBytes && d.ID < n.best.ID) {
			n.best = d
		}
	}
	if len(nodes) == 0 {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "no node has an active, healthy disk with free space for a volume")
	}
	var order []*node
	for _, n := range nodes {
		order = append(order, n)
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].free != order[j].free {
			return order[i].free > order[j].free
		}
		return order[i].name < order[j].name
	})
	out := make([]spot, len(order))
	for i, n := range order {
		out[i] = spot{n.name, n.best.ID}
	}
	return out, nil
}

// CanPlace tells whether a volume could be created through this node now:
// it can make replicas, and some node has a disk for one.
func (s *Service) CanPlace() bool {
	if s.prov == nil {
		return false
	}
	_, err := place(s.c.Store().ReadTxn(), "probe")
	return err == nil
}
