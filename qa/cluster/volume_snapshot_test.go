package cluster_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

type snapInfo struct {
	ID       string       `json:"id"`
	Name     string       `json:"name"`
	State    string       `json:"state"`
	Of       string       `json:"of"`
	Parent   string       `json:"parent"`
	Quiesced bool         `json:"quiesced"`
	Replicas []volReplica `json:"replicas"`
}

// Snapshots and copy-on-write clones on three nodes, through the cairn CLI
// and NBD clients (qemu-io, nbdcopy): a snapshot taken while a client
// writes holds exactly the writes acknowledged before it; the volume and
// its clones then change apart; a clone of an attached volume is the
// volume as it was; deleting the parent volume and the snapshot keeps the
// clones whole; a snapshot is exported to nbdcopy.
func TestVolumeSnapshotsAndClones(t *testing.T) {
	const all = 80 // chunks written
	c, a := volumeCluster(t)
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	bin := harness.BuildCairn(t)
	endpoint := []string{"CAIRN_ENDPOINT=https://" + n1.IP + ":8443", "CAIRN_CA_CERT=" + filepath.Join(n1.DataDir, "ca.crt")}
	x := &cli{t: t, bin: bin, env: append([]string{"CAIRN_CONFIG=" + filepath.Join(t.TempDir(), "admin.json")}, endpoint...)}
	x.ok(cairntest.AdminPassword+"\n", "login", "--username", "admin", "--password-stdin")

	x.ok("", "volume", "create", "db", "--size", "1", "--project", "ward")
	db := attachHost(t, a, "db", n1)
	if err := qemuIO(db, "", writeChunks(0, 16, 0)...); err != nil {
		t.Fatal(err)
	}

	// Snapshot while qemu-io writes chunks 16-79, one request each, a
	// flush and a pause after every eighth.
	writing := make(chan error, 1)
	go func() { writing <- qemuIO(db, "", writeChunks(16, all, 400)...) }()
	time.Sleep(700 * time.Millisecond)
	var s1 snapInfo
	if err := json.Unmarshal([]byte(x.ok("", "volume", "snapshot", "create", "db", "s1", "-o", "json")), &s1); err != nil || s1.State != "available" {
		t.Fatalf("snapshot of an attached volume: %+v %v", s1, err)
	}
	if err := <-writing; err != nil {
		t.Fatalf("writes across the snapshot: %v", err)
	}
	dbInfo := getVolume(t, a, "db")
	if dbInfo.Degraded || dbInfo.InSync != 3 {
		t.Fatalf("db after the snapshot: %+v", dbInfo)
	}
	verifyChunks(t, db, span(0, all)) // the new replicas read through to the snapshot

	// The snapshot, through a volume made from it on another node: a
	// prefix of the writes, each chunk whole or absent.
	x.ok("", "volume", "create", "restored", "--snapshot", "s1", "--project", "ward")
	restored := attachHost(t, a, "restored", n2)
	k := snapshotPrefix(t, restored, all)
	if k < 16 || k == all {
		t.Fatalf("the snapshot holds chunks [0, %d): taken before the first write or after the last", k)
	}
	t.Logf("the snapshot holds chunks [0, %d)", k)

	// They change apart.
	if err := qemuIO(db, "", "write -P 201 0 64k", "flush"); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(restored, "", "write -P 202 262144 64k", "flush", "read -P 1 0 64k", "read -P 202 262144 64k"); err != nil {
		t.Fatalf("the volume's write reached the snapshot's clone: %v", err)
	}
	if err := qemuIO(db, "", "read -P 201 0 64k", fmt.Sprintf("read -P %d 262144 64k", chunkPattern(1))); err != nil {
		t.Fatalf("the clone's write reached the volume: %v", err)
	}

	// A clone of the attached volume, as it is now.
	x.ok("", "volume", "create", "copy", "--source", "db", "--project", "ward")
	cp := attachHost(t, a, "copy", n3)
	if err := qemuIO(cp, "", "read -P 201 0 64k"); err != nil {
		t.Fatal(err)
	}
	verifyChunks(t, cp, span(1, all))

	// Bad input changes nothing.
	for _, bad := range [][]string{
		{"volume", "snapshot", "create", "db", "s1"},                                                           // the name is taken
		{"volume", "snapshot", "create", "s1", "s9"},                                                           // a snapshot of a snapshot
		{"volume", "create", "tiny", "--size", "1", "--snapshot", "s1", "--source", "db", "--project", "ward"}, // both
		{"volume", "attach", "s1", "--node", n1.Name},                                                          // snapshots are read-only
		{"volume", "delete", "s1"},                                                                             // not a volume
	} {
		if out, err := x.run("", bad...); err == nil {
			t.Fatalf("cairn %s succeeded:\n%s", strings.Join(bad, " "), out)
		}
	}
	var listed []snapInfo
	if err := json.Unmarshal([]byte(x.ok("", "volume", "snapshot", "list", "--project", "ward", "-o", "json")), &listed); err != nil || len(listed) != 1 || listed[0].ID != s1.ID {
		t.Fatalf("snapshots listed after refused requests: %+v %v", listed, err)
	}

	// The parent volume and the snapshot go; the clones stay whole.
	if err := a.Call("POST", "/api/v1/volumes/db/detach?project=ward", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	x.ok("", "volume", "delete", "db")
	x.ok("", "volume", "snapshot", "delete", "s1")
	if out, err := x.run("", "volume", "snapshot", "show", "s1"); err == nil {
		t.Fatalf("a deleted snapshot is shown:\n%s", out)
	}
	if err := qemuIO(restored, "", "read -P 1 0 64k", "read -P 202 262144 64k"); err != nil {
		t.Fatalf("a volume made from a deleted snapshot lost data: %v", err)
	}
	verifyChunks(t, restored, span(2, k))
	if err := qemuIO(cp, "", "read -P 201 0 64k"); err != nil {
		t.Fatal(err)
	}
	verifyChunks(t, cp, span(1, all))

	// A detached volume's snapshot, exported to nbdcopy.
	if err := a.Call("POST", "/api/v1/volumes/copy/detach?project=ward", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	x.ok("", "volume", "snapshot", "create", "copy", "backup")
	certs := filepath.Join(t.TempDir(), "export")
	var grant struct {
		URI string `json:"uri"`
	}
	if err := json.Unmarshal([]byte(x.ok("", "volume", "export", "backup", "--dir", certs, "-o", "json")), &grant); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(t.TempDir(), "backup.raw")
	if out, err := exec.Command("nbdcopy", grant.URI, raw).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy from the snapshot's export: %v\n%s", err, out)
	}
	img, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(img) != 1<<30 || !bytes.Equal(img[:chunk], bytes.Repeat([]byte{201}, chunk)) {
		t.Fatalf("the exported snapshot: %d bytes, chunk 0 wrong", len(img))
	}
	for i := 1; i < all; i++ {
		if got := img[chunkOff(i) : chunkOff(i)+chunk]; !bytes.Equal(got, bytes.Repeat([]byte{chunkPattern(i)}, chunk)) {
			t.Fatalf("the exported snapshot's chunk %d differs", i)
		}
	}
	x.ok("", "volume", "export", "--stop", "backup")
	testutil.WaitFor(t, time.Minute, "the snapshot detached after its export", func() error {
		var s snapInfo
		if err := a.Call("GET", "/api/v1/snapshots/backup?project=ward", nil, 200, &s); err != nil {
			return err
		}
		if s.State != "available" {
			return fmt.Errorf("state %s", s.State)
		}
		return nil
	})
}

// snapshotPrefix reads chunks [0, n) through uri and returns k such that
// chunks [0, k) hold their pattern and [k, n) read as zeroes: a snapshot
// of sequential, acknowledged writes holds a prefix of them, and no chunk
// in part.
func snapshotPrefix(t *testing.T, uri string, n int) int {
	t.Helper()
	k := -1
	for i := 0; i < n; i++ {
		whole := qemuIO(uri, "", fmt.Sprintf("read -P %d %d %d", chunkPattern(i), chunkOff(i), chunk)) == nil
		zero := qemuIO(uri, "", fmt.Sprintf("read -P 0 %d %d", chunkOff(i), chunk)) == nil
		switch {
		case whole && k < 0:
		case zero && k < 0:
			k = i
		case zero:
		default:
			t.Fatalf("chunk %d is neither whole nor absent (prefix so far %d): the snapshot is torn", i, k)
		}
	}
	if k < 0 {
		k = n
	}
	return k
}
