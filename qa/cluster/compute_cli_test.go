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

// The CLI contract, as a project member types it: image upload, vm
// create with an image and a flavor, vm show -o json (state, node, IPs)
// and the power verbs, with no --project (the member has one).
func TestVMCLI(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 1, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2", "--vm-stop-timeout", "30s"}})
	n := c.Node(1)
	cairntest.WaitHealthyDisks(t, cairntest.Admin(t, n), 2, 0)
	bin := harness.BuildCairn(t)
	ca := filepath.Join(n.DataDir, "ca.crt")
	endpoint := []string{"CAIRN_ENDPOINT=https://" + n.IP + ":8443", "CAIRN_CA_CERT=" + ca}
	admin := &cli{t: t, bin: bin, env: append([]string{"CAIRN_CONFIG=" + filepath.Join(t.TempDir(), "admin.json")}, endpoint...)}
	admin.ok(cairntest.AdminPassword+"\n", "login", "--username", "admin", "--password-stdin")
	admin.ok("", "project", "create", "clinic")
	admin.ok("", "flavor", "create", "tiny", "--vcpus", "1", "--ram-mib", "256", "--disk-gib", "1")
	admin.ok("", "flavor", "create", "tiny2", "--vcpus", "2", "--ram-mib", "384", "--disk-gib", "2")
	admin.ok("night-shift-9471\n", "user", "create", "nurse", "--password-stdin")
	admin.ok("", "project", "add-member", "clinic", "nurse", "member")

	x := &cli{t: t, bin: bin, env: append([]string{"CAIRN_CONFIG=" + filepath.Join(t.TempDir(), "nurse.json")}, endpoint...)}
	x.ok("night-shift-9471\n", "login", "--username", "nurse", "--password-stdin")
	if out := x.ok("", "image", "upload", "guest", harness.GuestImage(t)); !strings.Contains(out, "qcow2") {
		t.Fatalf("image upload:\n%s", out)
	}
	// A local boot disk (scratch) here; it moves onto a volume below.
	x.ok("", "vm", "create", "vm1", "--image", "guest", "--flavor", "tiny", "--local-disk")
	type shown struct {
		State string `json:"-"`
		ID    string `json:"id"`
		Node  string `json:"node"`
		Spec  struct {
			BootVolume string `json:"boot_volume"`
		} `json:"spec"`
		IPs  []string `json:"ips"`
		Stat struct {
			State string `json:"state"`
			VCPUs int64  `json:"vcpus"`
		} `json:"status"`
	}
	show := func() shown {
		var s shown
		if err := json.Unmarshal([]byte(x.ok("", "vm", "show", "vm1", "-o", "json")), &s); err != nil {
			t.Fatal(err)
		}
		s.State = s.Stat.State
		return s
	}
	wait := func(state string) shown {
		t.Helper()
		var s shown
		testutil.WaitFor(t, 3*time.Minute, "vm1 "+state, func() error {
			if s = show(); s.State != state {
				return fmt.Errorf("state %s", s.State)
			}
			return nil
		})
		return s
	}
	s := wait("running")
	if s.Node != n.Name || len(s.IPs) != 1 || !strings.HasPrefix(s.IPs[0], "10.213.") {
		t.Fatalf("vm show -o json: node %q IPs %v", s.Node, s.IPs)
	}
	if out := x.ok("", "vm", "list"); !strings.Contains(out, "vm1") || !strings.Contains(out, s.IPs[0]) {
		t.Fatalf("vm list:\n%s", out)
	}
	for _, step := range []struct{ verb, state string }{
		{"pause", "paused"}, {"resume", "running"}, {"reboot", "running"}, {"stop", "stopped"}, {"start", "running"},
	} {
		x.ok("", "vm", step.verb, "vm1")
		wait(step.state)
	}
	// convert-disk: the stopped VM's local disk moves onto a volume, which
	// its next start fills from it; the guest boots from the volume, and the
	// local disk is gone. A running VM is refused.
	if out, err := x.run("", "vm", "convert-disk", "vm1"); err == nil || !strings.Contains(out, "stop it") {
		t.Fatalf("convert-disk of a running VM: %v\n%s", err, out)
	}
	x.ok("", "vm", "stop", "vm1")
	s = wait("stopped")
	root := filepath.Join(n.DataDir, "vms", s.ID, "root.qcow2")
	if _, err := os.Stat(root); err != nil || s.Spec.BootVolume != "" {
		t.Fatalf("before convert-disk: boot volume %q, local disk %v", s.Spec.BootVolume, err)
	}
	if out := x.ok("", "vm", "convert-disk", "vm1"); !strings.Contains(out, "volume vol-") {
		t.Fatalf("vm convert-disk:\n%s", out)
	}
	api := cairntest.Admin(t, n)
	boots := strings.Count(serialLog(t, api, "vm1"), "cairn-guest: hostname=vm1")
	x.ok("", "vm", "start", "vm1")
	s = wait("running")
	waitSerial(t, api, "vm1", "cairn-guest: hostname=vm1", boots+1) // once more, from the volume
	var bv struct {
		State      string `json:"state"`
		Attachment struct {
			VM   string `json:"vm"`
			Boot bool   `json:"boot"`
		} `json:"attachment"`
		Source struct {
			VMDisk string `json:"vm_disk"`
			Filled bool   `json:"filled"`
		} `json:"source"`
	}
	if err := json.Unmarshal([]byte(x.ok("", "volume", "show", s.Spec.BootVolume, "-o", "json")), &bv); err != nil {
		t.Fatal(err)
	}
	if bv.State != "in-use" || bv.Attachment.VM != s.ID || !bv.Attachment.Boot || bv.Source.VMDisk != s.ID || !bv.Source.Filled {
		t.Fatalf("the converted disk's volume: %+v", bv)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("the local disk is still there after the conversion: %v", err)
	}
	if out, err := x.run("", "vm", "convert-disk", "vm1"); err == nil || !strings.Contains(out, "already boots from volume") {
		t.Fatalf("convert-disk twice: %v\n%s", err, out)
	}
	x.ok("", "vm", "resize", "vm1", "tiny2")
	testutil.WaitFor(t, time.Minute, "vm1 with 2 vCPUs", func() error {
		if s := show(); s.Stat.VCPUs != 2 {
			return fmt.Errorf("%d vCPUs", s.Stat.VCPUs)
		}
		return nil
	})
	if out := x.ok("", "vm", "events", "vm1"); !strings.Contains(out, "reboot") || !strings.Contains(out, "resize") {
		t.Fatalf("vm events:\n%s", out)
	}
	// A volume from an image file and back again: the downloaded qcow2
	// holds what was uploaded. A corrupt file and an attached volume are
	// refused, and leave the volume as it was.
	guest := harness.GuestImage(t)
	x.ok("", "volume", "create", "disk1", "--size", "1")
	x.ok("", "volume", "upload", "disk1", guest)
	back := filepath.Join(t.TempDir(), "disk1.qcow2")
	x.ok("", "volume", "download", "disk1", back)
	if out, err := exec.Command("qemu-img", "compare", guest, back).CombinedOutput(); err != nil || !strings.Contains(string(out), "identical") {
		t.Fatalf("the downloaded volume differs from the uploaded image: %v\n%s", err, out)
	}
	corrupt := filepath.Join(t.TempDir(), "corrupt.qcow2")
	if err := os.WriteFile(corrupt, append([]byte("QFI\xfb\x00\x00\x00\x03"), bytes.Repeat([]byte{0xff}, 4096)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := x.run("", "volume", "upload", "disk1", corrupt); err == nil || !strings.Contains(out, "qcow2") {
		t.Fatalf("a corrupt image was written into a volume: %v\n%s", err, out)
	}
	if out, err := x.run("", "volume", "upload", s.Spec.BootVolume, guest); err == nil || !strings.Contains(out, "only a detached volume") {
		t.Fatalf("an upload into a VM's boot volume: %v\n%s", err, out)
	}
	var dv struct {
		State      string          `json:"state"`
		Attachment json.RawMessage `json:"attachment"`
	}
	if err := json.Unmarshal([]byte(x.ok("", "volume", "show", "disk1", "-o", "json")), &dv); err != nil || dv.State != "available" || len(dv.Attachment) > 0 {
		t.Fatalf("disk1 after the refused upload: %+v %v", dv, err)
	}
	x.ok("", "volume", "download", "disk1", back)
	if out, err := exec.Command("qemu-img", "compare", guest, back).CombinedOutput(); err != nil {
		t.Fatalf("a refused upload changed the volume: %v\n%s", err, out)
	}
	// Export for backup tools: nbdcopy reads the volume over NBD with TLS
	// and the client certificate the export granted; without it, or for
	// another volume, nothing is served; the export ends on request.
	certs := filepath.Join(t.TempDir(), "export")
	out := x.ok("", "volume", "export", "disk1", "--dir", certs, "-o", "json")
	var grant struct {
		URI string `json:"uri"`
	}
	if err := json.Unmarshal([]byte(out), &grant); err != nil || !strings.HasPrefix(grant.URI, "nbds://"+n.IP+":10809/vol-") {
		t.Fatalf("volume export: %v\n%s", err, out)
	}
	raw := filepath.Join(t.TempDir(), "disk1.raw")
	if out, err := exec.Command("nbdcopy", grant.URI, raw).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy from the export: %v\n%s", err, out)
	}
	if out, err := exec.Command("qemu-img", "compare", guest, raw).CombinedOutput(); err != nil {
		t.Fatalf("the exported volume differs from the uploaded image: %v\n%s", err, out)
	}
	// Trusting the server but holding no client certificate: refused.
	caOnly := filepath.Join(t.TempDir(), "ca-only")
	if err := os.MkdirAll(caOnly, 0o700); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(certs, "ca-cert.pem")); err != nil || os.WriteFile(filepath.Join(caOnly, "ca-cert.pem"), b, 0o600) != nil {
		t.Fatalf("copy the CA: %v", err)
	}
	plain, _, _ := strings.Cut(grant.URI, "?")
	if out, err := exec.Command("nbdinfo", plain+"?tls-certificates="+caOnly).CombinedOutput(); err == nil {
		t.Fatalf("an export read without a client certificate:\n%s", out)
	}
	// Another exported volume, with disk1's certificate: refused; with its
	// own, served.
	x.ok("", "volume", "create", "disk2", "--size", "1")
	certs2 := filepath.Join(t.TempDir(), "export2")
	var grant2 struct {
		URI string `json:"uri"`
	}
	if err := json.Unmarshal([]byte(x.ok("", "volume", "export", "disk2", "--dir", certs2, "-o", "json")), &grant2); err != nil {
		t.Fatal(err)
	}
	plain2, _, _ := strings.Cut(grant2.URI, "?")
	if out, err := exec.Command("nbdinfo", plain2+"?tls-certificates="+certs).CombinedOutput(); err == nil {
		t.Fatalf("a certificate for one volume read another:\n%s", out)
	}
	if out, err := exec.Command("nbdinfo", grant2.URI).CombinedOutput(); err != nil {
		t.Fatalf("disk2's export with its own certificate: %v\n%s", err, out)
	}
	x.ok("", "volume", "export", "--stop", "disk2")
	x.ok("", "volume", "delete", "disk2")
	if out, err := x.run("", "volume", "attach", "disk1", "--vm", "vm1"); err == nil || !strings.Contains(out, "attached") {
		t.Fatalf("attach of an exported volume: %v\n%s", err, out)
	}
	x.ok("", "volume", "export", "--stop", "disk1")
	if out, err := exec.Command("nbdinfo", grant.URI).CombinedOutput(); err == nil {
		t.Fatalf("an ended export still served:\n%s", out)
	}
	x.ok("", "volume", "delete", "disk1")

	x.ok("", "vm", "delete", "vm1")
	testutil.WaitFor(t, time.Minute, "vm1 gone", func() error {
		if out, err := x.run("", "vm", "show", "vm1"); err == nil || !strings.Contains(out, "not found") {
			return fmt.Errorf("still there: %s", out)
		}
		return nil
	})
}
