package storage

import (
	"context"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// ListVersions returns up to limit versions (delete markers included) of a
// bucket's objects whose keys start with prefix, as S3's ListObjectVersions
// orders them: by key, then newest first. Listing starts after keyMarker's
// version versionMarker, or after all of keyMarker's versions when
// versionMarker is "". It reports whether more follow.
func (o *Objects) ListVersions(ctx context.Context, p *identity.Principal, bucket, prefix, keyMarker, versionMarker string, limit int) ([]Object, bool, error) {
	if _, err := o.Bucket(ctx, p, bucket); err != nil {
		return nil, false, err
	}
	txn := o.c.Store().ReadTxn()
	start := prefix
	if keyMarker != "" && keyMarker >= prefix {
		start = keyMarker
	}
	it, err := txn.LowerBound(tObjects, "id", objectID(bucket, start))
	if err != nil {
		return nil, false, err
	}
	var out []Object
	for row := it.Next(); row != nil; row = it.Next() {
		cur := row.(*Object)
		if cur.Bucket != bucket || !strings.HasPrefix(cur.Key, prefix) {
			break
		}
		all := append([]Object{*cur}, versionsOf(txn, cur.ID)...)
		if cur.Key == keyMarker {
			all = after(all, versionMarker)
		}
		for _, v := range all {
			if len(out) == limit {
				return out, true, nil
			}
			out = append(out, v)
		}
	}
	return out, false, nil
}

// after returns the versions listed after versionMarker (none if it is ""
// or not among them: S3 then starts with the next key).
func after(vs []Object, versionMarker string) []Object {
	for i, v := range vs {
		if versionMarker != "" && v.VersionIDOrNull() == versionMarker {
			return vs[i+1:]
		}
	}
	return nil
}

// BucketOf returns a bucket the caller may read, without a linearizable
// read: for the gateway's CORS answers, which must not cost a round trip.
func (o *Objects) BucketOf(name string) *Bucket {
	b := consensus.First[Bucket](o.c.Store().ReadTxn(), tBuckets, "id", name)
	if b == nil || IsSystemBucket(name) {
		return nil
	}
	return b
}
