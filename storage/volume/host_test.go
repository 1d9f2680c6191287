package volume

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestHostCreateListRemove(t *testing.T) {
	files := newFakeFiles()
	disks := map[string]string{"d1": t.TempDir(), "d2": t.TempDir()}
	h := newHost(func() map[string]string { return disks }, wireTestLog(t), files.seam())
	defer h.Close()

	if err := h.Create("d1", "a", 8*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := h.Create("d1", "a", 8*BlockSize, false); err != nil {
		t.Fatalf("create again: %v", err)
	}
	if err := h.Create("d2", "b", ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	if err := h.Create("d2", "a", 8*BlockSize, false); err == nil {
		t.Fatal("the same replica created on a second disk")
	}
	for _, bad := range []struct {
		disk, id string
		size     int64
	}{{"d3", "c", BlockSize}, {"d1", "../c", BlockSize}, {"d1", "", BlockSize}, {"d1", "c", 100}, {"d1", "c", 0}} {
		if err := h.Create(bad.disk, bad.id, bad.size, false); err == nil {
			t.Errorf("Create(%q, %q, %d) accepted", bad.disk, bad.id, bad.size)
		}
	}
	if _, err := os.Stat(filepath.Join(disks["d1"], hostVolumesDir, "a", "size")); err != nil {
		t.Fatalf("replica a is not on disk d1: %v", err)
	}
	// Something else in volumes/ is not a replica.
	os.WriteFile(filepath.Join(disks["d1"], hostVolumesDir, "stray"), nil, 0o600)
	got, err := h.List()
	if err != nil || len(got) != 2 || got["a"] != "d1" || got["b"] != "d2" {
		t.Fatalf("List = %v, %v", got, err)
	}

	// Local opens once and lends the same replica; its Close is not the
	// replica's.
	t1, err := h.Local("a")
	if err != nil {
		t.Fatal(err)
	}
	t2, _ := h.Local("a")
	t1.Close()
	mem := files.target(filepath.Join(disks["d1"], hostVolumesDir, "a"))
	if files.opens != 1 || mem.closed {
		t.Fatalf("%d opens, closed %v", files.opens, mem.closed)
	}
	if err := t2.WriteAt(context.Background(), 0, 1, make([]byte, BlockSize), 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Local("zz"); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("Local of a replica not here: %v", err)
	}
	if _, err := h.Local("../a"); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("Local of a path: %v", err)
	}

	if err := h.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if !mem.closed {
		t.Fatal("Remove left the replica open")
	}
	if _, err := os.Stat(filepath.Join(disks["d1"], hostVolumesDir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("replica a still there: %v", err)
	}
	if err := h.Remove("a"); err != nil {
		t.Fatalf("remove again: %v", err)
	}
	if _, err := h.Local("a"); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("Local after Remove: %v", err)
	}
	if got, _ := h.List(); len(got) != 1 || got["b"] != "d2" {
		t.Fatalf("List after Remove = %v", got)
	}
}

func TestHostSweep(t *testing.T) {
	files := newFakeFiles()
	disks := map[string]string{"d1": t.TempDir(), "d2": t.TempDir()}
	h := newHost(func() map[string]string { return disks }, wireTestLog(t), files.seam())
	defer h.Close()
	now := time.Now()
	h.now = func() time.Time { return now }
	old := now.Add(-sweepGrace - time.Minute)
	for id, disk := range map[string]string{"kept-old": "d1", "gone-old": "d1", "gone-young": "d2", "gone-old2": "d2"} {
		if err := h.Create(disk, id, BlockSize, false); err != nil {
			t.Fatal(err)
		}
		if id != "gone-young" {
			if err := os.Chtimes(filepath.Join(disks[disk], hostVolumesDir, id), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := h.Local("gone-old"); err != nil {
		t.Fatal(err)
	}
	keep := func(id string) bool { return id == "kept-old" }
	if err := h.Sweep(context.Background(), keep); err != nil {
		t.Fatal(err)
	}
	got, _ := h.List()
	if len(got) != 2 || got["kept-old"] != "d1" || got["gone-young"] != "d2" {
		t.Fatalf("after Sweep: %v", got)
	}
	if _, err := h.Local("gone-old"); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("a swept replica is still served: %v", err)
	}
	// Ten minutes on, the young one goes too.
	now = now.Add(sweepGrace + time.Second)
	if err := h.Sweep(context.Background(), keep); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.List(); len(got) != 1 || got["kept-old"] != "d1" {
		t.Fatalf("after the second Sweep: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Sweep(ctx, func(string) bool { return false }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sweep with an ended context: %v", err)
	}
}

// The Provisioner reaches other nodes over the cluster port and its own
// Host directly; errors keep their meaning.
func TestProvisioner(t *testing.T) {
	peer := newNode(t)
	selfFiles := newFakeFiles()
	selfDisks := map[string]string{"s1": t.TempDir()}
	self := newHost(func() map[string]string { return selfDisks }, wireTestLog(t), selfFiles.seam())
	defer self.Close()
	addr := func(node string) (string, bool) {
		if node == "n2" {
			return peer.addr, true
		}
		return "", false // "n1" (self) must not go over the network
	}
	p := NewProvisioner(func() *http.Client { return peer.client }, addr, "n1", self)
	ctx := context.Background()

	if err := p.Create(ctx, "n2", "d2", "r1", 2*ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := peer.host.List(); got["r1"] != "d2" {
		t.Fatalf("remote replicas: %v", got)
	}
	if err := p.Create(ctx, "n1", "s1", "r2", ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := self.List(); got["r2"] != "s1" {
		t.Fatalf("local replicas: %v", got)
	}
	if err := p.Create(ctx, "n2", "nodisk", "r3", ExtentSize, false); err == nil {
		t.Fatal("create on a disk the node does not have")
	}
	if err := p.Create(ctx, "n2", "d1", "r3", 100, false); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("create of an unaligned size: %v", err)
	}

	// Resize with the epoch: an older one is fenced.
	tgt, _ := peer.host.Local("r1")
	if _, err := tgt.Fence(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := p.Resize(ctx, "n2", "r1", 3, 3*ExtentSize); !errors.Is(err, ErrFenced) {
		t.Fatalf("resize with an old epoch: %v", err)
	}
	if err := p.Resize(ctx, "n2", "r1", 4, 3*ExtentSize); err != nil {
		t.Fatal(err)
	}
	if st, _ := tgt.Fence(ctx, 4); st.Size != 3*ExtentSize {
		t.Fatalf("remote size %d after Resize", st.Size)
	}
	if err := p.Resize(ctx, "n2", "nope", 4, ExtentSize); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("resize of a replica not there: %v", err)
	}
	if err := p.Resize(ctx, "n1", "r2", 0, 2*ExtentSize); err != nil {
		t.Fatal(err)
	}

	if err := p.Remove(ctx, "n2", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(ctx, "n2", "r1"); err != nil {
		t.Fatalf("remove again: %v", err)
	}
	if got, _ := peer.host.List(); len(got) != 0 {
		t.Fatalf("remote replicas after Remove: %v", got)
	}
	if err := p.Remove(ctx, "n1", "r2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := self.List(); len(got) != 0 {
		t.Fatalf("local replicas after Remove: %v", got)
	}
	if err := p.Remove(ctx, "n3", "r1"); err == nil {
		t.Fatal("a call to an unknown node succeeded")
	}
}

// Removing a replica ends the streams serving it: its writers see the
// connection end, and a new dial finds no replica.
func TestHostRemoveEndsStreams(t *testing.T) {
	n := newNode(t)
	n.replica(t, "r1", wireTestSize)
	n.replica(t, "r2", wireTestSize)
	r1 := n.dial(t, "r1")
	r2 := n.dial(t, "r2")
	ctx := context.Background()
	if err := r1.Flush(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := n.host.Remove("r1"); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 5*time.Second, func() bool { return errors.Is(r1.Flush(ctx, 0), ErrConnLost) })
	if _, err := Dial(ctx, n.client, n.addr, "r1"); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("dial of a removed replica: %v", err)
	}
	if err := r2.Flush(ctx, 0); err != nil {
		t.Fatalf("another replica's stream: %v", err)
	}
	n.host.Close()
	pollUntil(t, 5*time.Second, func() bool { return errors.Is(r2.Flush(ctx, 0), ErrConnLost) })
}

// The Provisioner makes layered replicas on any node; the kind is part of
// a replica's identity, so creating it again as the other kind fails.
func TestProvisionerLayered(t *testing.T) {
	peer := newNodeWith(t, defaultReplicaFiles())
	selfDisks := map[string]string{"s1": t.TempDir()}
	self := newHost(func() map[string]string { return selfDisks }, wireTestLog(t), defaultReplicaFiles())
	defer self.Close()
	addr := func(node string) (string, bool) { return peer.addr, node == "n2" }
	p := NewProvisioner(func() *http.Client { return peer.client }, addr, "n1", self)
	ctx := context.Background()
	for _, c := range []struct {
		node, disk string
		h          *Host
	}{{"n2", "d1", peer.host}, {"n1", "s1", self}} {
		if err := p.Create(ctx, c.node, c.disk, "lay-"+c.node, ExtentSize, true); err != nil {
			t.Fatal(err)
		}
		if err := p.Create(ctx, c.node, c.disk, "lay-"+c.node, ExtentSize, true); err != nil {
			t.Fatalf("create again: %v", err)
		}
		if err := p.Create(ctx, c.node, c.disk, "lay-"+c.node, ExtentSize, false); err == nil {
			t.Fatal("a layered replica created again as a plain one")
		}
		tgt, err := c.h.Local("lay-" + c.node)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := tgt.(sharedTarget).Target.(*DiskReplica); !ok || !r.Layered() {
			t.Fatalf("replica on %s is not layered", c.node)
		}
	}
}
