package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/erasure"
)

type shardNode struct {
	node   *consensus.Node
	agent  *storage.DiskAgent
	shards *storage.Shards
	disk   storage.Disk
}

// twoNodes runs two nodes, each with one disk and the shard server mounted on
// its cluster port.
func twoNodes(t *testing.T) []*shardNode { return twoNodesOn(t, t.TempDir(), storage.Reserve{}) }

// twoNodesOn puts the nodes' disks under base and keeps reserve on them.
func twoNodesOn(t *testing.T, base string, reserve storage.Reserve) []*shardNode {
	var sn []*shardNode
	c := consensustest.StartWith(t, 2, register, func(i int, n *consensus.Node) {
		id := identity.NewService(n, identity.DefaultConfig())
		svc := storage.NewService(n, id)
		agent := storage.NewDiskAgent(n, svc, slog.Default(), time.Second)
		agent.SetReserve(reserve)
		sh := storage.NewShards(n, agent)
		n.HandleRPC(storage.RPCPrefix, sh.Handler())
		sn = append(sn, &shardNode{node: n, agent: agent, shards: sh})
	})
	_ = c
	for _, s := range sn {
		dir := diskDir(t, base)
		if err := s.agent.EnsureDisks(context.Background(), []string{dir}); err != nil {
			t.Fatal(err)
		}
		runAgent(t, s.agent)
		s.disk = storage.Disk{ID: storage.DiskID(s.node.Name(), dir), Node: s.node.Name(), Path: dir}
	}
	for _, s := range sn {
		testutil.WaitFor(t, 10*time.Second, "disk open on "+s.node.Name(), func() error {
			if s.agent.Disk(s.disk.ID) == nil {
				return errors.New("not open")
			}
			return nil
		})
	}
	return sn
}

func TestShardsAcrossNodes(t *testing.T) {
	sn := twoNodes(t)
	a, b := sn[0], sn[1]
	ctx := context.Background()
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)

	w, err := a.shards.Create(ctx, b.disk, "obj.0", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; p = p[min(len(p), 100_000):] {
		if _, err := w.Write(p[:min(len(p), 100_000)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, reader := range []*shardNode{a, b} { // remote from a, local on b
		r, err := reader.shards.Open(ctx, b.disk, "obj.0")
		if err != nil {
			t.Fatal(err)
		}
		for _, rg := range [][2]int{{0, 10}, {1 << 20, 4096}, {len(data) - 5, 5}, {0, len(data)}} {
			buf := make([]byte, rg[1])
			if n, err := r.ReadAt(buf, int64(rg[0])); n != rg[1] || (err != nil && err != io.EOF) || !bytes.Equal(buf, data[rg[0]:rg[0]+rg[1]]) {
				t.Fatalf("%s reading %v: n=%d err=%v", reader.node.Name(), rg, n, err)
			}
		}
		// Past the end: EOF, not an error or bytes.
		if n, err := r.ReadAt(make([]byte, 8), int64(len(data))); n != 0 || err != io.EOF {
			t.Fatalf("%s reading past the end: n=%d err=%v", reader.node.Name(), n, err)
		}
		r.Close()
	}

	// A write aborted mid-stream leaves nothing on the peer.
	w, _ = a.shards.Create(ctx, b.disk, "obj.1", int64(len(data)))
	_, _ = w.Write(data[:1<<20])
	w.Abort()
	r, _ := a.shards.Open(ctx, b.disk, "obj.1")
	if _, err := r.ReadAt(make([]byte, 1), 0); !errors.Is(err, storage.ErrShardNotFound) {
		t.Fatalf("an aborted shard is readable: %v", err)
	}

	// A shard cut short is not committed, on a peer or on this node: the
	// writer promised its size.
	for _, writer := range []*shardNode{a, b} {
		w, err := writer.shards.Create(ctx, b.disk, "obj.2", int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(data[:len(data)-1])
		if err := w.Commit(); err == nil {
			t.Fatalf("%s: a shard one byte short was committed", writer.node.Name())
		}
		r, err := writer.shards.Open(ctx, b.disk, "obj.2")
		if err == nil { // a remote reader finds out on its first read
			_, err = r.ReadAt(make([]byte, 1), 0)
			r.Close()
		}
		if !errors.Is(err, storage.ErrShardNotFound) {
			t.Fatalf("%s: a short shard is readable: %v", writer.node.Name(), err)
		}
	}
	if err := a.shards.Delete(ctx, b.disk, "obj.0"); err != nil {
		t.Fatal(err)
	}
	r, _ = a.shards.Open(ctx, b.disk, "obj.0")
	if _, err := r.ReadAt(make([]byte, 1), 0); !errors.Is(err, storage.ErrShardNotFound) {
		t.Fatalf("a deleted shard is readable: %v", err)
	}

	// Without a certificate of the cluster CA, the shard server says no.
	addr, _ := a.node.PeerAddr(b.node.Name())
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := anon.Get("https://" + addr + storage.RPCPrefix + b.disk.ID + "/obj.0")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous shard read: %s", res.Status)
	}
}

// An object encoded 4+2 with its shards spread over both nodes decodes back
// through the shard readers, local and remote, with two shards missing.
func TestErasureOverShardServers(t *testing.T) {
	sn := twoNodes(t)
	ctx := context.Background()
	l := erasure.Layout{Data: 4, Parity: 2, StripeSize: 64 << 10}
	data := make([]byte, 1<<20+333)
	_, _ = rand.Read(data)
	disks := []storage.Disk{sn[0].disk, sn[1].disk}
	ws := make([]io.Writer, l.Shards())
	sws := make([]storage.ShardWriter, l.Shards())
	for i := range ws {
		w, err := sn[0].shards.Create(ctx, disks[i%2], fmt.Sprintf("o1.%d", i), l.ShardSize(int64(len(data))))
		if err != nil {
			t.Fatal(err)
		}
		ws[i], sws[i] = w, w
	}
	encode(t, l, data, ws)
	for _, w := range sws {
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	src := make([]io.ReaderAt, l.Shards())
	for i := range src {
		if i == 0 || i == 3 {
			continue // lost
		}
		r, err := sn[1].shards.Open(ctx, disks[i%2], fmt.Sprintf("o1.%d", i))
		if err != nil {
			t.Fatal(err)
		}
		src[i] = r
	}
	var out bytes.Buffer
	bad, err := erasure.Decode(&out, l, int64(len(data)), src, nil, 0, int64(len(data)))
	if err != nil || !bytes.Equal(out.Bytes(), data) || len(bad) != 2 {
		t.Fatalf("decode over shard servers: err=%v bad=%v equal=%v", err, bad, bytes.Equal(out.Bytes(), data))
	}
}

// Verify checks a shard on the node that holds it and reports intact,
// missing or corrupt (deleting a corrupt one), locally and from a peer. A
// node that cannot be asked gives an error that is none of those.
func TestVerifyWhereTheShardLies(t *testing.T) {
	sn := twoNodes(t)
	a, b := sn[0], sn[1]
	ctx := context.Background()
	l := erasure.Layout{Data: 2, Parity: 1, StripeSize: 64 << 10}
	data := make([]byte, 200_000)
	_, _ = rand.Read(data)
	size := int64(len(data))
	write := func(key string, index int) {
		t.Helper()
		ws := make([]io.Writer, l.Shards())
		var ours storage.ShardWriter
		for i := range ws {
			if i == index {
				w, err := a.shards.Create(ctx, b.disk, key, l.ShardSize(size))
				if err != nil {
					t.Fatal(err)
				}
				ws[i], ours = w, w
			} else {
				ws[i] = io.Discard
			}
		}
		encode(t, l, data, ws)
		if err := ours.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	write("d.1", 1)
	for _, asker := range []*shardNode{a, b} { // from a peer, and on its own node
		if err := asker.shards.Verify(ctx, b.disk, "d.1", l, size, 1); err != nil {
			t.Fatalf("%s: intact shard: %v", asker.node.Name(), err)
		}
		if err := asker.shards.Verify(ctx, b.disk, "d.1", l, size, 2); !errors.Is(err, erasure.ErrCorrupt) {
			t.Fatalf("%s: shard checked as another index: %v", asker.node.Name(), err)
		}
		if err := asker.shards.Verify(ctx, b.disk, "nothing.1", l, size, 1); !errors.Is(err, storage.ErrShardNotFound) {
			t.Fatalf("%s: missing shard: %v", asker.node.Name(), err)
		}
		write("d.1", 1) // the wrong-index check above deleted it as corrupt
	}

	// One flipped byte: corrupt, and deleted where it lies.
	for _, asker := range []*shardNode{a, b} {
		write("d.1", 1)
		path := shardPath(t, b, "d.1")
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)-100] ^= 1
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := asker.shards.Verify(ctx, b.disk, "d.1", l, size, 1); !errors.Is(err, erasure.ErrCorrupt) {
			t.Fatalf("%s: corrupt shard: %v", asker.node.Name(), err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the corrupt shard is still there: %v", asker.node.Name(), err)
		}
	}

	// A node nobody can reach, or a disk its node has not open: an error,
	// but not a verdict on the shard.
	for _, d := range []storage.Disk{{ID: "disk-x", Node: "no-such-node"}, {ID: "disk-x", Node: b.node.Name()}, {ID: "disk-x", Node: a.node.Name()}} {
		err := a.shards.Verify(ctx, d, "d.1", l, size, 1)
		if err == nil || errors.Is(err, erasure.ErrCorrupt) || errors.Is(err, storage.ErrShardNotFound) {
			t.Fatalf("verify on %+v: %v", d, err)
		}
	}
}

// shardPath is where shard key lies on n's disk.
func shardPath(t *testing.T, n *shardNode, key string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(n.disk.Path, "shards", "*", key))
	if len(m) != 1 {
		t.Fatalf("shard %s on %s: %v", key, n.node.Name(), m)
	}
	return m[0]
}

// encode writes data's shards in layout l to ws.
func encode(t *testing.T, l erasure.Layout, data []byte, ws []io.Writer) {
	t.Helper()
	enc, err := erasure.NewEncoder(l, int64(len(data)), ws)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
}
