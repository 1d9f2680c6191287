package cluster_test

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// The typical flow on one node, with real QEMU (TCG here) and the test
// guest: create from an image and a flavor, the guest boots, takes its
// address by DHCP, says so on its serial line and answers on its port; then
// every lifecycle operation, an agent killed with -9 underneath a running
// VM, and delete leaving nothing behind.
func TestVMLifecycleOneNode(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--vm-stop-timeout", "30s"}})
	n := c.Node(1)
	a := cairntest.Admin(t, n)
	computeSetup(t, a)

	var vm vmView
	if err := a.Call("POST", "/api/v1/vms", map[string]any{"name": "vm1", "project": "clinic", "image": "guest", "flavor": "tiny"}, 201, &vm); err != nil {
		t.Fatal(err)
	}
	vm = waitVM(t, a, "vm1", 3*time.Minute, "running", inState("running"))
	if vm.Node != n.Name || vm.Status.Accel == "" || vm.IP() == "" {
		t.Fatalf("running VM: node %q accel %q ip %q", vm.Node, vm.Status.Accel, vm.IP())
	}
	hello := "hostname=vm1 ip=" + vm.IP()
	waitSerial(t, a, "vm1", "cairn-guest: "+hello, 1)
	waitProbe(t, n, vm.IP(), hello)

	// Pause: QEMU stops the vCPUs and the guest stops answering.
	if err := a.Call("POST", "/api/v1/vms/vm1/pause", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", 30*time.Second, "paused", inState("paused"))
	if out, err := probe(n, vm.IP()); err == nil && strings.Contains(out, hello) {
		t.Fatalf("a paused guest answered: %q", out)
	}
	if err := a.Call("POST", "/api/v1/vms/vm1/resume", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", 30*time.Second, "running again", inState("running"))
	waitProbe(t, n, vm.IP(), hello)

	// Reboot: the guest boots a second time.
	if err := a.Call("POST", "/api/v1/vms/vm1/reboot", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, a, "vm1", "cairn-guest: "+hello, 2)

	// cairn killed with -9 and restarted: the VM runs on, same process, and
	// is still managed.
	pid := vm.Status.PID
	n.Kill()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("QEMU %d died with the agent: %v", pid, err)
	}
	n.Start()
	cairntest.WaitReady(t, n)
	a = cairntest.Admin(t, n)
	vm = waitVM(t, a, "vm1", time.Minute, "running after the agent's restart", inState("running"))
	if vm.Status.PID != pid {
		t.Fatalf("QEMU pid changed across the agent restart: %d → %d", pid, vm.Status.PID)
	}
	if err := a.Call("POST", "/api/v1/vms/vm1/pause", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", 30*time.Second, "paused by the new agent", inState("paused"))
	if err := a.Call("POST", "/api/v1/vms/vm1/resume", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", 30*time.Second, "running", inState("running"))

	// Stop (ACPI: the guest powers itself off) and start.
	if err := a.Call("POST", "/api/v1/vms/vm1/stop", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, "vm1", time.Minute, "stopped", inState("stopped"))
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("QEMU %d still runs after stop", pid)
	}
	// Resize while stopped: applied at the next start.
	if err := a.Call("POST", "/api/v1/vms/vm1/resize", map[string]string{"flavor": "tiny2"}, 200, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call("POST", "/api/v1/vms/vm1/start", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	vm = waitVM(t, a, "vm1", 3*time.Minute, "running with the new size", func(v vmView) error {
		if err := inState("running")(v); err != nil {
			return err
		}
		if v.Status.VCPUs != 2 || v.Status.RAMMiB != 384 {
			return fmt.Errorf("running with %d vCPUs, %d MiB", v.Status.VCPUs, v.Status.RAMMiB)
		}
		return nil
	})
	waitProbe(t, n, vm.IP(), hello)

	// Delete removes the process, the tap, the disks and the record.
	if err := a.Call("DELETE", "/api/v1/vms/vm1", nil, 202, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "vm1 gone", func() error {
		if _, err := getVM(a, "vm1"); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if left := vmLeftovers(n, vm.ID, vm.Status.PID); len(left) > 0 {
		t.Fatalf("delete left behind: %v", left)
	}
}

// Bad requests get clear errors and leave nothing; a VM whose QEMU cannot
// start shows the reason and can be deleted without orphans.
func TestVMBadRequests(t *testing.T) {
	// UEFI firmware that does not exist: every UEFI VM fails to start.
	c := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--ovmf-code", "/nonexistent/OVMF_CODE.fd"}})
	n := c.Node(1)
	a := cairntest.Admin(t, n)
	computeSetup(t, a)
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
