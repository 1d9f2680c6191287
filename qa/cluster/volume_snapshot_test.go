package cluster_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/scribble"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/volume"
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

	// Deleted snapshots are merged into the one volume left reading
	// through to them, by its writer, with the guest's view unchanged:
	// first the hidden snapshot copy was made through (copy alone reads
	// through to it), then s1 once restored is gone.
	mergedInto := func(name, parent string) {
		t.Helper()
		testutil.WaitFor(t, 2*time.Minute, name+" layered on "+parent, func() error {
			if v := getVolume(t, a, name); v.Parent != parent {
				return fmt.Errorf("%s reads through to %q", name, v.Parent)
			}
			return nil
		})
	}
	mergedInto("copy", s1.ID)
	if err := qemuIO(cp, "", "read -P 201 0 64k"); err != nil {
		t.Fatalf("copy after a merge: %v", err)
	}
	verifyChunks(t, cp, span(1, all))
	if err := a.Call("POST", "/api/v1/volumes/restored/detach?project=ward", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	x.ok("", "volume", "delete", "restored")
	mergedInto("copy", "")
	if err := qemuIO(cp, "", "read -P 201 0 64k"); err != nil {
		t.Fatalf("copy after the last merge: %v", err)
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

// snapshotWhileGuestWrites is the snapshot test with a guest: the
// test guest scribbles numbered, checksummed records onto a volume, each
// made durable before the next; a snapshot taken meanwhile freezes it
// through its guest agent (fsfreeze), and the snapshot, exported to
// nbdcopy, holds exactly the records written before the freeze. Then a
// clone of the VM's running boot volume boots another VM.
func snapshotWhileGuestWrites(t *testing.T, a *cairntest.Client, vm string) {
	t.Helper()
	const name = "scribbled"
	scribbleVolume(t, a, name, vm)
	progress := regexp.MustCompile(`cairn-guest: scribble vd[a-z]+ seq=(\d+)`)
	testutil.WaitFor(t, 2*time.Minute, "the guest scribbling", func() error {
		m := progress.FindAllStringSubmatch(serialLog(t, a, vm), -1)
		if len(m) == 0 {
			return fmt.Errorf("no progress yet")
		}
		if n, _ := strconv.Atoi(m[len(m)-1][1]); n < 200 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	var snap snapInfo
	if err := a.Call("POST", "/api/v1/volumes/"+name+"/snapshots?project=clinic", map[string]string{"name": name + "-snap"}, 201, &snap); err != nil {
		t.Fatal(err)
	}
	if !snap.Quiesced || snap.State != "available" {
		t.Fatalf("a snapshot of a volume whose guest runs the agent: %+v", snap)
	}
	var frozen uint64
	testutil.WaitFor(t, time.Minute, "the guest frozen and thawed", func() error {
		log := serialLog(t, a, vm)
		m := regexp.MustCompile(`cairn-guest: frozen scribble=(\d+)`).FindStringSubmatchIndex(log)
		if m == nil {
			return fmt.Errorf("not frozen")
		}
		frozen, _ = strconv.ParseUint(log[m[2]:m[3]], 10, 64)
		if !strings.Contains(log[m[1]:], "cairn-guest: thawed") {
			return fmt.Errorf("frozen at %d, not thawed", frozen)
		}
		return nil
	})
	last := exportAndCheck(t, a, "/api/v1/snapshots/"+snap.ID)
	if last != frozen {
		t.Fatalf("the snapshot holds records 1..%d; the guest was frozen after record %d", last, frozen)
	}
	// The guest goes on after the thaw.
	testutil.WaitFor(t, time.Minute, "the guest scribbling after the thaw", func() error {
		m := progress.FindAllStringSubmatch(serialLog(t, a, vm), -1)
		if n, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64); n <= frozen {
			return fmt.Errorf("at %d", n)
		}
		return nil
	})

	// A clone of the running VM's boot volume boots another VM.
	src, err := getVM(a, vm)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": "cloned", "project": "clinic", "image": "guest", "flavor": "tiny",
		"boot_source": src.Spec.BootVolume}, 201, nil); err != nil {
		t.Fatal(err)
	}
	cl := waitVM(t, a, "cloned", 4*time.Minute, "running", inState("running"))
	waitSerial(t, a, "cloned", "cairn-guest: hostname=cloned", 1)
	var bv volInfo
	if err := a.Call("GET", "/api/v1/volumes/"+cl.Spec.BootVolume, nil, 200, &bv); err != nil {
		t.Fatal(err)
	}
	if bv.Parent == "" || bv.Source != nil {
		t.Fatalf("the clone's boot volume is not layered on a snapshot of %s's: %+v", vm, bv)
	}
	if err := a.Call("DELETE", "/api/v1/vms/cloned", nil, 202, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Minute, "cloned gone", func() error {
		if _, err := getVM(a, "cloned"); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if err := a.Call("POST", "/api/v1/volumes/"+name+"/detach?project=clinic", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, name+" detached", func() error {
		if v := getVolumeIn(t, a, name, "clinic"); v.State != "available" {
			return fmt.Errorf("%s", v.State)
		}
		return nil
	})
	for _, del := range []string{"/api/v1/volumes/" + name + "?project=clinic", "/api/v1/snapshots/" + snap.ID} {
		if err := a.Call("DELETE", del, nil, 200, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func getVolumeIn(t *testing.T, a *cairntest.Client, name, project string) volInfo {
	t.Helper()
	var v volInfo
	if err := a.Call("GET", "/api/v1/volumes/"+name+"?project="+project, nil, 200, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// scribbleVolume makes a 1 GiB volume whose first block tells the test
// guest to scribble on it (qa/scribble), and hot-plugs it into vm.
func scribbleVolume(t *testing.T, a *cairntest.Client, name, vm string) {
	t.Helper()
	if err := a.Call("POST", "/api/v1/volumes", map[string]any{"name": name, "size_gib": 1, "project": "clinic"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, scribble.BlockSize)
	copy(first, scribble.Magic())
	req, _ := http.NewRequest("POST", a.URL("/api/v1/volumes/"+name+"/upload?project=clinic"), bytes.NewReader(first))
	req.Header.Set("Authorization", "Bearer "+a.Token())
	req.ContentLength = int64(len(first))
	res, err := a.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("upload the magic block: %s %s", res.Status, body)
	}
	if err := a.Call("POST", "/api/v1/volumes/"+name+"/attach?project=clinic", map[string]string{"vm": vm}, 200, nil); err != nil {
		t.Fatal(err)
	}
}

// exportAndCheck exports a detached volume or a snapshot (path: its API
// path, with ?project= where it needs one), copies it out with nbdcopy,
// ends the export, and returns the last scribbled record it holds.
func exportAndCheck(t *testing.T, a *cairntest.Client, path string) uint64 {
	t.Helper()
	base, query, _ := strings.Cut(path, "?")
	if query != "" {
		query = "?" + query
	}
	certs := filepath.Join(t.TempDir(), "export")
	var grant volume.ExportGrant
	if err := a.Call("POST", base+"/export"+query, nil, 200, &grant); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	for f, data := range map[string]string{"ca-cert.pem": grant.CACert, "client-cert.pem": grant.Cert, "client-key.pem": grant.Key} {
		if err := os.WriteFile(filepath.Join(certs, f), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw := filepath.Join(t.TempDir(), "scribbled.raw")
	if out, err := exec.Command("nbdcopy", grant.URI+"?tls-certificates="+certs, raw).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy from %s's export: %v\n%s", path, err, out)
	}
	if err := a.Call("DELETE", base+"/export"+query, nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	last, err := scribble.Check(f, 1<<30)
	if err != nil {
		t.Fatalf("%s as the guest wrote it: %v", path, err)
	}
	return last
}
