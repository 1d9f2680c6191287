package guest

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/cloudinit"
	"github.com/cairnhq/cairn/qa/testutil"
	"golang.org/x/crypto/ssh"
)

// TestGuestBoots boots the test guest as the hypervisor will: BIOS, the
// disk through a qcow2 overlay, the seed as a second read-only virtio disk,
// user networking with a forwarded port. It checks the guest takes its
// hostname from the seed, gets an address, answers on port 8080, and
// powers off by itself on QMP system_powerdown.
func TestGuestBoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: guest.sh fetches Debian packages with apt-get (CI runs as root)")
	}
	image := guestImage(t)
	dir := t.TempDir()

	seed := cloudinit.Seed{InstanceID: "iid-t1", Hostname: "t1", SSHKeys: []string{testKey(t)}}
	seedISO := filepath.Join(dir, "seed.iso")
	if err := seed.WriteISO(seedISO); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	port := freePort(t)
	qmpSock := filepath.Join(dir, "qmp.sock")
	args := []string{
		"-accel", "tcg", "-machine", "q35", "-m", "256", "-display", "none", "-no-reboot",
		"-drive", "file=" + disk + ",if=virtio,format=qcow2",
		"-drive", "file=" + seedISO + ",if=virtio,format=raw,readonly=on",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:8080", port),
		"-device", "virtio-net-pci,netdev=n0",
		// Without an RNG, TCG's default CPU leaves the guest kernel's
		// random pool (and so DHCP's transaction ID) waiting for minutes.
		"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
		"-serial", "stdio", "-monitor", "none",
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
	}
	t.Logf("qemu-system-x86_64 %s", strings.Join(args, " "))
	cmd := exec.Command("qemu-system-x86_64", args...)
	serial, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	console := &lines{}
	logged := make(chan struct{})
	go func() { // the serial console, streamed to the test log
		defer close(logged)
		sc := bufio.NewScanner(serial)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			t.Logf("serial: %s", line)
			console.add(line)
		}
	}()
	go func() {
		<-logged
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-logged // t.Logf must not run after the test ends
	})

	var ip string
	testutil.WaitFor(t, 90*time.Second, "the guest's hostname and address on its console", func() error {
		for _, l := range console.all() {
			if rest, ok := strings.CutPrefix(l, "cairn-guest: hostname=t1 ip="); ok {
				ip = rest
				return nil
			}
		}
		return errors.New("no 'cairn-guest: hostname=t1 ip=' line yet")
	})
	t.Logf("the guest is up %.1fs after QEMU started, at %s", time.Since(start).Seconds(), ip)
	if ip != "10.0.2.15" {
		t.Errorf("guest address %q, want QEMU's DHCP address 10.0.2.15", ip)
	}

	var answer string
	testutil.WaitFor(t, 10*time.Second, "an answer on the forwarded port", func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if len(b) == 0 { // QEMU accepts before the guest does
			return fmt.Errorf("empty answer (%v)", err)
		}
		answer = string(b)
		return nil
	})
	if want := "hostname=t1 ip=" + ip + "\n"; answer != want {
		t.Errorf("port 8080 answered %q, want %q", answer, want)
	}

	if err := qmpPowerdown(qmpSock); err != nil {
		t.Fatalf("QMP system_powerdown: %v", err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("QEMU exited with %v after system_powerdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the guest did not power off within 30s of system_powerdown")
	}
	if !console.has("cairn-guest: power button: powering off") {
		t.Error("the guest did not say it saw the power button")
	}
}

// guestImage returns image-build/out/guest.qcow2, building it first with
// guest.sh when it is missing or older than any of its sources.
func guestImage(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(repo, "image-build/out/guest.qcow2")
	if fresh(t, image, repo) {
		return image
	}
	goBin, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("building %s with guest.sh", image)
	cmd := exec.Command(filepath.Join(repo, "image-build/guest.sh"), goBin)
	cmd.Env = append(os.Environ(), "OUT="+filepath.Dir(image))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("guest.sh: %v\n%s", err, out)
	}
	return image
}

// fresh says whether image exists and is newer than everything it is built
// from.
func fresh(t *testing.T, image, repo string) bool {
	st, err := os.Stat(image)
	if err != nil {
		return false
	}
	newest := time.Time{}
	for _, src := range []string{"image-build/guest", "hypervisor/cloudinit", "qa/scribble", "image-build/guest.sh", "image-build/packages.lock", "go.mod", "go.sum"} {
		_ = filepath.WalkDir(filepath.Join(repo, src), func(_ string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if info, err := d.Info(); err == nil && info.ModTime().After(newest) {
				newest = info.ModTime()
			}
			return nil
		})
	}
	if st.ModTime().Before(newest) {
		t.Logf("%s is older than its sources", image)
		return false
	}
	return true
}

// qmpPowerdown presses the VM's ACPI power button over QMP.
func qmpPowerdown(sock string) error {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(c)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	for _, command := range []string{"qmp_capabilities", "system_powerdown"} {
		if _, err := fmt.Fprintf(c, `{"execute": %q}`+"\n", command); err != nil {
			return err
		}
		for { // skip events until the command's reply
			var reply struct {
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Desc string `json:"desc"`
				} `json:"error"`
			}
			if err := dec.Decode(&reply); err != nil {
				return fmt.Errorf("%s: %w", command, err)
			}
			if reply.Error != nil {
				return fmt.Errorf("%s: %s", command, reply.Error.Desc)
			}
			if reply.Return != nil {
				break
			}
		}
	}
	return nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " test@cairn"
}

// lines collects console lines for the test to poll.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (c *lines) add(l string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.l = append(c.l, l)
}

func (c *lines) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.l...)
}

func (c *lines) has(l string) bool {
	for _, x := range c.all() {
		if x == l {
			return true
		}
	}
	return false
}

// startQEMU starts qemu-system-x86_64 with args (its serial console on
// stdout), logging and collecting the console's lines; stop kills it and
// waits until every line is in.
func startQEMU(t *testing.T, prefix string, args []string) (console *lines, stop func()) {
	t.Helper()
	cmd := exec.Command("qemu-system-x86_64", args...)
	serial, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	console = &lines{}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(serial)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			t.Logf("%s: %s", prefix, line)
			console.add(line)
		}
	}()
	return console, func() {
		_ = cmd.Process.Kill()
		<-logged
		_ = cmd.Wait()
	}
}
