package volume

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// Layered replicas that disagree are made equal at open with presence: a
// block only one of them zeroed is present in both afterwards, one none
// wrote in neither.
func TestOpenReconcilesLayered(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	parent := r.add("p", false)
	pdata := random(int(r.size))
	if err := parent.WriteAt(ctx, 0, 1, pdata, 0, false); err != nil {
		t.Fatal(err)
	}
	r.add("a", true)
	r.add("b", true)
	// A writer stopped after its writes reached a only.
	if err := r.rep("a").WriteAt(ctx, 1, 7, random(BlockSize), ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	if err := r.rep("a").Zero(ctx, 1, 8, ExtentSize+2*BlockSize, BlockSize, true); err != nil {
		t.Fatal(err)
	}
	w := r.open(parent, "a", "b")
	if w.Stats().ResyncExtents != 1 {
		t.Fatalf("reconcile copied %d extents, want 1", w.Stats().ResyncExtents)
	}
	r.sameExtents("a", "b")
	pa, ha := r.layer("a", ExtentSize, ExtentSize)
	pb, hb := r.layer("b", ExtentSize, ExtentSize)
	if !bytes.Equal(pa, pb) || !equalPresence(ha, hb) || !hb.Has(0) || hb.Has(1) || !hb.Has(2) {
		t.Fatal("the replicas differ after open")
	}
	got := make([]byte, 3*BlockSize)
	if err := w.ReadAt(ctx, got, ExtentSize); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:BlockSize], pa[:BlockSize]) || !bytes.Equal(got[BlockSize:2*BlockSize], pdata[ExtentSize+BlockSize:ExtentSize+2*BlockSize]) ||
		!bytes.Equal(got[2*BlockSize:], make([]byte, BlockSize)) {
		t.Fatal("the volume reads wrong after open")
	}
}

// A corrupt block of a layered replica is served and repaired from
// another, with the blocks each holds, so both end identical.
func TestWriterReadRepairLayered(t *testing.T) {
	ctx := context.Background()
	r := newSnapRig(t, 4<<20)
	parent := r.add("p", false)
	pdata := random(int(r.size))
	if err := parent.WriteAt(ctx, 0, 1, pdata, 0, false); err != nil {
		t.Fatal(err)
	}
	r.add("a", true)
	r.add("b", true)
	w := r.open(parent, "a", "b")
	mine := random(2 * BlockSize)
	if err := w.WriteAt(ctx, mine, ExtentSize+4*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(r.dirs["a"], dataFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{mine[100] ^ 0xff}, ExtentSize+4*BlockSize+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, 8*BlockSize)
	if err := w.ReadAt(ctx, got, ExtentSize); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(pdata[ExtentSize : ExtentSize+8*BlockSize])
	copy(want[4*BlockSize:], mine)
	if !bytes.Equal(got, want) {
		t.Fatal("the read over a corrupt block is wrong")
	}
	if w.Stats().Repairs != 1 {
		t.Fatalf("repairs = %d", w.Stats().Repairs)
	}
	r.sameExtents("a", "b")
	pa, ha := r.layer("a", 0, r.size)
	pb, hb := r.layer("b", 0, r.size)
	if !bytes.Equal(pa, pb) || !equalPresence(ha, hb) {
		t.Fatal("the repaired replica differs")
	}
}

// Over the replica protocol, a stale layered replica is caught up with
// the blocks present in the in-sync one, and the two end identical.
func TestWriterCatchUpLayeredRemote(t *testing.T) {
	ctx := context.Background()
	n := newNodeWith(t, defaultReplicaFiles())
	const size = 4 << 20
	for _, c := range [][2]string{{"d1", "a"}, {"d2", "b"}} {
		if err := n.host.Create(c[0], c[1], size, true); err != nil {
			t.Fatal(err)
		}
	}
	parentDir := filepath.Join(t.TempDir(), "p")
	if err := CreateReplica(parentDir, size, false); err != nil {
		t.Fatal(err)
	}
	parent, err := OpenReplica(parentDir)
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	pdata := random(size)
	if err := parent.WriteAt(ctx, 0, 1, pdata, 0, false); err != nil {
		t.Fatal(err)
	}
	var bDown atomic.Bool // b is reached only after the writes, so it is copied
	bDown.Store(true)
	state := &testState{epoch: 1, states: map[string]string{"a": ReplicaInSync, "b": ReplicaStale}}
	w, err := OpenWriter(ctx, WriterConfig{VolumeID: "vol", Epoch: 1, Size: size, MinInSync: 1, Control: state,
		Members: []Member{{ID: "a", Node: "n", State: ReplicaInSync}, {ID: "b", Node: "n", State: ReplicaStale}},
		Dial: func(ctx context.Context, m Member) (Target, error) {
			if m.ID == "b" && bDown.Load() {
				return nil, errCut
			}
			return Dial(ctx, n.client, n.addr, m.ID)
		},
		RetryInterval: 20e6, Base: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	mine := random(3 * BlockSize)
	if err := w.WriteAt(ctx, mine, ExtentSize+BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Trim(ctx, 2*ExtentSize, BlockSize); err != nil {
		t.Fatal(err)
	}
	bDown.Store(false)
	pollUntil(t, 10e9, func() bool { return w.Replicas()["b"] == ReplicaInSync })
	if c := w.Stats().ResyncExtents; c != 2 {
		t.Fatalf("the catch-up copied %d extents, want 2", c)
	}
	extents := func(id string) []ExtentInfo {
		tg, err := n.host.Local(id)
		if err != nil {
			t.Fatal(err)
		}
		xs, err := tg.Extents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return xs
	}
	xa, xb := extents("a"), extents("b")
	for i := range xa {
		if xa[i] != xb[i] {
			t.Fatalf("extent %d: a %+v, b %+v", i, xa[i], xb[i])
		}
	}
	if xb[1].Digest == 0 || xb[2].Digest == 0 {
		t.Fatalf("b's written extents digest as empty: %+v", xb)
	}
	got := make([]byte, 2*ExtentSize)
	if err := w.ReadAt(ctx, got, ExtentSize); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(pdata[ExtentSize : 3*ExtentSize])
	copy(want[BlockSize:], mine)
	clear(want[ExtentSize : ExtentSize+BlockSize])
	if !bytes.Equal(got, want) {
		t.Fatal("the volume reads wrong")
	}
}
