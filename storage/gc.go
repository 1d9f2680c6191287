package storage

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/disk"
	"github.com/hashicorp/go-memdb"
)

// Garbage collection:
//
//   - The sweeper runs on every node. It deletes shard files on this node's
//     disks that the replicated state does not place there: left by a crash
//     between the shard writes and the metadata commit, by a clean-up that
//     could not reach the node, or by a node that was away while its shards
//     were rebuilt elsewhere.
//   - The upload expirer runs on the leader. It aborts multipart uploads
//     older than the expiry (S3's AbortIncompleteMultipartUpload rule)
//     through the same path as an explicit abort.

// GCStats is the last pass of a sweeper or of the upload expirer, for the API
// and metrics.
type GCStats struct {
	LastPass   time.Time `json:"last_pass,omitzero"`
	Checked    int64     `json:"checked"`     // shard files, or uploads, examined
	Removed    int64     `json:"removed"`     // orphan shard files deleted, or uploads aborted
	FreedBytes int64     `json:"freed_bytes"` // size of the orphans deleted (sweeper)
}

// Sweeper deletes this node's orphan shards.
type Sweeper struct {
	c     Cluster
	disks *DiskAgent
	log   *slog.Logger
	grace time.Duration // files younger than this are never deleted
	stats atomic.Pointer[GCStats]
}

// NewSweeper returns the node's sweeper. grace must cover the time between a
// shard's write and its metadata commit (a PUT, a part upload, a heal).
func NewSweeper(c Cluster, disks *DiskAgent, log *slog.Logger, grace time.Duration) *Sweeper {
	s := &Sweeper{c: c, disks: disks, log: log, grace: grace}
	s.stats.Store(&GCStats{})
	return s
}

// Stats returns the last pass's figures.
func (s *Sweeper) Stats() GCStats { return *s.stats.Load() }

// shardRef names one shard file: a key on a disk.
type shardRef struct{ disk, key string }

// suspect is a shard file old enough to be deleted if nothing places it.
type suspect struct {
	shardRef
	store *disk.Store
	info  fs.FileInfo
}

// Pass deletes this node's orphan shards once. Why it never deletes a shard
// the state relies on:
//
//   - A shard file becomes referenced only by a command committed after it
//     was written (a PUT, a part upload, a heal), moments later. The listing
//     comes first and keeps only files older than the grace period; the
//     state is then read linearizably, so it holds every reference those
//     files will ever get.
//   - A file is deleted only if it is still the file listed: a shard written
//     again under the same key since (a heal back onto this disk) is kept.
//   - On any error (state unavailable, a disk unreadable, two disks that are
//     one directory) the pass stops and deletes nothing more.
func (s *Sweeper) Pass(ctx context.Context) (GCStats, error) {
	st := GCStats{}
	cutoff := time.Now().Add(-s.grace)
	txn := s.c.Store().ReadTxn()
	mine := map[string]*disk.Store{}
	for _, d := range listDisks(txn, s.c.Name()) {
		if store := s.disks.Disk(d.ID); store != nil {
			mine[d.ID] = store
		}
	}
	if err := distinctDirs(mine); err != nil {
		return st, err
	}
	// The local state only narrows the listing to suspects, so that memory
	// holds orphans rather than every shard: keeping a file is always safe.
	local, err := shardRefs(txn, mine)
	if err != nil {
		return st, err
	}
	var suspects []suspect
	for id, store := range mine {
		err := store.Walk(func(key string, info fs.FileInfo) error {
			st.Checked++
			ref := shardRef{disk: id, key: key}
			if info.ModTime().Before(cutoff) && isShardKey(key) && !local[ref] {
				suspects = append(suspects, suspect{shardRef: ref, store: store, info: info})
			}
			return nil
		})
		if err != nil {
			return st, fmt.Errorf("sweep: list disk %s: %w", id, err)
		}
	}
	if len(suspects) > 0 {
		if err := s.c.ConsistentRead(ctx); err != nil {
			return st, fmt.Errorf("sweep: read the state: %w", err)
		}
		refs, err := shardRefs(s.c.Store().ReadTxn(), mine)
		if err != nil {
			return st, err
		}
		for _, sp := range suspects {
			if ctx.Err() != nil {
				return st, ctx.Err()
			}
			if refs[sp.shardRef] {
				continue
			}
			removed, err := sp.store.RemoveIfUnchanged(sp.key, sp.info)
			if err != nil {
				return st, fmt.Errorf("sweep: remove %s from disk %s: %w", sp.key, sp.disk, err)
			}
			if removed {
				st.Removed++
				st.FreedBytes += sp.info.Size()
				s.log.Info("orphan shard removed", "disk", sp.disk, "shard", sp.key, "bytes", sp.info.Size(), "modified", sp.info.ModTime().UTC())
			}
		}
	}
	st.LastPass = time.Now().UTC()
	s.stats.Store(&st)
	return st, nil
}

// shardRefs returns every shard the state places on the given disks: the
// segments of objects and the parts of uploads in progress.
func shardRefs(txn *memdb.Txn, disks map[string]*disk.Store) (map[shardRef]bool, error) {
	refs := map[shardRef]bool{}
	add := func(seg Segment) {
		for i, loc := range seg.Shards {
			if disks[loc.Disk] != nil {
				refs[shardRef{disk: loc.Disk, key: shardKey(seg.DataID, i)}] = true
			}
		}
	}
	eachVersion(txn, func(o *Object) {
		for _, seg := range o.segments() {
			add(seg)
		}
	})
	parts, err := txn.Get(tParts, "id")
	if err != nil {
		return nil, fmt.Errorf("sweep: read parts: %w", err)
	}
	for obj := parts.Next(); obj != nil; obj = parts.Next() {
		add(obj.(*Part).Segment)
	}
	return refs, nil
}

// distinctDirs refuses disks that are one directory under two paths (a
// symlink, a bind mount): each holds shards the state places on the other,
// which the sweeper would take for orphans.
func distinctDirs(disks map[string]*disk.Store) error {
	seen := map[string]fs.FileInfo{}
	for id, store := range disks {
		fi, err := os.Stat(store.Root())
		if err != nil {
			return fmt.Errorf("sweep: disk %s: %w", id, err)
		}
		for other, ofi := range seen {
			if os.SameFile(fi, ofi) {
				return fmt.Errorf("sweep: disks %s and %s are the same directory; not sweeping", id, other)
			}
		}
		seen[id] = fi
	}
	return nil
}

// isShardKey reports whether a file name is one shardKey makes; any other
// file on a disk is not the sweeper's to judge.
func isShardKey(name string) bool {
	id, i, ok := strings.Cut(name, ".")
	if !ok || id == "" {
		return false
	}
	_, err := strconv.Atoi(i)
	return err == nil
}

// UploadExpirer aborts abandoned multipart uploads; it runs on the leader.
type UploadExpirer struct {
	o      *Objects
	expiry time.Duration
	now    func() time.Time
	stats  atomic.Pointer[GCStats]
}

// NewUploadExpirer returns the expirer of uploads initiated more than expiry
// ago, by the clock now.
func NewUploadExpirer(o *Objects, expiry time.Duration, now func() time.Time) *UploadExpirer {
	e := &UploadExpirer{o: o, expiry: expiry, now: now}
	e.stats.Store(&GCStats{})
	return e
}

// Stats returns the last pass's figures.
func (e *UploadExpirer) Stats() GCStats { return *e.stats.Load() }

// Pass aborts every expired upload once, as the node's system principal: the
// abort is audited, and the parts' shards are deleted (those it cannot reach
// are left to the sweepers).
func (e *UploadExpirer) Pass(ctx context.Context) (GCStats, error) {
	st := GCStats{}
	if err := e.o.c.ConsistentRead(ctx); err != nil {
		return st, fmt.Errorf("expire uploads: %w", err)
	}
	txn := e.o.c.Store().ReadTxn()
	it, err := txn.Get(tUploads, "id")
	if err != nil {
		return st, fmt.Errorf("expire uploads: %w", err)
	}
	cutoff := e.now().Add(-e.expiry)
	system := systemPrincipal(e.o.c.Name())
	for obj := it.Next(); obj != nil; obj = it.Next() {
		u := *obj.(*Upload)
		st.Checked++
		if !u.Initiated.Before(cutoff) {
			continue
		}
		project := "" // the bucket may be gone; the upload still has to go
		if b := consensus.First[Bucket](txn, tBuckets, "id", u.Bucket); b != nil && b.UID == u.BucketUID {
			project = b.ProjectID
		}
		err := e.o.abortUpload(ctx, system, project, &u)
		switch {
		case consensus.ErrorCode(err) == consensus.CodeNotFound:
			// completed or aborted meanwhile
		case err != nil:
			e.o.log.Warn("could not abort an expired upload", "upload", u.ID, "bucket", u.Bucket, "key", u.Key, "err", err)
		default:
			st.Removed++
			e.o.log.Info("expired upload aborted", "upload", u.ID, "bucket", u.Bucket, "key", u.Key, "initiated", u.Initiated)
		}
	}
	st.LastPass = time.Now().UTC()
	e.stats.Store(&st)
	return st, nil
}
