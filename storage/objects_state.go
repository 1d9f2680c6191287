package storage

import (
	"bytes"
	"fmt"
	"math"
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

// Bucket belongs to a project; what it stores counts against the project's
// object-storage quotas (GiB and objects).
type Bucket struct {
	ID string `json:"name"` // bucket names are global, as in S3
	// UID tells this bucket from an earlier one of the same name: uploads
	// in progress belong to a UID, so a bucket deleted and created again,
	// perhaps by another project, never sees the old one's uploads.
	UID       string          `json:"uid,omitempty"`
	ProjectID string          `json:"project_id"`
	Layout    *erasure.Layout `json:"layout,omitempty"` // nil: the cluster's default
	// Bytes is every byte the bucket holds: current objects, older versions
	// and the parts of uploads in progress. It is what the GiB quota charges.
	Bytes int64 `json:"bytes"`
	// Objects counts current objects (delete markers aside).
	Objects int64 `json:"objects"`
	// Items counts every record the bucket keeps in the replicated state:
	// objects, older versions, delete markers, uploads and their parts. It
	// is what the object-count quota charges, since each costs memory on
	// every node whatever its size.
	Items      int64             `json:"items"`
	Versioning string            `json:"versioning,omitempty"` // "", Enabled or Suspended (S3's states)
	Lock       *ObjectLockConfig `json:"object_lock,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	CORS       []CORSRule        `json:"cors,omitempty"`
	Lifecycle  []LifecycleRule   `json:"lifecycle,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	Version    uint64            `json:"version"`
}

// S3's versioning states of a bucket.
const (
	VersioningEnabled   = "Enabled"
	VersioningSuspended = "Suspended"
)

// NullVersion is the version ID of an object written while versioning was
// never enabled or is suspended, as S3 names it.
const NullVersion = "null"

// ShardLoc is where one shard of an object lives; Disk "" means the shard
// was not written (degraded) and is waiting for the healer.
type ShardLoc struct {
	Disk string `json:"disk"`
	Node string `json:"node"`
}

// Object is one version of an object: its metadata (the bytes are in the
// shards), or a delete marker. The current version of each key is in the
// objects table, older ones in the versions table.
type Object struct {
	ID          string            `json:"id"` // current: bucket + "/" + key; older: versionRowID
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	VersionID   string            `json:"version_id,omitempty"` // "" (written before versions existed) is "null"
	Delete      bool              `json:"delete_marker,omitempty"`
	Size        int64             `json:"size"`
	ETag        string            `json:"etag"` // MD5 hex, as S3
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"` // Cache-Control, Content-Disposition…: see PutOptions
	Tags        map[string]string `json:"tags,omitempty"`
	Checksum    *Checksum         `json:"checksum,omitempty"`
	Retention   *Retention        `json:"retention,omitempty"`
	LegalHold   bool              `json:"legal_hold,omitempty"`
	Layout      erasure.Layout    `json:"layout"`
	DataID      string            `json:"data_id"` // names the shards: <data_id>.<index>
	Shards      []ShardLoc        `json:"shards"`
	Parts       []Segment         `json:"parts,omitempty"`  // a multipart object: its bytes are these segments in order
	Inline      []byte            `json:"inline,omitempty"` // a small object's bytes (see inline.go)
	Modified    time.Time         `json:"modified"`
	Noncurrent  time.Time         `json:"noncurrent,omitzero"` // when a newer version replaced it
	Version     uint64            `json:"version"`             // the Raft index that wrote it
}

// Checksum is an object's (or a part's) flexible checksum, as the client
// declared it and Cairn verified it: algorithm (CRC32, CRC32C, CRC64NVME,
// SHA1, SHA256), base64 value, and for multipart objects whether it covers
// the whole object (FULL_OBJECT) or the parts' checksums (COMPOSITE).
type Checksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"value"`
	Type      string `json:"type,omitempty"`
}

// IsLatest reports whether this is its key's current version.
func (obj *Object) IsLatest() bool { return obj.Noncurrent.IsZero() }

// VersionIDOrNull is the object's version ID as S3 shows it.
func (obj *Object) VersionIDOrNull() string {
	if obj.VersionID == "" {
		return NullVersion
	}
	return obj.VersionID
}

const (
	tBuckets  = "buckets"
	tObjects  = "objects"
	tVersions = "versions"
)

// cmdFormat marks the commands written with the rules of versions, object
// counts and bucket identities. A command without it was written before
// them and applies as it did then: on restart every node replays the log
// after its own snapshot, and each must reach the same state as the others,
// whose snapshots already hold those commands' effects.
const cmdFormat = 2

// target names the bucket a command acts on: by name, and (since
// cmdFormat 2) by its UID, so that a command can never land in a bucket
// of the same name created after the one its writer saw.
type target struct {
	Format    int    `json:"format,omitempty"`
	BucketUID string `json:"bucket_uid,omitempty"`
}

// current reports whether the command was written with today's rules.
func (t target) current() bool { return t.Format >= cmdFormat }

// bucketFor returns the command's bucket, if it is still the one its
// writer saw.
func bucketFor(tx *consensus.Tx, name string, t target) (*Bucket, error) {
	b := consensus.First[Bucket](tx.Txn, tBuckets, "id", name)
	if b == nil || (t.current() && b.UID != t.BucketUID) {
		return nil, consensus.Errorf(consensus.CodeNotFound, "bucket %q not found", name)
	}
	return b, nil
}

// targetOf is the target a writer puts in its commands for bucket b.
func targetOf(b *Bucket) target { return target{Format: cmdFormat, BucketUID: b.UID} }

type deleteBucketCmd struct {
	Name string `json:"name"`
	target
}

// putObjectCmd makes an object version current. The conditions are S3's
// conditional writes, checked against the current version when the command
// applies, so two racing writers cannot both pass them.
type putObjectCmd struct {
	Object      Object `json:"object"`
	IfMatch     string `json:"if_match,omitempty"`      // the current version's ETag must be this
	IfNoneMatch bool   `json:"if_none_match,omitempty"` // there must be no current object
	target
}

// putResult is what a put replaced for good: versions whose shards the
// caller deletes once the command committed.
type putResult struct {
	Object  *Object  `json:"object"`
	Removed []Object `json:"removed,omitempty"`
}

// deleteObjectCmd deletes an object: with VersionID that version for good,
// otherwise the current one (in a versioned bucket: a delete marker becomes
// current and nothing is lost). Time judges object locks.
type deleteObjectCmd struct {
	ID        string    `json:"id"` // bucket + "/" + key
	VersionID string    `json:"version_id,omitempty"`
	MarkerID  string    `json:"marker_id,omitempty"` // the version ID a new delete marker gets
	Time      time.Time `json:"time,omitzero"`
	Bypass    bool      `json:"bypass_governance,omitempty"`
	// IfVersion, if set, is the Raft index that wrote the version this
	// delete means (the current one, or VersionID's): a delete decided on
	// an earlier read (a lifecycle rule) never removes a newer write.
	IfVersion uint64 `json:"if_version,omitempty"`
	target
}

// DeleteResult says what a delete did, for S3's response headers.
type DeleteResult struct {
	VersionID    string   `json:"version_id,omitempty"` // the version deleted, or the marker made
	DeleteMarker bool     `json:"delete_marker,omitempty"`
	Removed      []Object `json:"removed,omitempty"` // versions gone for good: their shards go next
}

func registerObjects(reg *consensus.Registry) {
	consensus.RegisterTable[Bucket](reg, &memdb.TableSchema{Name: tBuckets, Indexes: map[string]*memdb.IndexSchema{
		"id":      {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"project": {Name: "project", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "ProjectID"}}, // system buckets have none
	}})
	// An empty bucket counts for nothing in the quota, yet it is the
	// project's: the project stays while it does.
	identity.HoldProjects(identity.ProjectHolder{Kind: "buckets", Held: func(txn *memdb.Txn, project string) []string {
		var names []string
		for _, b := range consensus.All[Bucket](txn, tBuckets, "project", project) {
			names = append(names, b.ID)
		}
		return names
	}})
	for _, table := range []string{tObjects, tVersions} {
		consensus.RegisterTable[Object](reg, &memdb.TableSchema{Name: table, Indexes: map[string]*memdb.IndexSchema{
			"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"disk": {Name: "disk", AllowMissing: true, Indexer: diskIndex{func(o any) []Segment { return o.(*Object).segments() }}},
			"data": {Name: "data", AllowMissing: true, Indexer: dataIndex{func(o any) []Segment { return o.(*Object).segments() }}},
		}})
	}
	consensus.Handle(reg, MsgCreateBucket, "CreateBucket", applyCreateBucket)
	consensus.Handle(reg, MsgDeleteBucket, "DeleteBucket", applyDeleteBucket)
	consensus.Handle(reg, MsgPutObject, "PutObject", applyPutObject)
	consensus.Handle(reg, MsgDeleteObject, "DeleteObject", applyDeleteObject)
	registerMultipart(reg)
	registerRepair(reg)
	registerLayout(reg)
	registerSettle(reg)
	registerObjectAttrs(reg)
	registerBucketConfig(reg)
	registerInline(reg)
}

func applyCreateBucket(tx *consensus.Tx, b *Bucket) (any, error) {
	if consensus.First[Bucket](tx.Txn, tBuckets, "id", b.ID) != nil {
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "bucket_exists", "a bucket named %q already exists", b.ID)
	}
	if b.Lock != nil && b.Versioning != VersioningEnabled {
		return nil, consensus.Errorf(consensus.CodeInvalid, "object lock needs versioning")
	}
	row := *b
	row.Bytes, row.Objects, row.Items, row.Version = 0, 0, 0, tx.Index
	return &row, tx.Insert(tBuckets, &row)
}

// applyDeleteBucket removes an empty bucket (no objects, no older versions,
// no delete markers). Its uploads in progress go with it; their parts are
// returned so the caller deletes their shards.
func applyDeleteBucket(tx *consensus.Tx, c *deleteBucketCmd) (any, error) {
	b, err := bucketFor(tx, c.Name, c.target)
	if err != nil {
		return nil, err
	}
	if !c.current() {
		// Written before versions and bound uploads: as it applied then.
		if b.Objects > 0 {
			return nil, consensus.Errorf(consensus.CodeConflict, "bucket %q is not empty", c.Name)
		}
		return nil, tx.Delete(tBuckets, b)
	}
	if _, _, any := firstRow(tx.Txn, b.ID, ""); any {
		return nil, consensus.Errorf(consensus.CodeConflict, "bucket %q is not empty", c.Name)
	}
	var parts []Part
	for _, u := range bucketUploads(tx.Txn, b.ID) {
		ps, err := removeUpload(tx, &u)
		if err != nil {
			return nil, err
		}
		parts = append(parts, ps...)
	}
	if err := releaseBucket(tx, b); err != nil {
		return nil, err
	}
	return parts, tx.Delete(tBuckets, b)
}

// firstRow reports whether the bucket holds any object or version whose key
// starts with prefix.
func firstRow(txn *memdb.Txn, bucket, prefix string) (string, string, bool) {
	for _, table := range []string{tObjects, tVersions} {
		it, err := txn.LowerBound(table, "id", bucket+"/"+prefix)
		if err != nil {
			panic(err) // the index is registered with the table: a bug
		}
		if obj := it.Next(); obj != nil {
			if o := obj.(*Object); o.Bucket == bucket && strings.HasPrefix(o.Key, prefix) {
				return table, o.ID, true
			}
		}
	}
	return "", "", false
}

// gib is the quota unit an amount of bytes occupies.
func gib(bytes int64) int64 { return (bytes + 1<<30 - 1) >> 30 }

// applyPutObject makes a new object version current, charging the project's
// quotas. What happens to the version it replaces depends on the bucket's
// versioning: kept as an older version (Enabled), or deleted (never
// enabled; Suspended, for the "null" version), unless a lock protects it.
func applyPutObject(tx *consensus.Tx, c *putObjectCmd) (any, error) {
	o := c.Object
	if data := tx.Attached(); data != nil {
		// An inline object's bytes, beside the command (putInline).
		if !o.IsInline() || len(o.Inline) > 0 || int64(len(data)) != o.Size {
			return nil, consensus.Errorf(consensus.CodeInvalid, "put %s: %d bytes attached to an object of %d bytes, inline %v", o.ID, len(data), o.Size, o.IsInline())
		}
		o.Inline = bytes.Clone(data)
	}
	b, err := bucketFor(tx, o.Bucket, c.target)
	if err != nil {
		return nil, err
	}
	if c.current() {
		if err := ValidKey(o.Key); err != nil {
			return nil, err
		}
	}
	if err := checkNotAbandoned(tx, o.segments()); err != nil {
		return nil, err
	}
	old := consensus.First[Object](tx.Txn, tObjects, "id", o.ID)
	live := old != nil && !old.Delete
	if c.IfNoneMatch && live {
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "object %q exists (If-None-Match)", o.Key)
	}
	if c.IfMatch != "" && (!live || old.ETag != c.IfMatch) {
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "object %q does not have ETag %s (If-Match)", o.Key, c.IfMatch)
	}
	o.Version = tx.Index
	o.VersionID = newVersionID(b, o.VersionID)
	o.Noncurrent = time.Time{}
	applyDefaultRetention(b, &o)
	acc := newBucketAccount(b, c.current())
	res := &putResult{}
	if old != nil {
		removed, err := retire(tx, acc, b, old, o.Modified, false)
		if err != nil {
			return nil, err
		}
		res.Removed = removed
	}
	if err := dropNullVersion(tx, acc, b, o.ID, o.VersionID, o.Modified, false, res); err != nil {
		return nil, err
	}
	acc.add(&o, +1, true)
	if err := tx.Insert(tObjects, &o); err != nil {
		return nil, err
	}
	if err := acc.commit(tx); err != nil {
		return nil, err
	}
	// The writer has the bytes: the answer (sent back to a forwarding
	// node) carries the record without them.
	answer := o
	answer.Inline = nil
	res.Object = &answer
	return res, nil
}

// newVersionID is the version ID a new version gets: the one its writer
// chose in a versioned bucket, "null" otherwise.
func newVersionID(b *Bucket, chosen string) string {
	if b.Versioning == VersioningEnabled && chosen != "" {
		return chosen
	}
	return NullVersion
}

// retire takes the current version old out of the objects table as a newer
// one (written at t) replaces it: it becomes an older version, unless it is
// the null version and the bucket is not versioning, in which case it goes
// for good (and is returned) if no lock holds it.
func retire(tx *consensus.Tx, acc *bucketAccount, b *Bucket, old *Object, t time.Time, bypass bool) ([]Object, error) {
	if err := tx.Delete(tObjects, old); err != nil {
		return nil, err
	}
	if b.Versioning == "" || (b.Versioning == VersioningSuspended && old.VersionIDOrNull() == NullVersion) {
		if err := checkUnlocked(tx, old, t, bypass); err != nil {
			return nil, err
		}
		acc.add(old, -1, true)
		if old.Delete {
			return nil, nil
		}
		return []Object{*old}, nil
	}
	v := *old
	v.ID, v.Noncurrent = versionRowID(old), t
	if v.Noncurrent.IsZero() {
		v.Noncurrent = time.Unix(0, 1).UTC() // never zero: zero marks the current version
	}
	acc.demote(old)
	return nil, tx.Insert(tVersions, &v)
}

// dropNullVersion removes an older "null" version of key when a new null
// version or marker (vid) is written to a suspended bucket, as S3 does.
func dropNullVersion(tx *consensus.Tx, acc *bucketAccount, b *Bucket, id, vid string, t time.Time, bypass bool, res *putResult) error {
	if b.Versioning != VersioningSuspended || vid != NullVersion {
		return nil
	}
	for _, v := range versionsOf(tx.Txn, id) {
		if v.VersionIDOrNull() != NullVersion {
			continue
		}
		if err := checkUnlocked(tx, &v, t, bypass); err != nil {
			return err
		}
		if err := tx.Delete(tVersions, &v); err != nil {
			return err
		}
		acc.add(&v, -1, false)
		if !v.Delete {
			res.Removed = append(res.Removed, v)
		}
	}
	return nil
}

// versionRowID is an older version's ID in the versions table: its object's
// ID, then the Raft index that wrote it inverted, so that a key's versions
// sort together, newest first, right after the key.
func versionRowID(o *Object) string {
	return fmt.Sprintf("%s\x00%016x", objectID(o.Bucket, o.Key), math.MaxUint64-o.Version)
}

func objectID(bucket, key string) string { return bucket + "/" + key }

// versionsOf returns the older versions of an object, newest first. (Its
// ID is a prefix of theirs; a key written before NUL was refused in keys
// may have another key's versions under it too, so the key is compared.)
func versionsOf(txn *memdb.Txn, id string) []Object {
	it, err := txn.Get(tVersions, "id_prefix", id+"\x00")
	if err != nil {
		panic(err)
	}
	var out []Object
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if v := obj.(*Object); objectID(v.Bucket, v.Key) == id {
			out = append(out, *v)
		}
	}
	return out
}

func applyDeleteObject(tx *consensus.Tx, c *deleteObjectCmd) (any, error) {
	cur := consensus.First[Object](tx.Txn, tObjects, "id", c.ID)
	bucket, key, _ := strings.Cut(c.ID, "/")
	b, err := bucketFor(tx, bucket, c.target)
	if err != nil {
		return nil, err
	}
	if c.current() {
		if err := ValidKey(key); err != nil {
			return nil, err
		}
	}
	acc := newBucketAccount(b, c.current())
	res := &DeleteResult{}
	if c.VersionID != "" {
		if err := deleteVersion(tx, acc, c, res); err != nil {
			return nil, err
		}
		return res, acc.commit(tx)
	}
	if c.IfVersion != 0 && (cur == nil || cur.Version != c.IfVersion) {
		return nil, consensus.Errorf(consensus.CodePreconditionFailed, "object %q changed since the delete was decided", key)
	}
	if b.Versioning == "" {
		if cur == nil {
			return nil, consensus.Errorf(consensus.CodeNotFound, "object %q not found", c.ID)
		}
		if err := checkUnlocked(tx, cur, c.Time, c.Bypass); err != nil {
			return nil, err
		}
		if err := tx.Delete(tObjects, cur); err != nil {
			return nil, err
		}
		acc.add(cur, -1, true)
		res.Removed = []Object{*cur}
		return res, acc.commit(tx)
	}
	// A versioned bucket: a delete marker becomes the current version.
	marker := Object{ID: c.ID, Bucket: bucket, Key: key, Delete: true, Modified: c.Time, Version: tx.Index}
	marker.VersionID = newVersionID(b, c.MarkerID)
	pr := &putResult{}
	if cur != nil {
		removed, err := retire(tx, acc, b, cur, c.Time, c.Bypass)
		if err != nil {
			return nil, err
		}
		pr.Removed = removed
	}
	if err := dropNullVersion(tx, acc, b, c.ID, marker.VersionID, c.Time, c.Bypass, pr); err != nil {
		return nil, err
	}
	acc.add(&marker, +1, true)
	if err := tx.Insert(tObjects, &marker); err != nil {
		return nil, err
	}
	res.VersionID, res.DeleteMarker, res.Removed = marker.VersionID, true, pr.Removed
	return res, acc.commit(tx)
}

// deleteVersion deletes one version for good. If it was the current one,
// the newest older version becomes current, as in S3.
func deleteVersion(tx *consensus.Tx, acc *bucketAccount, c *deleteObjectCmd, res *DeleteResult) error {
	victim, table := findVersion(tx.Txn, c.ID, c.VersionID)
	if victim == nil {
		// S3 answers a delete of a version that does not exist with success.
		res.VersionID = c.VersionID
		return nil
	}
	if c.IfVersion != 0 && victim.Version != c.IfVersion {
		return consensus.Errorf(consensus.CodePreconditionFailed, "version %s of %q changed since the delete was decided", c.VersionID, victim.Key)
	}
	if err := checkUnlocked(tx, victim, c.Time, c.Bypass); err != nil {
		return err
	}
	if err := tx.Delete(table, victim); err != nil {
		return err
	}
	res.VersionID, res.DeleteMarker = victim.VersionIDOrNull(), victim.Delete
	acc.add(victim, -1, table == tObjects)
	if table == tObjects {
		if older := versionsOf(tx.Txn, c.ID); len(older) > 0 {
			next := older[0]
			if err := tx.Delete(tVersions, &next); err != nil {
				return err
			}
			next.ID, next.Noncurrent = c.ID, time.Time{}
			acc.promote(&next)
			if err := tx.Insert(tObjects, &next); err != nil {
				return err
			}
		}
	}
	if !victim.Delete {
		res.Removed = []Object{*victim}
	}
	return nil
}

// listObjects returns up to limit current objects of a bucket (delete
// markers aside) whose keys start with prefix and sort after startAfter.
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
		if o.Delete {
			continue
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, *o)
	}
	return out, false
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
