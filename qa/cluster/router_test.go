package cluster_test

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A project's router across three boxes, with real VMs: a guest on one
// network reaches a guest on another network on another box, and the
// outside from its own box's address; a floating IP reaches its guest
// from outside, through a kill -9 and restart of the agent of its box,
// after the guest moves live to another box and after that box dies and
// the guest is restarted on another, and reaches nothing once taken back.
// Bad input changes nothing.
func TestRoutersAndFloatingIPs(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--vm-stop-timeout", "30s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	computeSetup(t, a, 3)
	if _, err := a.CreateProject("lab"); err != nil {
		t.Fatal(err)
	}
	outside := plugOutside(t, c)
	listenPeer(t, outside, "203.0.113.1:80")

	call := func(method, path string, body any, want int, out any) {
		t.Helper()
		if err := a.Call(method, path, body, want, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	call("POST", "/api/v1/networks", map[string]any{"name": "public", "external": true, "interface": "ext0", "cidr": "203.0.113.0/24",
		"gateway": "203.0.113.1", "pools": []map[string]string{{"start": "203.0.113.10", "end": "203.0.113.60"}}}, 201, nil)
	for _, nw := range []map[string]any{
		{"name": "imaging", "project": "clinic", "cidr": "10.50.0.0/24"},
		{"name": "wards", "project": "clinic", "cidr": "10.51.0.0/24"},
		{"name": "lab-net", "project": "lab", "cidr": "10.52.0.0/24"},
	} {
		call("POST", "/api/v1/networks", nw, 201, nil)
	}
	call("POST", "/api/v1/security-groups", map[string]any{"name": "web", "project": "clinic",
		"rules": []map[string]any{{"direction": "ingress", "protocol": "tcp", "port_min": 8080, "remote_cidr": "0.0.0.0/0"}}}, 201, nil)
	call("POST", "/api/v1/routers", map[string]any{"name": "edge", "project": "clinic"}, 201, nil)
	call("POST", "/api/v1/routers/edge/interfaces", map[string]any{"network": "imaging"}, 200, nil)
	call("POST", "/api/v1/routers/edge/interfaces", map[string]any{"network": "wards"}, 200, nil)
	// Bad input: another project's network, a gateway on a project
	// network, a floating IP from one. Each is refused and changes nothing.
	call("POST", "/api/v1/routers/edge/interfaces", map[string]any{"network": "lab-net"}, 404, nil)
	call("PUT", "/api/v1/routers/edge/gateway", map[string]any{"network": "imaging"}, 400, nil)
	call("POST", "/api/v1/floating-ips", map[string]any{"project": "clinic", "network": "imaging"}, 400, nil)
	var edge struct {
		Networks []string          `json:"networks"`
		External string            `json:"external_network"`
		Addrs    map[string]string `json:"gateway_addresses"`
	}
	call("GET", "/api/v1/routers/edge", nil, 200, &edge)
	if len(edge.Networks) != 2 || edge.External != "" {
		t.Fatalf("router after refused changes: %+v", edge)
	}
	call("PUT", "/api/v1/routers/edge/gateway", map[string]any{"network": "public"}, 200, nil)

	// viewer1 on wards; pacs1 on imaging, on another box, probing viewer1
	// and the outside from inside the guest.
	// viewer1 boots from a volume, so that it can move; pacs1 from a
	// local disk.
	vm := func(name, network, userData string, local bool) {
		call("POST", "/api/v1/vms", map[string]any{"name": name, "project": "clinic", "image": "guest", "flavor": "tiny", "group": "edge",
			"local_disk": local, "networks": []string{network}, "security_groups": []string{"default", "web"}, "user_data": userData}, 201, nil)
	}
	vm("viewer1", "wards", "", false)
	viewer := waitVM(t, a, "viewer1", 4*time.Minute, "running", inState("running"))
	waitSerial(t, a, "viewer1", "cairn-guest: hostname=viewer1 ip="+viewer.IP(), 1)
	vm("pacs1", "imaging", fmt.Sprintf("#cloud-config\n# cairn-guest probe %s:8080\n# cairn-guest probe 203.0.113.1:80\n", viewer.IP()), true)
	pacs := waitVM(t, a, "pacs1", 4*time.Minute, "running", inState("running"))
	if pacs.Node == viewer.Node {
		t.Fatalf("anti-affinity group on one node: %s", pacs.Node)
	}
	waitSerial(t, a, "pacs1", fmt.Sprintf("cairn-guest: probe %s:8080 ok hostname=viewer1 ip=%s", viewer.IP(), viewer.IP()), 1)
	testutil.WaitFor(t, time.Minute, "the router has an address on "+pacs.Node, func() error {
		call("GET", "/api/v1/routers/edge", nil, 200, &edge)
		if edge.Addrs[pacs.Node] == "" {
			return fmt.Errorf("addresses %v", edge.Addrs)
		}
		return nil
	})
	waitSerial(t, a, "pacs1", "cairn-guest: probe 203.0.113.1:80 ok "+edge.Addrs[pacs.Node], 1)

	// A floating IP for viewer1, reached from outside.
	var fip struct {
		IP string `json:"ip"`
	}
	call("POST", "/api/v1/floating-ips", map[string]any{"project": "clinic", "network": "public", "port_id": viewer.NICs[0].ID}, 201, &fip)
	want := "hostname=viewer1 ip=" + viewer.IP()
	testutil.WaitFor(t, time.Minute, "the outside reaches viewer1 at its floating IP "+fip.IP, func() error {
		if out, err := probeFrom(outside, fip.IP); err != nil || !strings.Contains(out, want) {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	// The agent of viewer1's box killed with -9 and restarted: the
	// floating IP answers throughout.
	nv := cairntest.NodeByName(c, viewer.Node)
	probes := probeUntil(outside, fip.IP, want)
	nv.Kill()
	nv.Start()
	cairntest.WaitReady(t, nv)
	time.Sleep(5 * time.Second)
	if fails, _ := probes(); len(fails) > 0 {
		t.Fatalf("the floating IP did not answer across its box's agent restart: %v", fails)
	}

	// viewer1 moves live to the third box, which carried neither of its
	// networks: the floating IP follows it (at the switchover, with its
	// port), and the outside reaches the same guest there.
	var third *harness.Node
	for _, n := range c.Nodes {
		if n.Name != viewer.Node && n.Name != pacs.Node {
			third = n
		}
	}
	probes = probeUntil(outside, fip.IP, want)
	call("POST", "/api/v1/vms/viewer1/migrate", map[string]string{"node": third.Name}, 200, nil)
	waitVM(t, a, "viewer1", 3*time.Minute, "running on "+third.Name, func(v vmView) error {
		if v.Node != third.Name || v.Status.State != "running" {
			return fmt.Errorf("on %s, %s", v.Node, v.Status.State)
		}
		return nil
	})
	fipReaches(t, outside, fip.IP, want, "viewer1 moved live to "+third.Name)
	fails, gap := probes()
	t.Logf("the floating IP during the live move: %d failed probes %v; at most %s between answers", len(fails), fails, gap)

	// viewer1's new box dies (its agent and the guest's QEMU, kill -9):
	// the guest is restarted on the box it came from (anti-affinity keeps
	// it off pacs1's), and the floating IP follows it there.
	moved, err := getVM(a, "viewer1")
	if err != nil {
		t.Fatal(err)
	}
	third.Kill()
	for _, pid := range qemuPIDs(third, moved.ID) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	restarted := waitVM(t, a, "viewer1", 3*time.Minute, "restarted on "+viewer.Node, func(v vmView) error {
		if v.Node != viewer.Node || v.Status.State != "running" {
			return fmt.Errorf("on %s, %s", v.Node, v.Status.State)
		}
		return nil
	})
	if restarted.IP() != viewer.IP() {
		t.Fatalf("viewer1 restarted with address %s, had %s", restarted.IP(), viewer.IP())
	}
	fipReaches(t, outside, fip.IP, want, "viewer1 restarted on "+viewer.Node+" after "+third.Name+" died")
	third.Start()
	cairntest.WaitShape(t, a, 3, 0)
	// A router that connects networks, and a network on a router, stay.
	call("DELETE", "/api/v1/routers/edge", nil, 409, nil)
	call("DELETE", "/api/v1/networks/wards", nil, 409, nil)
	// Taken back, the floating IP reaches nothing.
	call("DELETE", "/api/v1/floating-ips/"+fip.IP+"/port", nil, 200, nil)
	testutil.WaitFor(t, 30*time.Second, "the floating IP taken back answers no more", func() error {
		if out, err := probeFrom(outside, fip.IP); err == nil {
			return fmt.Errorf("still answered %q", out)
		}
		return nil
	})
}

// probeUntil probes the guest behind ip from the namespace every 200 ms,
// until the returned function is called; that returns the probes that did
// not reach the guest (want not in the answer), and the longest time
// between two that did (a probe waits up to 3 s for its answer).
func probeUntil(p probeNS, ip, want string) func() ([]string, time.Duration) {
	type result struct {
		fails []string
		gap   time.Duration
	}
	stop, done := make(chan struct{}), make(chan result, 1)
	go func() {
		var r result
		var last time.Time
		for {
			select {
			case <-stop:
				done <- r
				return
			default:
			}
			if out, err := probeFrom(p, ip); err != nil || !strings.Contains(out, want) {
				r.fails = append(r.fails, fmt.Sprintf("%s: %q %v", time.Now().Format("15:04:05.000"), out, err))
			} else {
				if !last.IsZero() {
					r.gap = max(r.gap, time.Since(last))
				}
				last = time.Now()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	var r result
	var once bool
	return func() ([]string, time.Duration) {
		if !once {
			once = true
			close(stop)
			r = <-done
		}
		return r.fails, r.gap
	}
}

// fipReaches waits until the namespace reaches the guest (want in its
// answer) at the floating IP.
func fipReaches(t *testing.T, p probeNS, ip, want, what string) {
	t.Helper()
	testutil.WaitFor(t, 3*time.Minute, "the outside reaching "+ip+" once "+what, func() error {
		if out, err := probeFrom(p, ip); err != nil || !strings.Contains(out, want) {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
}

// plugOutside makes the external network: a namespace with a switch (a
// bridge holding the upstream gateway's address, 203.0.113.1) that every
// node's ext0 is plugged into. When the test ends the namespace goes (the
// harness removes the routers' namespaces with their nodes').
func plugOutside(t *testing.T, c *harness.Cluster) probeNS {
	t.Helper()
	p := probeNS{name: fmt.Sprintf("cairn-out-%d", time.Now().UnixNano()%1e9)}
	run := func(cmd *exec.Cmd) {
		t.Helper()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", cmd.Args, err, out)
		}
	}
	run(exec.Command("ip", "netns", "add", p.name))
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.name).Run() })
	run(exec.Command("ip", "-n", p.name, "link", "add", "sw", "type", "bridge"))
	run(exec.Command("ip", "-n", p.name, "link", "set", "sw", "up"))
	run(exec.Command("ip", "-n", p.name, "addr", "add", "203.0.113.1/24", "dev", "sw"))
	for i := 1; i <= 3; i++ {
		n := c.Node(i)
		port := fmt.Sprintf("sw%d", i)
		run(exec.Command("ip", "-n", n.Netns, "link", "add", "ext0", "type", "veth", "peer", "name", port, "netns", p.name))
		run(exec.Command("ip", "-n", p.name, "link", "set", port, "master", "sw", "up"))
		run(exec.Command("ip", "-n", n.Netns, "link", "set", "ext0", "up"))
	}
	return p
}

// listenPeer answers every connection to addr in the namespace with the
// address it came from.
func listenPeer(t *testing.T, p probeNS, addr string) {
	t.Helper()
	serveIn(t, p, addr, func(c net.Conn) string {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		return host
	})
}
