package storage

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// System buckets hold Cairn's own objects (VM images today). Their names
// start with a dot, which no user bucket can (bucketRE), so a user can never
// squat on one; they belong to no project, so they charge no quota and no
// user, not even a cluster admin, reaches them through S3 or the bucket API.
// Their objects are ordinary objects otherwise: erasure-coded, scrubbed,
// healed and safe from the orphan sweeper.

// IsSystemBucket reports whether a bucket name is reserved for Cairn.
func IsSystemBucket(name string) bool { return strings.HasPrefix(name, ".") }

// EnsureSystemBucket creates a system bucket if it does not exist yet.
func (o *Objects) EnsureSystemBucket(ctx context.Context, name string) error {
	if !IsSystemBucket(name) {
		return fmt.Errorf("system bucket %q must start with a dot", name)
	}
	if consensus.First[Bucket](o.c.Store().ReadTxn(), tBuckets, "id", name) != nil {
		return nil
	}
	_, err := o.c.Apply(ctx, MsgCreateBucket, Bucket{ID: name, CreatedAt: time.Now().UTC()}, nil)
	if consensus.ErrorCode(err) == consensus.CodeAlreadyExists {
		return nil
	}
	return err
}

// PutSystem stores an object in a system bucket, with the same durability
// as Put: visible only once its shards are durable and its record commits.
func (o *Objects) PutSystem(ctx context.Context, bucket, key string, size int64, body io.Reader) (*Object, error) {
	b := consensus.First[Bucket](o.c.Store().ReadTxn(), tBuckets, "id", bucket)
	if b == nil || !IsSystemBucket(bucket) {
		return nil, consensus.Errorf(consensus.CodeNotFound, "system bucket %q not found", bucket)
	}
	dataID := newDataID()
	l, placed, err := o.place(b, size, dataID)
	if err != nil {
		return nil, err
	}
	locs, sum, err := o.writeShards(ctx, l, placed, dataID, size, body)
	if err != nil {
		return nil, err
	}
	obj := Object{ID: objectID(bucket, key), Bucket: bucket, Key: key, Size: size, ETag: fmt.Sprintf("%x", sum),
		Layout: l, DataID: dataID, Shards: locs, Modified: time.Now().UTC()}
	var res putResult
	if _, err := o.c.Apply(ctx, MsgPutObject, putObjectCmd{Object: obj, target: targetOf(b)}, &res); err != nil {
		if !o.settle(ctx, err, dataID, func() { o.deleteShards(l, locs, dataID) }) {
			return nil, err
		}
		return o.committed(obj.ID, dataID)
	}
	go o.deleteVersions(res.Removed)
	return res.Object, nil
}

// HeadSystem returns a system object's metadata (a linearizable read).
func (o *Objects) HeadSystem(ctx context.Context, bucket, key string) (*Object, error) {
	if !IsSystemBucket(bucket) {
		return nil, consensus.Errorf(consensus.CodeNotFound, "system bucket %q not found", bucket)
	}
	if err := o.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	obj := consensus.First[Object](o.c.Store().ReadTxn(), tObjects, "id", bucket+"/"+key)
	if obj == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "object %q not found", key)
	}
	return obj, nil
}

// DeleteSystem removes a system object and then its shards. Deleting one
// that is already gone succeeds, so callers can retry.
func (o *Objects) DeleteSystem(ctx context.Context, bucket, key string) error {
	if !IsSystemBucket(bucket) {
		return consensus.Errorf(consensus.CodeNotFound, "system bucket %q not found", bucket)
	}
	var res DeleteResult
	cmd := deleteObjectCmd{ID: objectID(bucket, key), Time: time.Now().UTC(), target: target{Format: cmdFormat}}
	if b := consensus.First[Bucket](o.c.Store().ReadTxn(), tBuckets, "id", bucket); b != nil {
		cmd.target = targetOf(b)
	}
	_, err := o.c.Apply(ctx, MsgDeleteObject, cmd, &res)
	if consensus.ErrorCode(err) == consensus.CodeNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	o.deleteVersions(res.Removed)
	return nil
}
