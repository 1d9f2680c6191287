package storage

import (
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
	// count is whether the command counts records: commands written before
	// records were counted apply as they did (see cmdFormat).
	count bool
	// markers are records added that are charged without a limit check:
	// a delete at the limit must still be possible.
	markers int64
}

func newBucketAccount(b *Bucket, count bool) *bucketAccount {
	return &bucketAccount{before: *b, next: *b, count: count}
}

// add counts a version (sign +1) or stops counting it (-1); current says
// whether it is (or was) its key's current version.
func (a *bucketAccount) add(o *Object, sign int64, current bool) {
	a.next.Bytes += sign * o.Size
	if current && !o.Delete {
		a.next.Objects += sign
	}
	if o.IsInline() {
		a.inline += sign * o.Size
	}
	if a.count {
		a.next.Items += sign
		if o.Delete && sign > 0 {
			a.markers++
		}
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

// part counts a charged record of an upload (sign +1: an upload or a part
// of size bytes) or stops counting it (-1).
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
	// Records of buckets from before they were counted start at zero.
	a.next.Items = max(a.next.Items, 0)
	if err := chargeBytes(tx, a.before.ProjectID, a.before.Bytes, a.next.Bytes); err != nil {
		return err
	}
	if p := a.before.ProjectID; p != "" {
		d := a.next.Items - a.before.Items
		if free := min(a.markers, max(d, 0)); free > 0 {
			if err := identity.ChargeOverLimit(tx, p, identity.Resources{Objects: free}); err != nil {
				return err
			}
			d -= free
		}
		if d != 0 {
			if err := identity.Charge(tx, p, identity.Resources{Objects: d}); err != nil {
				return err
			}
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
