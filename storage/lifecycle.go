package storage

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Lifecycle carries out buckets' lifecycle rules; it runs on the leader.
// Each expiry goes through the same audited commands as a client's delete
// (as system:NODE), so object locks hold against it as against anyone.
type Lifecycle struct {
	o     *Objects
	now   func() time.Time
	stats atomic.Pointer[GCStats]
}

// NewLifecycle returns the lifecycle runner, judging ages by the clock now.
func NewLifecycle(o *Objects, now func() time.Time) *Lifecycle {
	l := &Lifecycle{o: o, now: now}
	l.stats.Store(&GCStats{})
	return l
}

// Stats returns the last pass's figures: versions and uploads examined and
// removed.
func (l *Lifecycle) Stats() GCStats { return *l.stats.Load() }

// expiry is one thing a pass decided to remove.
type expiry struct {
	bucket, key, versionID, why string
	version                     uint64 // the Raft index that wrote the version judged
	upload                      *Upload
}

// Pass applies every enabled rule of every bucket once.
func (l *Lifecycle) Pass(ctx context.Context) (GCStats, error) {
	st := GCStats{}
	if err := l.o.c.ConsistentRead(ctx); err != nil {
		return st, fmt.Errorf("lifecycle: %w", err)
	}
	txn := l.o.c.Store().ReadTxn()
	now := l.now()
	var todo []expiry
	it, err := txn.Get(tBuckets, "id")
	if err != nil {
		return st, err
	}
	for row := it.Next(); row != nil; row = it.Next() {
		b := row.(*Bucket)
		for _, r := range b.Lifecycle {
			if r.Enabled {
				todo = append(todo, l.due(txn, b, r, now, &st)...)
			}
		}
	}
	system := systemPrincipal(l.o.c.Name())
	for _, e := range todo {
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		var err error
		if e.upload != nil {
			project := ""
			if b := consensus.First[Bucket](txn, tBuckets, "id", e.upload.Bucket); b != nil {
				project = b.ProjectID
			}
			err = l.o.abortUpload(ctx, system, project, e.upload)
		} else {
			// Only the version judged: a write since is not this rule's.
			_, err = l.o.DeleteObject(ctx, system, e.bucket, e.key, DeleteOptions{VersionID: e.versionID, IfVersion: e.version})
		}
		switch {
		case consensus.ErrorCode(err) == consensus.CodeNotFound, consensus.ErrorCode(err) == consensus.CodePreconditionFailed:
			// gone or written again meanwhile
		case err != nil:
			l.o.log.Warn("lifecycle rule not applied", "bucket", e.bucket, "key", e.key, "version", e.versionID, "why", e.why, "err", err)
		default:
			st.Removed++
			l.o.log.Info("lifecycle rule applied", "bucket", e.bucket, "key", e.key, "version", e.versionID, "why", e.why)
		}
	}
	st.LastPass = time.Now().UTC()
	l.stats.Store(&st)
	return st, nil
}

// due lists what rule r of bucket b removes at now.
func (l *Lifecycle) due(txn *memdb.Txn, b *Bucket, r LifecycleRule, now time.Time, st *GCStats) []expiry {
	var out []expiry
	days := func(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }
	it, err := txn.LowerBound(tObjects, "id", objectID(b.ID, r.Prefix))
	if err != nil {
		panic(err)
	}
	for row := it.Next(); row != nil; row = it.Next() {
		cur := row.(*Object)
		if cur.Bucket != b.ID || !strings.HasPrefix(cur.Key, r.Prefix) {
			break
		}
		st.Checked++
		older := versionsOf(txn, cur.ID)
		switch {
		case cur.Delete:
			if r.ExpiredDeleteMarker && len(older) == 0 {
				out = append(out, expiry{bucket: b.ID, key: cur.Key, versionID: cur.VersionIDOrNull(), version: cur.Version, why: "expired delete marker"})
			}
		case r.ExpirationDays > 0 && tagsMatch(cur.Tags, r.Tags) && !now.Before(cur.Modified.Add(days(r.ExpirationDays))):
			// An unversioned bucket deletes; a versioned one puts a
			// delete marker on top, as S3 does.
			out = append(out, expiry{bucket: b.ID, key: cur.Key, version: cur.Version, why: fmt.Sprintf("older than %d days", r.ExpirationDays)})
		}
		if r.NoncurrentDays == 0 {
			continue
		}
		kept := 0
		for _, v := range older {
			st.Checked++
			if !tagsMatch(v.Tags, r.Tags) && !v.Delete {
				continue
			}
			if kept < r.NewerNoncurrentVersions {
				kept++
				continue
			}
			if !now.Before(v.Noncurrent.Add(days(r.NoncurrentDays))) {
				out = append(out, expiry{bucket: b.ID, key: v.Key, versionID: v.VersionIDOrNull(), version: v.Version, why: fmt.Sprintf("older version for more than %d days", r.NoncurrentDays)})
			}
		}
	}
	if r.AbortIncompleteUploadDays > 0 {
		for _, u := range bucketUploads(txn, b.ID) {
			st.Checked++
			if u.BucketUID == b.UID && strings.HasPrefix(u.Key, r.Prefix) && !now.Before(u.Initiated.Add(days(r.AbortIncompleteUploadDays))) {
				u := u
				out = append(out, expiry{bucket: b.ID, key: u.Key, upload: &u, why: fmt.Sprintf("upload incomplete for %d days", r.AbortIncompleteUploadDays)})
			}
		}
	}
	return out
}

// tagsMatch reports whether an object carries every tag a rule filters on.
func tagsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
