package storage

import (
	"context"
	"fmt"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/cairnhq/cairn/storage/placement"
)

// MsgSetBucketLayout chooses a bucket's k+m for new objects.
const MsgSetBucketLayout consensus.MessageType = 142

type setBucketLayoutCmd struct {
	Bucket string          `json:"bucket"`
	Layout *erasure.Layout `json:"layout"` // nil: back to the cluster default
}

func registerLayout(reg *consensus.Registry) {
	consensus.Handle(reg, MsgSetBucketLayout, "SetBucketLayout", func(tx *consensus.Tx, c *setBucketLayoutCmd) (any, error) {
		b := consensus.First[Bucket](tx.Txn, tBuckets, "id", c.Bucket)
		if b == nil {
			return nil, consensus.Errorf(consensus.CodeNotFound, "bucket %q not found", c.Bucket)
		}
		nb := *b
		nb.Layout, nb.Version = c.Layout, tx.Index
		return &nb, tx.Insert(tBuckets, &nb)
	})
}

// DefaultLayout is the layout new objects get unless their bucket chose
// another: it follows the cluster's shape (active disks).
func (o *Objects) DefaultLayout() (erasure.Layout, error) {
	var all []placement.Disk
	for _, d := range listDisks(o.c.Store().ReadTxn(), "") {
		if d.State == DiskActive {
			all = append(all, placement.Disk{ID: d.ID, Node: d.Node, Free: d.FreeBytes, Device: d.Device})
		}
	}
	return placement.DefaultLayout(all)
}

// SetBucketLayout chooses the k+m of a bucket's new objects (project admins);
// existing objects keep theirs. The layout must fit the disks there are, and
// with several nodes it must survive the loss of any one of them.
func (o *Objects) SetBucketLayout(ctx context.Context, p *identity.Principal, bucket string, data, parity int) (*Bucket, error) {
	const action = "bucket.layout"
	b, err := o.Bucket(ctx, p, bucket)
	if err != nil {
		return nil, o.id.Deny(ctx, p, action, bucket, "", err)
	}
	if !p.Can(b.ProjectID, identity.RoleAdmin) {
		return nil, o.id.Deny(ctx, p, action, bucket, b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change the layout of %q", bucket))
	}
	var l *erasure.Layout
	if data != 0 || parity != 0 {
		l = &erasure.Layout{Data: data, Parity: parity, StripeSize: erasure.DefaultStripeSize}
		if err := o.checkLayout(*l); err != nil {
			return nil, o.id.Deny(ctx, p, action, bucket, b.ProjectID, consensus.Errorf(consensus.CodeInvalid, "layout %s: %v", l, err))
		}
	}
	var out Bucket
	err = o.id.Mutate(ctx, p, action, bucket, b.ProjectID, MsgSetBucketLayout, setBucketLayoutCmd{Bucket: bucket, Layout: l}, &out)
	return &out, err
}

func (o *Objects) checkLayout(l erasure.Layout) error {
	if err := l.Validate(); err != nil {
		return err
	}
	var disks []placement.Disk
	nodes := map[string]bool{}
	for _, d := range listDisks(o.c.Store().ReadTxn(), "") {
		if d.State == DiskActive {
			disks = append(disks, placement.Disk{ID: d.ID, Node: d.Node, Free: 1, Device: d.Device})
			nodes[d.Node] = true
		}
	}
	placed, err := placement.Place(l, disks, "layout-check")
	if err != nil {
		return err
	}
	byNode := make([]string, len(placed))
	for i, d := range placed {
		byNode[i] = d.Node
	}
	if len(nodes) > 1 && !placement.SurvivesNodeLoss(l, byNode) {
		return fmt.Errorf("losing one node would lose data")
	}
	return nil
}
