package volume

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func openTestReplica(t *testing.T, size int64, layered bool) (*DiskReplica, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "r")
	if err := CreateReplica(dir, size, layered); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReplica(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir
}

func presentBlocks(have Presence, n int64) []int64 {
	var out []int64
	for i := range n {
		if have.Has(i) {
			out = append(out, i)
		}
	}
	return out
}

// A layered replica tells a block it never wrote (absent: the parent's)
// from one written or zeroed there, punched or not.
func TestLayeredReplicaPresence(t *testing.T) {
	ctx := context.Background()
	r, _ := openTestReplica(t, 2*ExtentSize, true)
	if !r.Layered() {
		t.Fatal("not layered")
	}
	data := random(BlockSize)
	if err := r.WriteAt(ctx, 0, 1, data, 1*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Zero(ctx, 0, 2, 3*BlockSize, BlockSize, true); err != nil {
		t.Fatal(err)
	}
	if err := r.Zero(ctx, 0, 3, 5*BlockSize, BlockSize, false); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 8*BlockSize)
	have := NewPresence(8)
	have.Set(0) // cleared by the call
	if err := r.ReadLayer(ctx, p, 0, have); err != nil {
		t.Fatal(err)
	}
	if got := presentBlocks(have, 8); len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 5 {
		t.Fatalf("present blocks %v, want [1 3 5]", got)
	}
	want := make([]byte, 8*BlockSize)
	copy(want[BlockSize:], data)
	if !bytes.Equal(p, want) {
		t.Fatal("ReadLayer bytes differ")
	}
	// ReadAt reads the same bytes.
	q := make([]byte, len(p))
	if err := r.ReadAt(ctx, q, 0); err != nil || !bytes.Equal(q, want) {
		t.Fatalf("ReadAt: %v", err)
	}
	// A present zero block counts in the digest: an extent only punched
	// differs from one never written.
	if err := r.Zero(ctx, 0, 4, ExtentSize, ExtentSize, true); err != nil {
		t.Fatal(err)
	}
	xs, err := r.Extents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if xs[1].Digest == 0 {
		t.Fatal("a punched extent of a layered replica digests as never written")
	}
	have = NewPresence(blocksPerExtent)
	if _, err := r.ReadExtent(ctx, 1, make([]byte, ExtentSize), have); err != nil {
		t.Fatal(err)
	}
	if n := len(presentBlocks(have, blocksPerExtent)); n != blocksPerExtent {
		t.Fatalf("%d blocks of the punched extent present, want all", n)
	}
	if err := r.ReadLayer(ctx, make([]byte, 65*BlockSize), 0, NewPresence(64)); err == nil {
		t.Fatal("a presence too short was accepted")
	}
}

// Copying extents with presence makes an identical layered replica; nil
// presence means every block present.
func TestLayeredReplicaCopy(t *testing.T) {
	ctx := context.Background()
	src, _ := openTestReplica(t, 3*ExtentSize, true)
	dst, _ := openTestReplica(t, 3*ExtentSize, true)
	if err := src.WriteAt(ctx, 0, 5, random(3*BlockSize), 2*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := src.Zero(ctx, 0, 6, 10*BlockSize, 4*BlockSize, true); err != nil {
		t.Fatal(err)
	}
	if err := src.Zero(ctx, 0, 7, ExtentSize+BlockSize, BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := src.WriteAt(ctx, 0, 8, make([]byte, BlockSize), ExtentSize+7*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	// dst has a block present where src has none: the copy takes it away.
	if err := dst.WriteAt(ctx, 0, 1, random(BlockSize), 100*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	es, err := src.Extents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ExtentSize)
	have := NewPresence(blocksPerExtent)
	for i := range int64(2) {
		n, err := src.ReadExtent(ctx, i, buf, have)
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.WriteExtent(ctx, 0, i, es[i].Gen, buf[:n], have); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := dst.Extents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if ds[i] != es[i] {
			t.Fatalf("extent %d: copy %+v, source %+v", i, ds[i], es[i])
		}
	}
	for i := range int64(2) {
		a, b := NewPresence(blocksPerExtent), NewPresence(blocksPerExtent)
		pa, pb := make([]byte, ExtentSize), make([]byte, ExtentSize)
		if err := src.ReadLayer(ctx, pa, i*ExtentSize, a); err != nil {
			t.Fatal(err)
		}
		if err := dst.ReadLayer(ctx, pb, i*ExtentSize, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pa, pb) || !equalPresence(a, b) {
			t.Fatalf("extent %d differs after the copy", i)
		}
	}
	if got := presentBlocks(func() Presence {
		h := NewPresence(blocksPerExtent)
		_, _ = dst.ReadExtent(ctx, 0, buf, h)
		return h
	}(), blocksPerExtent); len(got) != 7 {
		t.Fatalf("present after the copy: %v, want the 3 written and 4 zeroed", got)
	}
	// Without presence every block of a layered replica is present.
	if err := dst.WriteExtent(ctx, 0, 2, 9, make([]byte, ExtentSize), nil); err != nil {
		t.Fatal(err)
	}
	h := NewPresence(blocksPerExtent)
	if _, err := dst.ReadExtent(ctx, 2, buf, h); err != nil || len(presentBlocks(h, blocksPerExtent)) != blocksPerExtent {
		t.Fatalf("WriteExtent(nil) left %d blocks present, %v", len(presentBlocks(h, blocksPerExtent)), err)
	}
	if err := dst.WriteExtent(ctx, 0, 2, 9, buf, NewPresence(1)); err == nil {
		t.Fatal("a presence too short was accepted")
	}
}

// The layered mark is on disk and survives a reopen; creating the replica
// again is idempotent only with the same kind.
func TestLayeredReplicaMarker(t *testing.T) {
	ctx := context.Background()
	r, dir := openTestReplica(t, ExtentSize, true)
	if err := r.Zero(ctx, 0, 1, 0, BlockSize, true); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := CreateReplica(dir, ExtentSize, true); err != nil {
		t.Fatalf("create again: %v", err)
	}
	if err := CreateReplica(dir, ExtentSize, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create as not layered: %v", err)
	}
	r, err := OpenReplica(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Layered() {
		t.Fatal("not layered after a reopen")
	}
	have := NewPresence(2)
	if err := r.ReadLayer(ctx, make([]byte, 2*BlockSize), 0, have); err != nil || !have.Has(0) || have.Has(1) {
		t.Fatalf("after a reopen: present %v, %v", presentBlocks(have, 2), err)
	}

	plain, pdir := openTestReplica(t, ExtentSize, false)
	if plain.Layered() {
		t.Fatal("a plain replica is layered")
	}
	if _, err := os.Stat(filepath.Join(pdir, layeredFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a plain replica has a marker: %v", err)
	}
	if err := CreateReplica(pdir, ExtentSize, true); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create a plain replica as layered: %v", err)
	}
}

// A replica that is not layered behaves as before: a punched block is
// unwritten (digest 0), every block is present, and WriteExtent ignores
// presence.
func TestPlainReplicaUnchanged(t *testing.T) {
	ctx := context.Background()
	r, _ := openTestReplica(t, 2*ExtentSize, false)
	if err := r.Zero(ctx, 0, 1, 0, ExtentSize, true); err != nil {
		t.Fatal(err)
	}
	if err := r.Zero(ctx, 0, 2, ExtentSize, BlockSize, false); err != nil {
		t.Fatal(err)
	}
	xs, err := r.Extents(ctx)
	if err != nil || xs[0].Digest != 0 || xs[1].Digest != 0 {
		t.Fatalf("Extents = %+v, %v; want zero digests", xs, err)
	}
	have := NewPresence(4)
	if err := r.ReadLayer(ctx, make([]byte, 4*BlockSize), 0, have); err != nil || len(presentBlocks(have, 4)) != 4 {
		t.Fatalf("ReadLayer: present %v, %v", presentBlocks(have, 4), err)
	}
	data := random(ExtentSize)
	if err := r.WriteExtent(ctx, 0, 0, 3, data, NewPresence(blocksPerExtent)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, ExtentSize)
	if _, err := r.ReadExtent(ctx, 0, got, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("WriteExtent with an empty presence did not write: %v", err)
	}
}
