package volume

import (
	"context"
	"log/slog"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// A detached volume's snapshot takes the volume's replicas as they are and
// gives the volume new ones, layered on it, on the same disks; a clone is
// layered on a snapshot; snapshots are charged and refunded; a snapshot
// that volumes read through to is hidden on delete and goes with the last
// of them.
func TestSnapshotsAndClonesInTheState(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 5, VolumeGiB: 20, Snapshots: 2})
	for _, n := range []string{"node1", "node2", "node3"} {
		e.addDisk(n, "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	}
	prov := &recorder{}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: prov, Logger: slog.Default()})
	ctx := context.Background()
	v, err := svc.Create(ctx, e.nurse, Create{Name: "records", SizeGiB: 2})
	e.must(err)
	old := v.Replicas

	snap, err := svc.CreateSnapshot(ctx, e.nurse, "records", "monday")
	e.must(err)
	if snap.State != StateAvailable || snap.Kind != KindSnapshot || snap.Of != v.ID || snap.SizeBytes != v.SizeBytes || len(snap.Replicas) != 3 {
		t.Fatalf("snapshot: %+v", snap)
	}
	for i, r := range snap.Replicas {
		if r != old[i] {
			t.Fatalf("the snapshot's replicas %v are not the volume's %v", snap.Replicas, old)
		}
	}
	v, err = svc.Get(e.nurse, "records")
	e.must(err)
	if v.Parent != snap.ID || len(v.Replicas) != 3 || v.Degraded {
		t.Fatalf("volume after the snapshot: %+v", v)
	}
	for i, r := range v.Replicas {
		if r.ID == old[i].ID || r.Disk != old[i].Disk || r.Node != old[i].Node || r.State != ReplicaInSync || !prov.created[r.ID] {
			t.Fatalf("the volume's new replica %+v (old %+v)", r, old[i])
		}
	}
	if u := e.usage("ward"); u.Snapshots != 1 || u.VolumeGiB != 4 {
		t.Fatalf("usage after a snapshot (its 2 GiB count): %+v", u)
	}

	// Bad input changes nothing.
	_, err = svc.CreateSnapshot(ctx, e.nurse, "records", "monday")
	wantCode(t, "a second snapshot of that name", err, consensus.CodeAlreadyExists)
	_, err = svc.CreateSnapshot(ctx, e.nurse, "records", "bad/name")
	wantCode(t, "a bad snapshot name", err, consensus.CodeInvalid)
	_, err = svc.CreateSnapshot(ctx, e.visitor, "records", "mine")
	wantCode(t, "a reader's snapshot", err, consensus.CodeForbidden)
	_, err = svc.CreateSnapshot(ctx, e.tech, "records", "theirs")
	wantCode(t, "another project's snapshot", err, consensus.CodeNotFound)
	_, err = svc.CreateSnapshot(ctx, e.nurse, "monday", "of-a-snapshot")
	wantCode(t, "a snapshot of a snapshot", err, consensus.CodeNotFound)
	_, err = svc.Delete(ctx, e.nurse, "monday", 0)
	wantCode(t, "a snapshot deleted as a volume", err, consensus.CodeNotFound)
	_, err = svc.Extend(ctx, e.nurse, "monday", 4, 0)
	wantCode(t, "a snapshot extended", err, consensus.CodeNotFound)
	_, err = svc.Create(ctx, e.nurse, Create{Name: "small", SizeGiB: 1, Snapshot: "monday"})
	wantCode(t, "a volume smaller than its snapshot", err, consensus.CodeInvalid)
	_, err = svc.Create(ctx, e.tech, Create{Name: "theirs", Snapshot: "monday"})
	wantCode(t, "a volume from another project's snapshot", err, consensus.CodeNotFound)
	_, err = svc.Create(ctx, e.nurse, Create{Name: "both", Snapshot: "monday", Source: "records"})
	wantCode(t, "a volume from a snapshot and a source", err, consensus.CodeInvalid)
	if vs, _ := svc.List(e.nurse, ""); len(vs) != 1 {
		t.Fatalf("volumes listed: %+v", vs)
	}
	if ss, _ := svc.ListSnapshots(e.nurse, "", "records"); len(ss) != 1 || ss[0].ID != snap.ID {
		t.Fatalf("snapshots listed: %+v", ss)
	}

	// A clone from the snapshot; a clone of the volume through a hidden
	// snapshot, not charged.
	fromSnap, err := svc.Create(ctx, e.nurse, Create{Name: "restored", Snapshot: "monday"})
	e.must(err)
	if fromSnap.Parent != snap.ID || fromSnap.SizeBytes != snap.SizeBytes || fromSnap.Source != nil {
		t.Fatalf("volume from a snapshot: %+v", fromSnap)
	}
	clone, err := svc.Create(ctx, e.nurse, Create{Name: "copy", SizeGiB: 3, Source: "records"})
	e.must(err)
	hidden := getVolume(e.node.Store().ReadTxn(), clone.Parent)
	if hidden == nil || !hidden.Hidden || hidden.Of != v.ID || hidden.Parent != snap.ID || clone.SizeBytes != 3*GiB {
		t.Fatalf("clone %+v through %+v", clone, hidden)
	}
	if v, _ = svc.Get(e.nurse, "records"); v.Parent != hidden.ID {
		t.Fatalf("the cloned volume is layered on %s, not the clone's snapshot %s", v.Parent, hidden.ID)
	}
	if u := e.usage("ward"); u.Snapshots != 1 || u.Volumes != 3 || u.VolumeGiB != 9 {
		t.Fatalf("usage with clones: %+v", u)
	}
	if ss, _ := svc.ListSnapshots(e.nurse, "", ""); len(ss) != 1 {
		t.Fatalf("a hidden snapshot is listed: %+v", ss)
	}

	// Deleting the snapshot hides it (volumes read through it) and frees
	// its name and quota; its replicas stay.
	gone, err := svc.DeleteSnapshot(ctx, e.nurse, "monday", 0)
	e.must(err)
	if !gone.Hidden {
		t.Fatalf("a snapshot volumes read through to was deleted outright: %+v", gone)
	}
	for _, r := range snap.Replicas {
		if !prov.created[r.ID] {
			t.Fatalf("replica %s of a snapshot still read through to was removed", r.ID)
		}
	}
	if u := e.usage("ward"); u.Snapshots != 0 || u.VolumeGiB != 7 {
		t.Fatalf("usage after deleting the snapshot: %+v", u)
	}
	if _, err := svc.GetSnapshot(e.nurse, "monday"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("a deleted snapshot is found: %v", err)
	}
	// The name is free again.
	again, err := svc.CreateSnapshot(ctx, e.nurse, "copy", "monday")
	e.must(err)

	// The volumes go; the hidden snapshots go with the last volume that
	// reads through them, and not before.
	for _, name := range []string{"records", "restored"} {
		_, err = svc.Delete(ctx, e.nurse, name, 0)
		e.must(err)
	}
	txn := e.node.Store().ReadTxn()
	if getVolume(txn, snap.ID) == nil || getVolume(txn, hidden.ID) == nil {
		t.Fatal("snapshots the clone reads through to were dropped")
	}
	_, err = svc.DeleteSnapshot(ctx, e.nurse, again.ID, 0) // the clone reads through it: hidden
	e.must(err)
	_, err = svc.Delete(ctx, e.nurse, "copy", 0)
	e.must(err)
	it, err := e.node.Store().ReadTxn().Get(tVolumes, "id")
	e.must(err)
	var left []string
	for o := it.Next(); o != nil; o = it.Next() {
		left = append(left, o.(*Volume).ID)
	}
	if len(left) != 0 {
		t.Fatalf("records left after every volume and snapshot went: %v", left)
	}
	if u := e.usage("ward"); u != (identity.Resources{}) {
		t.Fatalf("usage at the end: %+v", u)
	}
}

// An attached volume's snapshot is left to its writer: only the writer at
// the current epoch may record it taken, with new replicas on the
// volume's disks; deleting it first calls it off.
func TestAttachedVolumeSnapshotIsTakenByItsWriter(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	v := e.record("vol-a", "db", e.ward, 1, 2)
	_, err := e.apply(MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: Attachment{Node: "node1"}})
	e.must(err)
	v, err = e.apply(MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: "node1"})
	e.must(err)
	_, err = e.apply(MsgCreateSnapshot, createSnapshotCmd{Snapshot: Volume{ID: "snap-00000001", Name: "s", ProjectID: e.ward}, Of: v.ID,
		Top: []Replica{{ID: "t0", Node: "node1", Disk: "disk1"}}})
	wantCode(t, "new replicas for an attached volume", err, consensus.CodeConflict)
	s, err := e.apply(MsgCreateSnapshot, createSnapshotCmd{Snapshot: Volume{ID: "snap-00000001", Name: "s", ProjectID: e.ward}, Of: v.ID})
	e.must(err)
	if s.State != StateCreating {
		t.Fatalf("an attached volume's snapshot: %+v", s)
	}
	top := []Replica{{ID: "vol-a-t0", Node: "node1", Disk: "disk1"}, {ID: "vol-a-t1", Node: "node2", Disk: "disk2"}}
	_, err = e.apply(MsgSnapshotTaken, &SnapshotTaken{Volume: v.ID, Snapshot: s.ID, Node: "node2", Epoch: v.Epoch, Top: top})
	wantCode(t, "taken by another node", err, consensus.CodeConflict)
	_, err = e.apply(MsgSnapshotTaken, &SnapshotTaken{Volume: v.ID, Snapshot: s.ID, Node: "node1", Epoch: v.Epoch - 1, Top: top})
	wantCode(t, "taken at an old epoch", err, consensus.CodeConflict)
	_, err = e.apply(MsgSnapshotTaken, &SnapshotTaken{Volume: v.ID, Snapshot: s.ID, Node: "node1", Epoch: v.Epoch,
		Top: []Replica{{ID: "vol-a-t9", Node: "node3", Disk: "disk9"}}})
	wantCode(t, "new replicas elsewhere", err, consensus.CodeInvalid)
	_, err = e.apply(MsgSnapshotTaken, &SnapshotTaken{Volume: v.ID, Snapshot: s.ID, Node: "node1", Epoch: v.Epoch, Top: top, Quiesced: true})
	e.must(err)
	txn := e.node.Store().ReadTxn()
	got, snap := getVolume(txn, v.ID), getVolume(txn, s.ID)
	if got.Parent != s.ID || got.Snapshotting != "" || replicaSet(got) != "vol-a-t0,vol-a-t1" || snap.State != StateAvailable || !snap.Quiesced || replicaSet(snap) != replicaSet(v) || snap.Epoch != v.Epoch {
		t.Fatalf("after the writer took it: volume %+v snapshot %+v", got, snap)
	}
	_, err = e.apply(MsgSnapshotTaken, &SnapshotTaken{Volume: v.ID, Snapshot: s.ID, Node: "node1", Epoch: v.Epoch, Top: top})
	wantCode(t, "taken twice", err, consensus.CodeConflict)

	// Called off before the writer takes it.
	s2, err := e.apply(MsgCreateSnapshot, createSnapshotCmd{Snapshot: Volume{ID: "snap-00000002", Name: "s2", ProjectID: e.ward}, Of: v.ID})
	e.must(err)
	_, err = e.apply(MsgDeleteSnapshot, deleteSnapshotCmd{ID: s2.ID})
	e.must(err)
	txn = e.node.Store().ReadTxn()
	if getVolume(txn, s2.ID) != nil || getVolume(txn, v.ID).Snapshotting != "" {
		t.Fatal("a snapshot called off is still pending")
	}
	if u := e.usage("ward"); u.Snapshots != 1 {
		t.Fatalf("usage: %+v", u)
	}
	_, err = e.apply(MsgAttachVolume, attachVolumeCmd{ID: s.ID, Attachment: Attachment{VM: "vm-x", Node: "node1"}})
	wantCode(t, "a snapshot attached to a VM", err, consensus.CodeConflict)
}

// A snapshot counts its size against volume_gib (as Cinder's gigabytes
// quota counts snapshots): refused with nothing made when it would not fit,
// refunded when deleted or hidden, and a snapshot recorded before sizes
// were charged is refunded nothing.
func TestSnapshotsChargeTheirSize(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 5, VolumeGiB: 7, Snapshots: 5})
	for _, n := range []string{"node1", "node2", "node3"} {
		e.addDisk(n, "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	}
	prov := &recorder{}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: prov, Logger: slog.Default()})
	ctx := context.Background()
	_, err := svc.Create(ctx, e.nurse, Create{Name: "records", SizeGiB: 3})
	e.must(err)
	monday, err := svc.CreateSnapshot(ctx, e.nurse, "records", "monday")
	e.must(err)
	if monday.ChargedGiB != 3 {
		t.Fatalf("snapshot charged %d GiB", monday.ChargedGiB)
	}
	before, _ := svc.Get(e.nurse, "records")
	made := len(prov.created)
	_, err = svc.CreateSnapshot(ctx, e.nurse, "records", "tuesday") // 3+3+3 > 7
	wantCode(t, "a snapshot over the GiB quota", err, consensus.CodeQuotaExceeded)
	after, _ := svc.Get(e.nurse, "records")
	if u := e.usage("ward"); u.Snapshots != 1 || u.VolumeGiB != 6 || after.Parent != before.Parent || len(prov.created) != made {
		t.Fatalf("a refused snapshot changed something: usage %+v, parent %q -> %q, %d replicas made", u, before.Parent, after.Parent, len(prov.created)-made)
	}
	// The command itself refuses too (the service's check is only early).
	top := []Replica{{ID: "new-r0", Node: after.Replicas[0].Node, Disk: after.Replicas[0].Disk, State: ReplicaInSync}}
	_, err = e.apply(MsgCreateSnapshot, createSnapshotCmd{Snapshot: Volume{ID: "snap-x", Name: "x", ProjectID: e.ward}, Of: after.ID, Top: top, Format: snapshotFormat})
	wantCode(t, "a snapshot command over the GiB quota", err, consensus.CodeQuotaExceeded)

	_, err = svc.DeleteSnapshot(ctx, e.nurse, "monday", 0)
	e.must(err)
	if u := e.usage("ward"); u.Snapshots != 0 || u.VolumeGiB != 3 {
		t.Fatalf("usage after deleting the snapshot: %+v", u)
	}

	// A command written before sizes were charged (no format), replayed
	// from the log: it applies as it did then, 1 snapshot and no GiB, and
	// its deletion refunds just that.
	after, _ = svc.Get(e.nurse, "records")
	top = []Replica{{ID: "new-r1", Node: after.Replicas[0].Node, Disk: after.Replicas[0].Disk, State: ReplicaInSync}}
	old, err := e.apply(MsgCreateSnapshot, createSnapshotCmd{Snapshot: Volume{ID: "snap-old", Name: "old", ProjectID: e.ward}, Of: after.ID, Top: top})
	e.must(err)
	if u := e.usage("ward"); u.Snapshots != 1 || u.VolumeGiB != 3 || old.ChargedGiB != 0 {
		t.Fatalf("an old-format snapshot charged: usage %+v, %d GiB recorded", u, old.ChargedGiB)
	}
	_, err = svc.DeleteSnapshot(ctx, e.nurse, "old", 0)
	e.must(err)
	if u := e.usage("ward"); u.Snapshots != 0 || u.VolumeGiB != 3 {
		t.Fatalf("usage after deleting a snapshot charged no GiB: %+v", u)
	}
}
