package volume

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/storage"
)

// volEnv is one in-process node with identity, storage's disk records and
// volumes: project "ward" (nurse a member, visitor a reader) and project
// "lab" (tech a member).
type volEnv struct {
	t       *testing.T
	node    *consensus.Node
	id      *identity.Service
	admin   *identity.Principal
	nurse   *identity.Principal
	visitor *identity.Principal
	tech    *identity.Principal
	ward    string
	lab     string
}

const testPassword = "night-shift-9471"

func newVolEnv(t *testing.T, quota identity.Resources) *volEnv {
	t.Helper()
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		storage.Register(r)
		Register(r)
	})
	n := c.Nodes[0]
	ctx := context.Background()
	id := identity.NewService(n, identity.DefaultConfig())
	e := &volEnv{t: t, node: n, id: id}
	_, err := id.CreateFirstAdmin(ctx, "admin", "cluster-root-6161")
	e.must(err)
	e.admin = e.login("admin", "cluster-root-6161")
	ward, err := id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "ward", Quota: &quota})
	e.must(err)
	lab, err := id.CreateProject(ctx, e.admin, identity.ProjectSpec{Name: "lab"})
	e.must(err)
	e.ward, e.lab = ward.ID, lab.ID
	for _, u := range []struct {
		name, project string
		role          identity.Role
	}{{"nurse", "ward", identity.RoleMember}, {"visitor", "ward", identity.RoleReader}, {"tech", "lab", identity.RoleMember}} {
		_, err = id.CreateUser(ctx, e.admin, identity.UserSpec{Name: u.name, Password: testPassword})
		e.must(err)
		e.must(id.SetMember(ctx, e.admin, u.project, u.name, u.role))
	}
	e.nurse, e.visitor, e.tech = e.login("nurse", testPassword), e.login("visitor", testPassword), e.login("tech", testPassword)
	return e
}

func (e *volEnv) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *volEnv) login(user, pw string) *identity.Principal {
	e.t.Helper()
	tok, _, err := e.id.Login(context.Background(), user, pw)
	e.must(err)
	p, err := e.id.Authenticate(context.Background(), tok)
	e.must(err)
	return p
}

// apply sends one command and returns the volume it left.
func (e *volEnv) apply(t consensus.MessageType, cmd any) (*Volume, error) {
	e.t.Helper()
	var out Volume
	_, err := e.node.Apply(context.Background(), t, cmd, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// addDisk records a disk of a node as the node would report it.
func (e *volEnv) addDisk(node, path, state, health string, free uint64) string {
	e.t.Helper()
	ctx := context.Background()
	id := storage.DiskID(node, path)
	_, err := e.node.Apply(ctx, storage.MsgAddDisk, &storage.Disk{ID: id, Node: node, Path: path}, nil)
	e.must(err)
	_, err = e.node.Apply(ctx, storage.MsgReportDisks, map[string]any{"node": node, "at": time.Now().UTC(),
		"reports": []map[string]any{{"id": id, "health": health, "total": free * 2, "free": free}}}, nil)
	e.must(err)
	if state != storage.DiskActive {
		_, err = e.node.Apply(ctx, storage.MsgSetDiskState, map[string]any{"id": id, "state": state}, nil)
		e.must(err)
	}
	return id
}

func (e *volEnv) usage(project string) identity.Resources {
	e.t.Helper()
	q, err := e.id.GetQuota(e.admin, project)
	e.must(err)
	return q.Usage
}

// record creates a volume record directly, as the service would, and
// makes it available.
func (e *volEnv) record(id, name, project string, gib int64, replicas int) *Volume {
	e.t.Helper()
	v := Volume{ID: id, Name: name, ProjectID: project, SizeBytes: gib * GiB, CreatedAt: time.Now().UTC()}
	for i := range replicas {
		v.Replicas = append(v.Replicas, Replica{ID: fmt.Sprintf("%s-r%d", id, i), Node: fmt.Sprintf("node%d", i+1), Disk: fmt.Sprintf("disk%d", i+1)})
	}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: v})
	e.must(err)
	out, err := e.apply(MsgSetVolumeState, setVolumeStateCmd{ID: id, State: StateAvailable})
	e.must(err)
	return out
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if consensus.ErrorCode(err) != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
}

// Creating charges the quota in the same command; a creation over the
// quota is refused with nothing recorded or charged; deleting refunds.
func TestCreateChargesQuotaAndDeleteRefunds(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Instances: 1, Volumes: 2, VolumeGiB: 10})
	v := e.record("vol-1", "data", e.ward, 4, 1)
	if v.State != StateAvailable || v.Replicas[0].State != ReplicaInSync || v.Version == 0 {
		t.Fatalf("created: %+v", v)
	}
	if u := e.usage("ward"); u.Volumes != 1 || u.VolumeGiB != 4 {
		t.Fatalf("usage after create: %+v", u)
	}
	over := Volume{ID: "vol-2", Name: "big", ProjectID: e.ward, SizeBytes: 7 * GiB, Replicas: []Replica{{ID: "r", Node: "node1", Disk: "d"}}}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: over})
	wantCode(t, "create over the GiB quota", err, consensus.CodeQuotaExceeded)
	if getVolume(e.node.Store().ReadTxn(), "vol-2") != nil {
		t.Fatal("a refused volume was recorded")
	}
	if u := e.usage("ward"); u.Volumes != 1 || u.VolumeGiB != 4 {
		t.Fatalf("usage after a refused create: %+v", u)
	}
	e.record("vol-3", "small", e.ward, 1, 1)
	_, err = e.apply(MsgCreateVolume, createVolumeCmd{Volume: Volume{ID: "vol-4", Name: "third", ProjectID: e.ward, SizeBytes: GiB, Replicas: over.Replicas}})
	wantCode(t, "a third volume over the count quota", err, consensus.CodeQuotaExceeded)

	if _, err := e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: "vol-1"}); err != nil {
		t.Fatal(err)
	}
	if u := e.usage("ward"); u.Volumes != 1 || u.VolumeGiB != 1 {
		t.Fatalf("usage after delete: %+v", u)
	}
	if getVolume(e.node.Store().ReadTxn(), "vol-1") != nil {
		t.Fatal("deleted volume still recorded")
	}
}

// Sizes outside 1 GiB-64 TiB and volumes without replicas are refused.
func TestCreateRefusesBadSizes(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	reps := []Replica{{ID: "r", Node: "node1", Disk: "d"}}
	for _, size := range []int64{0, GiB - BlockSize, (MaxSizeGiB + 1) * GiB, GiB + 1} {
		_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: Volume{ID: "v", Name: "v", ProjectID: e.ward, SizeBytes: size, Replicas: reps}})
		wantCode(t, fmt.Sprintf("size %d", size), err, consensus.CodeInvalid)
	}
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: Volume{ID: "v", Name: "v", ProjectID: e.ward, SizeBytes: GiB}})
	wantCode(t, "no replicas", err, consensus.CodeInvalid)
}

// Names are unique within a project, not across projects.
func TestNamesUniquePerProject(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.record("vol-1", "data", e.ward, 1, 1)
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: Volume{ID: "vol-2", Name: "data", ProjectID: e.ward, SizeBytes: GiB,
		Replicas: []Replica{{ID: "r", Node: "node1", Disk: "d"}}}})
	wantCode(t, "same name, same project", err, consensus.CodeAlreadyExists)
	if u := e.usage("ward"); u.Volumes != 1 {
		t.Fatalf("a refused duplicate was charged: %+v", u)
	}
	e.record("vol-3", "data", e.lab, 1, 1)
}

// An attached volume is not deleted, and is in-use until detached.
func TestDeleteRefusedWhileAttached(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.record("vol-1", "data", e.ward, 1, 1)
	v, err := e.apply(MsgAttachVolume, attachVolumeCmd{ID: "vol-1", Attachment: Attachment{Node: "node1", VM: "vm-1"}})
	e.must(err)
	if v.State != StateInUse || v.Attachment == nil || v.Attachment.VM != "vm-1" {
		t.Fatalf("attached: %+v", v)
	}
	_, err = e.apply(MsgAttachVolume, attachVolumeCmd{ID: "vol-1", Attachment: Attachment{Node: "node2"}})
	wantCode(t, "attach twice", err, consensus.CodeConflict)
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: "vol-1"})
	wantCode(t, "delete while attached", err, consensus.CodeConflict)
	v, err = e.apply(MsgDetachVolume, detachVolumeCmd{ID: "vol-1"})
	e.must(err)
	if v.State != StateAvailable || v.Attachment != nil {
		t.Fatalf("detached: %+v", v)
	}
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: "vol-1", IfMatch: 1})
	wantCode(t, "delete at a stale version", err, consensus.CodePreconditionFailed)
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: "vol-1", IfMatch: v.Version})
	e.must(err)
}

// Only a volume being created is taken back by the service's undo, and a
// user's delete never takes one being created.
func TestUndoOnlyWhileCreating(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	_, err := e.apply(MsgCreateVolume, createVolumeCmd{Volume: Volume{ID: "vol-1", Name: "data", ProjectID: e.ward, SizeBytes: GiB,
		Replicas: []Replica{{ID: "r", Node: "node1", Disk: "d"}}}})
	e.must(err)
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: "vol-1"})
	wantCode(t, "a user's delete while creating", err, consensus.CodeConflict)
	e.record("vol-2", "other", e.ward, 1, 1)
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: "vol-2", Undo: true})
	wantCode(t, "undo of an available volume", err, consensus.CodeConflict)
	_, err = e.apply(MsgDeleteVolume, deleteVolumeCmd{ID: "vol-1", Undo: true})
	e.must(err)
}

// Extending grows only, and charges the difference.
func TestExtendGrowsOnly(t *testing.T) {
	e := newVolEnv(t, identity.Resources{Volumes: 5, VolumeGiB: 10})
	e.record("vol-1", "data", e.ward, 4, 1)
	for _, gib := range []int64{3, 4} {
		_, err := e.apply(MsgExtendVolume, extendVolumeCmd{ID: "vol-1", SizeBytes: gib * GiB})
		wantCode(t, fmt.Sprintf("extend to %d GiB", gib), err, consensus.CodeInvalid)
	}
	_, err := e.apply(MsgExtendVolume, extendVolumeCmd{ID: "vol-1", SizeBytes: 11 * GiB})
	wantCode(t, "extend over the quota", err, consensus.CodeQuotaExceeded)
	v, err := e.apply(MsgExtendVolume, extendVolumeCmd{ID: "vol-1", SizeBytes: 9 * GiB})
	e.must(err)
	if v.SizeBytes != 9*GiB {
		t.Fatalf("extended: %+v", v)
	}
	if u := e.usage("ward"); u.VolumeGiB != 9 {
		t.Fatalf("usage after extend: %+v", u)
	}
}

// Only the node a volume is attached to becomes its writer, each time
// with a higher epoch.
func TestAcquireWriterOnlyForTheAttachedNode(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.record("vol-1", "data", e.ward, 1, 3)
	_, err := e.apply(MsgAcquireWriter, AcquireWriter{Volume: "vol-1", Node: "node1"})
	wantCode(t, "writer of a detached volume", err, consensus.CodeConflict)
	_, err = e.apply(MsgAttachVolume, attachVolumeCmd{ID: "vol-1", Attachment: Attachment{Node: "node2"}})
	e.must(err)
	_, err = e.apply(MsgAcquireWriter, AcquireWriter{Volume: "vol-1", Node: "node1"})
	wantCode(t, "writer on another node", err, consensus.CodeConflict)
	if v := getVolume(e.node.Store().ReadTxn(), "vol-1"); v.Epoch != 0 || v.Writer != "" {
		t.Fatalf("a refused writer changed the volume: %+v", v)
	}
	v, err := e.apply(MsgAcquireWriter, AcquireWriter{Volume: "vol-1", Node: "node2"})
	e.must(err)
	if v.Epoch != 1 || v.Writer != "node2" {
		t.Fatalf("writer: %+v", v)
	}
	v, err = e.apply(MsgAcquireWriter, AcquireWriter{Volume: "vol-1", Node: "node2"})
	e.must(err)
	if v.Epoch != 2 {
		t.Fatalf("a second acquisition kept epoch %d", v.Epoch)
	}
}

// Replica states change on the current writer's word only, and never
// below the in-sync floor.
func TestSetReplicaStateFencedAndFloored(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.record("vol-1", "data", e.ward, 1, 3)
	_, err := e.apply(MsgAttachVolume, attachVolumeCmd{ID: "vol-1", Attachment: Attachment{Node: "node1"}})
	e.must(err)
	for range 2 {
		_, err = e.apply(MsgAcquireWriter, AcquireWriter{Volume: "vol-1", Node: "node1"})
		e.must(err)
	}
	fenced := func(what string, c SetReplicaState) {
		t.Helper()
		_, err := e.apply(MsgSetReplicaState, c)
		if consensus.ErrorCode(err) != consensus.CodeConflict || consensus.ErrorReason(err) != ReasonFenced {
			t.Fatalf("%s: %v, want a fenced conflict", what, err)
		}
	}
	fenced("a stale epoch", SetReplicaState{Volume: "vol-1", Node: "node1", Epoch: 1, Replica: "vol-1-r1", State: ReplicaStale})
	fenced("a node that is not the writer", SetReplicaState{Volume: "vol-1", Node: "node2", Epoch: 2, Replica: "vol-1-r1", State: ReplicaStale})
	v, err := e.apply(MsgSetReplicaState, SetReplicaState{Volume: "vol-1", Node: "node1", Epoch: 2, Replica: "vol-1-r1", State: ReplicaStale})
	e.must(err)
	if v.Replicas[1].State != ReplicaStale || v.inSync() != 2 {
		t.Fatalf("after marking stale: %+v", v.Replicas)
	}
	_, err = e.apply(MsgSetReplicaState, SetReplicaState{Volume: "vol-1", Node: "node1", Epoch: 2, Replica: "vol-1-r2", State: ReplicaStale})
	wantCode(t, "below two in sync", err, consensus.CodeConflict)
	if consensus.ErrorReason(err) == ReasonFenced {
		t.Fatal("the floor's refusal says fenced")
	}
	// An unknown replica cannot be brought in; marked stale (the repair
	// removed it while its writer still wrote to it) is nothing to do.
	_, err = e.apply(MsgSetReplicaState, SetReplicaState{Volume: "vol-1", Node: "node1", Epoch: 2, Replica: "vol-1-r9", State: ReplicaInSync})
	wantCode(t, "an unknown replica", err, consensus.CodeNotFound)
	if _, err = e.apply(MsgSetReplicaState, SetReplicaState{Volume: "vol-1", Node: "node1", Epoch: 2, Replica: "vol-1-r9", State: ReplicaStale}); err != nil {
		t.Fatalf("a removed replica marked stale: %v", err)
	}
	v, err = e.apply(MsgSetReplicaState, SetReplicaState{Volume: "vol-1", Node: "node1", Epoch: 2, Replica: "vol-1-r1", State: ReplicaRebuilding})
	e.must(err)
	if v.Replicas[1].State != ReplicaRebuilding || v.Replicas[2].State != ReplicaInSync {
		t.Fatalf("after rebuilding: %+v", v.Replicas)
	}

	// A single-node volume keeps its one replica in sync.
	e.record("vol-2", "solo", e.ward, 1, 1)
	_, err = e.apply(MsgAttachVolume, attachVolumeCmd{ID: "vol-2", Attachment: Attachment{Node: "node1"}})
	e.must(err)
	w, err := e.apply(MsgAcquireWriter, AcquireWriter{Volume: "vol-2", Node: "node1"})
	e.must(err)
	_, err = e.apply(MsgSetReplicaState, SetReplicaState{Volume: "vol-2", Node: "node1", Epoch: w.Epoch, Replica: "vol-2-r0", State: ReplicaStale})
	wantCode(t, "the only replica stale", err, consensus.CodeConflict)
}

// A project's member cannot see or touch another project's volume: it is
// not found; a reader sees but cannot change.
func TestOtherProjectsVolumesAreNotFound(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Logger: slog.Default()})
	ctx := context.Background()
	e.record("vol-1", "data", e.ward, 1, 1)
	if _, err := svc.Get(e.nurse, "data"); err != nil {
		t.Fatalf("the member's own volume: %v", err)
	}
	if vs, err := svc.List(e.tech, ""); err != nil || len(vs) != 0 {
		t.Fatalf("another project's list: %v %v", vs, err)
	}
	for _, ref := range []string{"data", "vol-1"} {
		_, err := svc.Get(e.tech, ref)
		wantCode(t, "get "+ref, err, consensus.CodeNotFound)
		_, err = svc.Delete(ctx, e.tech, ref, 0)
		wantCode(t, "delete "+ref, err, consensus.CodeNotFound)
		_, err = svc.Extend(ctx, e.tech, ref, 2, 0)
		wantCode(t, "extend "+ref, err, consensus.CodeNotFound)
		_, err = svc.Attach(ctx, e.tech, ref, AttachTo{Node: "node1"}, 0)
		wantCode(t, "attach "+ref, err, consensus.CodeNotFound)
		_, err = svc.Detach(ctx, e.tech, ref, 0)
		wantCode(t, "detach "+ref, err, consensus.CodeNotFound)
	}
	_, err := svc.Get(e.visitor, "data")
	e.must(err)
	_, err = svc.Delete(ctx, e.visitor, "data", 0)
	wantCode(t, "a reader's delete", err, consensus.CodeForbidden)
	// A node's host is the cluster admins'.
	_, err = svc.Attach(ctx, e.nurse, "data", AttachTo{Node: "node1"}, 0)
	wantCode(t, "a member's attach to a node", err, consensus.CodeForbidden)
	v, err := svc.Attach(ctx, e.admin, "vol-1", AttachTo{Node: "node1"}, 0)
	e.must(err)
	if v.Attachment == nil || v.Attachment.Node != "node1" || v.Attachment.VM != "" {
		t.Fatalf("attached to the host: %+v", v)
	}
	_, err = svc.Detach(ctx, e.nurse, "data", 0)
	wantCode(t, "a member's detach from a node", err, consensus.CodeForbidden)
	if v := getVolume(e.node.Store().ReadTxn(), "vol-1"); v == nil || v.Attachment == nil {
		t.Fatalf("after refusals: %+v", v)
	}
}
