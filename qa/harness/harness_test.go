package harness_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

const (
	port    = "7000"
	wait    = 10 * time.Second
	refusal = 300 * time.Millisecond // how long a cut-off node gets to answer
)

// buildEcho builds testdata/echo, the program the test cluster runs.
func buildEcho(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "echo")
	out, err := exec.Command("go", "build", "-o", bin, "./testdata/echo").CombinedOutput()
	if err != nil {
		t.Fatalf("build echo: %v: %s", err, out)
	}
	return bin
}

// ask dials addr from the test process and returns the name it answers with.
func ask(addr string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func addr(n *harness.Node) string { return net.JoinHostPort(n.IP, port) }

// answers checks that n answers the test process with its name.
func answers(n *harness.Node) func() error {
	return func() error {
		got, err := ask(addr(n), time.Second)
		if err != nil {
			return fmt.Errorf("ask %s: %w", n.Name, err)
		}
		if got != n.Name {
			return fmt.Errorf("ask %s: answered %q", n.Name, got)
		}
		return nil
	}
}

// silent checks that n does not answer the test process within refusal.
func silent(n *harness.Node) func() error {
	return func() error {
		if got, err := ask(addr(n), refusal); err == nil {
			return fmt.Errorf("%s still answers (%q)", n.Name, got)
		}
		return nil
	}
}

// reaches checks that a probe run inside from's namespace gets to's name.
func reaches(echo string, from, to *harness.Node) func() error {
	return func() error {
		out, err := from.Command(echo, "--probe", addr(to), "--timeout", "1s").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -> %s: %w: %s", from.Name, to.Name, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != to.Name {
			return fmt.Errorf("%s -> %s: answered %q", from.Name, to.Name, got)
		}
		return nil
	}
}

// cut checks that a probe from from's namespace does not get to to.
func cut(echo string, from, to *harness.Node) func() error {
	return func() error {
		out, err := from.Command(echo, "--probe", addr(to), "--timeout", refusal.String()).CombinedOutput()
		if err == nil {
			return fmt.Errorf("%s -> %s: still reachable (%s)", from.Name, to.Name, strings.TrimSpace(string(out)))
		}
		return nil
	}
}

func TestCluster(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("harness: this test needs root (network namespaces, veths, a bridge, nftables); make test runs it as root")
	}
	echo := buildEcho(t)

	// Registered before New, so it runs after the cluster's own clean-up.
	var name string
	var pids []int
	t.Cleanup(func() { checkNothingLeft(t, name, pids) })

	c := harness.New(t, harness.Options{
		N:      3,
		Binary: echo,
		Args: func(n *harness.Node) []string {
			return []string{"--bind", addr(n), "--name", n.Name}
		},
	})
	name = c.Name()
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	record := func(ns ...*harness.Node) {
		for _, n := range ns {
			pids = append(pids, n.PID())
		}
	}
	record(n1, n2, n3)

	t.Log("step: every node answers the test process, and node1 reaches node2")
	for _, n := range c.Nodes {
		testutil.WaitFor(t, wait, n.Name+" to answer", answers(n))
	}
	testutil.WaitFor(t, wait, "node1 to reach node2", reaches(echo, n1, n2))

	t.Log("step: partition {node1} | {node2, node3}")
	c.Partition([]*harness.Node{n1}, []*harness.Node{n2, n3})
	testutil.WaitFor(t, wait, "node1 cut from node2", cut(echo, n1, n2))
	testutil.WaitFor(t, wait, "node2 cut from node1", cut(echo, n2, n1))
	testutil.WaitFor(t, wait, "node3 cut from node1", cut(echo, n3, n1))
	testutil.WaitFor(t, wait, "node2 to reach node3", reaches(echo, n2, n3))
	testutil.WaitFor(t, wait, "node1 to still answer the test process", answers(n1))

	t.Log("step: heal")
	c.Heal()
	testutil.WaitFor(t, wait, "node1 to reach node2 after heal", reaches(echo, n1, n2))
	testutil.WaitFor(t, wait, "node2 to reach node1 after heal", reaches(echo, n2, n1))

	t.Log("step: kill, start and restart node2")
	n2.Kill()
	if n2.Running() || n2.PID() != 0 {
		t.Fatalf("node2 after Kill: Running=%v PID=%d", n2.Running(), n2.PID())
	}
	testutil.WaitFor(t, wait, "killed node2 to stop answering", silent(n2))
	n2.Start()
	record(n2)
	testutil.WaitFor(t, wait, "started node2 to answer", answers(n2))
	before := n2.PID()
	n2.Restart()
	record(n2)
	if after := n2.PID(); after == before || after == 0 {
		t.Fatalf("node2 pid after Restart = %d, before %d", after, before)
	}
	testutil.WaitFor(t, wait, "restarted node2 to answer", answers(n2))
	testutil.WaitFor(t, wait, "node1 to reach restarted node2", reaches(echo, n1, n2))
	if log, err := os.ReadFile(n2.LogPath); err != nil {
		t.Fatalf("read node2 log: %v", err)
	} else if starts := strings.Count(string(log), "==== cairnqa: node2 start #"); starts != 3 {
		t.Fatalf("node2 log has %d start markers, want 3:\n%s", starts, log)
	}

	t.Log("step: stop and continue node3")
	n3.Stop()
	testutil.WaitFor(t, wait, "stopped node3 to stop answering", silent(n3))
	if !n3.Running() {
		t.Fatal("stopped node3 reported not running")
	}
	n3.Cont()
	testutil.WaitFor(t, wait, "continued node3 to answer", answers(n3))

	t.Log("step: a node the host cannot reach: the network report says so, and shows its side")
	veth := c.Name() + "v3"
	if out, err := exec.Command("ip", "link", "set", veth, "down").CombinedOutput(); err != nil {
		t.Fatalf("take %s down: %v %s", veth, err, out)
	}
	report := n3.NetReport()
	if out, err := exec.Command("ip", "link", "set", veth, "up").CombinedOutput(); err != nil {
		t.Fatalf("bring %s up: %v %s", veth, err, out)
	}
	if !strings.Contains(report, "the host does not reach node3 at "+n3.IP) || !strings.Contains(report, "$ ip route get "+n3.IP) || !strings.Contains(report, n3.IP+"/24") {
		t.Fatalf("report of an unreachable node3:\n%s", report)
	}
	testutil.WaitFor(t, wait, "node3 to answer with its link up", answers(n3))
	if report := n3.NetReport(); !strings.Contains(report, "the host reaches node3 at "+n3.IP+" now") {
		t.Fatalf("report of a reachable node3:\n%s", report)
	}

	t.Log("step: add node4")
	n4 := c.AddNode()
	record(n4)
	if n4.Index != 4 || n4.Name != "node4" || len(c.Nodes) != 4 {
		t.Fatalf("AddNode: index %d name %s, cluster has %d nodes", n4.Index, n4.Name, len(c.Nodes))
	}
	testutil.WaitFor(t, wait, "node4 to answer", answers(n4))
	testutil.WaitFor(t, wait, "node1 to reach node4", reaches(echo, n1, n4))

	t.Log("step: partition {node4} from the rest, nodes named in no group stay together")
	c.Partition([]*harness.Node{n4})
	testutil.WaitFor(t, wait, "node1 cut from node4", cut(echo, n1, n4))
	testutil.WaitFor(t, wait, "node1 to reach node3", reaches(echo, n1, n3))
	c.Heal()

	t.Log("step: remove node4")
	c.RemoveNode(n4)
	if len(c.Nodes) != 3 || n4.Running() {
		t.Fatalf("RemoveNode: cluster has %d nodes, node4 running=%v", len(c.Nodes), n4.Running())
	}
	if _, err := os.Stat(filepath.Join("/run/netns", n4.Netns)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("namespace %s still exists after RemoveNode (stat: %v)", n4.Netns, err)
	}
	testutil.WaitFor(t, wait, "removed node4 to stop answering", silent(n4))
}

// checkNothingLeft asserts that the cluster named name left no namespace, link
// or process behind.
func checkNothingLeft(t *testing.T, name string, pids []int) {
	if name == "" {
		t.Error("cluster has no name; cannot check its clean-up")
		return
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), name) {
				t.Errorf("namespace %s left behind", e.Name())
			}
		}
	}
	links, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Errorf("list links: %v", err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Name(), name) {
			t.Errorf("link %s left behind", l.Name())
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d left behind (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/cairnqa", name+".owner")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("owner file of %s left behind (stat: %v)", name, err)
	}
}
