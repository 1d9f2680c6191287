package volume

import (
	"context"
	"log/slog"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage"
)

// A volume's origin is the snapshot it was made from, not the snapshots
// taken of it since; a clone's is the volume it copies; once the snapshot
// is deleted, the volume it was taken of.
func TestOrigin(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	for _, n := range []string{"node1", "node2"} {
		e.addDisk(n, "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	}
	svc := NewService(Deps{Cluster: e.node, Identity: e.id, Provisioner: &recorder{}, Logger: slog.Default()})
	ctx := context.Background()
	data, err := svc.Create(ctx, e.nurse, Create{Name: "data", SizeGiB: 1})
	e.must(err)
	origin := func(ref string) *Origin {
		t.Helper()
		o, err := svc.Origin(e.nurse, ref)
		e.must(err)
		return o
	}
	s1, err := svc.CreateSnapshot(ctx, e.nurse, "data", "s1")
	e.must(err)
	if o := origin("data"); o != nil {
		t.Fatalf("a volume with a snapshot of its own was made from %+v", o)
	}
	_, err = svc.Create(ctx, e.nurse, Create{Name: "restored", Snapshot: "s1"})
	e.must(err)
	_, err = svc.CreateSnapshot(ctx, e.nurse, "restored", "r1")
	e.must(err)
	if o := origin("restored"); o == nil || o.Snapshot != "s1" || o.SnapshotID != s1.ID || o.Volume != data.ID || o.VolumeName != "data" || !o.At.Equal(s1.CreatedAt) {
		t.Fatalf("restored was made from %+v", o)
	}
	_, err = svc.Create(ctx, e.nurse, Create{Name: "copy", Source: "data"})
	e.must(err)
	if o := origin("copy"); o == nil || o.Snapshot != "" || o.Volume != data.ID || o.VolumeName != "data" {
		t.Fatalf("the clone was made from %+v", o)
	}
	_, err = svc.DeleteSnapshot(ctx, e.nurse, "s1", 0)
	e.must(err)
	if o := origin("restored"); o == nil || o.Snapshot != "" || o.VolumeName != "data" {
		t.Fatalf("after its snapshot was deleted, restored was made from %+v", o)
	}
	if _, err := svc.Origin(e.tech, "restored"); err == nil {
		t.Fatal("another project's member learnt a volume's origin")
	}
}
