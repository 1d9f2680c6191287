package volume

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage"
)

// recordingProv makes no replicas: it records what the repair asked for
// (the replicas themselves are exercised in qa/cluster).
type recordingProv struct {
	mu      sync.Mutex
	created []string
	removed []string
}

func (p *recordingProv) Create(_ context.Context, node, disk, id string, _ int64, _ bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.created = append(p.created, node+"/"+disk+"/"+id)
	return nil
}

func (p *recordingProv) Remove(_ context.Context, node, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removed = append(p.removed, node+"/"+id)
	return nil
}

func (p *recordingProv) Resize(context.Context, string, string, uint64, int64) error { return nil }

// A replica on a disk being drained is replaced step by step: a new one is
// added elsewhere (another disk of the same node here: the node is fine),
// the detached volume is opened for its writer to catch the newcomer up,
// the old replica goes only once the newcomer is in sync, and the repair's
// attachment ends. Redundancy never drops on the way.
func TestRepairReplacesADrainedReplica(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 10, VolumeGiB: 100})
	ctx := context.Background()
	d1 := e.addDisk("node1", "/d1", storage.DiskActive, storage.HealthOK, 100*GiB)
	d2 := e.addDisk("node2", "/d2", storage.DiskActive, storage.HealthOK, 100*GiB)
	d2b := e.addDisk("node2", "/d2b", storage.DiskActive, storage.HealthOK, 50*GiB)
	d3 := e.addDisk("node3", "/d3", storage.DiskActive, storage.HealthOK, 100*GiB)
	v := Volume{ID: "vol-x", Name: "x", ProjectID: e.ward, SizeBytes: GiB, CreatedAt: time.Now().UTC(), Replicas: []Replica{
		{ID: "vol-x-r0", Node: "node1", Disk: d1}, {ID: "vol-x-r1", Node: "node2", Disk: d2}, {ID: "vol-x-r2", Node: "node3", Disk: d3}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
	e.must(err)
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: v.ID, State: StateAvailable})
	e.must(err)
	prov := &recordingProv{}
	r := NewRepair(e.node, prov, nil)
	get := func() *Volume { return getVolume(e.node.Store().ReadTxn(), v.ID) }

	e.must(r.Pass(ctx))
	if len(prov.created) != 0 || len(get().Replicas) != 3 {
		t.Fatalf("a healthy volume was repaired: %v %+v", prov.created, get().Replicas)
	}
	_, err = e.node.Apply(ctx, storage.MsgSetDiskState, map[string]any{"id": d2, "state": storage.DiskDraining}, nil)
	e.must(err)

	e.must(r.Pass(ctx))
	want := "node2/" + d2b + "/vol-x-r3-"
	if len(prov.created) != 1 || !strings.HasPrefix(prov.created[0], want) {
		t.Fatalf("replacement made: %v, want %s...", prov.created, want)
	}
	newID := get().Replicas[3].ID
	if got := get(); len(got.Replicas) != 4 || got.Replicas[3].State != ReplicaStale || got.Replicas[3].Disk != d2b {
		t.Fatalf("after the add: %+v", got.Replicas)
	}
	e.must(r.Pass(ctx)) // nobody writes it: the repair opens it
	got := get()
	if a := got.Attachment; a == nil || !a.Repair || a.Node != e.node.Name() || got.State != StateInUse {
		t.Fatalf("a detached volume is opened for the catch-up: %+v", got)
	}
	e.must(r.Pass(ctx)) // waits for the writer: nothing more is made, nothing goes
	if len(prov.created) != 1 || len(get().Replicas) != 4 {
		t.Fatalf("while catching up: made %v, replicas %+v", prov.created, get().Replicas)
	}
	// The writer (the repair's) catches the newcomer up.
	w, err := e.apply(MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: e.node.Name()})
	e.must(err)
	_, err = e.apply(MsgSetReplicaState, &SetReplicaState{Volume: v.ID, Node: e.node.Name(), Epoch: w.Epoch, Replica: newID, State: ReplicaInSync})
	e.must(err)

	e.must(r.Pass(ctx))
	got = get()
	ids := []string{}
	for _, rep := range got.Replicas {
		ids = append(ids, rep.ID)
	}
	// The old replica leaves the record; its files wait for its node's
	// sweeper (the writer may still send it a write until it reopens).
	if !slices.Equal(ids, []string{"vol-x-r0", "vol-x-r2", newID}) || len(prov.removed) != 0 {
		t.Fatalf("after the catch-up: replicas %v, removed %v", ids, prov.removed)
	}
	// A writer that had not reopened yet marks the removed replica stale:
	// nothing is owed to it, and the write is not failed for it.
	if _, err := e.apply(MsgSetReplicaState, &SetReplicaState{Volume: v.ID, Node: e.node.Name(), Epoch: w.Epoch, Replica: "vol-x-r1", State: ReplicaStale}); err != nil {
		t.Fatalf("a removed replica marked stale: %v", err)
	}
	e.must(r.Pass(ctx))
	if got = get(); got.Attachment != nil || got.State != StateAvailable || got.Degraded {
		t.Fatalf("the repair's attachment outlived it: %+v", got)
	}
}

// A box silent past LostAfter has its replicas rebuilt on another box; a
// user's attach takes over the repair's; a replica is never removed while
// it would leave too few in sync.
func TestRepairRebuildsALostBoxElsewhere(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 10, VolumeGiB: 100})
	ctx := context.Background()
	var disks []string
	for i := 1; i <= 4; i++ {
		disks = append(disks, e.addDisk(fmt.Sprintf("node%d", i), "/d", storage.DiskActive, storage.HealthOK, uint64(100-i)*GiB))
	}
	v := Volume{ID: "vol-y", Name: "y", ProjectID: e.ward, SizeBytes: GiB, CreatedAt: time.Now().UTC(), Replicas: []Replica{
		{ID: "vol-y-r0", Node: "node1", Disk: disks[0]}, {ID: "vol-y-r1", Node: "node2", Disk: disks[1]}, {ID: "vol-y-r2", Node: "node3", Disk: disks[2]}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
	e.must(err)
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: v.ID, State: StateAvailable})
	e.must(err)
	prov := &recordingProv{}
	r := NewRepair(e.node, prov, nil)
	get := func() *Volume { return getVolume(e.node.Store().ReadTxn(), v.ID) }

	// Every disk reported just now: nothing is lost yet. Later, node3 alone
	// falls silent (the others keep reporting).
	e.must(r.Pass(ctx))
	if len(prov.created) != 0 {
		t.Fatalf("replaced before anything was lost: %v", prov.created)
	}
	r.Now = func() time.Time { return time.Now().Add(DefaultLostAfter + time.Minute) }
	for _, n := range []int{1, 2, 4} {
		_, err := e.node.Apply(ctx, storage.MsgReportDisks, map[string]any{"node": fmt.Sprintf("node%d", n), "at": r.Now().UTC(),
			"reports": []map[string]any{{"id": disks[n-1], "health": storage.HealthOK, "total": 200 * GiB, "free": 100 * GiB}}}, nil)
		e.must(err)
	}
	e.must(r.Pass(ctx))
	if len(prov.created) != 1 || !strings.HasPrefix(prov.created[0], "node4/"+disks[3]+"/vol-y-r3-") {
		t.Fatalf("rebuilt on %v, want node4", prov.created)
	}
	newID := get().Replicas[3].ID
	e.must(r.Pass(ctx)) // opened for the catch-up
	if a := get().Attachment; a == nil || !a.Repair {
		t.Fatalf("not opened for the catch-up: %+v", get())
	}
	// Its owner attaches it meanwhile: the attach takes over.
	if _, err := e.apply(MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: Attachment{Node: "node2", At: time.Now().UTC()}}); err != nil {
		t.Fatalf("an attach over the repair's: %v", err)
	}
	if a := get().Attachment; a == nil || a.Repair || a.Node != "node2" || get().Writer != "" {
		t.Fatalf("the owner's attach did not take over: %+v", get())
	}
	w, err := e.apply(MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: "node2"})
	e.must(err)
	// Nothing goes while the newcomer is behind: not by the repair, and not
	// below the floor of two in sync (r0, r1 in sync; r2 lost; r3 behind).
	e.must(r.Pass(ctx))
	if len(get().Replicas) != 4 || len(prov.removed) != 0 {
		t.Fatalf("removed before the newcomer caught up: %+v %v", get().Replicas, prov.removed)
	}
	_, err = e.apply(MsgSetReplicaState, &SetReplicaState{Volume: v.ID, Node: "node2", Epoch: w.Epoch, Replica: "vol-y-r2", State: ReplicaStale})
	e.must(err)
	_, err = e.apply(MsgRemoveReplica, removeReplicaCmd{Volume: v.ID, Replica: "vol-y-r0"})
	wantCode(t, "remove a replica below the floor", err, "conflict")
	_, err = e.apply(MsgSetReplicaState, &SetReplicaState{Volume: v.ID, Node: "node2", Epoch: w.Epoch, Replica: newID, State: ReplicaInSync})
	e.must(err)
	e.must(r.Pass(ctx))
	if got := get(); len(got.Replicas) != 3 || got.Degraded || replicaOf(got, "vol-y-r2") || got.Attachment == nil || got.Attachment.Node != "node2" {
		t.Fatalf("after the rebuild: %+v, removed %v", got, prov.removed)
	}
}

func replicaOf(v *Volume, id string) bool {
	return slices.ContainsFunc(v.Replicas, func(r Replica) bool { return r.ID == id })
}

// A one-copy volume (a one-node cluster) moves between the node's disks,
// and two copies lost one after the other are both rebuilt before either
// goes: the repair works towards the volume's number of copies.
func TestRepairKeepsTheNumberOfCopies(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 10, VolumeGiB: 100})
	ctx := context.Background()
	a := e.addDisk("node1", "/a", storage.DiskActive, storage.HealthOK, 100*GiB)
	b := e.addDisk("node1", "/b", storage.DiskActive, storage.HealthOK, 50*GiB)
	v := Volume{ID: "vol-1", Name: "one", ProjectID: e.ward, SizeBytes: GiB, CreatedAt: time.Now().UTC(), Replicas: []Replica{{ID: "vol-1-r0", Node: "node1", Disk: a}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
	e.must(err)
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: v.ID, State: StateAvailable})
	e.must(err)
	r := NewRepair(e.node, &recordingProv{}, nil)
	get := func() *Volume { return getVolume(e.node.Store().ReadTxn(), v.ID) }
	if got := get(); got.Copies != 1 || got.Degraded {
		t.Fatalf("a one-copy volume: %+v", got)
	}
	_, err = e.node.Apply(ctx, storage.MsgSetDiskState, map[string]any{"id": a, "state": storage.DiskDraining}, nil)
	e.must(err)
	for range 3 {
		e.must(r.Pass(ctx))
	}
	got := get()
	if len(got.Replicas) != 2 || got.Replicas[1].Disk != b || got.Attachment == nil || !got.Attachment.Repair {
		t.Fatalf("one copy moving to the other disk: %+v", got)
	}
	w, err := e.apply(MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: e.node.Name()})
	e.must(err)
	_, err = e.apply(MsgSetReplicaState, &SetReplicaState{Volume: v.ID, Node: e.node.Name(), Epoch: w.Epoch, Replica: got.Replicas[1].ID, State: ReplicaInSync})
	e.must(err)
	for range 2 {
		e.must(r.Pass(ctx))
	}
	if got = get(); len(got.Replicas) != 1 || got.Replicas[0].Disk != b || got.Attachment != nil || got.Degraded {
		t.Fatalf("after the move: %+v", got)
	}
}

// A detached volume (or snapshot) with a replica behind whose disk and
// node are fine is opened for its writer to catch that replica up, and
// let go once it has.
func TestRepairCatchesUpADetachedVolume(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 10, VolumeGiB: 100})
	ctx := context.Background()
	d1 := e.addDisk("node1", "/d1", storage.DiskActive, storage.HealthOK, 100*GiB)
	d2 := e.addDisk("node2", "/d2", storage.DiskActive, storage.HealthOK, 100*GiB)
	d3 := e.addDisk("node3", "/d3", storage.DiskActive, storage.HealthOK, 100*GiB)
	v := Volume{ID: "vol-x", Name: "x", ProjectID: e.ward, SizeBytes: GiB, CreatedAt: time.Now().UTC(), Replicas: []Replica{
		{ID: "vol-x-r0", Node: "node1", Disk: d1}, {ID: "vol-x-r1", Node: "node2", Disk: d2}, {ID: "vol-x-r2", Node: "node3", Disk: d3}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
	e.must(err)
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: v.ID, State: StateAvailable})
	e.must(err)
	// A writer marked r1 stale, then the volume was detached.
	_, err = e.apply(MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: Attachment{Node: e.node.Name()}})
	e.must(err)
	w, err := e.apply(MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: e.node.Name()})
	e.must(err)
	_, err = e.apply(MsgSetReplicaState, &SetReplicaState{Volume: v.ID, Node: e.node.Name(), Epoch: w.Epoch, Replica: "vol-x-r1", State: ReplicaStale})
	e.must(err)
	_, err = e.apply(MsgDetachVolume, detachVolumeCmd{ID: v.ID})
	e.must(err)

	r := NewRepair(e.node, &recordingProv{}, nil)
	get := func() *Volume { return getVolume(e.node.Store().ReadTxn(), v.ID) }
	e.must(r.Pass(ctx))
	if a := get().Attachment; a == nil || !a.Repair {
		t.Fatalf("a detached volume with a replica behind is not opened for its catch-up: %+v", get())
	}
	w, err = e.apply(MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: e.node.Name()})
	e.must(err)
	_, err = e.apply(MsgSetReplicaState, &SetReplicaState{Volume: v.ID, Node: e.node.Name(), Epoch: w.Epoch, Replica: "vol-x-r1", State: ReplicaInSync})
	e.must(err)
	e.must(r.Pass(ctx))
	if got := get(); got.Attachment != nil || got.Degraded {
		t.Fatalf("after the catch-up: %+v", got)
	}
}
