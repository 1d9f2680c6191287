package volume

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// Snapshots at their edges: a volume extended around a snapshot, a take
// whose commit outcome is unknown, a repair racing a snapshot, hidden
// snapshots' names, refused clones, a detach with a snapshot pending.

// edgeRig: one consensus node, a Host with two disks, a NodeServer for
// snapshot reads, and volumes with one local replica.
type edgeRig struct {
	e    *volEnv
	host *Host
	ns   *NodeServer
	self string
}

func newEdgeRig(t *testing.T) *edgeRig {
	e := newVolEnv(t, identity.DefaultQuota)
	dir, dir2 := t.TempDir(), t.TempDir()
	host := NewHost(func() map[string]string { return map[string]string{"d1": dir, "d2": dir2} }, slog.Default())
	ns := NewNodeServer(e.node, host, NodeConfig{SocketDir: t.TempDir()})
	return &edgeRig{e: e, host: host, ns: ns, self: e.node.Name()}
}

func (r *edgeRig) volume(id string, size int64) *Volume {
	e := r.e
	v := Volume{ID: id, Name: id, ProjectID: e.ward, SizeBytes: size, CreatedAt: time.Now().UTC(),
		Replicas: []Replica{{ID: id + "-r0", Node: r.self, Disk: "d1"}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
	e.must(err)
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: id, State: StateAvailable})
	e.must(err)
	e.must(r.host.Create("d1", id+"-r0", size, false))
	return getVolume(e.node.Store().ReadTxn(), id)
}

// attachAndOpen attaches v to this node's host and opens its writer, as
// the NodeServer would.
func (r *edgeRig) attachAndOpen(t *testing.T, v *Volume) (*Writer, *Volume) {
	e := r.e
	_, err := e.apply(MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: Attachment{Node: r.self}})
	e.must(err)
	return r.open(t, v)
}

func (r *edgeRig) open(t *testing.T, v *Volume) (*Writer, *Volume) {
	e := r.e
	got, err := e.apply(MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: r.self})
	e.must(err)
	var ms []Member
	for _, rep := range got.Replicas {
		ms = append(ms, Member{ID: rep.ID, Node: rep.Node, State: rep.State, Local: true})
	}
	var base Base
	if got.Parent != "" {
		base = newChain(r.ns).layer(got.Parent)
	}
	w, err := OpenWriter(context.Background(), WriterConfig{VolumeID: v.ID, Epoch: got.Epoch, Size: got.SizeBytes, Members: ms,
		MinInSync: 1, Control: control{e.node}, Base: base, RetryInterval: 20 * time.Millisecond,
		Dial: func(ctx context.Context, m Member) (Target, error) { return r.host.Local(m.ID) }})
	e.must(err)
	t.Cleanup(func() { w.Close(context.Background()) })
	return w, got
}

func (r *edgeRig) snapshot(t *testing.T, w *Writer, v *Volume, snapID string) error {
	t.Helper()
	s := &served{w: w, epoch: v.Epoch, replicas: replicaSet(v), chain: newChain(r.ns), snapping: true}
	return r.ns.snapshot(context.Background(), s, v)
}

const snapA = "snap-00000001aaaa"

func (r *edgeRig) askSnapshot(v *Volume, top ...Replica) error {
	_, err := r.e.apply(MsgCreateSnapshot, createSnapshotCmd{Snapshot: Volume{ID: snapA, Name: "s", ProjectID: r.e.ward}, Of: v.ID, Top: top})
	return err
}

// A volume cannot be extended while its snapshot is pending (the
// snapshot's size is the volume's when asked); one extended before, whose
// writer had not grown yet, gets a snapshot of the writer's size, and its
// blocks past that read as zeroes, then as written.
func TestExtendAroundAPendingSnapshot(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	ctx := context.Background()
	w, v := r.attachAndOpen(t, r.volume("vol-a", GiB))
	before := bytes.Repeat([]byte{0x11}, BlockSize)
	e.must(w.WriteAt(ctx, before, GiB-BlockSize, true))

	_, err := e.apply(MsgExtendVolume, extendVolumeCmd{ID: v.ID, SizeBytes: 2 * GiB})
	e.must(err) // the writer has not grown yet
	e.must(r.askSnapshot(v))
	_, err = e.apply(MsgExtendVolume, extendVolumeCmd{ID: v.ID, SizeBytes: 3 * GiB})
	wantCode(t, "extend while a snapshot is pending", err, consensus.CodeConflict)

	v = getVolume(e.node.Store().ReadTxn(), v.ID)
	e.must(r.snapshot(t, w, v, snapA))
	snap := getVolume(e.node.Store().ReadTxn(), snapA)
	if snap.State != StateAvailable || snap.SizeBytes != GiB {
		t.Fatalf("the snapshot is %s, %d bytes; want available, %d (the writer's size)", snap.State, snap.SizeBytes, GiB)
	}
	e.must(w.Grow(ctx, 2*GiB))
	got := make([]byte, BlockSize)
	for _, off := range []int64{GiB, GiB + GiB/2} {
		e.must(w.ReadAt(ctx, got, off))
		if !bytes.Equal(got, make([]byte, BlockSize)) {
			t.Fatalf("never written at %d: %x", off, got[:8])
		}
	}
	after := bytes.Repeat([]byte{0xA5}, BlockSize)
	e.must(w.WriteAt(ctx, after, GiB+GiB/2, true))
	for off, want := range map[int64][]byte{GiB - BlockSize: before, GiB + GiB/2: after} {
		e.must(w.ReadAt(ctx, got, off))
		if !bytes.Equal(got, want) {
			t.Fatalf("at %d: %x, want %x", off, got[:8], want[:8])
		}
	}
	_, err = e.apply(MsgExtendVolume, extendVolumeCmd{ID: v.ID, SizeBytes: 3 * GiB})
	e.must(err) // once taken
}

// lateCluster gives up on MsgSnapshotTaken (unavailable) and applies it a
// moment later, as a forwarded batch still under way can land after its
// caller timed out.
type lateCluster struct {
	*consensus.Node
	wg sync.WaitGroup
}

func (c *lateCluster) Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error) {
	if t == MsgSnapshotTaken {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			time.Sleep(300 * time.Millisecond)
			c.Node.Apply(context.Background(), t, cmd, nil)
		}()
		return 0, &consensus.Error{Code: consensus.CodeUnavailable, Message: "apply: context deadline exceeded"}
	}
	return c.Node.Apply(ctx, t, cmd, out)
}

// A take whose commit times out is not decided by a read: the writer
// stops (no write lands on either set of replicas), the new replicas stay,
// and when the commit lands late the volume's replicas are there and the
// snapshot holds nothing written after it.
func TestSnapshotOfUnknownOutcomeStopsTheWriter(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	ctx := context.Background()
	lc := &lateCluster{Node: e.node}
	r.ns = NewNodeServer(lc, r.host, NodeConfig{SocketDir: t.TempDir()})
	w, v := r.attachAndOpen(t, r.volume("vol-a", GiB))
	e.must(r.askSnapshot(v))
	v = getVolume(e.node.Store().ReadTxn(), v.ID)
	if err := r.snapshot(t, w, v, snapA); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a take of unknown outcome: %v", err)
	}
	if err := w.WriteAt(ctx, bytes.Repeat([]byte{0x77}, BlockSize), 0, true); err == nil {
		t.Fatal("the writer went on writing after a take of unknown outcome")
	}
	lc.wg.Wait()
	got := getVolume(e.node.Store().ReadTxn(), v.ID)
	if got.Parent != snapA {
		t.Fatalf("the late commit did not land: parent %q", got.Parent)
	}
	for _, rep := range got.Replicas {
		if _, err := r.host.Local(rep.ID); err != nil {
			t.Errorf("the volume's replica %s: %v", rep.ID, err)
		}
	}
	p := make([]byte, BlockSize)
	e.must(newChain(r.ns).layer(snapA).ReadAt(ctx, p, 0))
	if !bytes.Equal(p, make([]byte, BlockSize)) {
		t.Errorf("the snapshot holds a write it should not: %x", p[:8])
	}
	// Reopened under a new epoch, the volume writes to its new replicas.
	w.Close(ctx)
	w, _ = r.open(t, got)
	e.must(w.WriteAt(ctx, bytes.Repeat([]byte{0x78}, BlockSize), 0, true))
}

// A replica a repair made plain before a snapshot layered the volume is
// not admitted: caught up, it would read the snapshot's blocks as zeroes.
func TestRepairReplicaMustMatchTheLayering(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	v := r.volume("vol-a", GiB)
	rep := Replica{ID: "vol-a-r9", Node: r.self, Disk: "d2"}
	e.must(r.host.Create(rep.Disk, rep.ID, v.SizeBytes, false))
	e.must(r.host.Create("d1", "vol-a-top0", GiB, true))
	e.must(r.askSnapshot(v, Replica{ID: "vol-a-top0", Node: r.self, Disk: "d1"}))
	_, err := e.apply(MsgAddReplica, addReplicaCmd{Volume: v.ID, Replica: rep})
	wantCode(t, "a plain replica for a layered volume", err, consensus.CodeConflict)
	_, err = e.apply(MsgAddReplica, addReplicaCmd{Volume: v.ID, Replica: rep, Layered: true})
	e.must(err)
}

// A hidden snapshot's name is one no volume can have.
func TestHiddenSnapshotKeepsNoName(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 5, VolumeGiB: 20, Snapshots: 2})
	for _, n := range []string{"node1", "node2", "node3"} {
		e.addDisk(n, "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: &recorder{}, Logger: slog.Default()})
	ctx := context.Background()
	_, err := svc.Create(ctx, e.nurse, Create{Name: "records", SizeGiB: 2})
	e.must(err)
	snap, err := svc.CreateSnapshot(ctx, e.nurse, "records", "monday")
	e.must(err)
	_, err = svc.Create(ctx, e.nurse, Create{Name: snap.ID, SizeGiB: 1})
	e.must(err)
	_, err = svc.Create(ctx, e.nurse, Create{Name: "monday-copy", Snapshot: "monday"})
	e.must(err)
	_, err = svc.DeleteSnapshot(ctx, e.nurse, "monday", 0)
	e.must(err)
	if _, err := svc.Get(e.nurse, snap.ID); err != nil {
		t.Fatalf("volume %q after the snapshot was hidden: %v", snap.ID, err)
	}
	_, err = svc.Create(ctx, e.nurse, Create{Name: "monday", SizeGiB: 1})
	e.must(err) // the hidden snapshot's name is free
}

// A clone refused for its name leaves its source as it was.
func TestRefusedCloneLeavesTheSource(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 5, VolumeGiB: 20, Snapshots: 2})
	for _, n := range []string{"node1", "node2", "node3"} {
		e.addDisk(n, "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: &recorder{}, Logger: slog.Default()})
	ctx := context.Background()
	_, err := svc.Create(ctx, e.nurse, Create{Name: "records", SizeGiB: 2})
	e.must(err)
	_, err = svc.Create(ctx, e.nurse, Create{Name: "taken", SizeGiB: 1})
	e.must(err)
	before, _ := svc.Get(e.nurse, "records")
	_, err = svc.Create(ctx, e.nurse, Create{Name: "taken", Source: "records"})
	wantCode(t, "a clone under a taken name", err, consensus.CodeAlreadyExists)
	_, err = svc.CreateSnapshot(ctx, e.nurse, "records", "taken")
	wantCode(t, "a snapshot under a taken name", err, consensus.CodeAlreadyExists)
	after, _ := svc.Get(e.nurse, "records")
	if after.Parent != before.Parent || replicaSet(after) != replicaSet(before) {
		t.Fatalf("refusals changed the source: parent %q -> %q, replicas %s -> %s", before.Parent, after.Parent, replicaSet(before), replicaSet(after))
	}
}

// A detached volume's snapshot, taken by the service: the replicas become
// the snapshot's fenced against the volume's last writer, grown to the
// volume's size (extended while attached to a VM not placed yet), and
// the volume reads through to them.
func TestDetachedSnapshotClaimsTheReplicas(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	ctx := context.Background()
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: NewProvisioner(nil, nil, r.self, r.host), Logger: slog.Default()})
	old, v := r.attachAndOpen(t, r.volume("vol-a", GiB))
	data := bytes.Repeat([]byte{0x5A}, BlockSize)
	e.must(old.WriteAt(ctx, data, 0, true))
	_, err := e.apply(MsgDetachVolume, detachVolumeCmd{ID: v.ID})
	e.must(err)
	_, err = e.apply(MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: Attachment{VM: "vm-x"}})
	e.must(err)
	_, err = e.apply(MsgExtendVolume, extendVolumeCmd{ID: v.ID, SizeBytes: 2 * GiB})
	e.must(err)

	snap, err := svc.CreateSnapshot(ctx, e.nurse, v.ID, "before")
	e.must(err)
	if snap.State != StateAvailable || snap.SizeBytes != 2*GiB {
		t.Fatalf("snapshot %s, %d bytes", snap.State, snap.SizeBytes)
	}
	// The writer that was not closed after the detach changes nothing.
	if err := old.WriteAt(ctx, bytes.Repeat([]byte{0x66}, BlockSize), 0, true); err == nil {
		t.Fatal("the volume's old writer wrote into the snapshot")
	}
	p := make([]byte, BlockSize)
	for off, want := range map[int64][]byte{0: data, GiB + GiB/2: make([]byte, BlockSize)} {
		e.must(newChain(r.ns).layer(snap.ID).ReadAt(ctx, p, off))
		if !bytes.Equal(p, want) {
			t.Fatalf("the snapshot at %d: %x, want %x", off, p[:8], want[:8])
		}
	}
	_, err = e.apply(MsgDetachVolume, detachVolumeCmd{ID: v.ID})
	e.must(err)
	w, _ := r.attachAndOpen(t, getVolume(e.node.Store().ReadTxn(), v.ID))
	e.must(w.ReadAt(ctx, p, 0))
	if !bytes.Equal(p, data) {
		t.Fatalf("the volume reads %x through to its snapshot", p[:8])
	}
}

// A volume detached (or its VM deleted) with a snapshot still pending
// calls the snapshot off and refunds it: no later writer takes it at a
// moment nobody asked for.
func TestDetachCallsOffAPendingSnapshot(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	_, v := r.attachAndOpen(t, r.volume("vol-a", GiB))
	used := func() int64 { return e.usage(e.ward).Snapshots }
	e.must(r.askSnapshot(v))
	if used() != 1 {
		t.Fatalf("a pending snapshot charged %d", used())
	}
	_, err := e.apply(MsgDetachVolume, detachVolumeCmd{ID: v.ID})
	e.must(err)
	if s := getVolume(e.node.Store().ReadTxn(), snapA); s != nil {
		t.Fatalf("the snapshot is still there, %s", s.State)
	}
	if got := getVolume(e.node.Store().ReadTxn(), v.ID); got.Snapshotting != "" || used() != 0 {
		t.Fatalf("after the detach: snapshotting %q, %d snapshots charged", got.Snapshotting, used())
	}
}

// A snapshot deleted while its volume reads through to it is hidden, then
// merged into the volume by its writer: the volume reads as before, reads
// through to nothing, the snapshot's record is gone and quotas are as
// they were before it was taken.
func TestDeletedSnapshotMergedIntoItsVolume(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	ctx := context.Background()
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: NewProvisioner(nil, nil, r.self, r.host), Logger: slog.Default()})
	w, v := r.attachAndOpen(t, r.volume("vol-a", GiB))
	old := bytes.Repeat([]byte{0x31}, 2*BlockSize)
	e.must(w.WriteAt(ctx, old, ExtentSize, true))
	usage := e.usage(e.ward)
	e.must(r.askSnapshot(v))
	v = getVolume(e.node.Store().ReadTxn(), v.ID)
	e.must(r.snapshot(t, w, v, snapA))
	mine := bytes.Repeat([]byte{0x32}, BlockSize)
	e.must(w.WriteAt(ctx, mine, ExtentSize+BlockSize, true))

	if s, _ := svc.GetSnapshot(e.nurse, snapA); s == nil {
		t.Fatal("no snapshot")
	}
	_, err := svc.DeleteSnapshot(ctx, e.nurse, snapA, 0)
	e.must(err)
	v = getVolume(e.node.Store().ReadTxn(), v.ID)
	h := r.ns.mergeable(v)
	if h == nil || h.ID != snapA || !h.Hidden {
		t.Fatalf("the deleted snapshot is not mergeable: %+v", h)
	}
	s := &served{w: w, epoch: v.Epoch, replicas: replicaSet(v), chain: newChain(r.ns), merging: true}
	r.ns.merge(ctx, s, v, h)
	if s.merging || !s.mergeRetry.IsZero() {
		t.Fatalf("the merge failed (retry at %v)", s.mergeRetry)
	}
	got := getVolume(e.node.Store().ReadTxn(), v.ID)
	if got.Parent != "" || getVolume(e.node.Store().ReadTxn(), snapA) != nil {
		t.Fatalf("after the merge: parent %q, snapshot record %v", got.Parent, getVolume(e.node.Store().ReadTxn(), snapA))
	}
	if u := e.usage(e.ward); u != usage {
		t.Fatalf("quota use %+v, was %+v", u, usage)
	}
	p := make([]byte, 2*BlockSize)
	e.must(w.ReadAt(ctx, p, ExtentSize))
	if !bytes.Equal(p, append(old[:BlockSize:BlockSize], mine...)) {
		t.Fatalf("the volume after the merge: %x %x", p[:4], p[BlockSize:BlockSize+4])
	}
	// Reopened from the record, with no base at all.
	w.Close(ctx)
	_, err = e.apply(MsgDetachVolume, detachVolumeCmd{ID: v.ID})
	e.must(err)
	w, _ = r.attachAndOpen(t, got)
	e.must(w.ReadAt(ctx, p, ExtentSize))
	if !bytes.Equal(p, append(old[:BlockSize:BlockSize], mine...)) {
		t.Fatalf("the volume reopened after the merge: %x %x", p[:4], p[BlockSize:BlockSize+4])
	}
	// A snapshot that others still read through to is not merged.
	_, err = e.apply(MsgSnapshotMerged, &SnapshotMerged{Volume: v.ID, Snapshot: snapA, Node: r.self, Epoch: v.Epoch})
	wantCode(t, "a merge of a snapshot gone", err, consensus.CodeConflict)
}

// A deleted snapshot two volumes read through to (a clone's and its
// source's) is merged into neither until one is gone.
func TestSharedSnapshotIsNotMerged(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	v := r.volume("vol-a", GiB)
	e.must(r.host.Create("d1", "vol-a-top0", GiB, true))
	e.must(r.askSnapshot(v, Replica{ID: "vol-a-top0", Node: r.self, Disk: "d1"}))
	k := Volume{ID: "vol-k", Name: "vol-k", ProjectID: e.ward, SizeBytes: GiB, Parent: snapA, CreatedAt: time.Now().UTC(),
		Replicas: []Replica{{ID: "vol-k-r0", Node: r.self, Disk: "d2"}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: k})
	e.must(err)
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: k.ID, State: StateAvailable})
	e.must(err)
	_, err = e.apply(MsgDeleteSnapshot, deleteSnapshotCmd{ID: snapA})
	e.must(err)
	_, v = r.attachAndOpen(t, v)
	if h := r.ns.mergeable(v); h != nil {
		t.Fatalf("a snapshot two volumes read through to is mergeable")
	}
	merged := &SnapshotMerged{Volume: v.ID, Snapshot: snapA, Node: r.self, Epoch: v.Epoch}
	_, err = e.apply(MsgSnapshotMerged, merged)
	wantCode(t, "a merge of a shared snapshot", err, consensus.CodeConflict)
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: k.ID})
	e.must(err)
	if h := r.ns.mergeable(getVolume(e.node.Store().ReadTxn(), v.ID)); h == nil || h.ID != snapA {
		t.Fatalf("once the clone is gone the snapshot is not mergeable: %+v", h)
	}
	_, err = e.apply(MsgSnapshotMerged, &SnapshotMerged{Volume: v.ID, Snapshot: snapA, Node: "node9", Epoch: v.Epoch})
	wantCode(t, "a merge from a node that is not the writer", err, consensus.CodeConflict)
	_, err = e.apply(MsgSnapshotMerged, merged)
	e.must(err)
}

// What a volume was made from is kept as it was when it was made: a merge
// of that snapshot (deleted, with the volume it was taken of) into the
// volume still leaves it saying so; and a replica added to the merged
// volume is layered, as its replicas are.
func TestOriginOutlivesTheMerge(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	ctx := context.Background()
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: NewProvisioner(nil, nil, r.self, r.host), Logger: slog.Default()})
	v := r.volume("vol-a", GiB)
	e.must(r.host.Create("d1", "vol-a-top0", GiB, true))
	e.must(r.askSnapshot(v, Replica{ID: "vol-a-top0", Node: r.self, Disk: "d1"}))
	snap := getVolume(e.node.Store().ReadTxn(), snapA)
	kv := Volume{ID: "vol-k", Name: "restored", ProjectID: e.ward, SizeBytes: GiB, Parent: snapA, CreatedAt: time.Now().UTC(),
		Replicas: []Replica{{ID: "vol-k-r0", Node: r.self, Disk: "d2"}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: kv})
	e.must(err)
	e.must(r.host.Create("d2", "vol-k-r0", GiB, true))
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: kv.ID, State: StateAvailable})
	e.must(err)
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: v.ID})
	e.must(err)
	_, err = e.apply(MsgDeleteSnapshot, deleteSnapshotCmd{ID: snapA})
	e.must(err)
	w, k := r.attachAndOpen(t, getVolume(e.node.Store().ReadTxn(), kv.ID))
	h := r.ns.mergeable(k)
	if h == nil {
		t.Fatal("the deleted snapshot is not mergeable into the one volume made from it")
	}
	s := &served{w: w, epoch: k.Epoch, replicas: replicaSet(k), chain: newChain(r.ns), merging: true}
	r.ns.merge(ctx, s, k, h)
	if got := getVolume(e.node.Store().ReadTxn(), k.ID); got.Parent != "" || !got.Layered {
		t.Fatalf("after the merge: parent %q, layered %v", got.Parent, got.Layered)
	}
	o, err := svc.Origin(e.nurse, "restored")
	e.must(err)
	if o == nil || o.Volume != "vol-a" || !o.At.Equal(snap.CreatedAt) || o.Snapshot != "" || o.VolumeName != "" {
		t.Fatalf("origin after the merge: %+v", o)
	}
	rep := Replica{ID: "restored-r9", Node: r.self, Disk: "d1"}
	_, err = e.apply(MsgAddReplica, addReplicaCmd{Volume: k.ID, Replica: rep})
	wantCode(t, "a plain replica for a merged volume", err, consensus.CodeConflict)
	_, err = e.apply(MsgAddReplica, addReplicaCmd{Volume: k.ID, Replica: rep, Layered: true})
	e.must(err)
}

// A detached volume's replica the service cannot reach to fence is stale
// in the snapshot that takes it: a writer it may still hear from could
// change it, so it is caught up before it is read.
func TestUnclaimedReplicaIsStaleInTheSnapshot(t *testing.T) {
	r := newEdgeRig(t)
	e := r.e
	ctx := context.Background()
	unreachable := func(string) (string, bool) { return "", false }
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Logger: slog.Default(),
		Provisioner: NewProvisioner(func() *http.Client { return nil }, unreachable, r.self, r.host)})
	v := Volume{ID: "vol-a", Name: "vol-a", ProjectID: e.ward, SizeBytes: GiB, CreatedAt: time.Now().UTC(),
		Replicas: []Replica{{ID: "vol-a-r0", Node: r.self, Disk: "d1"}, {ID: "vol-a-r1", Node: "node9", Disk: "d9"}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
	e.must(err)
	_, err = e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: v.ID, State: StateAvailable})
	e.must(err)
	e.must(r.host.Create("d1", "vol-a-r0", GiB, false))
	snap, err := svc.CreateSnapshot(ctx, e.nurse, "vol-a", "monday")
	e.must(err)
	states := map[string]string{}
	for _, rep := range snap.Replicas {
		states[rep.ID] = rep.State
	}
	if states["vol-a-r0"] != ReplicaInSync || states["vol-a-r1"] != ReplicaStale {
		t.Fatalf("the snapshot's replicas: %v", states)
	}
}
