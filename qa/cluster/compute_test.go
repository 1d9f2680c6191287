package cluster_test

import (
	"crypto/ed25519"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"golang.org/x/crypto/ssh"
)

// The typical flow on one node, with real QEMU (TCG here) and the test
// guest: create from an image and a flavor, every lifecycle operation, an
// agent killed with -9 underneath a running VM, and delete leaving nothing.
func TestVMLifecycleOneNode(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2", "--vm-stop-timeout", "5s"}})
	n := c.Node(1)
	a := cairntest.Admin(t, n)
	computeSetup(t, a, 2)
	pub, _, _ := ed25519.GenerateKey(nil)
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " nurse@ward"
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": "vm1", "project": "clinic", "image": "guest", "flavor": "tiny",
		"ssh_keys": []string{key}, "data_disks_gib": []int{1}}, 201, nil); err != nil {
		t.Fatal(err)
	}
	vm := waitVM(t, a, "vm1", 3*time.Minute, "running", inState("running"))
	// The seed carried the key; the data disk is there beside the boot disk.
	waitSerial(t, a, "vm1", "ssh-keys=1", 1)
	if _, err := os.Stat(filepath.Join(n.DataDir, "vms", vm.ID, "data-0.qcow2")); err != nil {
		t.Fatalf("data disk: %v", err)
	}
	// It boots from a block volume made from the image (the default on a
	// cluster with disks), which its QEMU reaches over NBD from this node;
	// the data disk is local scratch.
	if bv := vmBootVolume(t, a, vm); bv.Writer != n.Name || bv.Source == nil || !bv.Source.Filled || len(bv.Replicas) != 1 {
		t.Fatalf("boot volume: %+v", bv)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", vm.Status.PID)); err != nil || !strings.Contains(string(b), "driver=nbd") || strings.Contains(string(b), "root.qcow2") {
		t.Fatalf("QEMU's command line does not boot from the volume: %q %v", b, err)
	}

	// cairn killed with -9 and restarted: the VM runs on, same process, and
	// is still managed (the lifecycle below drives it).
	pid := vm.Status.PID
	n.Kill()
	if !alive(pid) {
		t.Fatalf("QEMU %d died with the agent", pid)
	}
	// Leftovers of VMs that no longer exist, as a crash mid-delete leaves
	// them: the restarted agent removes them.
	orphanDir := filepath.Join(n.DataDir, "vms", "vm-00000000deadbeef")
	if err := os.MkdirAll(orphanDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := n.Command("ip", "tuntap", "add", "cvmdeadbeef", "mode", "tap").CombinedOutput(); err != nil {
		t.Fatalf("make an orphan tap: %v %s", err, out)
	}
	n.Start()
	cairntest.WaitReady(t, n)
	a = cairntest.Admin(t, n)
	vm = waitVM(t, a, "vm1", time.Minute, "running after the agent's restart", inState("running"))
	if vm.Status.PID != pid {
		t.Fatalf("QEMU pid changed across the agent restart: %d → %d", pid, vm.Status.PID)
	}
	testutil.WaitFor(t, 30*time.Second, "leftovers removed at start", func() error {
		if _, err := os.Stat(orphanDir); err == nil {
			return fmt.Errorf("%s still there", orphanDir)
		}
		if out, _ := n.Command("ip", "link", "show", "cvmdeadbeef").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
			return fmt.Errorf("orphan tap still there: %s", out)
		}
		return nil
	})

	// Resize online: QEMU hot-plugs a vCPU and a memory DIMM.
	if err := a.Call("POST", "/api/v1/vms/vm1/resize", map[string]string{"flavor": "tiny2"}, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", time.Minute, "resized online", func(v vmView) error {
		if v.Status.VCPUs != 2 || v.Status.RAMMiB != 384 || v.Status.PID != pid || v.Status.Pending != "" {
			return fmt.Errorf("%d vCPUs, %d MiB, pid %d, pending %q", v.Status.VCPUs, v.Status.RAMMiB, v.Status.PID, v.Status.Pending)
		}
		return nil
	})

	// A paused guest cannot answer the power button: stop forces it off
	// after --vm-stop-timeout and says so in the history.
	if err := a.Call("POST", "/api/v1/vms/vm1/pause", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", 30*time.Second, "paused", inState("paused"))
	if err := a.Call("POST", "/api/v1/vms/vm1/stop", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", time.Minute, "forced off", inState("stopped"))
	var evs []struct{ Kind, Message string }
	if err := a.Call("GET", "/api/v1/vms/vm1/events", nil, 200, &evs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(evs), "forced off") {
		t.Fatalf("no forced stop in the history: %+v", evs)
	}
	if err := a.Call("POST", "/api/v1/vms/vm1/start", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	hungQEMU(t, n, "vm1")
	a = cairntest.Admin(t, n)
	lifecycle(t, c, []*cairntest.Client{a}, "vm1")
}

// hungQEMU: a VM's QEMU hangs (frozen with SIGSTOP) and the agent restarts,
// so it cannot attach to it. A stop cannot reach the guest: the VM says so
// and is not reported stopped (a stopped VM may move to another node), its
// QEMU still there; a force-stop pulls the plug. It starts again after.
func hungQEMU(t *testing.T, n *harness.Node, name string) {
	t.Helper()
	a := cairntest.Admin(t, n)
	vm := waitVM(t, a, name, 3*time.Minute, "running", inState("running"))
	pid := vm.Status.PID
	n.Kill()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	n.Start()
	cairntest.WaitReady(t, n)
	a = cairntest.Admin(t, n)
	if err := a.Call("POST", "/api/v1/vms/"+name+"/stop", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, name, 3*time.Minute, "not stopped while its QEMU hangs", func(v vmView) error {
		if v.Status.State != "error" || !strings.Contains(v.Status.Error, "monitor does not answer") {
			return fmt.Errorf("%s: %s", v.Status.State, v.Status.Error)
		}
		return nil
	})
	if !alive(pid) {
		t.Fatalf("QEMU %d is gone, yet the stop was not forced", pid)
	}
	if err := a.Call("POST", "/api/v1/vms/"+name+"/force-stop", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, name, 3*time.Minute, "forced off", inState("stopped"))
	testutil.WaitFor(t, 30*time.Second, "the hung QEMU gone", func() error {
		if alive(pid) {
			return fmt.Errorf("QEMU %d still runs", pid)
		}
		return nil
	})
	if err := a.Call("POST", "/api/v1/vms/"+name+"/start", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
}

// lifecycle drives a running VM through every operation, through the
// given nodes' APIs in turn, and deletes it: the guest answers or not as
// it should, and nothing is left on its node.
func lifecycle(t *testing.T, c *harness.Cluster, apis []*cairntest.Client, name string) {
	t.Helper()
	api := func(i int) *cairntest.Client { return apis[i%len(apis)] }
	vm := waitVM(t, api(0), name, 3*time.Minute, "running", inState("running"))
	node := cairntest.NodeByName(c, vm.Node)
	if vm.Status.Accel == "" || vm.IP() == "" {
		t.Fatalf("running VM: accel %q ip %q", vm.Status.Accel, vm.IP())
	}
	hello := "hostname=" + name + " ip=" + vm.IP()
	waitSerial(t, api(1), name, "cairn-guest: "+hello, 1)
	waitProbe(t, node, vm.IP(), hello)
	boots := strings.Count(serialLog(t, api(0), name), "cairn-guest: "+hello)

	// Pause: QEMU stops the vCPUs and the guest stops answering.
	if err := api(1).Call("POST", "/api/v1/vms/"+name+"/pause", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, api(2), name, 30*time.Second, "paused", inState("paused"))
	if out, err := probe(node, vm.IP()); err == nil && strings.Contains(out, hello) {
		t.Fatalf("a paused guest answered: %q", out)
	}
	if err := api(2).Call("POST", "/api/v1/vms/"+name+"/resume", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, api(0), name, 30*time.Second, "running again", inState("running"))
	waitProbe(t, node, vm.IP(), hello)

	// Reboot: the guest boots once more.
	if err := api(0).Call("POST", "/api/v1/vms/"+name+"/reboot", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, api(1), name, "cairn-guest: "+hello, boots+1)

	// Stop (ACPI: the guest powers itself off), resize while stopped, start.
	pid := vm.Status.PID
	if err := api(1).Call("POST", "/api/v1/vms/"+name+"/stop", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, api(2), name, time.Minute, "stopped", inState("stopped"))
	testutil.WaitFor(t, 10*time.Second, "QEMU gone after stop", func() error {
		if alive(pid) {
			return fmt.Errorf("QEMU %d still runs", pid)
		}
		return nil
	})
	if err := api(2).Call("POST", "/api/v1/vms/"+name+"/resize", map[string]string{"flavor": "tiny3"}, 200, nil); err != nil {
		t.Fatal(err)
	}
	if err := api(0).Call("POST", "/api/v1/vms/"+name+"/start", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	vm = waitVM(t, api(1), name, 3*time.Minute, "running with the new size", func(v vmView) error {
		if err := inState("running")(v); err != nil {
			return err
		}
		if v.Status.VCPUs != 2 || v.Status.RAMMiB != 512 {
			return fmt.Errorf("running with %d vCPUs, %d MiB", v.Status.VCPUs, v.Status.RAMMiB)
		}
		return nil
	})
	waitProbe(t, node, vm.IP(), hello)
	if vm.Spec.BootVolume == "" {
		if got := virtualSize(t, filepath.Join(node.DataDir, "vms", vm.ID, "root.qcow2")); got != 3<<30 {
			t.Fatalf("boot disk after resize to 3 GiB: %d bytes", got)
		}
	} else {
		// A boot volume keeps its size (it grows with volume extend), as
		// in OpenStack.
		bv := vmBootVolume(t, api(0), vm)
		if bv.SizeBytes != 1<<30 || bv.Attachment == nil || bv.Attachment.Node != vm.Node || bv.Writer != vm.Node {
			t.Fatalf("boot volume after a resize: %+v", bv)
		}
	}

	// Delete removes the process, the tap, the disks and the record.
	if err := api(2).Call("DELETE", "/api/v1/vms/"+name, nil, 202, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, name+" gone", func() error {
		if _, err := getVM(api(0), name); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if left := vmLeftovers(node, vm.ID, vm.Status.PID); len(left) > 0 {
		t.Fatalf("delete left behind on %s: %v", node.Name, left)
	}
	if vm.Spec.BootVolume != "" {
		// The boot volume made with the VM went with it.
		if err := api(1).Call("GET", "/api/v1/volumes/"+vm.Spec.BootVolume, nil, 404, nil); err != nil {
			t.Fatalf("boot volume after the VM's delete: %v", err)
		}
	}
}

// Bad requests get clear errors and leave nothing; a VM whose QEMU cannot
// start shows the reason and can be deleted without orphans.
func TestVMBadRequests(t *testing.T) {
	// UEFI firmware that does not exist: every UEFI VM fails to start.
	c := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2", "--ovmf-code", "/nonexistent/OVMF_CODE.fd"}})
	n := c.Node(1)
	a := cairntest.Admin(t, n)
	computeSetup(t, a, 2)
	dir := t.TempDir()

	for _, tc := range []struct {
		name string
		body map[string]any
		want int
		code string
	}{
		{"unknown flavor", map[string]any{"name": "x", "project": "clinic", "image": "guest", "flavor": "nope"}, 404, "not_found"},
		{"unknown image", map[string]any{"name": "x", "project": "clinic", "image": "nope", "flavor": "tiny"}, 404, "not_found"},
		{"invalid cloud-init", map[string]any{"name": "x", "project": "clinic", "image": "guest", "flavor": "tiny", "user_data": "#cloud-config\npackages: [unclosed"}, 400, "invalid_argument"},
		{"invalid ssh key", map[string]any{"name": "x", "project": "clinic", "image": "guest", "flavor": "tiny", "ssh_keys": []string{"ssh-rsa nope"}}, 400, "invalid_argument"},
	} {
		err := a.Call("POST", "/api/v1/vms", tc.body, tc.want, nil)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	// An image larger than the flavor's disk: a 5 GiB qcow2 (a small file).
	big := filepath.Join(dir, "big.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", big, "5G").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	uploadImage(t, a, big, url.Values{"name": {"big"}, "project": {"clinic"}}, 201)
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": "x", "project": "clinic", "image": "big", "flavor": "tiny"}, 400, nil); err != nil {
		t.Errorf("image larger than the flavor's disk: %v", err)
	}

	// A corrupt qcow2 is refused at upload.
	corrupt := filepath.Join(dir, "corrupt.qcow2")
	b, _ := os.ReadFile(big)
	for i := 0x200; i < len(b); i++ { // keep the header, wreck the tables
		b[i] = 0xff
	}
	if err := os.WriteFile(corrupt, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if body := uploadImage(t, a, corrupt, url.Values{"name": {"corrupt"}, "project": {"clinic"}}, 400); !strings.Contains(body, "corrupt") && !strings.Contains(body, "not a valid") {
		t.Errorf("corrupt image refused without saying why: %s", body)
	}

	// Import from a file server on the LAN (the harness host, as seen from
	// the node's namespace); a loopback URL is refused.
	ln, err := net.Listen("tcp", c.HostIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(filepath.Dir(harness.GuestImage(t)))), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	var imported struct {
		SHA256 string `json:"sha256"`
		Format string `json:"format"`
	}
	if err := a.Call("POST", "/api/v1/images/import", map[string]any{"name": "imported", "project": "clinic",
		"url": "http://" + ln.Addr().String() + "/guest.qcow2"}, 201, &imported); err != nil || imported.Format != "qcow2" {
		t.Fatalf("import from %s: %+v %v", ln.Addr(), imported, err)
	}
	if err := a.Call("POST", "/api/v1/images/import", map[string]any{"name": "local", "project": "clinic",
		"url": "http://127.0.0.1:8443/"}, 400, nil); err != nil {
		t.Errorf("import from loopback: %v", err)
	}

	// Over quota.
	if err := a.Call("PUT", "/api/v1/projects/clinic/quota", map[string]any{"instances": 1, "vcpus": 10, "ram_mib": 10000, "disk_gib": 100, "object_gib": 10, "floating_ips": 1}, 200, nil); err != nil {
		t.Fatal(err)
	}

	// A VM whose QEMU cannot start: UEFI with missing firmware.
	uploadImage(t, a, harness.GuestImage(t), url.Values{"name": {"guest-uefi"}, "project": {"clinic"}, "firmware": {"uefi"}}, 201)
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": "broken", "project": "clinic", "image": "guest-uefi", "flavor": "tiny"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": "second", "project": "clinic", "image": "guest", "flavor": "tiny"}, 403, nil); err != nil {
		t.Errorf("over quota: %v", err)
	}
	vm := waitVM(t, a, "broken", 2*time.Minute, "error", inState("error"))
	if !strings.Contains(vm.Status.Error, "OVMF") && !strings.Contains(vm.Status.Error, "nonexistent") {
		t.Errorf("the error does not say why: %q", vm.Status.Error)
	}
	if err := a.Call("DELETE", "/api/v1/vms/broken", nil, 202, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "broken gone", func() error {
		if _, err := getVM(a, "broken"); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if left := vmLeftovers(n, vm.ID, 0); len(left) > 0 {
		t.Fatalf("a failed VM's delete left: %v", left)
	}
	var vms []vmView
	if err := a.Call("GET", "/api/v1/vms", nil, 200, &vms); err != nil || len(vms) != 0 {
		t.Fatalf("VMs left after bad requests: %+v %v", vms, err)
	}
}

// On three nodes: an anti-affinity group lands on different nodes, any
// node's API drives any VM, serial logs and the VNC console are relayed
// from the VM's node, and delete cleans up on the node that ran the VM.
func TestVMsOnThreeNodes(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2", "--vm-stop-timeout", "30s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	computeSetup(t, a, 6)
	a2, a3 := a.On(c.Node(2)), a.On(c.Node(3))
	// ha2 boots the same guest with UEFI (OVMF) instead of SeaBIOS, from a
	// local disk; ha1 from a block volume (the default), replicated on
	// the three nodes.
	uploadImage(t, a, harness.GuestImage(t), url.Values{"name": {"guest-uefi"}, "project": {"clinic"}, "firmware": {"uefi"}}, 201)
	// ha1's guest keeps rewriting and checking 64 MiB of its memory
	// (memcheck), so that its live move shows any page it loses.
	for name, image := range map[string]string{"ha1": "guest", "ha2": "guest-uefi"} {
		req := map[string]any{"name": name, "project": "clinic", "image": image, "flavor": "tiny", "group": "ha", "local_disk": name == "ha2"}
		if name == "ha1" {
			req["user_data"] = "#cloud-config\n# cairn-guest memcheck 64\n"
		}
		if err := a2.Call("POST", "/api/v1/vms", req, 201, nil); err != nil {
			t.Fatal(err)
		}
	}
	vms := map[string]vmView{}
	for _, name := range []string{"ha1", "ha2"} {
		vms[name] = waitVM(t, a3, name, 4*time.Minute, "running", inState("running"))
	}
	if vms["ha1"].Node == vms["ha2"].Node {
		t.Fatalf("anti-affinity group on one node: %s", vms["ha1"].Node)
	}
	if vms["ha2"].Spec.BootVolume != "" {
		t.Fatalf("ha2 asked for a local disk and got boot volume %s", vms["ha2"].Spec.BootVolume)
	}
	bv := vmBootVolume(t, a, vms["ha1"])
	nodes := map[string]bool{}
	for _, r := range bv.Replicas {
		if r.State == "in_sync" {
			nodes[r.Node] = true
		}
	}
	if len(nodes) != 3 || bv.Writer != vms["ha1"].Node || !bv.Attachment.Boot || bv.Source == nil || !bv.Source.Filled {
		t.Fatalf("ha1's boot volume: %+v", bv)
	}
	for name, vm := range vms {
		hello := "hostname=" + name + " ip=" + vm.IP()
		waitSerial(t, a, name, "cairn-guest: "+hello, 1) // relayed unless node1 runs it
		waitProbe(t, cairntest.NodeByName(c, vm.Node), vm.IP(), hello)
	}

	// The VNC console through a node that does not run the VM.
	vm := vms["ha1"]
	via := a
	for _, n := range c.Nodes {
		if n.Name != vm.Node {
			via = a.On(n)
			break
		}
	}
	var ticket struct {
		VNCPath string `json:"vnc_path"`
	}
	if err := via.Call("POST", "/api/v1/vms/ha1/console", nil, 200, &ticket); err != nil {
		t.Fatal(err)
	}
	if got := vncGreeting(t, via, ticket.VNCPath); !strings.HasPrefix(got, "RFB 003.") {
		t.Fatalf("VNC console relayed from %s answered %q", vm.Node, got)
	}
	if err := vncDial(via, ticket.VNCPath); err == nil {
		t.Fatalf("a console ticket worked twice")
	}

	hotplugVolume(t, a, a2, "ha1")
	snapshotWhileGuestWrites(t, a, "ha1")
	// Its usage graphs, relayed from its node.
	checkUsage(t, via, cairntest.NodeByName(c, vm.Node), "ha1", vm.IP())
	// ha1 moves live to the node that runs neither it nor ha2 (its
	// group's), then back while stopped.
	migrateLive(t, c, a, a2, "ha1", vms["ha2"].Node)
	migrateStopped(t, c, a, a2, "ha1", vms["ha2"].Node)

	// ha1: the whole lifecycle, each step through another node's API.
	lifecycle(t, c, []*cairntest.Client{a, a2, a3}, "ha1")
	// ha2's serial console, live through a node that does not run it: a
	// reboot's boot messages stream in.
	vm = vms["ha2"]
	via = a
	for _, n := range c.Nodes {
		if n.Name != vm.Node {
			via = a.On(n)
			break
		}
	}
	var serial struct {
		SerialPath string `json:"serial_path"`
	}
	if err := via.Call("POST", "/api/v1/vms/ha2/console", nil, 200, &serial); err != nil {
		t.Fatal(err)
	}
	conn, err := wsDial(via, serial.SerialPath)
	if err != nil {
		t.Fatalf("serial console WebSocket: %v", err)
	}
	if err := a.Call("POST", "/api/v1/vms/ha2/reboot", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	if got := readUntil(t, conn, "cairn-guest: hostname=ha2", 3*time.Minute); !strings.Contains(got, "Linux version") {
		t.Errorf("the serial console did not stream the boot: %q", got)
	}
	conn.CloseNow()
	if err := a2.Call("POST", "/api/v1/vms/ha2/force-stop", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "ha2", 30*time.Second, "powered off", inState("stopped"))
	if err := a3.Call("DELETE", "/api/v1/vms/ha2", nil, 202, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "ha2 gone", func() error {
		if _, err := getVM(a, "ha2"); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if left := vmLeftovers(cairntest.NodeByName(c, vm.Node), vm.ID, vm.Status.PID); len(left) > 0 {
		t.Fatalf("delete of ha2 left on %s: %v", vm.Node, left)
	}
}

// hotplugVolume adds a data volume to a running VM, grows it online and
// takes it away again; the guest's own list of its disks (on its serial
// line) shows each step.
func hotplugVolume(t *testing.T, a, a2 *cairntest.Client, vm string) {
	t.Helper()
	const name = "hot-data"
	lastDisks := func() string {
		lines := regexp.MustCompile(`cairn-guest: disks[^\r\n]*`).FindAllString(serialLog(t, a, vm), -1)
		if len(lines) == 0 {
			return ""
		}
		return lines[len(lines)-1]
	}
	seesDisk := func(bytes int64, want bool) func() error {
		return func() error {
			if got := lastDisks(); strings.Contains(got, fmt.Sprintf("=%d", bytes)) != want {
				return fmt.Errorf("the guest's disks: %q", got)
			}
			return nil
		}
	}
	if err := a.Call("POST", "/api/v1/volumes", map[string]any{"name": name, "size_gib": 2, "project": "clinic"}, 201, nil); err != nil {
		t.Fatal(err)
	}
	if err := a2.Call("POST", "/api/v1/volumes/"+name+"/attach?project=clinic", map[string]string{"vm": vm}, 200, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the guest sees the hot-plugged 2 GiB volume", seesDisk(2<<30, true))
	var hot volInfo
	if err := a.Call("GET", "/api/v1/volumes/"+name+"?project=clinic", nil, 200, &hot); err != nil {
		t.Fatal(err)
	}
	if got := lastDisks(); !strings.Contains(got, fmt.Sprintf("=%d/%s", 2<<30, hot.ID)) {
		t.Fatalf("the guest does not see the volume's ID as its serial: %q", got)
	}
	if err := a.Call("POST", "/api/v1/volumes/"+name+"/extend?project=clinic", map[string]int64{"size_gib": 3}, 200, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the guest sees the volume grown to 3 GiB", seesDisk(3<<30, true))
	if err := a2.Call("POST", "/api/v1/volumes/"+name+"/detach?project=clinic", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	// Detached only once the guest has let it go.
	testutil.WaitFor(t, time.Minute, "volume detached", func() error {
		var v volInfo
		if err := a.Call("GET", "/api/v1/volumes/"+name+"?project=clinic", nil, 200, &v); err != nil {
			return err
		}
		if v.State != "available" || v.Attachment != nil {
			return fmt.Errorf("%s, attachment %+v", v.State, v.Attachment)
		}
		return nil
	})
	// The guest lets the disk go before QEMU deletes the device, but it
	// reports its disks once a second over a slow serial line: give the
	// report time to arrive.
	testutil.WaitFor(t, 30*time.Second, "the guest no longer lists the detached volume", seesDisk(3<<30, false))
	if v, err := getVM(a, vm); err != nil || v.Status.Pending != "" || v.Status.State != "running" {
		t.Fatalf("%s after the hot-plug: %+v %v", vm, v.Status, err)
	}
	if err := a.Call("DELETE", "/api/v1/volumes/"+name+"?project=clinic", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
}
