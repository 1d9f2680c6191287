package cluster_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// Block volumes on three real nodes, driven by qemu-io (QEMU's own block
// layer and NBD client) through the NBD socket the writer's node serves.

type volReplica struct {
	ID    string `json:"id"`
	Node  string `json:"node"`
	Disk  string `json:"disk"`
	State string `json:"state"`
}

type volInfo struct {
	ID         string       `json:"id"`
	Name       string       `json:"name"`
	State      string       `json:"state"`
	SizeBytes  int64        `json:"size_bytes"`
	Writer     string       `json:"writer"`
	Epoch      uint64       `json:"epoch"`
	InSync     int          `json:"in_sync"`
	Degraded   bool         `json:"degraded"`
	ScrubbedAt time.Time    `json:"scrubbed_at"`
	Replicas   []volReplica `json:"replicas"`
	Attachment *struct {
		Node     string `json:"node"`
		VM       string `json:"vm"`
		Boot     bool   `json:"boot"`
		Firmware bool   `json:"firmware"`
	} `json:"attachment"`
	Source *struct {
		Image  string `json:"image"`
		Filled bool   `json:"filled"`
	} `json:"source"`
	Parent string `json:"parent"`
}

// vmBootVolume is the volume a VM boots from.
func vmBootVolume(t *testing.T, a *cairntest.Client, vm vmView) volInfo {
	t.Helper()
	if vm.Spec.BootVolume == "" {
		t.Fatalf("VM %s has no boot volume", vm.Name)
	}
	var v volInfo
	if err := a.Call("GET", "/api/v1/volumes/"+vm.Spec.BootVolume, nil, 200, &v); err != nil {
		t.Fatal(err)
	}
	if v.Attachment == nil || v.Attachment.VM != vm.ID || !v.Attachment.Boot {
		t.Fatalf("VM %s's boot volume is not attached to it: %+v", vm.Name, v)
	}
	return v
}

func volumeCluster(t *testing.T, extra ...string) (*harness.Cluster, *cairntest.Client) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: append([]string{"--disk", "disks/d1", "--disk-report-interval", "1s"}, extra...)})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	cairntest.WaitHealthyDisks(t, a, 3, 0)
	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "ward"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	return c, a
}

func getVolume(t *testing.T, a *cairntest.Client, name string) volInfo {
	t.Helper()
	var v volInfo
	if err := a.Call("GET", "/api/v1/volumes/"+name+"?project=ward", nil, 200, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// attachHost attaches the volume to a node's host and returns the path of
// the NBD socket it is served on there.
func attachHost(t *testing.T, a *cairntest.Client, name string, n *harness.Node) string {
	t.Helper()
	if err := a.Call("POST", "/api/v1/volumes/"+name+"/attach?project=ward", map[string]string{"node": n.Name}, 200, nil); err != nil {
		t.Fatal(err)
	}
	id := getVolume(t, a, name).ID
	var sock string
	testutil.WaitFor(t, 60*time.Second, "volume served on "+n.Name, func() error {
		m, _ := filepath.Glob("/run/cairn-qa/*/" + n.Name + "-volumes/" + id + ".sock")
		for _, p := range m {
			if strings.Contains(p, "/"+n.Cluster().Name()) || len(m) == 1 {
				sock = p
			}
		}
		if sock == "" {
			return fmt.Errorf("no socket for %s yet", id)
		}
		return qemuIO("nbd+unix:///"+id+"?socket="+sock, id, "read 0 4k")
	})
	return "nbd+unix:///" + id + "?socket=" + sock
}

// qemuIO runs qemu-io commands against an NBD URI; any failed command
// fails the run.
func qemuIO(uri, _ string, cmds ...string) error {
	_, err := qemuIOOut(uri, cmds...)
	return err
}

func qemuIOOut(uri string, cmds ...string) (string, error) {
	return qemuIORun([]string{"-f", "raw", uri}, cmds...)
}

// qemuIOLikeAVM runs qemu-io as a VM's disk reaches its volume: with the
// reconnect-delay the VM driver sets, so a reopened export (an agent's
// restart, a repair) pauses the I/O rather than failing it.
func qemuIOLikeAVM(uri string, cmds ...string) error {
	_, err := qemuIORun([]string{"--image-opts", nbdImageOpts(uri)}, cmds...)
	return err
}

func nbdImageOpts(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=%s,file.export=%s,file.reconnect-delay=%d",
		u.Query().Get("socket"), strings.TrimPrefix(u.Path, "/"), qemu.NBDReconnectDelay)
}

func qemuIORun(args []string, cmds ...string) (string, error) {
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	if err == nil && regexp.MustCompile(`(?i)(error|failed|mismatch)`).Match(out) {
		err = fmt.Errorf("qemu-io reported a failure")
	}
	if err != nil {
		return string(out), fmt.Errorf("qemu-io %s: %v\n%s", strings.Join(cmds, "; "), err, out)
	}
	return string(out), nil
}

const chunk = 64 << 10

func chunkOff(i int) int64    { return int64(i) * (256 << 10) }
func chunkPattern(i int) byte { return byte(i%250 + 1) }

// writeChunks writes chunks [from, to) with a flush after every group of
// eight and a pause between groups, so the run spans seconds.
func writeChunks(from, to int, pauseMs int) []string {
	var cmds []string
	for i := from; i < to; i++ {
		cmds = append(cmds, fmt.Sprintf("write -P %d %d %d", chunkPattern(i), chunkOff(i), chunk))
		if (i-from)%8 == 7 || i == to-1 {
			cmds = append(cmds, "flush", fmt.Sprintf("read -P %d %d 4k", chunkPattern(i), chunkOff(i)))
			if pauseMs > 0 {
				cmds = append(cmds, fmt.Sprintf("sleep %d", pauseMs))
			}
		}
	}
	return cmds
}

func verifyChunks(t *testing.T, uri string, chunks []int) {
	t.Helper()
	var cmds []string
	for _, i := range chunks {
		cmds = append(cmds, fmt.Sprintf("read -P %d %d %d", chunkPattern(i), chunkOff(i), chunk))
	}
	for len(cmds) > 0 {
		n := min(len(cmds), 200)
		// The export is reopened when the volume's replicas change (a
		// repair that just finished): a VM's disk waits for it, so this
		// waits too, up to half a minute, for the socket to be back. Any
		// other failure, a wrong byte above all, fails at once.
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := qemuIOOut(uri, cmds[:n]...)
			if err == nil {
				break
			}
			if !strings.Contains(out+err.Error(), "Failed to connect") || time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		cmds = cmds[n:]
	}
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func replicaOn(v volInfo, node string) volReplica {
	for _, r := range v.Replicas {
		if r.Node == node {
			return r
		}
	}
	return volReplica{}
}

func resyncBytes(t *testing.T, a *cairntest.Client, volID string) int64 {
	t.Helper()
	return metric(t, a, `cairn_volume_resync_bytes_total{volume="`+volID+`"}`)
}

// metric is a sample's value on a's node's /metrics (-1 if absent).
func metric(t *testing.T, a *cairntest.Client, series string) int64 {
	t.Helper()
	req, _ := http.NewRequest("GET", a.URL("/metrics"), nil)
	req.Header.Set("Authorization", "Bearer "+a.Token())
	res, err := a.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	prefix := series + " "
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return -1
}

// The data-survival test: a replica's box is killed in the middle
// of the writes, I/O carries on and every flushed write reads back; the box
// returns and only the extents written meanwhile are copied; then the
// client itself is killed mid-write and the volume, attached on another
// node, holds every flushed write.
func TestVolumeSurvivesLossOfABox(t *testing.T) {
	c, a := volumeCluster(t, "--volume-scrub-interval", "10s")
	var v volInfo
	if err := a.Call("POST", "/api/v1/volumes", map[string]any{"name": "pacs", "size_gib": 1, "project": "ward"}, 201, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Replicas) != 3 || v.State != "available" {
		t.Fatalf("a new volume on three nodes: %+v", v)
	}
	nodes := map[string]bool{}
	for _, r := range v.Replicas {
		nodes[r.Node] = true
	}
	if len(nodes) != 3 {
		t.Fatalf("replicas share a node: %+v", v.Replicas)
	}
	n1, n3 := c.Node(1), c.Node(3)
	uri := attachHost(t, a, "pacs", n1)
	if err := qemuIO(uri, "", writeChunks(0, 64, 0)...); err != nil {
		t.Fatal(err)
	}

	// Kill node3's agent while chunks 64..160 are being written.
	done := make(chan error, 1)
	go func() { done <- qemuIO(uri, "", writeChunks(64, 160, 100)...) }()
	time.Sleep(500 * time.Millisecond)
	n3.Kill()
	if err := <-done; err != nil {
		t.Fatalf("I/O stopped when a replica's box died: %v", err)
	}
	verifyChunks(t, uri, span(0, 160))
	if v := getVolume(t, a, "pacs"); replicaOn(v, n3.Name).State != "stale" || !v.Degraded || v.InSync != 2 {
		t.Fatalf("node3's replica while node3 is down: %+v, want stale, and the volume degraded with 2 in sync", v)
	}
	if got := metric(t, a, "cairn_volumes_degraded"); got != 1 {
		t.Fatalf("cairn_volumes_degraded is %d with node3 down", got)
	}
	if got := metric(t, a, `cairn_volume_replicas{state="stale",volume="`+v.ID+`"}`); got != 1 {
		t.Fatalf("cairn_volume_replicas{state=stale} is %d with node3 down", got)
	}

	// Node3 returns: only what was written meanwhile is copied back.
	n3.Start()
	cairntest.WaitReady(t, n3)
	testutil.WaitFor(t, 90*time.Second, "node3's replica back in sync", func() error {
		if st := replicaOn(getVolume(t, a, "pacs"), n3.Name).State; st != "in_sync" {
			return fmt.Errorf("replica is %s", st)
		}
		return nil
	})
	if v := getVolume(t, a, "pacs"); v.Degraded || v.InSync != 3 || metric(t, a, "cairn_volumes_degraded") != 0 {
		t.Fatalf("back in sync, yet degraded: %+v", v)
	}
	moved := resyncBytes(t, a, v.ID)
	// Chunks 64..160 lie in [16 MiB, 40 MiB): at most 24 extents of 1 MiB.
	if moved <= 0 || moved > 24<<20 {
		t.Fatalf("catch-up copied %d bytes; the writes after the kill touched at most 24 MiB of a 1 GiB volume", moved)
	}
	t.Logf("catch-up copied %d bytes", moved)
	r3 := replicaOn(getVolume(t, a, "pacs"), n3.Name)
	data, err := os.ReadFile(filepath.Join(n3.DataDir, "disks", "d1", "volumes", r3.ID, "data"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 160 {
		if !bytes.Equal(data[chunkOff(i):chunkOff(i)+chunk], bytes.Repeat([]byte{chunkPattern(i)}, chunk)) {
			t.Fatalf("node3's replica lacks chunk %d after catching up", i)
		}
	}

	// A byte rots on node3's copy, which reads are not served from: the
	// scrubber (every 10 s here) reads every copy, finds the bad checksum
	// and rewrites the block from a good copy.
	r3path := filepath.Join(n3.DataDir, "disks", "d1", "volumes", r3.ID, "data")
	f, err := os.OpenFile(r3path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^chunkPattern(5)}, chunkOff(5)+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	repairs := `cairn_volume_repairs_total{volume="` + v.ID + `"}`
	testutil.WaitFor(t, 2*time.Minute, "the scrubber repairs node3's copy", func() error {
		if got := metric(t, a, repairs); got < 1 {
			return fmt.Errorf("%s = %d", repairs, got)
		}
		return nil
	})
	if data, err = os.ReadFile(r3path); err != nil || !bytes.Equal(data[chunkOff(5):chunkOff(5)+chunk], bytes.Repeat([]byte{chunkPattern(5)}, chunk)) {
		t.Fatalf("node3's copy after the scrub: %v", err)
	}
	testutil.WaitFor(t, time.Minute, "the volume's scrub recorded", func() error {
		if getVolume(t, a, "pacs").ScrubbedAt.IsZero() {
			return fmt.Errorf("not yet")
		}
		return nil
	})

	// Kill the client (QEMU's role) mid-write; attach on node2: every
	// flushed group is there.
	// Line-buffered, so what it printed before the kill is all there.
	cmd := exec.Command("stdbuf", append([]string{"-oL", "qemu-io", "-f", "raw", uri}, func() []string {
		var args []string
		for _, c := range writeChunks(160, 400, 50) {
			args = append(args, "-c", c)
		}
		return args
	}()...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	flushed := 160
	// A group's read after its flush printed: every chunk up to it is flushed.
	for _, m := range regexp.MustCompile(`(?m)^read 4096/4096 bytes at offset (\d+)\n`).FindAllStringSubmatch(out.String(), -1) {
		off, _ := strconv.ParseInt(m[1], 10, 64)
		flushed = max(flushed, int(off/(256<<10))+1)
	}
	if flushed == 160 || flushed >= 400 {
		t.Fatalf("the client was not killed in the middle of its writes (%d flushed)", flushed)
	}
	if err := a.Call("POST", "/api/v1/volumes/pacs/detach?project=ward", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	uri2 := attachHost(t, a, "pacs", c.Node(2))
	verifyChunks(t, uri2, span(0, flushed))
	t.Logf("%d chunks flushed before the client was killed; all read back on node2", flushed)
}

// The fencing test: the writer's box is cut off, a new writer is
// granted the volume on the other side, and the old writer keeps writing:
// every one of its writes is refused and the copies hold only what the new
// writer wrote.
func TestVolumeFencing(t *testing.T) {
	c, a := volumeCluster(t)
	if err := a.Call("POST", "/api/v1/volumes", map[string]any{"name": "lab", "size_gib": 1, "project": "ward"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	old := attachHost(t, a, "lab", n1)
	if err := qemuIO(old, "", "write -P 1 0 1M", "flush"); err != nil {
		t.Fatal(err)
	}
	c.Partition([]*harness.Node{n1}, []*harness.Node{n2, n3})
	defer c.Heal()
	b := a.On(n2)
	testutil.WaitFor(t, 60*time.Second, "a leader on the majority side", func() error {
		return b.Call("POST", "/api/v1/volumes/lab/detach?project=ward", nil, 200, nil)
	})
	newURI := attachHost(t, b, "lab", n2)
	if err := qemuIO(newURI, "", "write -P 2 0 512k", "flush"); err != nil {
		t.Fatal(err)
	}
	v := getVolume(t, b, "lab")
	if v.Writer != n2.Name || replicaOn(v, n1.Name).State != "stale" {
		t.Fatalf("after the new writer opened: writer %s, node1's replica %s", v.Writer, replicaOn(v, n1.Name).State)
	}
	// The old writer keeps writing: every write is refused.
	out, err := qemuIOOut(old, "write -P 3 0 4k", "write -P 3 1M 4k")
	if err == nil {
		t.Fatalf("the fenced writer's writes succeeded:\n%s", out)
	}
	if err := qemuIO(newURI, "", "read -P 2 0 512k", "read -P 1 512k 512k", "read -P 0 1M 4k"); err != nil {
		t.Fatalf("the volume does not hold exactly the new writer's bytes: %v", err)
	}
	// Not even the old writer's own copy took its writes.
	data, err := os.ReadFile(filepath.Join(n1.DataDir, "disks", "d1", "volumes", replicaOn(v, n1.Name).ID, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(data[:2<<20], 3) >= 0 {
		t.Fatal("node1's own replica holds a write of the fenced writer")
	}
	c.Heal()
	testutil.WaitFor(t, 90*time.Second, "node1's replica caught up", func() error {
		if st := replicaOn(getVolume(t, b, "lab"), n1.Name).State; st != "in_sync" {
			return fmt.Errorf("replica is %s", st)
		}
		return nil
	})
	_ = io.Discard
}

// A restart of cairn pauses the I/O of a volume's user instead of failing
// it. qemu-io uses QEMU's own NBD client, the one a VM's disk uses, with
// the reconnect-delay the VM driver sets: while the node's agent is down
// (killed with -9) its requests wait, and once the volume is served again
// they are sent again and complete. Every write reads back afterwards.
func TestVolumeIOPausesAcrossAgentRestart(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk-report-interval", "1s"}})
	n := c.Node(1)
	a := cairntest.Admin(t, n)
	cairntest.WaitShape(t, a, 1, 0)
	cairntest.WaitHealthyDisks(t, a, 1, 0)
	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "ward"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/volumes", map[string]any{"name": "r1", "size_gib": 1, "project": "ward"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	uri := attachHost(t, a, "r1", n)
	opts := nbdImageOpts(uri)
	const chunks = 160 // 20 groups of 8, 500 ms apart: about 10 s of writes
	args := []string{"--image-opts", opts}
	for _, cmd := range writeChunks(0, chunks, 500) {
		args = append(args, "-c", cmd)
	}
	io := exec.Command("qemu-io", args...)
	var out bytes.Buffer
	io.Stdout, io.Stderr = &out, &out
	if err := io.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- io.Wait() }()
	t.Cleanup(func() { _ = io.Process.Kill() })

	time.Sleep(2 * time.Second)
	n.Kill()
	select {
	case err := <-done:
		t.Fatalf("qemu-io ended while the agent was down: %v\n%s", err, out.String())
	case <-time.After(3 * time.Second):
	}
	n.Start()
	cairntest.WaitReady(t, n)
	select {
	case err := <-done:
		if err != nil || regexp.MustCompile(`(?i)(error|failed|mismatch)`).Match(out.Bytes()) {
			t.Fatalf("qemu-io across the agent's restart: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("qemu-io did not finish after the agent came back:\n%s", out.String())
	}
	if got := strings.Count(out.String(), "wrote "); got != chunks {
		t.Fatalf("%d of %d writes done:\n%s", got, chunks, out.String())
	}
	verifyChunks(t, uri, span(0, chunks))
}

type diskInfo struct {
	ID    string `json:"id"`
	Node  string `json:"node"`
	Path  string `json:"path"`
	State string `json:"state"`
}

// replicaFileHolds checks a replica's data file on its node's disk for
// chunks [0, n).
func replicaFileHolds(t *testing.T, c *harness.Cluster, disks []diskInfo, r volReplica, n int) {
	t.Helper()
	var path string
	for _, d := range disks {
		if d.ID == r.Disk {
			path = d.Path
		}
	}
	node := cairntest.NodeByName(c, r.Node)
	if !filepath.IsAbs(path) {
		path = filepath.Join(node.DataDir, path)
	}
	data, err := os.ReadFile(filepath.Join(path, "volumes", r.ID, "data"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if !bytes.Equal(data[chunkOff(i):chunkOff(i)+chunk], bytes.Repeat([]byte{chunkPattern(i)}, chunk)) {
			t.Fatalf("replica %s on %s lacks chunk %d", r.ID, r.Node, i)
		}
	}
}

// A replica on a disk being drained is rebuilt on another disk before it
// goes, for a volume in use (its writer catches the newcomer up while the
// I/O goes on) and for a detached one (opened for the catch-up, closed
// after); each drained disk can then be removed.
func TestVolumeReplicaMovesOffADrainedDisk(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2", "--disk-report-interval", "1s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	cairntest.WaitHealthyDisks(t, a, 6, 0)
	if err := a.Call("POST", "/api/v1/projects", map[string]string{"name": "ward"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/volumes", map[string]any{"name": "scan", "size_gib": 1, "project": "ward"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	uri := attachHost(t, a, "scan", c.Node(1))
	if err := qemuIO(uri, "", writeChunks(0, 64, 0)...); err != nil {
		t.Fatal(err)
	}
	var disks []diskInfo
	if err := a.Call("GET", "/api/v1/disks", nil, 200, &disks); err != nil {
		t.Fatal(err)
	}
	drain := func(node string) (string, volReplica) {
		t.Helper()
		old := replicaOn(getVolume(t, a, "scan"), node)
		if err := a.Call("POST", "/api/v1/disks/"+old.Disk+"/drain", nil, 200, nil); err != nil {
			t.Fatal(err)
		}
		var moved volReplica
		testutil.WaitFor(t, 2*time.Minute, "the replica on "+node+" rebuilt off its drained disk", func() error {
			v := getVolume(t, a, "scan")
			moved = replicaOn(v, node)
			if len(v.Replicas) != 3 || v.Degraded || moved.Disk == old.Disk || moved.ID == old.ID {
				return fmt.Errorf("replicas %+v", v.Replicas)
			}
			return nil
		})
		return old.Disk, moved
	}

	// In use: the writes go on during the move (the export is reopened
	// with the new replica: a VM's disk waits for it, as here).
	done := make(chan error, 1)
	go func() { done <- qemuIOLikeAVM(uri, writeChunks(64, 128, 100)...) }()
	drained, moved := drain(c.Node(2).Name)
	if err := <-done; err != nil {
		t.Fatalf("I/O during the move: %v", err)
	}
	testutil.WaitFor(t, time.Minute, "every replica in sync after the writes", func() error {
		if v := getVolume(t, a, "scan"); v.Degraded {
			return fmt.Errorf("replicas %+v", v.Replicas)
		}
		return nil
	})
	verifyChunks(t, uri, span(0, 128))
	if err := qemuIO(uri, "", "flush"); err != nil {
		t.Fatal(err)
	}
	replicaFileHolds(t, c, disks, replicaOn(getVolume(t, a, "scan"), c.Node(2).Name), 128)
	if moved.Node != c.Node(2).Name {
		t.Fatalf("moved to %s, want another disk of %s", moved.Node, c.Node(2).Name)
	}
	if err := a.Call("DELETE", "/api/v1/disks/"+drained, nil, 204, nil); err != nil {
		t.Fatalf("remove the drained disk: %v", err)
	}

	// Detached: opened for the catch-up, and closed again.
	if err := a.Call("POST", "/api/v1/volumes/scan/detach?project=ward", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	drained, _ = drain(c.Node(3).Name)
	testutil.WaitFor(t, time.Minute, "the repair's attachment ended", func() error {
		if v := getVolume(t, a, "scan"); v.Attachment != nil || v.State != "available" {
			return fmt.Errorf("%s, attachment %+v", v.State, v.Attachment)
		}
		return nil
	})
	replicaFileHolds(t, c, disks, replicaOn(getVolume(t, a, "scan"), c.Node(3).Name), 128)
	if err := a.Call("DELETE", "/api/v1/disks/"+drained, nil, 204, nil); err != nil {
		t.Fatalf("remove the second drained disk: %v", err)
	}
}
