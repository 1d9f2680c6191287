package cluster_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// qemuPIDs are the live QEMU processes of VM id that node n started (the
// nodes share the host's process table; the run directory names the
// node).
func qemuPIDs(n *harness.Node, id string) []int {
	out, _ := exec.Command("pgrep", "-f", "/"+n.Name+"/"+id+"/qemu.pid").Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		// QEMU itself: another pgrep looking for the same pattern at the
		// same moment (the sampler's, the test's) matches it too.
		if pid, err := strconv.Atoi(f); err == nil && alive(pid) && isQEMU(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isQEMU says whether pid runs a qemu-system binary.
func isQEMU(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	argv0, _, _ := strings.Cut(string(b), "\x00")
	return err == nil && strings.HasPrefix(filepath.Base(argv0), "qemu-system")
}

func nodeNamed(t *testing.T, c *harness.Cluster, name string) *harness.Node {
	t.Helper()
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node %q", name)
	return nil
}

// copies samples, every 100 ms, which nodes run a QEMU of one VM.
type copies struct {
	mu      sync.Mutex
	samples []copiesSample
	stop    chan struct{}
	done    chan struct{}
}

type copiesSample struct {
	at    time.Time
	nodes []string
}

func watchCopies(c *harness.Cluster, id string) *copies {
	w := &copies{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			s := copiesSample{at: time.Now()}
			for _, n := range c.Nodes {
				if len(qemuPIDs(n, id)) > 0 {
					s.nodes = append(s.nodes, n.Name)
				}
			}
			w.mu.Lock()
			w.samples = append(w.samples, s)
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

// end stops sampling and returns the samples.
func (w *copies) end() []copiesSample {
	close(w.stop)
	<-w.done
	return w.samples
}

// haVMs makes an HA VM (booted from a volume, the default; its priority
// given at create) and one with HA switched off with the CLI, both on one
// node (the others cordoned while they are placed), running and
// answering; it returns that node.
func haVMs(t *testing.T, c *harness.Cluster, a *cairntest.Client, ha, off string) *harness.Node {
	t.Helper()
	on := c.Node(2)
	for _, n := range c.Nodes {
		if n != on {
			if err := a.Call("POST", "/api/v1/hosts/"+n.Name+"/cordon", map[string]string{"reason": "test"}, 200, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": ha, "project": "clinic", "image": "guest", "flavor": "tiny", "ha_priority": 50}, 201, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": off, "project": "clinic", "image": "guest", "flavor": "tiny"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	admin := adminCLI(t, c.Node(1))
	for bad, want := range map[string]string{"--on --off": "--on or --off, not both", "": "say --on, --off or --priority N"} {
		if out, err := admin.run("", append([]string{"vm", "ha", off}, strings.Fields(bad)...)...); err == nil || !strings.Contains(out, want) {
			t.Fatalf("cairn vm ha %s %s: %v\n%s", off, bad, err, out)
		}
	}
	admin.ok("", "vm", "ha", off, "--off", "--priority", "-5")
	for _, name := range []string{ha, off} {
		if vm := waitVM(t, a, name, 5*time.Minute, "running", inState("running")); vm.Node != on.Name {
			t.Fatalf("%s on %s, want %s", name, vm.Node, on.Name)
		}
		waitSerial(t, a, name, "cairn-guest: hostname="+name, 1)
	}
	for _, n := range c.Nodes {
		if n != on {
			if err := a.Call("POST", "/api/v1/hosts/"+n.Name+"/uncordon", nil, 204, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	var v struct {
		HA   string `json:"ha"`
		Spec struct {
			HAPriority int `json:"ha_priority"`
		} `json:"spec"`
	}
	if err := a.Call("GET", "/api/v1/vms/"+ha, nil, 200, &v); err != nil || v.HA != "on" || v.Spec.HAPriority != 50 {
		t.Fatalf("%s's HA: %+v %v", ha, v, err)
	}
	if err := a.Call("GET", "/api/v1/vms/"+off, nil, 200, &v); err != nil || v.HA != "off" || v.Spec.HAPriority != -5 {
		t.Fatalf("%s's HA: %+v %v", off, v, err)
	}
	return on
}

// A box dies (its agent and its QEMUs killed with SIGKILL): its HA VM runs
// again on another box, every record its guest had flushed intact, and
// the history says what happened; the VM with HA off stays with its box,
// and its history says why. The box, back, keeps nothing of the moved VM
// and starts its own again.
//
// Then the box running the HA VM is cut off behind an nftables partition,
// its agent and QEMU alive (the zombie), again and again for a random
// time: short cuts change nothing, longer ones make it kill its copy
// (self-fencing), longer still (always the first) restart the VM on the
// other side; now and
// then the Raft leader is cut off instead, which the VM on another node
// must not notice. At no sampled instant do two nodes run the VM, after
// each heal exactly one does, and at the end every record any copy of the
// guest reported flushed is on its volume, whole.
func TestHAFailover(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--vm-stop-timeout", "30s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	computeSetup(t, a, 3)
	const ha, off = "xray-viewer", "scratch"
	box := haVMs(t, c, a, ha, off)
	vm := waitVM(t, a, ha, time.Minute, "running", inState("running"))
	offVM := waitVM(t, a, off, time.Minute, "running", inState("running"))
	sc := startScribbling(t, a, ha, box.Name, "ha-data")
	// The API from a node that is not the box.
	api := cairntest.Admin(t, c.Node(1))

	// What the dashboard's capacity card says before the box dies: losing
	// it restarts the HA VM elsewhere, leaves the other off by choice, and
	// the cluster can take it (N+1).
	var capa struct {
		NPlusOne bool `json:"n_plus_one"`
		Reasons  []struct {
			Text string `json:"text"`
		} `json:"reasons"`
		IfLost []struct {
			Node      string   `json:"node"`
			Restarted []string `json:"restarted"`
			HAOff     []string `json:"ha_off"`
		} `json:"if_lost"`
	}
	if err := api.Call("GET", "/api/v1/capacity", nil, 200, &capa); err != nil {
		t.Fatal(err)
	}
	for _, l := range capa.IfLost {
		if l.Node == box.Name && (!slices.Equal(l.Restarted, []string{ha}) || !slices.Equal(l.HAOff, []string{off})) {
			t.Fatalf("capacity says losing %s would do %+v", box.Name, l)
		}
	}
	if !capa.NPlusOne || len(capa.IfLost) != 3 {
		t.Fatalf("capacity: N+1 %v (%+v), %d nodes", capa.NPlusOne, capa.Reasons, len(capa.IfLost))
	}

	// The box dies.
	flushed := sc.last(t, api, box.Name)
	box.Kill()
	for _, id := range []string{vm.ID, offVM.ID} {
		for _, pid := range qemuPIDs(box, id) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	died := time.Now()
	sc.node = "" // its serial log is on another node from now on
	moved := waitVM(t, api, ha, 2*time.Minute, "running elsewhere", func(v vmView) error {
		if v.Node == box.Name || v.Status.State != "running" {
			return fmt.Errorf("on %s, %s", v.Node, v.Status.State)
		}
		return nil
	})
	waitSerial(t, api, ha, "cairn-guest: hostname="+ha, 1)
	t.Logf("%s runs on %s %s after its box died (kill to first line of the new boot)", ha, moved.Node, time.Since(died).Round(100*time.Millisecond))
	evs := vmEvents(t, api, ha)
	if !strings.Contains(evs, box.Name+" lost contact at ") || !strings.Contains(evs, "restarting on "+moved.Node) {
		t.Fatalf("%s's history:\n%s", ha, evs)
	}
	if v := waitVM(t, api, off, time.Minute, "left on its box", func(v vmView) error { return nil }); v.Node != box.Name {
		t.Fatalf("%s, HA off, moved to %s", off, v.Node)
	}
	testutil.WaitFor(t, time.Minute, off+"'s history saying why it stays", func() error {
		if evs := vmEvents(t, api, off); !strings.Contains(evs, "not restarted elsewhere: high availability is switched off") {
			return fmt.Errorf("%s", evs)
		}
		return nil
	})
	// The box returns: nothing of the moved VM is left on it; the other
	// VM starts there again.
	box.Start()
	cairntest.WaitShape(t, api, 3, 0)
	testutil.WaitFor(t, 2*time.Minute, box.Name+" keeps nothing of "+ha, func() error {
		var left []string
		if pids := qemuPIDs(box, vm.ID); len(pids) > 0 {
			left = append(left, fmt.Sprintf("QEMU %v", pids))
		}
		out, _ := box.Command("ip", "-o", "link", "show", "type", "tun").CombinedOutput()
		for _, nic := range vm.NICs {
			sum := sha256.Sum256([]byte(nic.ID))
			if tap := "cvm" + hex.EncodeToString(sum[:])[:12]; strings.Contains(string(out), tap) {
				left = append(left, "tap "+tap)
			}
		}
		if _, err := os.Stat(box.DataDir + "/vms/" + vm.ID); err == nil {
			left = append(left, "disk directory")
		}
		if len(left) > 0 {
			return fmt.Errorf("%v", left)
		}
		return nil
	})
	waitVM(t, api, off, 3*time.Minute, "running on its box again", func(v vmView) error {
		if v.Node != box.Name || v.Status.State != "running" {
			return fmt.Errorf("on %s, %s", v.Node, v.Status.State)
		}
		return nil
	})
	if err := api.Call("DELETE", "/api/v1/vms/"+off, nil, 202, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Minute, "the guest scribbling on "+moved.Node, func() error {
		if n := sc.last(t, api, moved.Node); n <= flushed {
			v, _ := getVM(api, ha)
			log := serialLog(t, api, ha)
			return fmt.Errorf("at %d, had flushed %d; the VM is %s on %s (pending %q); its serial log ends %q", n, flushed, v.Status.State, v.Node, v.Status.Pending, log[max(0, len(log)-800):])
		}
		return nil
	})

	// The zombie, again and again.
	seed := rand.Uint64()
	rnd := rand.New(rand.NewPCG(seed, 0))
	loops := 6
	if s := os.Getenv("CAIRN_HA_LOOPS"); s != "" {
		loops, _ = strconv.Atoi(s)
	}
	t.Logf("partition loop: %d rounds, seed %d", loops, seed)
	for round := range loops {
		cur := waitVM(t, api, ha, 3*time.Minute, "running", inState("running"))
		vmNode := nodeNamed(t, c, cur.Node)
		st, err := api.Status()
		if err != nil {
			t.Fatal(err)
		}
		// Mostly the VM's node (the zombie); every third round the leader
		// if it is another node: its death must cost the VM nothing.
		cutOff := vmNode
		if leader := cairntest.NodeByName(c, st.Leader); leader != nil && leader != vmNode && round%3 == 1 {
			cutOff = leader
		}
		var other *harness.Node // an API the cut leaves alone
		for _, n := range c.Nodes {
			if other == nil && n != cutOff {
				other = n
			}
		}
		api = cairntest.Admin(t, other)
		testutil.WaitFor(t, 2*time.Minute, "the guest scribbling", func() error {
			if n := sc.last(t, api, cur.Node); n <= flushed {
				return fmt.Errorf("at %d, had flushed %d", n, flushed)
			}
			return nil
		})
		flushed = max(flushed, sc.last(t, api, cur.Node))
		pid := qemuPIDs(vmNode, cur.ID)
		// Cuts of 2 to 14 s; the first round's is 18 to 20 s, past the
		// lease even when the zombie led Raft too (a new leader's clock
		// counts from its election), which must move the VM; the last
		// round's is a blip of 1 to 2 s, which must change nothing
		// (below). CAIRN_HA_CUT sets them all.
		cut := time.Duration(2000+rnd.IntN(12000)) * time.Millisecond
		switch round {
		case 0:
			cut = time.Duration(18000+rnd.IntN(2000)) * time.Millisecond
		case loops - 1:
			cut = time.Duration(1000+rnd.IntN(1000)) * time.Millisecond
		}
		if d, err := time.ParseDuration(os.Getenv("CAIRN_HA_CUT")); err == nil {
			cut = d
		}
		w := watchCopies(c, cur.ID)
		c.Partition([]*harness.Node{cutOff})
		cutAt := time.Now()
		time.Sleep(cut)
		zombieGone := len(qemuPIDs(vmNode, cur.ID)) == 0
		c.Heal()
		// A node fences itself 4 s after its last renewal, which it sent
		// up to 1 s before the cut: a cut of more than 2 s may fence it
		// after the heal. Look for the outcome only once that is decided.
		time.Sleep(time.Until(cutAt.Add(4500 * time.Millisecond)))
		// Settled: the record says running on a node, and that node, and
		// only it, runs a copy. The record read first after the heal may
		// be stale: a lease judged lost just after the heal (the new
		// leader's clock counts from its election) still moves the VM.
		var after vmView
		testutil.WaitFor(t, 3*time.Minute, ha+" running, one copy, where its record says", func() error {
			v, err := getVM(api, ha)
			if err != nil {
				return err
			}
			var on []string
			for _, n := range c.Nodes {
				if len(qemuPIDs(n, cur.ID)) > 0 {
					on = append(on, n.Name)
				}
			}
			if v.Status.State != "running" || len(on) != 1 || on[0] != v.Node {
				return fmt.Errorf("the record says %s on %s; copies run on %v", v.Status.State, v.Node, on)
			}
			after = v
			return nil
		})
		// And it stays so for longer than a lease (8 s): a move after the
		// record and the copy first agreed would be a restart nobody
		// asked for. The copy sampler runs on meanwhile.
		settled := qemuPIDs(nodeNamed(t, c, after.Node), cur.ID)
		for end := time.Now().Add(9 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			v, err := getVM(api, ha)
			now := qemuPIDs(nodeNamed(t, c, after.Node), cur.ID)
			if err == nil && (v.Node != after.Node || v.Status.State != "running" || !slices.Equal(now, settled)) {
				t.Fatalf("round %d (cut %s off for %s): settled on %s (QEMU %v), then the record says %s on %s and QEMU there is %v",
					round, cutOff.Name, cut, after.Node, settled, v.Status.State, v.Node, now)
			}
		}
		samples := w.end()
		for _, s := range samples {
			if len(s.nodes) > 1 {
				t.Fatalf("round %d (cut %s off for %s): at %s two copies ran, on %v", round, cutOff.Name, cut, s.at.Sub(cutAt), s.nodes)
			}
		}
		switch {
		case cutOff != vmNode:
			// The leader (not the VM's node) died for a while: a new one
			// took over within a second; the VM ran on, untouched.
			if now := qemuPIDs(vmNode, cur.ID); zombieGone || after.Node != vmNode.Name || len(now) != 1 || len(pid) != 1 || now[0] != pid[0] {
				t.Fatalf("round %d: the leader %s cut off for %s; %s's QEMU %v is now %v on %s", round, cutOff.Name, cut, ha, pid, now, after.Node)
			}
		case cut > 6*time.Second && !zombieGone:
			// Self-fencing: a zombie cut off for longer than it may hold
			// its lease (4 s), with a margin, had killed its copy.
			t.Fatalf("round %d: %s, cut off for %s, still ran its copy", round, cutOff.Name, cut)
		case cut >= 18*time.Second && after.Node == vmNode.Name:
			// Past the lease (8 s from the last renewal the others saw,
			// counted from a new leader's election if the zombie led):
			// the VM was restarted on the other side while the zombie
			// was away.
			t.Fatalf("round %d: %s cut off for %s, yet %s runs there again", round, cutOff.Name, cut, ha)
		case cut <= 2*time.Second && (zombieGone || after.Node != vmNode.Name || !slices.Equal(qemuPIDs(vmNode, cur.ID), pid)):
			// A blip changes nothing: the node renews its lease within a
			// second of the heal, before it would fence (4 s after its
			// last renewal, up to 1 s before the cut), and the same QEMU
			// runs on. Between this and 6 s either outcome is right.
			t.Fatalf("round %d: %s cut off for only %s: its copy killed %v, the VM now on %s, QEMU %v then %v", round, cutOff.Name, cut, zombieGone, after.Node, pid, qemuPIDs(vmNode, cur.ID))
		}
		t.Logf("round %d: %s (leader %s) cut off for %s: the VM's copy on %s killed %v; it runs on %s", round, cutOff.Name, st.Leader, cut.Round(time.Millisecond), vmNode.Name, zombieGone, after.Node)
		cairntest.WaitShape(t, api, 3, 0)
	}
	cur := waitVM(t, api, ha, 3*time.Minute, "running", inState("running"))
	testutil.WaitFor(t, 2*time.Minute, "the guest scribbling", func() error {
		if n := sc.last(t, api, cur.Node); n <= flushed {
			return fmt.Errorf("at %d, had flushed %d", n, flushed)
		}
		return nil
	})
	sc.checkFrom(t, api, cur.Node, flushed)
}
