package volume

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
