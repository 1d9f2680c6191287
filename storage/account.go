package storage

import (
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// bucketAccount collects the changes one command makes to a bucket's
// counters, then writes the bucket row and charges the project's quotas in
// the same transaction: bytes in GiB, records as objects.
type bucketAccount struct {
	before Bucket
	next   Bucket
	inline int64 // change of the pool's inline bytes
}

func newBucketAccount(b *Bucket) *bucketAccount {
	return &bucketAccount{before: *b, next: *b}
}

// isCurrent tells a row of the objects table from one of the versions table.
func isCurrent(o *Object) bool { return !strings.Contains(o.ID, "\x00") }

// add counts a version (sign +1) or stops counting it (-1).
func (a *bucketAccount) add(o *Object, sign int64) {
	a.next.Bytes += sign * o.Size
	a.next.Items += sign
	if o.IsInline() {
		a.inline += sign * o.Size
	}
	if isCurrent(o) && !o.Delete {
		a.next.Objects += sign
	}
}

// demote counts the current version o as an older one from now on.
func (a *bucketAccount) demote(o *Object) {
	if !o.Delete {
		a.next.Objects--
	}
}

// promote counts the older version o as the current one from now on.
func (a *bucketAccount) promote(o *Object) {
	if !o.Delete {
		a.next.Objects++
	}
}

// part counts a part of an upload in progress (sign +1) or stops counting it.
func (a *bucketAccount) part(size int64, sign int64) {
	a.next.Bytes += sign * size
	a.next.Items += sign
}

// commit writes the bucket row and charges the project for the difference.
// Releases always pass; growth past a limit rejects the whole command.
func (a *bucketAccount) commit(tx *consensus.Tx) error {
	if err := chargeInline(tx, a.inline); err != nil {
		return err
	}
	if a.next.Bytes == a.before.Bytes && a.next.Items == a.before.Items && a.next.Objects == a.before.Objects {
		return nil
	}
	a.next.Items = max(a.next.Items, 0) // buckets from before items were counted
	if err := chargeBytes(tx, a.before.ProjectID, a.before.Bytes, a.next.Bytes); err != nil {
		return err
	}
	if d := a.next.Items - a.before.Items; d != 0 && a.before.ProjectID != "" {
		if err := identity.Charge(tx, a.before.ProjectID, identity.Resources{Objects: d}); err != nil {
			return err
		}
	}
	row := a.next
	return tx.Insert(tBuckets, &row)
}

// releaseBucket returns to its project what a bucket being deleted still
// charges: the parts of its uploads, removed with it.
func releaseBucket(tx *consensus.Tx, b *Bucket) error {
	if err := chargeBytes(tx, b.ProjectID, b.Bytes, 0); err != nil {
		return err
	}
	if b.Items > 0 && b.ProjectID != "" {
		return identity.Charge(tx, b.ProjectID, identity.Resources{Objects: -b.Items})
	}
	return nil
}
