package cluster_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
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

type migrationView struct {
	ID       string `json:"id"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	Phase    string `json:"phase"`
	Progress struct {
		RAMTotal       int64 `json:"ram_total"`
		RAMTransferred int64 `json:"ram_transferred"`
		DowntimeMS     int64 `json:"downtime_ms"`
	} `json:"progress"`
}

// scribbleSeq matches the guest's progress lines (every 100th record),
// not its "seq=N: error" lines about a record it failed to write.
var scribbleSeq = regexp.MustCompile(`(?m)cairn-guest: scribble vd[a-z]+ seq=(\d+)\r?$`)

// scribbleDone matches the guest's line saying a disk is full of records:
// the scribbler stops there, and a test waiting for more would only time
// out.
var scribbleDone = regexp.MustCompile(`(?m)cairn-guest: scribble done vd[a-z]+ seq=\d+\r?$`)

// lastScribble is the last record the guest says it wrote (durably),
// from byte from on of the serial log it has on its node now, 0 if none;
// and the log's length.
func lastScribble(t *testing.T, a *cairntest.Client, vm string, from int) (uint64, int) {
	t.Helper()
	log := serialLog(t, a, vm)
	if done := scribbleDone.FindString(log[min(from, len(log)):]); done != "" {
		t.Fatalf("%s: the guest ran out of room to scribble (%q): the test ran longer than scribble.MaxRecords records last", vm, strings.TrimSpace(done))
	}
	m := scribbleSeq.FindAllStringSubmatch(log[min(from, len(log)):], -1)
	if len(m) == 0 {
		return 0, len(log)
	}
	n, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64)
	return n, len(log)
}

// scribbling is a fresh volume the guest of a VM writes records to.
type scribbling struct {
	vm, vol, node string
	from          int // where the VM's serial log stood before it
}

// startScribbling hot-plugs a fresh scribble volume into vm (on node) and
// waits until the guest has written 50 records to it.
func startScribbling(t *testing.T, a *cairntest.Client, vm, node, vol string) *scribbling {
	t.Helper()
	_, from := lastScribble(t, a, vm, 0)
	scribbleVolume(t, a, vol, vm)
	testutil.WaitFor(t, 2*time.Minute, "the guest scribbling on "+vol, func() error {
		if n, _ := lastScribble(t, a, vm, from); n < 50 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	return &scribbling{vm: vm, vol: vol, node: node, from: from}
}

// last is the last record the guest has reported on this volume; on the
// node now, whose serial log holds nothing of an earlier volume if the VM
// moved.
func (s *scribbling) last(t *testing.T, a *cairntest.Client, node string) uint64 {
	t.Helper()
	from := 0
	if node == s.node {
		from = s.from
	}
	n, _ := lastScribble(t, a, s.vm, from)
	return n
}

// check detaches the volume (the guest lets go), checks that every record
// the guest reported written is on it, whole, and deletes it.
func (s *scribbling) check(t *testing.T, a *cairntest.Client, node string) {
	t.Helper()
	s.checkFrom(t, a, node, 0)
}

// checkFrom is check, knowing that the guest had also written records
// 1..flushed (reported on a node it has left).
func (s *scribbling) checkFrom(t *testing.T, a *cairntest.Client, node string, flushed uint64) {
	t.Helper()
	if err := a.Call("POST", "/api/v1/volumes/"+s.vol+"/detach?project=clinic", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Minute, s.vol+" detached", func() error {
		if v := getVolumeIn(t, a, s.vol, "clinic"); v.State != "available" {
			return fmt.Errorf("%s", v.State)
		}
		return nil
	})
	wrote := max(s.last(t, a, node), flushed)
	if held := exportAndCheck(t, a, "/api/v1/volumes/"+s.vol+"?project=clinic"); held < wrote {
		t.Fatalf("%s holds records 1..%d; the guest had written %d", s.vol, held, wrote)
	}
	if err := a.Call("DELETE", "/api/v1/volumes/"+s.vol+"?project=clinic", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
}

// migrateLive moves a running VM, booted from a volume, to another node
// (not avoid) while it runs: its guest keeps writing durable records to a
// hot-plugged volume (qa/scribble) and answering TCP on 8080. The VM ends
// on the target with nothing left on the source; the guest writes on
// from where it was; every record it had written is on the volume; the
// longest gap in its TCP answers is measured.
func migrateLive(t *testing.T, c *harness.Cluster, a, a2 *cairntest.Client, name, avoid string) {
	t.Helper()
	vm := waitVM(t, a, name, time.Minute, "running", inState("running"))
	before := vmBootVolume(t, a, vm)
	sc := startScribbling(t, a, name, vm.Node, "moving-data")
	target := ""
	for _, n := range c.Nodes {
		if n.Name != vm.Node && n.Name != avoid {
			target = n.Name
		}
	}
	probes := startProbes(t, c, vm.IP())
	var started struct {
		vmView
		Migration *migrationView `json:"migration"`
	}
	begin := time.Now()
	if err := a2.Call("POST", "/api/v1/vms/"+name+"/migrate", map[string]string{"node": target}, 200, &started); err != nil {
		t.Fatal(err)
	}
	if started.Migration == nil || started.Migration.Source != vm.Node || started.Migration.Target != target || started.Node != vm.Node {
		t.Fatalf("migration started as %+v on %s", started.Migration, started.Node)
	}
	seqBefore := sc.last(t, a, vm.Node)
	testutil.WaitFor(t, 5*time.Minute, name+" moved live to "+target, func() error {
		var v struct {
			vmView
			Migration *migrationView `json:"migration"`
		}
		if err := a.Call("GET", "/api/v1/vms/"+name, nil, 200, &v); err != nil {
			return err
		}
		if v.Migration != nil {
			return fmt.Errorf("%s on %s", v.Migration.Phase, v.Node)
		}
		if v.Node != target || v.Status.State != "running" {
			return fmt.Errorf("on %s, %s", v.Node, v.Status.State)
		}
		return nil
	})
	took := time.Since(begin)
	gap := probes.stop(begin)
	t.Logf("%s moved live in %s; the longest gap in its TCP answers: %s", name, took.Round(time.Millisecond), gap.Round(time.Millisecond))
	// Generous for TCG on two shared cores: what it catches is a guest
	// whose network did not follow it (then it answers only after a
	// minute, or never).
	if gap > 10*time.Second {
		t.Fatalf("the guest did not answer for %s during its move", gap)
	}
	evs := vmEvents(t, a, name)
	if !strings.Contains(evs, "moved live from "+vm.Node+" to "+target) {
		t.Fatalf("history: %s", evs)
	}
	if m := regexp.MustCompile(`the guest paused for (\d+) ms`).FindStringSubmatch(evs); m != nil {
		t.Logf("QEMU's downtime: %s ms", m[1])
	}
	// The source keeps nothing: no QEMU, tap or directories.
	old := cairntest.NodeByName(c, vm.Node)
	testutil.WaitFor(t, time.Minute, vm.Node+" lets go of "+name, func() error {
		if left := vmLeftovers(old, vm.ID, vm.Status.PID); len(left) > 0 {
			return fmt.Errorf("left on %s: %v", vm.Node, left)
		}
		return nil
	})
	now := waitVM(t, a, name, time.Minute, "running on "+target, inState("running"))
	bv := vmBootVolume(t, a, now)
	if bv.ID != before.ID || bv.Writer != target || bv.Epoch <= before.Epoch || bv.Attachment.Node != target {
		t.Fatalf("the boot volume after the move: %+v (before: %+v)", bv, before)
	}
	// The guest writes on, on the target, from where it was.
	testutil.WaitFor(t, time.Minute, "the guest scribbling on "+target, func() error {
		if n := sc.last(t, a, target); n <= seqBefore {
			log := serialLog(t, a, name)
			return fmt.Errorf("at %d, was at %d before the move; the serial log says %q; history:\n%s", n, seqBefore, crashOrEnd(log), vmEvents(t, a, name))
		}
		return nil
	})
	waitProbe(t, cairntest.NodeByName(c, target), vm.IP(), "hostname="+name)
	memcheckIntact(t, a, name)
	// Every record written is on the volume, none torn or missing.
	sc.check(t, a, target)
}

// memcheckIntact checks, for a guest that runs the memory check
// (cairn-guest memcheck) and has just moved live, that it checks on on
// its new node, twice, and has found no page that lost a write, and that
// its kernel has not crashed: what a move that missed a dirty page does.
func memcheckIntact(t *testing.T, a *cairntest.Client, name string) {
	t.Helper()
	rounds := regexp.MustCompile(`cairn-guest: memcheck round \d+`)
	testutil.WaitFor(t, 2*time.Minute, name+"'s memory check going on after its move", func() error {
		log := serialLog(t, a, name)
		if i := strings.Index(log, "memcheck BAD"); i >= 0 {
			t.Fatalf("%s lost memory in its move: %s", name, log[i:min(len(log), i+2000)])
		}
		if crashAt(log) >= 0 {
			t.Fatalf("%s's kernel crashed after its move: %s", name, crashOrEnd(log))
		}
		if n := len(rounds.FindAllString(log, -1)); n < 2 {
			return fmt.Errorf("%d rounds checked; the serial log ends %q", n, log[max(0, len(log)-300):])
		}
		return nil
	})
}

func vmEvents(t *testing.T, a *cairntest.Client, name string) string {
	t.Helper()
	var evs []struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	if err := a.Call("GET", "/api/v1/vms/"+name+"/events", nil, 200, &evs); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s: %s\n", e.Kind, e.Message)
	}
	return b.String()
}

// probes ask a guest's TCP service on 8080 from every node, every 50 ms,
// and record when it answered.
type probes struct {
	mu   sync.Mutex
	out  []*bytes.Buffer
	pids []int // process groups
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func startProbes(t *testing.T, c *harness.Cluster, ip string) *probes {
	t.Helper()
	p := &probes{}
	script := `while :; do out=$(timeout 1 bash -c 'exec 3<>/dev/tcp/` + ip + `/8080 && cat <&3' 2>/dev/null); ` +
		`case "$out" in *hostname=*) date +%s.%N;; esac; sleep 0.05; done`
	for _, n := range c.Nodes {
		var buf bytes.Buffer
		cmd := n.Command("bash", "-c", script)
		cmd.Stdout = lockedBuffer{&p.mu, &buf}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		p.out = append(p.out, &buf)
		p.pids = append(p.pids, cmd.Process.Pid)
	}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *probes) kill() {
	for i, pid := range p.pids {
		if pid > 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			p.pids[i] = 0
		}
	}
}

// stop ends the probes and returns the longest time after since without
// an answer from any node.
func (p *probes) stop(since time.Time) time.Duration {
	time.Sleep(500 * time.Millisecond) // the last answers in
	p.kill()
	p.mu.Lock()
	defer p.mu.Unlock()
	var at []float64
	for _, b := range p.out {
		for _, l := range strings.Fields(b.String()) {
			if f, err := strconv.ParseFloat(l, 64); err == nil && f >= float64(since.UnixNano())/1e9 {
				at = append(at, f)
			}
		}
	}
	sort.Float64s(at)
	var gap float64
	for i := 1; i < len(at); i++ {
		gap = max(gap, at[i]-at[i-1])
	}
	if len(at) < 2 {
		return time.Since(since)
	}
	return time.Duration(gap * float64(time.Second))
}

// A live migration cancelled mid-way, one whose target's agent is killed
// mid-way, and one whose source QEMU is killed just after the switchover:
// the guest runs on in exactly one place (where it was, or on the target
// once it has switched over), and every record it wrote to a volume meanwhile is
// there. The streams are capped at 4 MiB/s (a cluster setting), so that
// moving the test guest takes long enough to act in the middle.
func TestLiveMigrationFailures(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--vm-stop-timeout", "30s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	computeSetup(t, a, 3)
	settings := map[string]any{}
	if err := a.Call("GET", "/api/v1/compute/settings", nil, 200, &settings); err != nil {
		t.Fatal(err)
	}
	settings["migration_mib_per_s"] = 4
	if err := a.Call("PUT", "/api/v1/compute/settings", settings, 200, nil); err != nil {
		t.Fatal(err)
	}
	const name = "mover"
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": name, "project": "clinic", "image": "guest", "flavor": "tiny",
		"user_data": "#cloud-config\n# cairn-guest memcheck 32\n"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	vm := waitVM(t, a, name, 4*time.Minute, "running", inState("running"))
	waitSerial(t, a, name, "cairn-guest: hostname="+name, 1)
	var target *harness.Node
	for _, n := range c.Nodes {
		if n.Name != vm.Node {
			target = n
		}
	}
	type withMigration struct {
		vmView
		Migration *migrationView `json:"migration"`
	}
	get := func() withMigration {
		t.Helper()
		var v withMigration
		if err := a.Call("GET", "/api/v1/vms/"+name, nil, 200, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// start begins a migration to the target and waits until its stream
	// is under way.
	start := func() {
		t.Helper()
		if err := a.Call("POST", "/api/v1/vms/"+name+"/migrate", map[string]string{"node": target.Name}, 200, nil); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 2*time.Minute, "the stream under way", func() error {
			if m := get().Migration; m == nil || m.Phase != "transferring" || m.Progress.RAMTransferred == 0 {
				return fmt.Errorf("%+v", m)
			}
			return nil
		})
	}
	// runsOn waits until the migration has ended with the guest running
	// on node and writing records past those it had written before; no
	// other node keeps anything of it. Then every record is checked, with
	// records 1..flushed reported written on a node it has left.
	runsOn := func(node string, sc *scribbling, before, flushed uint64) {
		t.Helper()
		var v withMigration
		testutil.WaitFor(t, 3*time.Minute, name+" running on "+node, func() error {
			v = get()
			if v.Migration != nil || v.Node != node || v.Status.State != "running" {
				return fmt.Errorf("on %s, %s, migration %+v", v.Node, v.Status.State, v.Migration)
			}
			return nil
		})
		testutil.WaitFor(t, 2*time.Minute, "the guest scribbling on "+node, func() error {
			if n := sc.last(t, a, node); n <= before {
				log := serialLog(t, a, name)
				return fmt.Errorf("at %d, was at %d; the serial log says %q", n, before, crashOrEnd(log))
			}
			return nil
		})
		for _, n := range c.Nodes {
			if n.Name == node {
				continue
			}
			testutil.WaitFor(t, time.Minute, n.Name+" keeps nothing of "+name, func() error {
				if left := vmLeftovers(n, v.ID, 0, v.Taps()...); len(left) > 0 {
					return fmt.Errorf("%v", left)
				}
				return nil
			})
		}
		sc.checkFrom(t, a, node, flushed)
	}

	// Cancelled mid-way with the CLI: the guest runs on where it was.
	admin := adminCLI(t, c.Node(1))
	if out, err := admin.run("", "vm", "migrate", "--cancel", name); err == nil || !strings.Contains(out, "VM "+name+" is not moving") {
		t.Fatalf("cancel with no migration under way: %v\n%s", err, out)
	}
	if out, err := admin.run("", "vm", "migrate", "--cancel", "--to", target.Name, name); err == nil || !strings.Contains(out, "--cancel takes no --to") {
		t.Fatalf("cancel with --to: %v\n%s", err, out)
	}
	sc := startScribbling(t, a, name, vm.Node, "data-cancel")
	start()
	if out := admin.ok("", "vm", "migrate", "--cancel", name, "-o", "json"); !strings.Contains(out, `"node": "`+vm.Node+`"`) {
		t.Fatalf("vm migrate --cancel printed:\n%s", out)
	}
	runsOn(vm.Node, sc, sc.last(t, a, vm.Node), 0)
	if evs := vmEvents(t, a, name); !strings.Contains(evs, "live migration to "+target.Name+" cancelled") {
		t.Fatalf("history: %s", evs)
	}

	// The target's agent killed mid-way: the source does not hand the
	// guest to a node that cannot serve it; the agent, back, lets go of
	// the QEMU it had started.
	sc = startScribbling(t, a, name, vm.Node, "data-agent")
	start()
	target.Kill()
	testutil.WaitFor(t, 3*time.Minute, "the migration given up", func() error {
		if v := get(); v.Migration != nil {
			return fmt.Errorf("%s", v.Migration.Phase)
		}
		return nil
	})
	target.Start()
	cairntest.WaitShape(t, a, 3, 0)
	runsOn(vm.Node, sc, sc.last(t, a, vm.Node), 0)

	// The source's agent stopped (an upgrade) while the guest, paused for
	// its copy under TCG, is being copied: the agent cancels the stream
	// and resumes the guest as it goes, so the guest answers while the
	// agent is away; back, the agent ends the migration, and the VM runs
	// on where it was.
	sc = startScribbling(t, a, name, vm.Node, "data-source-agent")
	start()
	source := cairntest.NodeByName(c, vm.Node)
	source.Terminate()
	waitProbe(t, source, vm.IP(), "hostname="+name)
	source.Start()
	cairntest.WaitShape(t, a, 3, 0)
	runsOn(vm.Node, sc, sc.last(t, a, vm.Node), 0)

	// The source's QEMU killed as soon as the guest switched over: the
	// guest runs on the target, from the stream or booted afresh from
	// its volumes if the stream broke; the CLI's --wait fails in the
	// second case.
	sc = startScribbling(t, a, name, vm.Node, "data-switch")
	pid := get().Status.PID
	type cliResult struct {
		out string
		err error
	}
	waited := make(chan cliResult, 1)
	go func() {
		out, err := admin.run("", "vm", "migrate", name, "--to", target.Name, "--wait")
		waited <- cliResult{out, err}
	}()
	testutil.WaitFor(t, time.Minute, "the migration started", func() error {
		if get().Migration == nil {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	// Asked as fast as the API answers: the stream's last part takes tens
	// of milliseconds after the switch, and the kill is to come within.
	for deadline := time.Now().Add(3 * time.Minute); get().Node != target.Name; {
		if time.Now().After(deadline) {
			t.Fatal("no switchover within 3 minutes")
		}
	}
	killed := alive(pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	runsOn(target.Name, sc, 0, 0)
	evs := strings.Split(strings.TrimSpace(vmEvents(t, a, name)), "\n")
	t.Logf("the source's QEMU was still there when killed: %v; then %s", killed, evs[len(evs)-1])
	r := <-waited
	live := regexp.MustCompile(`moved live from ` + vm.Node + ` to ` + target.Name).MatchString(strings.Join(evs, "\n"))
	if (r.err == nil) != live || (!live && !strings.Contains(r.out, "did not move live")) {
		t.Fatalf("migrate --wait: %v (moved live: %v)\n%s", r.err, live, r.out)
	}

	// Post-copy, the admin's opt-in, back to the first node with the
	// CLI. Where the kernel does not let the VM's QEMU (an unprivileged
	// user) handle its own page faults, the target refuses before
	// anything is sent, says why, and the VM runs on where it is.
	uffd := testutil.LockSysctl(t, "vm.unprivileged_userfaultfd")
	uffd.Set("0")
	pid = get().Status.PID
	out, err := admin.run("", "vm", "migrate", name, "--to", vm.Node, "--post-copy", "--wait")
	if err == nil || !strings.Contains(out, "vm.unprivileged_userfaultfd=1") || !strings.Contains(out, "did not move") {
		t.Fatalf("post-copy where the kernel refuses it: %v\n%s", err, out)
	}
	// Untouched: the same QEMU runs on (a QEMU that arrived by live
	// migration says "completed" of that stream, which is not this one).
	time.Sleep(3 * time.Second)
	if v := get(); v.Node != target.Name || v.Status.State != "running" || v.Migration != nil || v.Status.PID != pid || !alive(pid) {
		t.Fatalf("after the refused post-copy: on %s, %s, %+v, QEMU %d (was %d)\nhistory:\n%s", v.Node, v.Status.State, v.Migration, v.Status.PID, pid, vmEvents(t, a, name))
	}
	// Allowed, it moves: under TCG the guest, paused for the copy, goes
	// post-copy at once and runs on the first node while its memory
	// follows; the target ends the migration once all of it has come.
	// The guest writes on with its memory whole (memcheck).
	uffd.Set("1")
	sc = startScribbling(t, a, name, target.Name, "data-postcopy")
	if out, err := admin.run("", "vm", "migrate", name, "--to", vm.Node, "--post-copy", "--wait"); err != nil {
		t.Fatalf("post-copy: %v\n%s\nhistory:\n%s", err, out, vmEvents(t, a, name))
	}
	runsOn(vm.Node, sc, 0, 0)
	if h := vmEvents(t, a, name); !regexp.MustCompile(`moved live from ` + target.Name + ` to ` + vm.Node + `[^\n]*went post-copy`).MatchString(h) {
		t.Fatalf("history: %s", h)
	}
	memcheckIntact(t, a, name)
}

// Draining a node with three running VMs moves them all live to the other
// nodes, none restarted; draining the last node that takes VMs is refused.
func TestNodeDrain(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--vm-stop-timeout", "30s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	computeSetup(t, a, 3)
	// All three on node1: the others cordoned while they are placed.
	drained := c.Node(1).Name
	for _, n := range c.Nodes[1:] {
		if err := a.Call("POST", "/api/v1/hosts/"+n.Name+"/cordon", map[string]string{"reason": "test"}, 200, nil); err != nil {
			t.Fatal(err)
		}
	}
	names := []string{"ward-a", "ward-b", "ward-c"}
	for _, name := range names {
		if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": name, "project": "clinic", "image": "guest", "flavor": "tiny"}, 201, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		if vm := waitVM(t, a, name, 5*time.Minute, "running", inState("running")); vm.Node != drained {
			t.Fatalf("%s on %s", name, vm.Node)
		}
		waitSerial(t, a, name, "cairn-guest: hostname="+name, 1)
	}
	for _, n := range c.Nodes[1:] {
		if err := a.Call("POST", "/api/v1/hosts/"+n.Name+"/uncordon", nil, 204, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Call("POST", "/api/v1/hosts/"+drained+"/drain", map[string]bool{}, 200, nil); err != nil {
		t.Fatal(err)
	}
	type drainView struct {
		State     string `json:"state"`
		Message   string `json:"message"`
		Moved     int    `json:"moved"`
		Restarted int    `json:"restarted"`
		Objects   int    `json:"objects"`
	}
	var dr drainView
	testutil.WaitFor(t, 5*time.Minute, "the drain done", func() error {
		var hs []struct {
			Name   string `json:"name"`
			Cordon *struct {
				Drain *drainView `json:"drain"`
			} `json:"cordon"`
		}
		if err := a.Call("GET", "/api/v1/hosts", nil, 200, &hs); err != nil {
			return err
		}
		for _, h := range hs {
			if h.Name == drained && h.Cordon != nil && h.Cordon.Drain != nil {
				dr = *h.Cordon.Drain
			}
		}
		if dr.State != "done" {
			return fmt.Errorf("%+v", dr)
		}
		return nil
	})
	// The object store keeps shards on every node (the guest image is an
	// object): the drain says how many run on fewer shards.
	if dr.Moved != 3 || dr.Restarted != 0 || dr.Objects < 1 || !strings.Contains(dr.Message, fmt.Sprintf("Objects with shards on %s, which run on fewer shards while it is away: %d", drained, dr.Objects)) {
		t.Fatalf("drain: %+v", dr)
	}
	for _, name := range names {
		vm := waitVM(t, a, name, time.Minute, "running elsewhere", inState("running"))
		// The drain moves on at the switchover; the migration's own end
		// (the source has sent the rest) is recorded a moment later.
		var evs string
		testutil.WaitFor(t, time.Minute, name+"'s move in its history", func() error {
			if evs = vmEvents(t, a, name); !strings.Contains(evs, "moved live from "+drained) {
				return fmt.Errorf("history:\n%s", evs)
			}
			return nil
		})
		if vm.Node == drained || strings.Contains(evs, "requested stop") {
			t.Fatalf("%s on %s after the drain; history:\n%s", name, vm.Node, evs)
		}
	}
	// Bad input, each refused with a reason and nothing changed: a move
	// to a node without room (the hosts' reserve raised past their
	// memory), and a live move of a VM whose disk is local to its node.
	refused := func(name string, body map[string]string, want string) {
		t.Helper()
		before, err := getVM(a, name)
		if err != nil {
			t.Fatal(err)
		}
		history := vmEvents(t, a, name)
		var e cairntest.HTTPError
		if err := a.Call("POST", "/api/v1/vms/"+name+"/migrate", body, 409, &e); err != nil {
			t.Fatalf("migrate %s %v: %v", name, body, err)
		}
		if !strings.Contains(e.Msg, want) {
			t.Fatalf("migrate %s %v refused with %q, want %q", name, body, e.Msg, want)
		}
		time.Sleep(2 * time.Second) // anything started would show by now
		after, err := getVM(a, name)
		if err != nil {
			t.Fatal(err)
		}
		if after.Node != before.Node || after.Status.State != "running" || after.Status.PID != before.Status.PID || !alive(before.Status.PID) {
			t.Fatalf("after the refused move of %s: on %s, %s, QEMU %d (was on %s, QEMU %d)", name, after.Node, after.Status.State, after.Status.PID, before.Node, before.Status.PID)
		}
		if evs := vmEvents(t, a, name); evs != history {
			t.Fatalf("%s's history after the refused move:\n%s\nbefore:\n%s", name, evs, history)
		}
	}
	ward, err := getVM(a, names[0])
	if err != nil {
		t.Fatal(err)
	}
	var to string
	for _, n := range c.Nodes[1:] {
		if n.Name != ward.Node {
			to = n.Name
		}
	}
	settings := map[string]any{}
	if err := a.Call("GET", "/api/v1/compute/settings", nil, 200, &settings); err != nil {
		t.Fatal(err)
	}
	reserve := settings["reserved_ram_mib"]
	settings["reserved_ram_mib"] = 1 << 30
	if err := a.Call("PUT", "/api/v1/compute/settings", settings, 200, &settings); err != nil {
		t.Fatal(err)
	}
	refused(ward.Name, map[string]string{"node": to}, "MiB free, VM "+ward.Name+" needs 1 and 256")
	refused(ward.Name, map[string]string{}, "no other node can take VM "+ward.Name)
	settings["reserved_ram_mib"] = reserve
	if err := a.Call("PUT", "/api/v1/compute/settings", settings, 200, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": "ward-local", "project": "clinic", "image": "guest", "flavor": "tiny", "local_disk": true}, 201, nil); err != nil {
		t.Fatal(err)
	}
	local := waitVM(t, a, "ward-local", 5*time.Minute, "running", inState("running"))
	for _, n := range c.Nodes[1:] {
		if n.Name != local.Node {
			refused(local.Name, map[string]string{"node": n.Name}, "VM ward-local has local disks on "+local.Node+": only a VM whose disks are all volumes can move")
			break
		}
	}

	// node1 is cordoned; with node2 too, node3 is the last that takes VMs.
	if err := a.Call("POST", "/api/v1/hosts/"+c.Node(2).Name+"/cordon", map[string]string{}, 200, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/hosts/"+c.Node(3).Name+"/drain", map[string]bool{"restart": true}, 409, nil); err != nil {
		t.Fatalf("drain the last node: %v", err)
	}
	drainConvert(t, c, a, "ward-local", names)
}

// drainConvert drains the node of name, a running VM with a local disk,
// with consent to convert disks (the CLI's --convert-disks). With no room
// in the project's quota for the volume the VM stays, running and
// untouched, and the drain says why; with room it is stopped, its disk
// moved onto a volume (filled on its node), moved to another node and
// started again there, booting from the volume; its local disk is gone
// from its old node. The VMs in others are deleted first, so that only
// it is drained. Every node is uncordoned first.
func drainConvert(t *testing.T, c *harness.Cluster, a *cairntest.Client, name string, others []string) {
	t.Helper()
	for _, n := range c.Nodes {
		if err := a.Call("POST", "/api/v1/hosts/"+n.Name+"/uncordon", nil, 204, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range others {
		if err := a.Call("DELETE", "/api/v1/vms/"+o, nil, 202, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range others {
		testutil.WaitFor(t, 2*time.Minute, o+" deleted", func() error {
			if _, err := getVM(a, o); err == nil {
				return fmt.Errorf("still there")
			}
			return nil
		})
	}
	vm, err := getVM(a, name)
	if err != nil {
		t.Fatal(err)
	}
	var from *harness.Node
	for _, n := range c.Nodes {
		if n.Name == vm.Node {
			from = n
		}
	}
	root := filepath.Join(from.DataDir, "vms", vm.ID, "root.qcow2")
	if _, err := os.Stat(root); err != nil || vm.Spec.BootVolume != "" {
		t.Fatalf("before the drain: boot volume %q, local disk %v", vm.Spec.BootVolume, err)
	}
	x := adminCLI(t, c.Node(1))
	drain := func() string {
		t.Helper()
		out, err := x.run("", "node", "drain", vm.Node, "--convert-disks", "--wait")
		if err != nil {
			t.Fatalf("node drain --convert-disks: %v\n%s", err, out)
		}
		return out
	}

	// No room in the quota for the volume: nothing changes.
	var q struct {
		Limits map[string]any `json:"limits"`
		Usage  map[string]any `json:"usage"`
	}
	if err := a.Call("GET", "/api/v1/projects/clinic/quota", nil, 200, &q); err != nil {
		t.Fatal(err)
	}
	limits := map[string]any{}
	for k, v := range q.Limits {
		limits[k] = v
	}
	limits["volume_gib"] = q.Usage["volume_gib"]
	if err := a.Call("PUT", "/api/v1/projects/clinic/quota", limits, 200, nil); err != nil {
		t.Fatal(err)
	}
	history := vmEvents(t, a, name)
	if out := drain(); !strings.Contains(out, name+" stays: its local disk cannot move onto a volume: quota exceeded for volume_gib") || !regexp.MustCompile(`converted:\s+0`).MatchString(out) {
		t.Fatalf("drain with no room for the volume:\n%s", out)
	}
	if after, err := getVM(a, name); err != nil || after.Node != vm.Node || after.Status.PID != vm.Status.PID || !alive(vm.Status.PID) || after.Spec.BootVolume != "" {
		t.Fatalf("after the refused conversion: %+v %v (was on %s, QEMU %d)", after, err, vm.Node, vm.Status.PID)
	}
	if evs := vmEvents(t, a, name); evs != history {
		t.Fatalf("history after the refused conversion:\n%s\nbefore:\n%s", evs, history)
	}
	if err := a.Call("PUT", "/api/v1/projects/clinic/quota", q.Limits, 200, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/hosts/"+vm.Node+"/uncordon", nil, 204, nil); err != nil {
		t.Fatal(err)
	}

	// Room: it goes.
	if out := drain(); !regexp.MustCompile(`converted:\s+1`).MatchString(out) || !regexp.MustCompile(`restarted:\s+1`).MatchString(out) {
		t.Fatalf("drain with consent to convert disks:\n%s", out)
	}
	moved := waitVM(t, a, name, 3*time.Minute, "running elsewhere", inState("running"))
	if moved.Node == vm.Node || moved.Spec.BootVolume == "" {
		t.Fatalf("after the drain: on %s (drained %s), boot volume %q", moved.Node, vm.Node, moved.Spec.BootVolume)
	}
	waitSerial(t, a, name, "cairn-guest: hostname="+name, 1) // booted from the volume there
	var bv struct {
		Source struct {
			VMDisk string `json:"vm_disk"`
			Filled bool   `json:"filled"`
		} `json:"source"`
	}
	if err := a.Call("GET", "/api/v1/volumes/"+moved.Spec.BootVolume+"?project=clinic", nil, 200, &bv); err != nil {
		t.Fatal(err)
	}
	if bv.Source.VMDisk != vm.ID || !bv.Source.Filled {
		t.Fatalf("the converted disk's volume: %+v", bv)
	}
	testutil.WaitFor(t, time.Minute, "the local disk gone from "+vm.Node, func() error {
		if _, err := os.Stat(root); !os.IsNotExist(err) {
			return fmt.Errorf("%s: %v", root, err)
		}
		return nil
	})
	if evs := vmEvents(t, a, name); !strings.Contains(evs, "onto a replicated volume") || !strings.Contains(evs, "moved from "+vm.Node+" to "+moved.Node+" while stopped") {
		t.Fatalf("history:\n%s", evs)
	}
}

// crashOrEnd is what a serial log shows of a guest that stopped working:
// from the start of a kernel oops (its first lines name the fault and
// the function), or else its last lines.
func crashOrEnd(log string) string {
	if i := crashAt(log); i >= 0 {
		return log[max(0, i-300):min(len(log), i+4000)]
	}
	return log[max(0, len(log)-600):]
}

// crashAt is where the guest's kernel first says it crashed, or -1.
func crashAt(log string) int {
	for _, mark := range []string{"BUG:", "Oops", "general protection fault", "Kernel panic"} {
		if i := strings.Index(log, mark); i >= 0 {
			return i
		}
	}
	return -1
}
