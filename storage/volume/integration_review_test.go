package volume

import (
	"context"
	"log/slog"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// noReads is lossy whose linearizable reads fail (no leader reachable).
type noReads struct{ *lossy }

func (n noReads) ConsistentRead(context.Context) error {
	return consensus.Errorf(consensus.CodeUnavailable, "no leader")
}

// The answer to "available" is lost and the outcome cannot be settled:
// nothing may be undone, yet the replicas of a volume the record says is
// available are removed.
func TestCreateUndoneOnlyOnceSettled(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.addDisk("node1", "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	e.addDisk("node2", "/d", storage.DiskActive, storage.HealthOK, 1<<40)
	l := noReads{&lossy{Node: e.node, lose: MsgSetVolumeState}}
	prov := &recorder{}
	svc := NewService(Deps{Cluster: l, Identity: identity.NewService(l, identity.DefaultConfig()), Provisioner: prov, Logger: slog.Default()})
	_, err := svc.Create(context.Background(), e.nurse, Create{Name: "data", SizeGiB: 1})
	t.Logf("create: %v; calls %q", err, prov.calls)
	vs, _ := svc.List(e.admin, "")
	for _, v := range vs {
		if v.State == StateAvailable && len(prov.live()) == 0 {
			t.Fatalf("volume %s is %s with every replica removed", v.Name, v.State)
		}
	}
}

// A detached volume's old writer still changes replica states.
func TestDetachEndsTheWriter(t *testing.T) {
	e := newVolEnv(t, identity.DefaultQuota)
	e.record("vol-1", "data", e.ward, 1, 3)
	_, err := e.apply(MsgAttachVolume, attachVolumeCmd{ID: "vol-1", Attachment: Attachment{Node: "node1"}})
	e.must(err)
	w, err := e.apply(MsgAcquireWriter, AcquireWriter{Volume: "vol-1", Node: "node1"})
	e.must(err)
	_, err = e.apply(MsgDetachVolume, detachVolumeCmd{ID: "vol-1"})
	e.must(err)
	_, err = e.apply(MsgSetReplicaState, SetReplicaState{Volume: "vol-1", Node: "node1", Epoch: w.Epoch, Replica: "vol-1-r1", State: ReplicaStale})
	if err == nil {
		t.Fatal("the writer of a detached volume marked a replica stale")
	}
}
