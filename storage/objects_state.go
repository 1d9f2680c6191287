package storage

import (
	"fmt"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/hashicorp/go-memdb"
)

// Object commands (continuing storage's range).
const (
	MsgCreateBucket consensus.MessageType = 132
	MsgDeleteBucket consensus.MessageType = 133
	MsgPutObject    consensus.MessageType = 134
	MsgDeleteObject consensus.MessageType = 135
)

// Bucket belongs to a project; its objects count against the project's
// object-storage quota.
type Bucket struct {
	ID        string          `json:"name"` // bucket names are global, as in S3
	ProjectID string          `json:"project_id"`
	Layout    *erasure.Layout `json:"layout,omitempty"` // nil: the cluster's default
	Bytes     int64           `json:"bytes"`            // sum of object sizes
	Objects   int64           `json:"objects"`
	CreatedAt time.Time       `json:"created_at"`
	Version   uint64          `json:"version"`
}

// ShardLoc is where one shard of an object lives; Disk "" means the shard
// was not written (degraded) and is waiting for the healer.
type ShardLoc struct {
	Disk string `json:"disk"`
	Node string `json:"node"`
}

// Object is one object's metadata; its bytes are in the shards.
type Object struct {
	ID          string            `json:"id"` // bucket + "/" + key: sorts for listing
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	Size        int64             `json:"size"`
	ETag        string            `json:"etag"` // MD5 hex, as S3
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Layout      erasure.Layout    `json:"layout"`
	DataID      string            `json:"data_id"` // names the shards: <data_id>.<index>
	Shards      []ShardLoc        `json:"shards"`
	Parts       []Segment         `json:"parts,omitempty"` // a multipart object: its bytes are these segments in order
	Modified    time.Time         `json:"modified"`
	Version     uint64            `json:"version"`
}

const (
	tBuckets = "buckets"
	tObjects = "objects"
)

type deleteBucketCmd struct {
	Name string `json:"name"`
}

type putObjectCmd struct {
	Object Object `json:"object"`
}

type deleteObjectCmd struct {
	ID string `json:"id"`
}

func registerObjects(reg *consensus.Registry) {
	consensus.RegisterTable[Bucket](reg, &memdb.TableSchema{Name: tBuckets, Indexes: map[string]*memdb.IndexSchema{
		"id":      {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"project": {Name: "project", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "ProjectID"}}, // system buckets have none
	}})
	consensus.RegisterTable[Object](reg, &memdb.TableSchema{Name: tObjects, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"disk": {Name: "disk", AllowMissing: true, Indexer: diskIndex{func(o any) []Segment { return o.(*Object).segments() }}},
	}})
	consensus.Handle(reg, MsgCreateBucket, "CreateBucket", applyCreateBucket)
	consensus.Handle(reg, MsgDeleteBucket, "DeleteBucket", applyDeleteBucket)
	consensus.Handle(reg, MsgPutObject, "PutObject", applyPutObject)
	consensus.Handle(reg, MsgDeleteObject, "DeleteObject", applyDeleteObject)
	registerMultipart(reg)
	registerRepair(reg)
	registerLayout(reg)
}

func applyCreateBucket(tx *consensus.Tx, b *Bucket) (any, error) {
	if consensus.First[Bucket](tx.Txn, tBuckets, "id", b.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "bucket %q already exists", b.ID)
	}
	row := *b
	row.Bytes, row.Objects, row.Version = 0, 0, tx.Index
	return &row, tx.Insert(tBuckets, &row)
}

func applyDeleteBucket(tx *consensus.Tx, c *deleteBucketCmd) (any, error) {
	b := consensus.First[Bucket](tx.Txn, tBuckets, "id", c.Name)
	if b == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "bucket %q not found", c.Name)
	}
	if b.Objects > 0 {
		return nil, consensus.Errorf(consensus.CodeConflict, "bucket %q is not empty", c.Name)
	}
	return nil, tx.Delete(tBuckets, b)
}

// gib is the quota unit an amount of bytes occupies.
func gib(bytes int64) int64 { return (bytes + 1<<30 - 1) >> 30 }

// applyPutObject makes a new object version current, charging the project's
// object quota for the change in size. It returns the replaced version, whose
// shards the caller deletes once this commits.
func applyPutObject(tx *consensus.Tx, c *putObjectCmd) (any, error) {
	o := c.Object
	b := consensus.First[Bucket](tx.Txn, tBuckets, "id", o.Bucket)
	if b == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "bucket %q not found", o.Bucket)
	}
	old := consensus.First[Object](tx.Txn, tObjects, "id", o.ID)
	nb := *b
	nb.Bytes += o.Size
	nb.Objects++
	if old != nil {
		nb.Bytes -= old.Size
		nb.Objects--
	}
	if err := chargeBytes(tx, b.ProjectID, b.Bytes, nb.Bytes); err != nil {
		return nil, err
	}
	o.Version = tx.Index
	if err := tx.Insert(tObjects, &o); err != nil {
		return nil, err
	}
	if err := tx.Insert(tBuckets, &nb); err != nil {
		return nil, err
	}
	return old, nil
}

func applyDeleteObject(tx *consensus.Tx, c *deleteObjectCmd) (any, error) {
	o := consensus.First[Object](tx.Txn, tObjects, "id", c.ID)
	if o == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "object %q not found", c.ID)
	}
	b := consensus.First[Bucket](tx.Txn, tBuckets, "id", o.Bucket)
	if b != nil {
		nb := *b
		nb.Bytes -= o.Size
		nb.Objects--
		if err := chargeBytes(tx, b.ProjectID, b.Bytes, nb.Bytes); err != nil {
			return nil, err
		}
		if err := tx.Insert(tBuckets, &nb); err != nil {
			return nil, err
		}
	}
	return o, tx.Delete(tObjects, o)
}

// chargeBytes moves a project's object usage by whole GiB as a bucket's
// bytes change, so the identity quota (in GiB) stays exact and race-free.
func chargeBytes(tx *consensus.Tx, project string, before, after int64) error {
	if project == "" {
		return nil // a system bucket: Cairn's own objects
	}
	next := projectGiB(tx, project, after-before)
	if after > before {
		// Growth within a GiB already charged must still respect a limit
		// that was lowered meanwhile.
		lim, err := identity.Limits(tx, project)
		if err != nil {
			return err
		}
		if lim.ObjectGiB != identity.Unlimited && next > lim.ObjectGiB {
			return consensus.Errorf(consensus.CodeQuotaExceeded, "quota exceeded for object storage in project %s: limit %d GiB, this write needs %d GiB", project, lim.ObjectGiB, next)
		}
	}
	if d := next - projectGiB(tx, project, 0); d != 0 {
		return identity.Charge(tx, project, identity.Resources{ObjectGiB: d})
	}
	return nil
}

// projectGiB is the project's object usage in GiB if its bytes changed by delta.
func projectGiB(tx *consensus.Tx, project string, delta int64) int64 {
	it, err := tx.Get(tBuckets, "project", project)
	if err != nil {
		return 0
	}
	total := delta
	for obj := it.Next(); obj != nil; obj = it.Next() {
		total += obj.(*Bucket).Bytes
	}
	return gib(total)
}

// listObjects returns up to limit objects of a bucket whose keys start with
// prefix and sort after startAfter.
func listObjects(tx *memdb.Txn, bucket, prefix, startAfter string, limit int) ([]Object, bool) {
	it, err := tx.LowerBound(tObjects, "id", bucket+"/"+max(prefix, startAfter+"\x00"))
	if err != nil {
		return nil, false
	}
	var out []Object
	for obj := it.Next(); obj != nil; obj = it.Next() {
		o := obj.(*Object)
		if o.Bucket != bucket || !strings.HasPrefix(o.Key, prefix) {
			break
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, *o)
	}
	return out, false
}

// diskIndex indexes rows (objects, parts) by every disk that holds one of
// their shards: what a disk still holds, for draining and removing it.
type diskIndex struct {
	segments func(row any) []Segment
}

func (x diskIndex) FromObject(row any) (bool, [][]byte, error) {
	var vals [][]byte
	seen := map[string]bool{}
	for _, seg := range x.segments(row) {
		for _, loc := range seg.Shards {
			if loc.Disk != "" && !seen[loc.Disk] {
				seen[loc.Disk] = true
				vals = append(vals, []byte(loc.Disk+"\x00"))
			}
		}
	}
	return len(vals) > 0, vals, nil
}

func (diskIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("disk index: one argument, got %d", len(args))
	}
	id, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("disk index: argument must be a string, got %T", args[0])
	}
	return []byte(id + "\x00"), nil
}

// diskHolds counts the objects and multipart parts with a shard on disk id.
func diskHolds(tx *memdb.Txn, id string) int {
	n := 0
	for _, table := range []string{tObjects, tParts} {
		it, err := tx.Get(table, "disk", id)
		if err != nil {
			panic(err) // the index is registered with the table: a bug
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			n++
		}
	}
	return n
}
