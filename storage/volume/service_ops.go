package volume

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// abandonedAfter is when a volume still being created is taken to be one
// whose creator died: its owner may delete it.
const abandonedAfter = 10 * time.Minute

// Get returns a volume by ID or by name among the projects the caller can
// read. Another project's volume is not found.
func (s *Service) Get(p *identity.Principal, ref string) (*Volume, error) {
	return s.get(p, ref, "")
}

// get finds a record of one kind: a volume (""), or a snapshot the owner
// has not deleted.
func (s *Service) get(p *identity.Principal, ref, kind string) (*Volume, error) {
	what := "volume"
	if kind == KindSnapshot {
		what = "snapshot"
	}
	txn := s.c.Store().ReadTxn()
	if v := getVolume(txn, ref); v != nil && v.Kind == kind && !v.Hidden && canRead(p, v) {
		return v.Viewed(), nil
	}
	var found []*Volume
	for _, pid := range s.readable(p) {
		if v := consensus.First[Volume](txn, tVolumes, "name", pid, ref); v != nil && v.Kind == kind && !v.Hidden {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return nil, notFound(what, ref)
	case 1:
		return found[0].Viewed(), nil
	}
	return nil, invalid("%d %ss are named %q in your projects: use the %s's ID", len(found), what, ref, what)
}

// fresh is Get for a request that acts on a volume: one created a moment
// ago through another node is found after catching up with the leader.
func (s *Service) fresh(ctx context.Context, p *identity.Principal, ref string) (*Volume, error) {
	return s.freshKind(ctx, p, ref, "")
}

func (s *Service) freshKind(ctx context.Context, p *identity.Principal, ref, kind string) (*Volume, error) {
	v, err := s.get(p, ref, kind)
	if consensus.ErrorCode(err) != consensus.CodeNotFound {
		return v, err
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	return s.get(p, ref, kind)
}

// readable lists the project IDs the caller can read (every project for a
// cluster admin).
func (s *Service) readable(p *identity.Principal) []string {
	if !p.IsClusterAdmin() {
		return p.ProjectIDs()
	}
	var ids []string
	for _, pr := range s.id.ListProjects(p) {
		ids = append(ids, pr.ID)
	}
	return ids
}

// List returns the volumes the caller can see, optionally of one project,
// by project and name.
func (s *Service) List(p *identity.Principal, project string) ([]Volume, error) {
	return s.list(p, project, "")
}

func (s *Service) list(p *identity.Principal, project, kind string) ([]Volume, error) {
	pids := s.readable(p)
	if project != "" {
		pr, err := s.id.GetProject(p, project)
		if err != nil {
			return nil, err
		}
		pids = []string{pr.ID}
	}
	txn := s.c.Store().ReadTxn()
	out := []Volume{}
	for _, pid := range pids {
		for _, v := range byProject(txn, pid) {
			if v.Kind == kind && !v.Hidden {
				out = append(out, v)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ProjectID != out[j].ProjectID {
			return out[i].ProjectID < out[j].ProjectID
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func byProject(txn *memdb.Txn, pid string) []Volume {
	var out []Volume
	it, err := txn.Get(tVolumes, "project", pid)
	if err != nil {
		return nil
	}
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, *o.(*Volume).Viewed())
	}
	return out
}

// changeable finds a volume the caller may act on: found if they can read
// it, forbidden if they cannot change it.
func (s *Service) changeable(ctx context.Context, p *identity.Principal, action, ref string) (*Volume, error) {
	return s.changeableKind(ctx, p, action, ref, "")
}

func (s *Service) changeableKind(ctx context.Context, p *identity.Principal, action, ref, kind string) (*Volume, error) {
	v, err := s.freshKind(ctx, p, ref, kind)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !canChange(p, v) {
		return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change volume %s", v.Name))
	}
	return v, nil
}

// Delete removes a detached volume's record, refunding its project, then
// its replicas (best effort: the nodes' sweepers remove what is left).
func (s *Service) Delete(ctx context.Context, p *identity.Principal, ref string, ifMatch uint64) (*Volume, error) {
	const action = "volume.delete"
	v, err := s.changeable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	// A creation whose service died half-way is taken back as it would
	// have been.
	undo := v.State == StateCreating && time.Since(v.CreatedAt) > abandonedAfter
	var out Volume
	if err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgDeleteVolume, deleteVolumeCmd{ID: v.ID, IfMatch: ifMatch, Undo: undo}, &out); err != nil {
		return nil, err
	}
	if s.prov != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
		for _, r := range out.Replicas {
			if err := s.prov.Remove(rctx, r.Node, r.ID); err != nil {
				s.log.Warn("delete volume: replica left to the sweeper", "volume", out.ID, "replica", r.ID, "node", r.Node, "err", err)
			}
		}
	}
	return &out, nil
}

// Extend grows a volume to sizeGiB, charging the difference. A detached
// volume's replicas are grown first, so the record never says more than
// every replica holds (a replica larger than its volume is harmless, and
// an extend that failed half-way is simply asked again). An attached
// volume's replicas are grown by its writer.
func (s *Service) Extend(ctx context.Context, p *identity.Principal, ref string, sizeGiB int64, ifMatch uint64) (*Volume, error) {
	const action = "volume.extend"
	v, err := s.changeable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	deny := func(err error) (*Volume, error) { return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, err) }
	switch {
	case sizeGiB < 1 || sizeGiB > MaxSizeGiB:
		return deny(invalid("a volume is 1-%d GiB, not %d", MaxSizeGiB, sizeGiB))
	case sizeGiB*GiB <= v.SizeBytes:
		return deny(invalid("volume %s is %d GiB: it can only grow, not become %d GiB", v.Name, v.SizeGiB(), sizeGiB))
	case ifMatch != 0 && ifMatch != v.Version:
		return deny(consensus.Errorf(consensus.CodePreconditionFailed, "volume %s is at version %d, not %d", v.Name, v.Version, ifMatch))
	case v.State == StateCreating || v.State == StateError:
		return deny(consensus.Errorf(consensus.CodeConflict, "volume %s is %s", v.Name, v.State))
	case s.prov == nil && v.Attachment == nil:
		return deny(unavailable())
	}
	if err := identity.WouldFit(s.c.Store().ReadTxn(), v.ProjectID, identity.Resources{VolumeGiB: sizeGiB - v.SizeGiB()}); err != nil {
		return deny(err) // checked again by the command; refused here before any replica grows
	}
	// An attached volume's writer grows its replicas (and a writer opened
	// later grows any it missed) before its user is told of the new size.
	if v.Attachment == nil {
		if ifMatch == 0 {
			ifMatch = v.Version // nothing may attach it between the resize and the command
		}
		// At the epoch the next writer takes, as a detached snapshot
		// claims the replicas (which may have been fenced at it already
		// by one whose command was then refused): no writer holds it.
		for _, r := range v.Replicas {
			if err := s.prov.Resize(ctx, r.Node, r.ID, v.Epoch+1, sizeGiB*GiB); err != nil {
				return nil, fmt.Errorf("extend volume %s: replica %s on %s: %w", v.Name, r.ID, r.Node, err)
			}
		}
	}
	var out Volume
	if err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgExtendVolume, extendVolumeCmd{ID: v.ID, SizeBytes: sizeGiB * GiB, IfMatch: ifMatch}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Attach gives an available volume to a VM of its project, or (cluster
// admins only) to a node's host.
func (s *Service) Attach(ctx context.Context, p *identity.Principal, ref string, to AttachTo, ifMatch uint64) (*Volume, error) {
	const action = "volume.attach"
	v, err := s.changeable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	deny := func(err error) (*Volume, error) { return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, err) }
	a := Attachment{Node: to.Node, At: time.Now().UTC()}
	switch {
	case ifMatch != 0 && ifMatch != v.Version:
		return deny(consensus.Errorf(consensus.CodePreconditionFailed, "volume %s is at version %d, not %d", v.Name, v.Version, ifMatch))
	case (to.VM == "") == (to.Node == ""):
		return deny(invalid("attach volume %s to a VM or to a node, not both", v.Name))
	case to.VM == "" && !p.IsClusterAdmin():
		return deny(consensus.Errorf(consensus.CodeForbidden, "only cluster admins attach a volume to a node's host"))
	case to.VM == "" && !nameRE.MatchString(to.Node):
		return deny(invalid("node name %q is not valid", to.Node))
	case to.VM != "" && s.vms == nil:
		return deny(consensus.Errorf(consensus.CodeUnavailable, "VMs are not available on this node"))
	case to.VM != "":
		return s.vms.AttachVolume(ctx, p, v, to.VM, ifMatch)
	}
	var out Volume
	if err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: a, IfMatch: ifMatch}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Detach frees an attached volume. A volume attached to a node's host is
// detached by cluster admins only.
func (s *Service) Detach(ctx context.Context, p *identity.Principal, ref string, ifMatch uint64) (*Volume, error) {
	const action = "volume.detach"
	v, err := s.changeable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	if v.Attachment != nil && v.Attachment.VM == "" && !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only cluster admins detach a volume from a node's host"))
	}
	if v.Attachment != nil && v.Attachment.VM != "" {
		if s.vms == nil {
			return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, consensus.Errorf(consensus.CodeUnavailable, "VMs are not available on this node"))
		}
		return s.vms.DetachVolume(ctx, p, v, ifMatch)
	}
	var out Volume
	if err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgDetachVolume, detachVolumeCmd{ID: v.ID, IfMatch: ifMatch}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Borrow attaches a detached volume to this node for its owner's upload
// or download (action): nothing else attaches it meanwhile. The returned
// function ends the transfer and detaches it.
func (s *Service) Borrow(ctx context.Context, p *identity.Principal, ref, action string) (*Volume, func(), error) {
	v, err := s.changeable(ctx, p, action, ref)
	if err != nil {
		return nil, nil, err
	}
	if !detachedOrRepairing(v) {
		return nil, nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID,
			consensus.Errorf(consensus.CodeConflict, "volume %s is %s: only a detached volume is uploaded into or downloaded", v.Name, describe(v)))
	}
	var out Volume
	a := Attachment{Node: s.c.Name(), At: time.Now().UTC(), Transfer: true}
	if err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: a, IfMatch: v.Version}, &out); err != nil {
		return nil, nil, err
	}
	var once sync.Once
	release := func() { // safe to call more than once
		once.Do(func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			defer cancel()
			if _, err := s.c.Apply(rctx, MsgDetachVolume, detachVolumeCmd{ID: v.ID, Transfer: s.c.Name(), At: a.At}, nil); err != nil {
				s.log.Warn("end a volume transfer: the volume stays attached to this node until detached", "volume", v.ID, "err", err)
			}
		})
	}
	return &out, release, nil
}

// describe says what a volume is doing, for refusals: its state, or where
// it is attached (a coded phrase, said in a page's language).
func describe(v *Volume) any {
	switch a := v.Attachment; {
	case a == nil:
		return v.State
	case a.Transfer:
		return consensus.Errorf(consensus.CodeConflict, "being transferred through node %s", a.Node)
	default:
		return consensus.Errorf(consensus.CodeConflict, "attached to %v", attachedTo(a))
	}
}

// detachedOrRepairing: detached and available, or opened only by the
// repair (a catch-up or a scrub), which gives way to its owner.
func detachedOrRepairing(v *Volume) bool {
	if a := v.Attachment; a != nil {
		return a.Repair
	}
	return v.State == StateAvailable
}
