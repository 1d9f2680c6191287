package identity

import (
	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
)

// Charge adds delta (negative to release) to a project's usage inside the
// caller's FSM transaction, refusing with quota_exceeded if any limit would be
// passed. Because it runs in the FSM, concurrent requests on different nodes
// are serialized by the Raft log and can never exceed a quota together.
// Releases are never refused; usage does not go below zero.
func Charge(tx *consensus.Tx, projectID string, delta Resources) error {
	return charge(tx, projectID, delta, true)
}

// ChargeOverLimit adds delta to a project's usage without refusing: for
// what a user must be able to do at the limit (a delete that leaves a
// delete marker behind).
func ChargeOverLimit(tx *consensus.Tx, projectID string, delta Resources) error {
	return charge(tx, projectID, delta, false)
}

// WouldFit tells, from a read transaction, whether Charge would accept
// delta now: for a service that must refuse before it changes anything
// outside the replicated state. The command's Charge decides.
func WouldFit(txn *memdb.Txn, projectID string, delta Resources) error {
	q := consensus.First[Quota](txn, tQuotas, "id", projectID)
	if q == nil {
		return notFound("project", projectID)
	}
	return q.fits(projectID, delta)
}

func (q *Quota) fits(projectID string, delta Resources) error {
	next := q.Usage.add(delta)
	for _, f := range q.Limits.fields(next, delta) {
		if f.delta > 0 && f.limit != Unlimited && f.used > f.limit {
			// Keyed: the reader's language names the resource (its first
			// parameter, a quota row's name).
			return consensus.Errorm(consensus.CodeQuotaExceeded, "quota_exceeded",
				"quota exceeded for %s in project %s: limit %d, in use %d, requested %d", f.name, projectID, f.limit, f.used-f.delta, f.delta)
		}
	}
	return nil
}

func charge(tx *consensus.Tx, projectID string, delta Resources, enforce bool) error {
	q := consensus.First[Quota](tx.Txn, tQuotas, "id", projectID)
	if q == nil {
		return notFound("project", projectID)
	}
	if enforce {
		if err := q.fits(projectID, delta); err != nil {
			return err
		}
	}
	next := q.Usage.add(delta)
	row := *q
	row.Usage = next.clampZero()
	row.Version = tx.Index
	return tx.Insert(tQuotas, &row)
}

// Limits returns a project's quota limits, for checks inside another
// domain's FSM transaction.
func Limits(tx *consensus.Tx, projectID string) (Resources, error) {
	q := consensus.First[Quota](tx.Txn, tQuotas, "id", projectID)
	if q == nil {
		return Resources{}, notFound("project", projectID)
	}
	return q.Limits, nil
}

type quotaField struct {
	name               string
	limit, used, delta int64
}

func (r Resources) add(d Resources) Resources {
	return Resources{r.Instances + d.Instances, r.VCPUs + d.VCPUs, r.RAMMiB + d.RAMMiB,
		r.DiskGiB + d.DiskGiB, r.ObjectGiB + d.ObjectGiB, r.FloatingIPs + d.FloatingIPs, r.Objects + d.Objects,
		r.Volumes + d.Volumes, r.VolumeGiB + d.VolumeGiB, r.Snapshots + d.Snapshots, r.Networks + d.Networks, r.Ports + d.Ports, r.Routers + d.Routers}
}

func (r Resources) clampZero() Resources {
	c := func(v int64) int64 { return max(v, 0) }
	return Resources{c(r.Instances), c(r.VCPUs), c(r.RAMMiB), c(r.DiskGiB), c(r.ObjectGiB), c(r.FloatingIPs), c(r.Objects),
		c(r.Volumes), c(r.VolumeGiB), c(r.Snapshots), c(r.Networks), c(r.Ports), c(r.Routers)}
}

// fields pairs each limit with the usage it would have after a change of d.
func (r Resources) fields(next, d Resources) []quotaField {
	return []quotaField{
		{"instances", r.Instances, next.Instances, d.Instances},
		{"vcpus", r.VCPUs, next.VCPUs, d.VCPUs},
		{"ram_mib", r.RAMMiB, next.RAMMiB, d.RAMMiB},
		{"disk_gib", r.DiskGiB, next.DiskGiB, d.DiskGiB},
		{"object_gib", r.ObjectGiB, next.ObjectGiB, d.ObjectGiB},
		{"floating_ips", r.FloatingIPs, next.FloatingIPs, d.FloatingIPs},
		{"objects", r.Objects, next.Objects, d.Objects},
		{"volumes", r.Volumes, next.Volumes, d.Volumes},
		{"volume_gib", r.VolumeGiB, next.VolumeGiB, d.VolumeGiB},
		{"snapshots", r.Snapshots, next.Snapshots, d.Snapshots},
		{"networks", r.Networks, next.Networks, d.Networks},
		{"ports", r.Ports, next.Ports, d.Ports},
		{"routers", r.Routers, next.Routers, d.Routers},
	}
}

// validate rejects negative limits other than Unlimited.
func (r Resources) validate() error {
	for _, f := range r.fields(r, Resources{}) {
		if f.limit < Unlimited {
			return consensus.Errorf(consensus.CodeInvalid, "quota %s must be -1 (unlimited) or at least 0, got %d", f.name, f.limit)
		}
	}
	return nil
}
