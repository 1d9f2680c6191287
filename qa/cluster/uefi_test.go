package cluster_test

import (
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A UEFI VM keeps its UEFI settings on a volume of its own, which moves
// with it. The test guest counts its boots in UEFI variables (cairn-guest
// efiboots: one new variable per boot, so each boot's line says how many
// earlier boots' writes its store kept):
//
//   - "efi", booted from a volume, moves live (its flash goes in the
//     stream, and the target writes it back to the volume), reboots there
//     (its firmware writes through the target's QEMU), starts cold there
//     (read from the volume), moves stopped to the third node, and then
//     its box dies: the HA restart elsewhere finds every boot counted;
//   - "old", a UEFI VM with a local disk and its settings in a file on
//     its node, is converted while stopped (convert-disk moves both the
//     disk and the file onto volumes), and then moves stopped with them.
func TestUEFIVMMoves(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--vm-stop-timeout", "30s"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	computeSetup(t, a, 3)
	uploadImage(t, a, harness.GuestImage(t), url.Values{"name": {"guest-uefi"}, "project": {"clinic"}, "firmware": {"uefi"}}, 201)
	const userData = "#cloud-config\n# cairn-guest efiboots\n"
	for _, name := range []string{"efi", "old"} {
		req := map[string]any{"name": name, "project": "clinic", "image": "guest-uefi", "flavor": "tiny", "user_data": userData, "local_disk": name == "old"}
		if err := a.Call("POST", "/api/v1/vms", req, 201, nil); err != nil {
			t.Fatal(err)
		}
	}
	boots := func(name string, n int) {
		t.Helper()
		waitSerial(t, a, name, fmt.Sprintf("cairn-guest: efi boots=%d\r\n", n), 1)
		if log := serialLog(t, a, name); strings.Contains(log, "efi boots error") {
			t.Fatalf("%s's guest could not count its boots: %s", name, log[strings.Index(log, "efi boots error"):])
		}
	}
	vm := waitVM(t, a, "efi", 4*time.Minute, "running", inState("running"))
	vars := varsVolume(t, a, vm)
	if vars.Writer != vm.Node || vars.InSync != 3 {
		t.Fatalf("efi's UEFI settings volume on %s: %+v", vm.Node, vars)
	}
	boots("efi", 1)
	var ha struct {
		HA string `json:"ha"`
	}
	if err := a.Call("GET", "/api/v1/vms/efi", nil, 200, &ha); err != nil || ha.HA != "on" {
		t.Fatalf("efi's HA: %q %v", ha.HA, err)
	}

	// Live, to another node; then a reboot there, and a cold start.
	target := otherNode(c, vm.Node, "")
	if err := a.Call("POST", "/api/v1/vms/efi/migrate", map[string]string{"node": target}, 200, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Minute, "efi moved live to "+target, func() error {
		var v struct {
			vmView
			Migration *migrationView `json:"migration"`
		}
		if err := a.Call("GET", "/api/v1/vms/efi", nil, 200, &v); err != nil {
			return err
		}
		if v.Migration != nil || v.Node != target || v.Status.State != "running" {
			return fmt.Errorf("on %s, %s, migration %+v", v.Node, v.Status.State, v.Migration)
		}
		return nil
	})
	if evs := vmEvents(t, a, "efi"); !strings.Contains(evs, "moved live from "+vm.Node+" to "+target) {
		t.Fatalf("efi's history: %s", evs)
	}
	waitProbe(t, cairntest.NodeByName(c, target), vm.IP(), "hostname=efi")
	if v := varsVolume(t, a, vm); v.Writer != target || v.Epoch <= vars.Epoch {
		t.Fatalf("efi's settings volume after the live move: %+v (before: %+v)", v, vars)
	}
	if err := a.Call("POST", "/api/v1/vms/efi/reboot", nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	boots("efi", 2)
	power(t, a, "efi", "stop", "stopped")
	power(t, a, "efi", "start", "running")
	boots("efi", 3)

	// Stopped, to the third node.
	power(t, a, "efi", "stop", "stopped")
	third := otherNode(c, vm.Node, target)
	var moved vmView
	if err := a.Call("POST", "/api/v1/vms/efi/migrate", map[string]string{"node": third}, 200, &moved); err != nil || moved.Node != third {
		t.Fatalf("move stopped to %s: on %q, %v", third, moved.Node, err)
	}
	power(t, a, "efi", "start", "running")
	boots("efi", 4)

	// Its box dies: the VM runs again elsewhere, its settings whole.
	box := cairntest.NodeByName(c, third)
	api := cairntest.Admin(t, cairntest.NodeByName(c, target))
	box.Kill()
	for _, pid := range qemuPIDs(box, vm.ID) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	restarted := waitVM(t, api, "efi", 3*time.Minute, "running elsewhere", func(v vmView) error {
		if v.Node == third || v.Status.State != "running" {
			return fmt.Errorf("on %s, %s", v.Node, v.Status.State)
		}
		return nil
	})
	waitSerial(t, api, "efi", "cairn-guest: efi boots=5\r\n", 1)
	if v := varsVolume(t, api, restarted); v.Writer != restarted.Node {
		t.Fatalf("efi's settings volume after the HA restart on %s: %+v", restarted.Node, v)
	}
	box.Start()
	cairntest.WaitShape(t, api, 3, 0)
	cairntest.WaitHealthyDisks(t, api, 3, 0)

	// A UEFI VM with a local disk keeps its settings in a file on its
	// node, and cannot move; converted, it can.
	old := waitVM(t, api, "old", time.Minute, "running", inState("running"))
	if old.Spec.BootVolume != "" || old.Spec.VarsVolume != "" {
		t.Fatalf("old asked for a local disk: %+v", old.Spec)
	}
	waitSerial(t, api, "old", "cairn-guest: efi boots=1\r\n", 1)
	power(t, api, "old", "stop", "stopped")
	dest := otherNode(c, old.Node, "")
	var refused struct {
		Message string `json:"message"`
	}
	if err := api.Call("POST", "/api/v1/vms/old/migrate", map[string]string{"node": dest}, 409, &refused); err != nil {
		t.Fatal(err)
	}
	// (A volume needs a replica on each node: node3's disk may still be
	// opening since its return, which is a 503 to try again.)
	testutil.WaitFor(t, time.Minute, "convert-disk of old", func() error {
		return api.Call("POST", "/api/v1/vms/old/convert-disk", nil, 200, &old)
	})
	if old.Spec.BootVolume == "" || old.Spec.VarsVolume == "" {
		t.Fatalf("old after convert-disk: %+v", old.Spec)
	}
	// Not before its node has moved the file in.
	if err := api.Call("POST", "/api/v1/vms/old/migrate", map[string]string{"node": dest}, 409, &refused); err != nil {
		t.Fatal(err)
	}
	power(t, api, "old", "start", "running")
	waitSerial(t, api, "old", "cairn-guest: efi boots=2\r\n", 1)
	if evs := vmEvents(t, api, "old"); !strings.Contains(evs, "its UEFI settings moved from a file on "+old.Node) {
		t.Fatalf("old's history: %s", evs)
	}
	power(t, api, "old", "stop", "stopped")
	if err := api.Call("POST", "/api/v1/vms/old/migrate", map[string]string{"node": dest}, 200, nil); err != nil {
		t.Fatal(err)
	}
	power(t, api, "old", "start", "running")
	waitSerial(t, api, "old", "cairn-guest: efi boots=3\r\n", 1)
}

// varsVolume is the volume holding a VM's UEFI settings.
func varsVolume(t *testing.T, a *cairntest.Client, vm vmView) volInfo {
	t.Helper()
	v, err := getVM(a, vm.Name)
	if err != nil || v.Spec.VarsVolume == "" {
		t.Fatalf("VM %s has no UEFI settings volume: %+v %v", vm.Name, v.Spec, err)
	}
	var vol volInfo
	if err := a.Call("GET", "/api/v1/volumes/"+v.Spec.VarsVolume, nil, 200, &vol); err != nil {
		t.Fatal(err)
	}
	if vol.Attachment == nil || vol.Attachment.VM != vm.ID || !vol.Attachment.Firmware || vol.Attachment.Boot {
		t.Fatalf("VM %s's UEFI settings volume is not attached to it as firmware: %+v", vm.Name, vol.Attachment)
	}
	return vol
}

// power asks for a power action and waits for the state it leads to.
func power(t *testing.T, a *cairntest.Client, name, op, state string) {
	t.Helper()
	if err := a.Call("POST", "/api/v1/vms/"+name+"/"+op, nil, 200, nil); err != nil {
		t.Fatal(err)
	}
	waitVM(t, a, name, 2*time.Minute, state, inState(state))
}

// otherNode is a node of c other than not and not2.
func otherNode(c *harness.Cluster, not, not2 string) string {
	for _, n := range c.Nodes {
		if n.Name != not && n.Name != not2 {
			return n.Name
		}
	}
	return ""
}

// A UEFI VM whose guest keeps writing its UEFI settings is not moved live
// where its guest runs during the copy (KVM's way, which the agents'
// --unsafe-tcg-precopy takes under TCG): QEMU does not send its flash
// again once written, so the target would have resumed with older
// settings and written them back over the newer. The move is called off
// at the pause before the switchover, and the VM runs on where it was,
// its settings whole. (The guest also rewrites 64 MiB of its memory, so
// the copy takes its time.)
func TestUEFIMoveCalledOff(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--unsafe-tcg-precopy"}})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	computeSetup(t, a, 3)
	uploadImage(t, a, harness.GuestImage(t), url.Values{"name": {"guest-uefi"}, "project": {"clinic"}, "firmware": {"uefi"}}, 201)
	req := map[string]any{"name": "tick", "project": "clinic", "image": "guest-uefi", "flavor": "tiny",
		"user_data": "#cloud-config\n# cairn-guest efiboots\n# cairn-guest efitick\n# cairn-guest memcheck 64\n"}
	if err := a.Call("POST", "/api/v1/vms", req, 201, nil); err != nil {
		t.Fatal(err)
	}
	vm := waitVM(t, a, "tick", 4*time.Minute, "running", inState("running"))
	waitSerial(t, a, "tick", "cairn-guest: efi boots=1\r\n", 1)
	waitSerial(t, a, "tick", "cairn-guest: efi tick 25\r\n", 1)
	if err := a.Call("POST", "/api/v1/vms/tick/migrate", map[string]string{"node": otherNode(c, vm.Node, "")}, 200, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Minute, "tick's move ended", func() error {
		var v struct {
			Migration *migrationView `json:"migration"`
		}
		if err := a.Call("GET", "/api/v1/vms/tick", nil, 200, &v); err != nil {
			return err
		}
		if v.Migration != nil {
			return fmt.Errorf("%s", v.Migration.Phase)
		}
		return nil
	})
	if evs := vmEvents(t, a, "tick"); !strings.Contains(evs, "the guest changed its UEFI settings while its memory was copied") {
		t.Fatalf("tick's move was not called off for its UEFI settings:\n%s", evs)
	}
	now := waitVM(t, a, "tick", time.Minute, "running where it was", inState("running"))
	if now.Node != vm.Node || now.Status.PID != vm.Status.PID {
		t.Fatalf("tick on %s (QEMU %d), was on %s (QEMU %d)", now.Node, now.Status.PID, vm.Node, vm.Status.PID)
	}
	// Its guest goes on writing, and its settings are whole: a cold
	// start counts the second boot.
	log := serialLog(t, a, "tick")
	ticks := strings.Count(log, "cairn-guest: efi tick ")
	testutil.WaitFor(t, time.Minute, "tick writing on", func() error {
		log := serialLog(t, a, "tick")
		if strings.Contains(log, "efi tick error") || strings.Contains(log, "memcheck BAD") {
			t.Fatalf("tick's guest after the called-off move: %s", log[max(0, len(log)-1500):])
		}
		if strings.Count(log, "cairn-guest: efi tick ") <= ticks {
			return fmt.Errorf("no new tick")
		}
		return nil
	})
	power(t, a, "tick", "stop", "stopped")
	power(t, a, "tick", "start", "running")
	waitSerial(t, a, "tick", "cairn-guest: efi boots=2\r\n", 1)
}
