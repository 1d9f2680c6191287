package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/cairnhq/cairn/storage/placement"
)

// Objects is the object layer: buckets and objects, metadata in Raft, bytes
// erasure-coded over the pool's disks. The S3 gateway and the UI use it.
type Objects struct {
	c      Cluster
	id     *identity.Service
	shards *Shards
	log    *slog.Logger

	suspects chan badShard // shards reads found bad, for RunReadRepair
	mu       sync.Mutex
	queued   map[string]bool // shard keys in suspects
}

// NewObjects returns the object layer of this node.
func NewObjects(c Cluster, id *identity.Service, shards *Shards, log *slog.Logger) *Objects {
	return &Objects{c: c, id: id, shards: shards, log: log,
		suspects: make(chan badShard, 256), queued: map[string]bool{}}
}

// Errors the gateway maps to S3 codes.
var (
	ErrNoSpace     = errors.New("not enough storage to place the object")   // InsufficientStorage, 507
	ErrUnavailable = errors.New("too few disks reachable to store durably") // ServiceUnavailable, 503
	ErrIncomplete  = errors.New("the request body ended early")             // IncompleteBody, 400
	ErrBadDigest   = errors.New("Content-MD5 does not match the body")      // BadDigest, 400
)

var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// BucketOptions are what a bucket is created with.
type BucketOptions struct {
	ObjectLock bool // S3's x-amz-bucket-object-lock-enabled: versioning on, for good
}

// CreateBucket creates a bucket in a project (project members).
func (o *Objects) CreateBucket(ctx context.Context, p *identity.Principal, projectID, name string) (*Bucket, error) {
	return o.CreateBucketWith(ctx, p, projectID, name, BucketOptions{})
}

// CreateBucketWith creates a bucket with options.
func (o *Objects) CreateBucketWith(ctx context.Context, p *identity.Principal, projectID, name string, opt BucketOptions) (*Bucket, error) {
	const action = "bucket.create"
	if !bucketRE.MatchString(name) {
		return nil, o.id.Deny(ctx, p, action, name, projectID, consensus.Errorf(consensus.CodeInvalid,
			"bucket name %q must be 3-63 lowercase letters, digits, dots or hyphens", name))
	}
	if !p.Can(projectID, identity.RoleMember) {
		return nil, o.id.Deny(ctx, p, action, name, projectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to create buckets in this project"))
	}
	b := Bucket{ID: name, UID: newDataID(), ProjectID: projectID, CreatedAt: time.Now().UTC()}
	if opt.ObjectLock {
		b.Versioning, b.Lock = VersioningEnabled, &ObjectLockConfig{}
	}
	var out Bucket
	err := o.id.Mutate(ctx, p, action, name, projectID, MsgCreateBucket, b, &out)
	return &out, err
}

// Bucket returns a bucket the caller may read; another project's bucket is
// not found, so names do not leak. Like every object-layer read, it is
// linearizable: a write acknowledged by any node is seen here (S3's
// read-after-write and list-after-write).
func (o *Objects) Bucket(ctx context.Context, p *identity.Principal, name string) (*Bucket, error) {
	if err := o.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	b := consensus.First[Bucket](o.c.Store().ReadTxn(), tBuckets, "id", name)
	if b == nil || IsSystemBucket(name) || !p.Can(b.ProjectID, identity.RoleReader) {
		return nil, consensus.Errorf(consensus.CodeNotFound, "bucket %q not found", name)
	}
	return b, nil
}

// ListBuckets returns the buckets of every project the caller can read.
func (o *Objects) ListBuckets(ctx context.Context, p *identity.Principal) ([]Bucket, error) {
	if err := o.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	var out []Bucket
	it, err := o.c.Store().ReadTxn().Get(tBuckets, "id")
	if err != nil {
		return nil, err
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if b := obj.(*Bucket); !IsSystemBucket(b.ID) && p.Can(b.ProjectID, identity.RoleReader) {
			out = append(out, *b)
		}
	}
	return out, nil
}

// DeleteBucket removes an empty bucket (project members).
func (o *Objects) DeleteBucket(ctx context.Context, p *identity.Principal, name string) error {
	b, err := o.writable(ctx, p, "bucket.delete", name)
	if err != nil {
		return err
	}
	var parts []Part
	if err := o.id.Mutate(ctx, p, "bucket.delete", name, b.ProjectID, MsgDeleteBucket, deleteBucketCmd{Name: name, target: targetOf(b)}, &parts); err != nil {
		return err
	}
	for _, part := range parts { // uploads that were in progress
		o.deleteShards(part.Segment.Layout, part.Segment.Shards, part.Segment.DataID)
	}
	return nil
}

// writable returns a bucket the caller may write to. Writes read it locally
// and go linearizable only on a miss (a bucket just created through another
// node): the command handlers check the bucket again inside the FSM, so a
// stale local copy cannot let a write through, and the hot path saves a
// round trip to the leader.
func (o *Objects) writable(ctx context.Context, p *identity.Principal, action, bucket string) (*Bucket, error) {
	b := consensus.First[Bucket](o.c.Store().ReadTxn(), tBuckets, "id", bucket)
	if b == nil || IsSystemBucket(bucket) || !p.Can(b.ProjectID, identity.RoleReader) {
		var err error
		if b, err = o.Bucket(ctx, p, bucket); err != nil {
			return nil, o.id.Deny(ctx, p, action, bucket, "", err)
		}
	}
	if !p.Can(b.ProjectID, identity.RoleMember) {
		return nil, o.id.Deny(ctx, p, action, bucket, b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to write to bucket %q", bucket))
	}
	return b, nil
}

// PutOptions are an object's HTTP-level attributes and the conditions of
// its write.
type PutOptions struct {
	ContentType string
	Meta        map[string]string
	MD5         []byte // Content-MD5, checked if set
	// Checksum returns, once the body is read, the flexible checksum the
	// caller verified over it, to keep (nil: none).
	Checksum    func() *Checksum
	Tags        map[string]string
	Retention   *Retention // object lock retention; needs a bucket with object lock
	LegalHold   bool
	IfMatch     string // write only over a current version with this ETag
	IfNoneMatch bool   // write only if there is no current version
	// Headers are the standard headers S3 keeps with an object, by name:
	// Cache-Control, Content-Disposition, Content-Encoding, Content-Language, Expires.
	Headers map[string]string
}

func (opt PutOptions) checksum() *Checksum {
	if opt.Checksum == nil {
		return nil
	}
	return opt.Checksum()
}

// lockRole is the role a write's lock options need: a project member may
// protect data for a while (GOVERNANCE, which a project admin can lift),
// but only a project admin may lock it beyond anyone's reach (COMPLIANCE)
// or under legal hold, which only a project admin may lift.
func lockRole(opt PutOptions) identity.Role {
	if opt.LegalHold || (opt.Retention != nil && opt.Retention.Mode == LockCompliance) {
		return identity.RoleAdmin
	}
	return identity.RoleMember
}

// Put stores an object of exactly size bytes read from body. The object
// becomes visible only after its shards are durable and its metadata
// commits; when the write fails, its shards are deleted once it is certain
// it did not commit (settle).
func (o *Objects) Put(ctx context.Context, p *identity.Principal, bucket, key string, size int64, body io.Reader, opt PutOptions) (*Object, error) {
	const action = "object.put"
	b, err := o.writable(ctx, p, action, bucket)
	if err != nil {
		return nil, err
	}
	if err := o.checkNew(b, key, opt); err != nil {
		return nil, o.id.Deny(ctx, p, action, bucket+"/"+key, b.ProjectID, err)
	}
	if !p.Can(b.ProjectID, lockRole(opt)) {
		return nil, o.id.Deny(ctx, p, action, bucket+"/"+key, b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only project admins set COMPLIANCE retention or a legal hold"))
	}
	if size <= InlineMax {
		data, err := readInline(body, size)
		if err != nil {
			return nil, err
		}
		obj, done, err := o.putInline(ctx, p, b, key, data, opt)
		if done {
			return obj, err
		}
		body = bytes.NewReader(data) // the inline budget is spent: shards, then
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
	if opt.MD5 != nil && !bytes.Equal(opt.MD5, sum) {
		o.deleteShards(l, locs, dataID)
		return nil, ErrBadDigest
	}
	obj := Object{ID: objectID(bucket, key), Bucket: bucket, Key: key, VersionID: newVersionIDFor(b), Size: size, ETag: hex.EncodeToString(sum),
		ContentType: opt.ContentType, Meta: opt.Meta, Tags: opt.Tags, Checksum: opt.checksum(), Retention: opt.Retention, LegalHold: opt.LegalHold,
		Layout: l, DataID: dataID, Shards: locs, Modified: time.Now().UTC()}
	obj.Headers = opt.Headers
	var res putResult
	cmd := putObjectCmd{Object: obj, IfMatch: opt.IfMatch, IfNoneMatch: opt.IfNoneMatch, target: targetOf(b)}
	if err := o.id.Mutate(ctx, p, action, obj.ID, b.ProjectID, MsgPutObject, cmd, &res); err != nil {
		if !o.settle(ctx, err, dataID, func() { o.deleteShards(l, locs, dataID) }) {
			return nil, err
		}
		return o.committed(obj.ID, dataID)
	}
	go o.deleteVersions(res.Removed)
	return res.Object, nil
}

// committed returns the version a write whose outcome was settled as
// committed made: still current, or (if a newer write came first) older.
func (o *Objects) committed(id, dataID string) (*Object, error) {
	txn := o.c.Store().ReadTxn()
	for _, table := range []string{tObjects, tVersions} {
		if obj, err := txn.First(table, "data", dataID); err == nil && obj != nil {
			return obj.(*Object), nil
		}
	}
	return nil, consensus.Errorf(consensus.CodeNotFound, "object %q not found", id)
}

// newVersionIDFor is the version ID a writer proposes for a new version:
// random, and used only if the bucket versions when the command applies.
func newVersionIDFor(*Bucket) string { return newDataID() }

// checkNew refuses a write S3 would refuse before reading its body.
func (o *Objects) checkNew(b *Bucket, key string, opt PutOptions) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := validMeta(opt.Meta); err != nil {
		return err
	}
	if err := validMeta(opt.Headers); err != nil { // held to the same bounds
		return err
	}
	if err := ValidTags(opt.Tags); err != nil {
		return err
	}
	if (opt.Retention != nil || opt.LegalHold) && b.Lock == nil {
		return consensus.Errorf(consensus.CodeInvalid, "bucket %q has no object lock: a retention or legal hold cannot be set", b.ID)
	}
	return checkRetention(opt.Retention, time.Now())
}

// checkRetention refuses a retention date past MaxRetention: data kept
// that long could never be deleted nor its quota freed.
func checkRetention(r *Retention, now time.Time) error {
	if r != nil && r.Until.After(now.AddDate(MaxRetentionYears, 0, 0)) {
		return consensus.Errorf(consensus.CodeInvalid, "a retention ends at most %d years from now", MaxRetentionYears)
	}
	return nil
}

// MaxRetentionYears bounds how far ahead a retention may end.
const MaxRetentionYears = 100

// place chooses the layout and the disks for a new object.
func (o *Objects) place(b *Bucket, size int64, dataID string) (erasure.Layout, []placement.Disk, error) {
	var all, usable []placement.Disk
	for _, d := range listDisks(o.c.Store().ReadTxn(), "") {
		if d.State != DiskActive {
			continue
		}
		pd := placement.Disk{ID: d.ID, Node: d.Node, Free: d.FreeBytes, Device: d.Device}
		all = append(all, pd)
		if d.Health == HealthOK && d.FreeBytes > 0 {
			usable = append(usable, pd)
		}
	}
	l, err := placement.DefaultLayout(all)
	if b.Layout != nil {
		l, err = *b.Layout, nil
	} else if err == nil {
		l = smallLayout(l, size)
	}
	if err != nil {
		return l, nil, fmt.Errorf("%w: %v", ErrNoSpace, err)
	}
	need := uint64(l.ShardSize(size))
	var fits []placement.Disk
	for _, d := range usable {
		if d.Free > need+(64<<20) { // keep a margin for the filesystem
			fits = append(fits, d)
		}
	}
	placed, err := placement.Place(l, fits, dataID)
	if err != nil {
		// Degraded: place what fits, shard by shard; writeShards checks quorum.
		placed = partialPlace(l, fits)
	}
	if len(placed) < writeQuorum(l) {
		if len(fits) < len(usable) {
			return l, nil, ErrNoSpace
		}
		return l, nil, ErrUnavailable
	}
	return l, placed, nil
}

// ReplicateMax is the largest object stored as whole copies (1+m) rather
// than cut into the pool's k+m shards, when its bucket has no layout of its
// own and the pool's parity m is two or more. A small object's cost is the
// number of shard files and requests, not its bytes: at 4+2 a 4 KiB object
// is six files on three nodes, each created, fsynced and renamed, four of
// them over the network, and a read gathers four. As 1+m it is m+1 copies,
// one per node where there are as many nodes, so a write makes half the
// files (on 3 nodes × 2 disks) and a read finds a whole copy on the node it
// arrives at. The copies survive the loss of any m disks or of a node, as
// the k+m shards would, for m+1 times the object's bytes rather than
// (k+m)/k: at most 384 KiB for 1+2 where 4+2 takes 192. (Objects of at most
// InlineMax bytes go inline while the pool's inline budget lasts:
// inline.go.) MinIO keeps objects under 128 KiB inline for the same
// reason. With a parity of one the pool's layout stays: 1+1 would need
// both copies for a write, where k+1 goes on with one shard missing.
const ReplicateMax = 128 << 10

// smallLayout is the layout of an object of size bytes in a pool whose
// layout is l: l itself, or 1+m (m+1 copies) for a small object.
func smallLayout(l erasure.Layout, size int64) erasure.Layout {
	if size > ReplicateMax || l.Data <= 1 || l.Parity < 2 {
		return l
	}
	return erasure.Layout{Data: 1, Parity: l.Parity, StripeSize: l.StripeSize}
}

// writeQuorum is how many durable shards a write needs: k, or k+1 when k == m
// (as MinIO), so that two halves of a split can never both succeed; and two
// copies of an object stored as copies (1+m, m of two or more), which
// writeShards also wants in two failure domains (apart), so that an
// acknowledged write survives the loss of a disk or a node.
func writeQuorum(l erasure.Layout) int {
	switch {
	case l.Data == 1 && l.Parity >= 2:
		return 2
	case l.Data == l.Parity:
		return l.Data + 1
	}
	return l.Data
}

// partialPlace uses every fitting disk once, at most m per node, in a stable
// order; shards beyond them are left for the healer.
func partialPlace(l erasure.Layout, disks []placement.Disk) []placement.Disk {
	sort.Slice(disks, func(i, j int) bool { return disks[i].Free > disks[j].Free })
	per := map[string]int{}
	var out []placement.Disk
	for _, d := range disks {
		if len(out) == l.Shards() || per[d.Node] >= max(l.Parity, 1) {
			continue
		}
		per[d.Node]++
		out = append(out, d)
	}
	return out
}

func (o *Objects) writeShards(ctx context.Context, l erasure.Layout, placed []placement.Disk, dataID string, size int64, body io.Reader) ([]ShardLoc, []byte, error) {
	locs := make([]ShardLoc, l.Shards())
	ws := make([]io.Writer, l.Shards())
	sws := make([]ShardWriter, l.Shards())
	full := false // a disk refused for lack of room (or the control plane's floor)
	for i := range l.Shards() {
		if i >= len(placed) {
			continue
		}
		d := Disk{ID: placed[i].ID, Node: placed[i].Node}
		w, err := o.shards.Create(ctx, d, shardKey(dataID, i), l.ShardSize(size))
		if err != nil {
			o.log.Warn("shard writer failed; writing degraded", "disk", d.ID, "no_space", isNoSpace(err), "err", err)
			full = full || isNoSpace(err)
			continue
		}
		ws[i], sws[i], locs[i] = w, w, ShardLoc{Disk: d.ID, Node: d.Node}
	}
	abortAll := func() {
		for _, w := range sws {
			if w != nil {
				w.Abort()
			}
		}
	}
	enc, err := erasure.NewEncoder(l, size, ws)
	if err != nil {
		abortAll()
		return nil, nil, err
	}
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(enc, h), io.LimitReader(body, size))
	if err == nil && n < size {
		err = ErrIncomplete
	}
	if err == nil {
		err = enc.Close()
	}
	if err != nil {
		abortAll()
		return nil, nil, err
	}
	// The shards commit side by side: each is an fsync, here or on a peer.
	failed := enc.Failed()
	errs := make([]error, len(sws))
	var wg sync.WaitGroup
	for i, w := range sws {
		if w == nil {
			continue
		}
		if failed[i] != nil {
			w.Abort()
			errs[i] = failed[i]
			continue
		}
		wg.Go(func() { errs[i] = w.Commit() })
	}
	wg.Wait()
	good := 0
	for i, w := range sws {
		if w == nil {
			continue
		}
		if err := errs[i]; err != nil {
			o.log.Warn("shard write failed", "disk", locs[i].Disk, "no_space", isNoSpace(err), "err", err)
			full = full || isNoSpace(err)
			locs[i] = ShardLoc{}
			continue
		}
		good++
	}
	if good < writeQuorum(l) || !o.apart(l, locs) {
		o.deleteShards(l, locs, dataID)
		if full {
			return nil, nil, ErrNoSpace
		}
		return nil, nil, ErrUnavailable
	}
	return locs, h.Sum(nil), nil
}

// apart reports whether the copies written of an object stored as copies
// (1+m, m of two or more) are in two failure domains or more, as the pool
// counts them (placement.Domains): with a node's peers full or failing,
// placement may put two copies on one node, and a write resting on one
// node is refused as a k+m write with too few shards is. Other layouts,
// and a pool of one domain, pass.
func (o *Objects) apart(l erasure.Layout, locs []ShardLoc) bool {
	if l.Data != 1 || l.Parity < 2 {
		return true
	}
	var pool []placement.Disk
	byID := map[string]placement.Disk{}
	for _, d := range listDisks(o.c.Store().ReadTxn(), "") {
		if d.State == DiskActive {
			pd := placement.Disk{ID: d.ID, Node: d.Node, Device: d.Device}
			pool = append(pool, pd)
			byID[d.ID] = pd
		}
	}
	domain := placement.Domains(pool)
	all, used := map[string]bool{}, map[string]bool{}
	for _, d := range pool {
		all[domain(d)] = true
	}
	for _, loc := range locs {
		if loc.Disk == "" {
			continue
		}
		d, ok := byID[loc.Disk]
		if !ok {
			d = placement.Disk{ID: loc.Disk, Node: loc.Node}
		}
		used[domain(d)] = true
	}
	return len(used) >= 2 || len(all) < 2
}

func shardKey(dataID string, i int) string { return fmt.Sprintf("%s.%d", dataID, i) }

// deleteShards removes an object version's shards, best effort: what fails
// here is left for the garbage collector.
func (o *Objects) deleteShards(l erasure.Layout, locs []ShardLoc, dataID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, loc := range locs {
		if loc.Disk == "" {
			continue
		}
		if err := o.shards.Delete(ctx, Disk{ID: loc.Disk, Node: loc.Node}, shardKey(dataID, i)); err != nil {
			o.log.Warn("shard left for garbage collection", "disk", loc.Disk, "err", err)
		}
	}
}

// segments returns the runs of bytes an object is made of, in order.
func (obj *Object) segments() []Segment {
	if len(obj.Parts) > 0 {
		return obj.Parts
	}
	return []Segment{{Size: obj.Size, ETag: obj.ETag, Layout: obj.Layout, DataID: obj.DataID, Shards: obj.Shards}}
}

func (o *Objects) deleteObjectData(obj *Object) {
	for _, seg := range obj.segments() {
		if seg.DataID != "" {
			o.deleteShards(seg.Layout, seg.Shards, seg.DataID)
		}
	}
}

// deleteVersions deletes the shards of versions a command removed for good.
func (o *Objects) deleteVersions(vs []Object) {
	for i := range vs {
		o.deleteObjectData(&vs[i])
	}
}

// ReasonDeleteMarker marks the not-found answer for a key whose current
// version, or the version asked for, is a delete marker.
const ReasonDeleteMarker = "delete_marker"

// Head returns an object's current version. If that is a delete marker, it
// returns the marker and a not-found error with ReasonDeleteMarker.
func (o *Objects) Head(ctx context.Context, p *identity.Principal, bucket, key string) (*Object, error) {
	return o.HeadVersion(ctx, p, bucket, key, "")
}

// HeadVersion returns one version of an object (versionID "" for the
// current one). A delete marker is returned with a not-found error whose
// reason is ReasonDeleteMarker.
func (o *Objects) HeadVersion(ctx context.Context, p *identity.Principal, bucket, key, versionID string) (*Object, error) {
	if _, err := o.Bucket(ctx, p, bucket); err != nil {
		return nil, err
	}
	if ValidKey(key) != nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "object %q not found", key)
	}
	txn := o.c.Store().ReadTxn()
	id := objectID(bucket, key)
	if versionID == "" {
		if cur := consensus.First[Object](txn, tObjects, "id", id); cur != nil && cur.Delete {
			return cur, consensus.Reasonf(consensus.CodeNotFound, ReasonDeleteMarker, "object %q not found (its current version is a delete marker)", key)
		}
	}
	obj, _ := findVersion(txn, id, versionID)
	if obj == nil {
		if versionID != "" {
			return nil, consensus.Reasonf(consensus.CodeNotFound, "no_such_version", "object %q has no version %q", key, versionID)
		}
		return nil, consensus.Errorf(consensus.CodeNotFound, "object %q not found", key)
	}
	if obj.Delete {
		return obj, consensus.Reasonf(consensus.CodeNotFound, ReasonDeleteMarker, "version %q of %q is a delete marker", versionID, key)
	}
	return obj, nil
}

// Get writes bytes [off, off+n) of an object to w (n < 0: to the end).
// Missing or corrupt shards are reconstructed on the fly and reported for
// repair; with too few intact shards it fails without writing wrong bytes.
func (o *Objects) Get(ctx context.Context, p *identity.Principal, bucket, key string, off, n int64, w io.Writer) (*Object, error) {
	obj, err := o.Head(ctx, p, bucket, key)
	if err != nil {
		return nil, err
	}
	return obj, o.Read(ctx, obj, off, n, w)
}

// Read writes bytes [off, off+n) of an object already looked up with Head
// (n < 0: to the end), so a caller that needed the metadata first does not
// pay for a second lookup.
func (o *Objects) Read(ctx context.Context, obj *Object, off, n int64, w io.Writer) error {
	if n < 0 {
		n = obj.Size - off
	}
	if obj.IsInline() {
		return writeInline(obj, off, n, w)
	}
	start := int64(0)
	for _, seg := range obj.segments() {
		lo, hi := max(off, start), min(off+n, start+seg.Size)
		if lo < hi || (seg.Size == 0 && n == 0 && off == start) {
			if err := o.readSegment(ctx, obj.ID, seg, lo-start, hi-lo, w); err != nil {
				return err
			}
		}
		start += seg.Size
	}
	return nil
}

func (o *Objects) readSegment(ctx context.Context, id string, seg Segment, off, n int64, w io.Writer) error {
	src := make([]io.ReaderAt, len(seg.Shards))
	near := make([]bool, len(seg.Shards))
	for i, loc := range seg.Shards {
		if loc.Disk == "" {
			continue
		}
		near[i] = loc.Node == o.shards.peers.Name()
		r, err := o.shards.Open(ctx, Disk{ID: loc.Disk, Node: loc.Node}, shardKey(seg.DataID, i))
		if err != nil {
			continue
		}
		defer r.Close()
		src[i] = r
	}
	bad, err := erasure.Decode(w, seg.Layout, seg.Size, src, near, off, n)
	if len(bad) > 0 && ctx.Err() == nil { // (a read its client gave up on fails shards that are fine)
		o.log.Warn("object read with missing or corrupt shards; queued for repair", "object", id, "data", seg.DataID, "shards", bad)
		for _, i := range bad {
			o.suspect(id, seg, i)
		}
	}
	if errors.Is(err, erasure.ErrTooFewShards) {
		return fmt.Errorf("read %s: %w", id, ErrUnavailable)
	}
	return err
}

// Delete removes an object's current version (in a versioned bucket, a
// delete marker takes its place) and then the shards of what went for good.
func (o *Objects) Delete(ctx context.Context, p *identity.Principal, bucket, key string) error {
	_, err := o.DeleteObject(ctx, p, bucket, key, DeleteOptions{})
	return err
}

// DeleteOptions qualify a delete.
type DeleteOptions struct {
	VersionID string // delete this version for good
	Bypass    bool   // bypass GOVERNANCE retention (project admins only)
	IfVersion uint64 // only if the version meant is still the one the Raft index wrote
}

// DeleteObject deletes an object or one of its versions.
func (o *Objects) DeleteObject(ctx context.Context, p *identity.Principal, bucket, key string, opt DeleteOptions) (*DeleteResult, error) {
	const action = "object.delete"
	b, err := o.writable(ctx, p, action, bucket)
	if err != nil {
		return nil, err
	}
	if err := ValidKey(key); err != nil {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, err)
	}
	if opt.Bypass && !p.Can(b.ProjectID, identity.RoleAdmin) {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only project admins may bypass governance retention"))
	}
	cmd := deleteObjectCmd{ID: objectID(bucket, key), VersionID: opt.VersionID, MarkerID: newVersionIDFor(b), Time: time.Now().UTC(),
		Bypass: opt.Bypass, IfVersion: opt.IfVersion, target: targetOf(b)}
	var res DeleteResult
	if err := o.id.Mutate(ctx, p, action, cmd.ID, b.ProjectID, MsgDeleteObject, cmd, &res); err != nil {
		return nil, err
	}
	o.deleteVersions(res.Removed)
	return &res, nil
}

// List returns up to max objects whose keys start with prefix and sort after
// startAfter, and whether more follow.
func (o *Objects) List(ctx context.Context, p *identity.Principal, bucket, prefix, startAfter string, max int) ([]Object, bool, error) {
	if _, err := o.Bucket(ctx, p, bucket); err != nil {
		return nil, false, err
	}
	objs, more := listObjects(o.c.Store().ReadTxn(), bucket, prefix, startAfter, max)
	return objs, more, nil
}

func newDataID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
