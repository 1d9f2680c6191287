package volume

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// snapshotWait is how long CreateSnapshot waits for an attached volume's
// writer to take the snapshot before answering with it still creating.
const snapshotWait = time.Minute

// GetSnapshot returns a snapshot by ID or name.
func (s *Service) GetSnapshot(p *identity.Principal, ref string) (*Volume, error) {
	return s.get(p, ref, KindSnapshot)
}

// ListSnapshots lists the snapshots the caller can see, optionally of one
// project, and of one volume (name or ID).
func (s *Service) ListSnapshots(p *identity.Principal, project, of string) ([]Volume, error) {
	all, err := s.list(p, project, KindSnapshot)
	if err != nil || of == "" {
		return all, err
	}
	v, err := s.Get(p, of)
	if err != nil {
		return nil, err
	}
	out := []Volume{}
	for _, sn := range all {
		if sn.Of == v.ID {
			out = append(out, sn)
		}
	}
	return out, nil
}

// CreateSnapshot snapshots volume ref as name. A detached volume's is
// taken at once; an attached volume's by its writer (quiescing the guest
// first when it runs qemu-guest-agent): the snapshot is returned once
// taken, or still "creating" if that takes longer than snapshotWait.
func (s *Service) CreateSnapshot(ctx context.Context, p *identity.Principal, ref, name string) (*Volume, error) {
	const action = "volume.snapshot"
	v, err := s.changeable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	if !nameRE.MatchString(name) {
		return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, consensus.Errorm(consensus.CodeInvalid, "name_rule", "snapshot name %q must be 1-63 letters, digits, dots, dashes or underscores", name))
	}
	snap, err := s.snapshot(ctx, p, action, v, name, false)
	if err != nil {
		return nil, err
	}
	return s.awaitSnapshot(ctx, snap)
}

// snapshot records a snapshot of v: taken at once when v is detached (its
// new replicas made first), else left for v's writer.
func (s *Service) snapshot(ctx context.Context, p *identity.Principal, action string, v *Volume, name string, hidden bool) (*Volume, error) {
	id := newID("snap")
	if hidden {
		name = hiddenName(id)
	}
	// Checked again by the command; here, before anything is made.
	txn := s.c.Store().ReadTxn()
	if !hidden {
		if Named(txn, v.ProjectID, name) {
			return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, consensus.Errorm(consensus.CodeAlreadyExists, "volume_exists", "a volume or snapshot named %q already exists in this project", name))
		}
		if err := identity.WouldFit(txn, v.ProjectID, identity.Resources{Snapshots: 1, VolumeGiB: v.SizeGiB()}); err != nil {
			return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, err)
		}
	}
	snap := Volume{ID: id, Name: name, ProjectID: v.ProjectID, Hidden: hidden, CreatedAt: time.Now().UTC()}
	cmd := createSnapshotCmd{Snapshot: snap, Of: v.ID, IfMatch: v.Version, Format: snapshotFormat}
	if !v.served() {
		if s.prov == nil {
			return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, unavailable())
		}
		unclaimed, err := s.claimReplicas(ctx, v)
		if err != nil {
			return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, err)
		}
		cmd.Unclaimed = unclaimed
		cmd.Top = s.makeTop(ctx, v, id)
		if len(cmd.Top) == 0 {
			return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID,
				consensus.Errorf(consensus.CodeUnavailable, "volume %s: no node holding a copy could make the volume's new replicas", v.Name))
		}
	}
	var out Volume
	err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgCreateSnapshot, cmd, &out)
	if err == nil {
		return &out, nil
	}
	if code := consensus.ErrorCode(err); code != "" && code != consensus.CodeUnavailable {
		s.removeReplicas(ctx, cmd.Top, "snapshot refused")
		return nil, err
	}
	if got, serr := s.settle(ctx, err, id); serr == nil && got != nil {
		return got.Viewed(), nil
	}
	// Perhaps taken, or still to be: a command that timed out here may be
	// applied a moment later. The new replicas stay; the sweeper removes
	// them once no record names them.
	return nil, err
}

// claimReplicas readies a detached volume's replicas to become a
// snapshot's. It fences them at the epoch after the volume's, which the
// next writer of the volume or the snapshot takes: a writer of the volume
// not yet closed after its detach can no longer change them. And it grows
// them to the volume's size where they are smaller (a volume extended
// while attached to a VM not placed yet has replicas its next writer
// would have grown), so the snapshot holds every byte its record says.
// One claimed is enough; it returns the in-sync ones it could not claim,
// which the snapshot has stale.
func (s *Service) claimReplicas(ctx context.Context, v *Volume) ([]string, error) {
	var errs []error
	var unclaimed []string
	grown := false
	for _, r := range v.Replicas {
		if r.State != ReplicaInSync {
			continue
		}
		if err := s.prov.Resize(ctx, r.Node, r.ID, v.Epoch+1, v.SizeBytes); err != nil {
			errs = append(errs, fmt.Errorf("replica %s on %s: %w", r.ID, r.Node, err))
			unclaimed = append(unclaimed, r.ID)
			continue
		}
		grown = true
	}
	if grown {
		return unclaimed, nil
	}
	return nil, consensus.Errorf(consensus.CodeUnavailable, "volume %s: no copy could be brought to its size: %v", v.Name, errors.Join(errs...))
}

// makeTop makes a detached volume's new replicas for snapshot snapID, on
// the disks of its replicas, empty and layered. Those that cannot be made
// are left out (the repair adds replicas up to the volume's copies).
func (s *Service) makeTop(ctx context.Context, v *Volume, snapID string) []Replica {
	var top []Replica
	for i, r := range v.Replicas {
		nr := Replica{ID: topID(v.ID, snapID, v.Epoch+1, i), Node: r.Node, Disk: r.Disk, State: ReplicaInSync}
		if err := s.makeReplica(ctx, nr, v.SizeBytes, true); err != nil {
			s.log.Warn("snapshot: a new replica of the volume could not be made; the repair adds one later", "volume", v.ID, "replica", nr.ID, "node", nr.Node, "err", err)
			s.removeReplicas(ctx, []Replica{nr}, "not made")
			continue
		}
		top = append(top, nr)
	}
	return top
}

// topID names the i-th new replica a volume gets at snapshot snapID,
// made under epoch: a writer that tries again after a failed or unknown
// take (at a new epoch) never reuses the IDs of replicas an earlier try
// made, which may still be being removed.
func topID(volID, snapID string, epoch uint64, i int) string {
	return fmt.Sprintf("%s-%s-e%d-r%d", volID, snapID[len("snap-"):len("snap-")+8], epoch, i)
}

// makeReplica makes one replica on its node.
func (s *Service) makeReplica(ctx context.Context, r Replica, size int64, layered bool) error {
	return s.prov.Create(ctx, r.Node, r.Disk, r.ID, size, layered)
}

func (s *Service) removeReplicas(ctx context.Context, reps []Replica, why string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	for _, r := range reps {
		if err := s.prov.Remove(rctx, r.Node, r.ID); err != nil {
			s.log.Warn("replica left to the sweeper", "replica", r.ID, "node", r.Node, "why", why, "err", err)
		}
	}
}

// awaitSnapshot waits for a snapshot being taken by its volume's writer.
func (s *Service) awaitSnapshot(ctx context.Context, snap *Volume) (*Volume, error) {
	wctx, cancel := context.WithTimeout(ctx, snapshotWait)
	defer cancel()
	for snap.State == StateCreating {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return snap, nil
		case <-time.After(50 * time.Millisecond):
		}
		cur := getVolume(s.c.Store().ReadTxn(), snap.ID)
		if cur == nil {
			return nil, consensus.Errorf(consensus.CodeConflict, "snapshot %s was called off before it was taken", snap.Name)
		}
		snap = cur.Viewed()
	}
	return snap, nil
}

// DeleteSnapshot deletes a snapshot. Volumes made from it keep reading
// through to it: it is hidden then, and goes with the last of them.
func (s *Service) DeleteSnapshot(ctx context.Context, p *identity.Principal, ref string, ifMatch uint64) (*Volume, error) {
	const action = "volume.snapshot.delete"
	sn, err := s.changeableKind(ctx, p, action, ref, KindSnapshot)
	if err != nil {
		return nil, err
	}
	var out Volume
	if err := s.id.Mutate(ctx, p, action, sn.Name, sn.ProjectID, MsgDeleteSnapshot, deleteSnapshotCmd{ID: sn.ID, IfMatch: ifMatch}, &out); err != nil {
		return nil, err
	}
	if !out.Hidden && s.prov != nil {
		s.removeReplicas(ctx, out.Replicas, "snapshot deleted")
	}
	return &out, nil
}

// clone makes the parent a clone of volume ref is layered on: a hidden
// snapshot of it, taken now.
func (s *Service) cloneParent(ctx context.Context, p *identity.Principal, action, ref string) (*Volume, error) {
	v, err := s.changeable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	snap, err := s.snapshot(ctx, p, action, v, "", true)
	if err != nil {
		return nil, err
	}
	snap, err = s.awaitSnapshot(ctx, snap)
	if err != nil {
		return nil, err
	}
	if snap.State != StateAvailable {
		// Its writer did not take it in time: call it off.
		if _, derr := s.c.Apply(context.WithoutCancel(ctx), MsgDeleteSnapshot, deleteSnapshotCmd{ID: snap.ID}, nil); derr != nil {
			s.log.Warn("clone: a snapshot not taken in time could not be called off", "snapshot", snap.ID, "err", derr)
		}
		return nil, consensus.Errorf(consensus.CodeUnavailable, "volume %s: its writer did not take a snapshot in time; try again", v.Name)
	}
	return snap, nil
}
