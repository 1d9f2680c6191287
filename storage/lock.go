package storage

import (
	"slices"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// Object lock (S3's WORM retention), for backups ransomware cannot delete.
//
// A version under retention or legal hold cannot be deleted or replaced by
// anyone: the state machine refuses every command that would remove it,
// whoever sent it and through whichever node, so the lock holds across
// nodes, leader changes and restarts. GOVERNANCE retention gives way to a
// request that asks to bypass it from someone allowed to (a project admin);
// COMPLIANCE retention gives way to no one, not even a cluster admin, until
// its date passes, and can be extended but never shortened. Dates are judged
// by the earlier of the time the serving node stamps on the command and the
// nodes' clocks as most of them last reported (lockClock): one node whose
// clock runs ahead, or was set ahead, cannot end a lock early.

// Retention modes.
const (
	LockGovernance = "GOVERNANCE"
	LockCompliance = "COMPLIANCE"
)

// ObjectLockConfig is a bucket's object lock: enabled at creation (or on a
// versioned bucket, once, for good), with an optional default retention new
// versions get.
type ObjectLockConfig struct {
	Mode  string `json:"mode,omitempty"` // default retention mode, "" for none
	Days  int    `json:"days,omitempty"`
	Years int    `json:"years,omitempty"`
}

// Retention keeps one version until a date.
type Retention struct {
	Mode  string    `json:"mode"`
	Until time.Time `json:"until"`
}

// locked reports why a version cannot be removed at t, or "".
func locked(o *Object, t time.Time, bypass bool) string {
	if o.LegalHold {
		return "it is under legal hold"
	}
	if r := o.Retention; r != nil && t.Before(r.Until) {
		if r.Mode == LockCompliance || !bypass {
			return "it is retained in " + r.Mode + " mode until " + r.Until.UTC().Format(time.RFC3339)
		}
	}
	return ""
}

// lockClock is the time locks are judged by for a command stamped t: no
// later than the median of the nodes' last reports (their disk reports,
// every 30 s at the latest), so it takes most clocks to pass a date.
func lockClock(tx *consensus.Tx, t time.Time) time.Time {
	latest := map[string]time.Time{}
	for _, d := range listDisks(tx.Txn, "") {
		if d.ReportedAt.After(latest[d.Node]) {
			latest[d.Node] = d.ReportedAt
		}
	}
	if len(latest) == 0 {
		return t
	}
	times := make([]time.Time, 0, len(latest))
	for _, r := range latest {
		times = append(times, r)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	median := times[(len(times)-1)/2] // the lower median: most clocks at or past it
	if median.Before(t) {
		return median
	}
	return t
}

// checkUnlocked refuses the removal of a locked version.
func checkUnlocked(tx *consensus.Tx, o *Object, t time.Time, bypass bool) error {
	if why := locked(o, lockClock(tx, t), bypass); why != "" {
		return consensus.Errorf(consensus.CodeForbidden, "version %s of %q is locked: %s", o.VersionIDOrNull(), o.Key, why)
	}
	return nil
}

// applyDefaultRetention gives a new version the bucket's default retention,
// unless its writer set one.
func applyDefaultRetention(b *Bucket, o *Object) {
	if b.Lock == nil || b.Lock.Mode == "" || o.Retention != nil || o.Delete {
		return
	}
	o.Retention = &Retention{Mode: b.Lock.Mode, Until: o.Modified.AddDate(b.Lock.Years, 0, b.Lock.Days)}
}

// checkRetentionChange allows a retention change on a version at t: more
// protection always, less only in GOVERNANCE mode with a bypass.
func checkRetentionChange(tx *consensus.Tx, o *Object, next *Retention, t time.Time, bypass bool) error {
	t = lockClock(tx, t)
	cur := o.Retention
	if cur == nil || !t.Before(cur.Until) {
		return nil // nothing in force
	}
	weaker := next == nil || next.Until.Before(cur.Until) || (cur.Mode == LockCompliance && next.Mode != LockCompliance)
	if !weaker {
		return nil
	}
	if cur.Mode == LockGovernance && bypass {
		return nil
	}
	return consensus.Errorf(consensus.CodeForbidden, "version %s of %q is retained in %s mode until %s; its retention can be extended, not shortened",
		o.VersionIDOrNull(), o.Key, cur.Mode, cur.Until.UTC().Format(time.RFC3339))
}
