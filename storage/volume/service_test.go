package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// recorder is a Provisioner that only records calls and fails the ones it
// is told to: it tests the service's undo logic, not the data path.
type recorder struct {
	mu      sync.Mutex
	calls   []string
	failOn  string // "create NODE" fails
	created map[string]bool
}

func (r *recorder) Create(_ context.Context, node, disk, replica string, size int64, _ bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("create %s %s %s %d", node, disk, replica, size))
	if r.failOn == "create "+node {
		return errors.New("disk full")
	}
	if r.created == nil {
		r.created = map[string]bool{}
	}
	r.created[replica] = true
	return nil
}

func (r *recorder) Remove(_ context.Context, node, replica string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("remove %s %s", node, replica))
	delete(r.created, replica)
	return nil
}

func (r *recorder) Resize(_ context.Context, node, replica string, epoch uint64, size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("resize %s %s %d %d", node, replica, epoch, size))
	return nil
}

func (r *recorder) live() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k := range r.created {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Replicas go one per node, to each node's active, healthy disk with the
// most free bytes, on the nodes with the most free space, three at most.
func TestPlacement(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	if _, err := place(e.node.Store().ReadTxn(), "vol-x"); consensus.ErrorCode(err) != consensus.CodeUnavailable {
		t.Fatalf("no disks: %v", err)
	}
	// node1's best disk is the one listed last, so taking the first
	// fails the test.
	lo, hi := "/d1", "/d2"
	if storage.DiskID("node1", lo) > storage.DiskID("node1", hi) {
		lo, hi = hi, lo
	}
	e.addDisk("node1", lo, storage.DiskActive, storage.HealthOK, 100)
	best1 := e.addDisk("node1", hi, storage.DiskActive, storage.HealthOK, 300)
	e.addDisk("node1", "/d3", storage.DiskDraining, storage.HealthOK, 900) // draining: not used
	best2 := e.addDisk("node2", "/d1", storage.DiskActive, storage.HealthOK, 1000)
	e.addDisk("node3", "/d1", storage.DiskActive, storage.HealthFailed, 5000) // failed: not used
	best3 := e.addDisk("node3", "/d2", storage.DiskActive, storage.HealthOK, 200)
	e.addDisk("node4", "/d1", storage.DiskActive, storage.HealthOK, 50) // least free: left out
	reps, err := place(e.node.Store().ReadTxn(), "vol-x")
	e.must(err)
	got := fmt.Sprint(reps)
	want := fmt.Sprint([]Replica{{"vol-x-r0", "node2", best2, ReplicaInSync}, {"vol-x-r1", "node1", best1, ReplicaInSync}, {"vol-x-r2", "node3", best3, ReplicaInSync}})
	if got != want {
		t.Fatalf("placed %s, want %s", got, want)
	}
}

// A volume whose replicas are all made is available, its replicas where
// it says; deleting it removes them.
func TestServiceCreateAndDelete(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	for _, n := range []string{"node1", "node2"} {
		e.addDisk(n, "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	}
	prov := &recorder{}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: prov, Logger: slog.Default()})
	ctx := context.Background()
	v, err := svc.Create(ctx, e.nurse, Create{Name: "data", SizeGiB: 2})
	e.must(err)
	if v.State != StateAvailable || len(v.Replicas) != 2 || v.SizeBytes != 2*GiB || v.ProjectID != e.ward {
		t.Fatalf("created: %+v", v)
	}
	if got := prov.live(); fmt.Sprint(got) != fmt.Sprint([]string{v.Replicas[0].ID, v.Replicas[1].ID}) {
		t.Fatalf("replicas made: %v", got)
	}
	_, err = svc.Create(ctx, e.visitor, Create{Name: "mine", SizeGiB: 1})
	wantCode(t, "a reader's create", err, consensus.CodeForbidden)
	_, err = svc.Create(ctx, e.nurse, Create{Name: "data", SizeGiB: 1})
	wantCode(t, "a second volume of that name", err, consensus.CodeAlreadyExists)
	for _, bad := range []Create{{Name: "x", SizeGiB: 0}, {Name: "x", SizeGiB: MaxSizeGiB + 1}, {Name: "-x", SizeGiB: 1}, {Name: "a/b", SizeGiB: 1}} {
		_, err = svc.Create(ctx, e.nurse, bad)
		wantCode(t, fmt.Sprintf("create %+v", bad), err, consensus.CodeInvalid)
	}

	v, err = svc.Extend(ctx, e.nurse, "data", 3, 0)
	e.must(err)
	if v.SizeBytes != 3*GiB || e.usage("ward").VolumeGiB != 3 {
		t.Fatalf("extended: %+v, usage %+v", v, e.usage("ward"))
	}
	_, err = svc.Extend(ctx, e.nurse, "data", 3, 0)
	wantCode(t, "extend to the same size", err, consensus.CodeInvalid)

	_, err = svc.Delete(ctx, e.nurse, "data", 0)
	e.must(err)
	if got := prov.live(); len(got) != 0 {
		t.Fatalf("replicas left after delete: %v", got)
	}
	if u := e.usage("ward"); u.Volumes != 0 || u.VolumeGiB != 0 {
		t.Fatalf("usage after delete: %+v", u)
	}
}

// A replica that cannot be made undoes the creation: the replicas made
// are removed, the record is gone and the quota refunded.
func TestServiceCreateUndoesOnReplicaFailure(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.addDisk("node1", "/d", storage.DiskActive, storage.HealthOK, 3<<40)
	e.addDisk("node2", "/d", storage.DiskActive, storage.HealthOK, 2<<40)
	e.addDisk("node3", "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	prov := &recorder{failOn: "create node2"}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: prov, Logger: slog.Default()})
	_, err := svc.Create(context.Background(), e.nurse, Create{Name: "data", SizeGiB: 1})
	if err == nil {
		t.Fatal("created with a replica that failed")
	}
	if got := prov.live(); len(got) != 0 {
		t.Fatalf("replicas left: %v", got)
	}
	// node3's replica was never asked for; the failed one is removed too.
	var removes, creates int
	for _, c := range prov.calls {
		switch c[:6] {
		case "remove":
			removes++
		case "create":
			creates++
		}
	}
	if creates != 2 || removes != 2 {
		t.Fatalf("calls: %q", prov.calls)
	}
	if vs, _ := svc.List(e.admin, ""); len(vs) != 0 {
		t.Fatalf("records left: %+v", vs)
	}
	if u := e.usage("ward"); u.Volumes != 0 || u.VolumeGiB != 0 {
		t.Fatalf("usage left: %+v", u)
	}
}

// Without a provisioner the service says volumes are not available here,
// and creates nothing.
func TestServiceWithoutProvisioner(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.addDisk("node1", "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	svc := NewService(Deps{Cluster: e.node, Identity: e.id})
	_, err := svc.Create(context.Background(), e.nurse, Create{Name: "data", SizeGiB: 1})
	wantCode(t, "create", err, consensus.CodeUnavailable)
	if vs, _ := svc.List(e.admin, ""); len(vs) != 0 {
		t.Fatalf("records: %+v", vs)
	}
}

// Old quota limits without the volume fields do not limit volumes; a
// quota row's usage of them is zero.
func TestOldQuotaJSONIsUnlimited(t *testing.T) {
	var r identity.Resources
	e := r.UnmarshalJSON([]byte(`{"instances":3,"objects":5}`))
	if e != nil || r.Volumes != identity.Unlimited || r.VolumeGiB != identity.Unlimited || r.Snapshots != identity.Unlimited || r.Objects != 5 || r.Instances != 3 {
		t.Fatalf("%+v %v", r, e)
	}
	var q identity.Quota
	if err := q.UnmarshalJSON([]byte(`{"project_id":"p","limits":{"volumes":2},"usage":{"instances":1}}`)); err != nil {
		t.Fatal(err)
	}
	if q.Usage.Volumes != 0 || q.Usage.VolumeGiB != 0 || q.Limits.Volumes != 2 || q.Limits.VolumeGiB != identity.Unlimited {
		t.Fatalf("%+v", q)
	}
}

// A volume left being created by a service that died is its owner's to
// delete once it is clearly abandoned, not before.
func TestDeleteAbandonedCreation(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	prov := &recorder{}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: prov, Logger: slog.Default()})
	ctx := context.Background()
	for _, v := range []Volume{
		{ID: "vol-new", Name: "new", CreatedAt: time.Now().UTC()},
		{ID: "vol-old", Name: "old", CreatedAt: time.Now().UTC().Add(-abandonedAfter - time.Minute)},
	} {
		v.ProjectID, v.SizeBytes, v.Replicas = e.ward, GiB, []Replica{{ID: v.ID + "-r0", Node: "node1", Disk: "d"}}
		_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
		e.must(err)
	}
	_, err := svc.Delete(ctx, e.nurse, "new", 0)
	wantCode(t, "delete while being created", err, consensus.CodeConflict)
	_, err = svc.Delete(ctx, e.nurse, "old", 0)
	e.must(err)
	if fmt.Sprint(prov.calls) != "[remove node1 vol-old-r0]" {
		t.Fatalf("calls: %q", prov.calls)
	}
	if u := e.usage("ward"); u.Volumes != 1 || u.VolumeGiB != 1 {
		t.Fatalf("usage: %+v", u)
	}
}

// lossy is the node with one command's answer lost on the way back (or
// the command dropped before the log): what a leader change mid-request
// looks like to the service.
type lossy struct {
	*consensus.Node
	mu   sync.Mutex
	lose consensus.MessageType
	drop bool // not committed at all
}

func (l *lossy) Apply(ctx context.Context, t consensus.MessageType, cmd, out any) (uint64, error) {
	l.mu.Lock()
	hit := t == l.lose
	if hit {
		l.lose = 0
	}
	l.mu.Unlock()
	if hit && l.drop {
		return 0, errors.New("connection reset before the leader took it")
	}
	idx, err := l.Node.Apply(ctx, t, cmd, out)
	if hit && err == nil {
		return 0, errors.New("connection reset after the leader took it")
	}
	return idx, err
}

// An Apply whose outcome is unknown is settled by a linearizable read:
// a committed creation goes on, one never committed makes nothing.
func TestServiceSettlesUnknownOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lose  consensus.MessageType
		drop  bool
		made  bool
		calls int
	}{
		{"create committed, answer lost", identity.MsgAudited, false, true, 2},
		{"create never committed", identity.MsgAudited, true, false, 0},
		{"available committed, answer lost", MsgSetVolumeState, false, true, 2},
		{"available never committed", MsgSetVolumeState, true, false, 4}, // made, then undone
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newVolEnv(t, identity.DefaultQuota)
			e.addDisk("node1", "/d", storage.DiskActive, storage.HealthOK, 1<<40)
			e.addDisk("node2", "/d", storage.DiskActive, storage.HealthOK, 1<<40)
			l := &lossy{Node: e.node, lose: tc.lose, drop: tc.drop}
			prov := &recorder{}
			svc := NewService(Deps{Cluster: l, Identity: identity.NewService(l, identity.DefaultConfig()), Provisioner: prov, Logger: slog.Default()})
			v, err := svc.Create(context.Background(), e.nurse, Create{Name: "data", SizeGiB: 1})
			if tc.made != (err == nil) {
				t.Fatalf("create: %+v, %v", v, err)
			}
			if tc.made && v.State != StateAvailable {
				t.Fatalf("created: %+v", v)
			}
			vs, _ := svc.List(e.admin, "")
			if len(prov.calls) != tc.calls || len(vs) != len(prov.live())/2 || (tc.made && len(vs) != 1) {
				t.Fatalf("calls %q, records %+v", prov.calls, vs)
			}
			if u := e.usage("ward"); u.Volumes != int64(len(vs)) {
				t.Fatalf("usage %+v with %d volumes", u, len(vs))
			}
		})
	}
}
