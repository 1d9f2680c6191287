package image

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/testutil"
)

// buildImage runs image-build/build.sh once per test binary.
var built struct {
	once sync.Once
	dir  string
	err  error
}

func bootFiles(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			built.err = err
			return
		}
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		start := time.Now()
		out, err := exec.Command(filepath.Join(root, "image-build", "build.sh"), gobin).CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("image-build/build.sh: %v\n%s", err, out)
			return
		}
		t.Logf("boot files built in %s", time.Since(start).Round(time.Second))
		built.dir = filepath.Join(root, "image-build", "out")
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// box is one appliance in QEMU, its console streamed to the test log.
type box struct {
	t       *testing.T
	cmd     *exec.Cmd
	monitor string    // QEMU's human monitor socket
	api     string    // host:port where the test reaches the guest's API
	keys    io.Writer // the serial console's keyboard
	exited  chan struct{}

	mu      sync.Mutex
	console bytes.Buffer
	partial []byte // the console's last line, not ended yet (a shell's prompt)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// userNet is QEMU's user-mode network (DHCP included) with the guest's API
// forwarded to a loopback port; it returns the netdev and where the API is.
func userNet(t *testing.T) (string, string) {
	port := freePort(t)
	return fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:8443", port), fmt.Sprintf("127.0.0.1:%d", port)
}

// direct boots the boot files with disk as the data disk. The kernel's
// crypto self-tests are skipped (cryptomgr.notests): under TCG, with three
// boxes of two vCPUs on this machine's two cores, they are the heaviest
// part of a boot, and once starved one box's for 200 s (a soft lockup in
// cryptomgr_test) until the test gave up on it. A box on KVM runs them.
func direct(files, disk, cmdline string) []string {
	return []string{"-kernel", filepath.Join(files, "vmlinuz"), "-initrd", filepath.Join(files, "initramfs.cpio.zst"),
		"-append", "console=ttyS0 panic=-1 cryptomgr.notests " + cmdline,
		"-drive", "file=" + disk + ",format=raw,if=virtio"}
}

// boot starts a box booting by system (direct, or UEFI firmware and a
// disk), on netdev (id n0) with the MAC ending in mac, the guest's API
// reached at api; extra are more QEMU arguments.
func boot(t *testing.T, system []string, netdev, api string, mac int, extra ...string) *box {
	t.Helper()
	b := &box{t: t, monitor: filepath.Join(t.TempDir(), "monitor.sock"), api: api, exited: make(chan struct{})}
	args := []string{"-machine", "q35", "-accel", hypervisor.Accel(), "-cpu", qemu.CPUModel(hypervisor.Accel()), "-m", "1024", "-smp", "2",
		"-nographic", "-no-reboot"}
	args = append(args, system...)
	args = append(args,
		"-netdev", netdev,
		"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=52:54:00:ca:11:%02x", mac),
		"-monitor", "unix:"+b.monitor+",server,nowait")
	args = append(args, extra...)
	t.Logf("qemu-system-x86_64 %s", shellJoin(args))
	b.cmd = exec.Command("qemu-system-x86_64", args...)
	keys, err := b.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.keys = keys
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.cmd.Stderr = b.cmd.Stdout
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("qemu: %v", err)
	}
	go b.read(out)
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		<-b.exited
		if t.Failed() {
			dir := filepath.Join("..", "artifacts", t.Name())
			_ = os.MkdirAll(dir, 0o755)
			_ = os.WriteFile(filepath.Join(dir, "console-"+strings.ReplaceAll(api, ":", "_")+".log"), []byte(b.Console()), 0o644)
			t.Logf("console log kept in %s", dir)
		}
	})
	return b
}

// read copies the serial console to b.console and the test log a line at
// a time, and answers the cursor position requests of the debug shell's
// line editor as a terminal would (cairn.debug=1): they end no line.
func (b *box) read(out io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := out.Read(buf)
		if bytes.Contains(buf[:n], []byte("\x1b[6n")) {
			_, _ = b.keys.Write([]byte("\x1b[24;1R"))
		}
		b.mu.Lock()
		b.partial = append(b.partial, buf[:n]...)
		var lines []string
		for {
			i := bytes.IndexByte(b.partial, '\n')
			if i < 0 {
				break
			}
			line := strings.ReplaceAll(strings.TrimSuffix(string(b.partial[:i]), "\r"), "\x1b[2J\x1b[H", "")
			b.partial = b.partial[i+1:]
			b.console.WriteString(line + "\n")
			lines = append(lines, line)
		}
		b.mu.Unlock()
		for _, line := range lines {
			b.t.Logf("console %s: %s", b.api, line)
		}
		if err != nil {
			return
		}
	}
}

// Console is what the box has written to its serial console so far.
func (b *box) Console() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.console.String() + string(b.partial)
}

// client talks to the box's API; its certificate is the cluster CA's, which
// the test reads from the TLS handshake. The boxes run under TCG on cores
// they share with each other: a request that hashes a password (argon2,
// 19 MiB) and commits through three emulated boxes can take more than a
// few seconds there, so the timeout only catches a box that hangs.
func (b *box) client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the CA is checked by its key below
	}}
}

// waitReady waits for /readyz and returns how long it took since start.
func (b *box) waitReady(start time.Time, limit time.Duration) time.Duration {
	b.t.Helper()
	if err := b.ready(limit); err != nil {
		b.t.Fatalf("%s: %v", b.api, err)
	}
	return time.Since(start)
}

// ready waits for /readyz; safe in any goroutine.
func (b *box) ready(limit time.Duration) error {
	c := b.client()
	exited := errors.New("qemu exited before the box was ready")
	err := testutil.Eventually(limit, func() error {
		select {
		case <-b.exited:
			return exited
		default:
		}
		res, err := c.Get("https://" + b.api + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("readyz: %s %s", res.Status, body)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("waiting for /readyz: %w", err)
	}
	return nil
}

// caKey is the cluster CA's key ID, from the chain the API presents.
func (b *box) caKey() string {
	b.t.Helper()
	conn, err := tls.Dial("tcp", b.api, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		b.t.Fatal(err)
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 || len(certs[0].AuthorityKeyId) == 0 {
		b.t.Fatal("the API presents no certificate with an authority key ID")
	}
	return fmt.Sprintf("%x", certs[0].AuthorityKeyId)
}

// powerButton presses the ACPI power button through QEMU's monitor.
func (b *box) powerButton() {
	b.t.Helper()
	c, err := net.Dial("unix", b.monitor)
	if err != nil {
		b.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "system_powerdown\n"); err != nil {
		b.t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the monitor read it before the socket closes
}

// status is the box's run state as QEMU's monitor reports it: "running",
// or "paused" with why, as "paused (watchdog)".
func (b *box) status() (string, error) {
	c, err := net.DialTimeout("unix", b.monitor, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("monitor info status: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "info status\n"); err != nil {
		return "", fmt.Errorf("monitor info status: %w", err)
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if _, st, ok := strings.Cut(sc.Text(), "VM status: "); ok {
			return strings.TrimSpace(st), nil
		}
	}
	return "", fmt.Errorf("monitor info status: no answer: %v", sc.Err())
}

// powerOff presses the power button and waits for the box to go off cleanly.
func (b *box) powerOff() {
	b.t.Helper()
	b.powerButton()
	select {
	case <-b.exited:
	case <-time.After(90 * time.Second):
		b.t.Fatal("the box did not power off after the power button")
	}
	if !strings.Contains(b.Console(), "power button pressed") || !strings.Contains(b.Console(), "shutting down") {
		b.t.Fatal("the box went off without a clean shutdown")
	}
}

// One box boots from the boot files and a blank data disk, formats it, and
// serves; its power button shuts it down cleanly; booted again it finds its
// state (the same cluster CA) on the data disk.
func TestBootPowerOffAndBootAgain(t *testing.T) {
	files := bootFiles(t)
	disk := filepath.Join(t.TempDir(), "data.img")
	if err := os.Truncate(mustCreate(t, disk), 2<<30); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	netdev, api := userNet(t)
	b := boot(t, direct(files, disk, "cairn.expect=1"), netdev, api, 1)
	took := b.waitReady(start, 3*time.Minute)
	t.Logf("power-on to ready: %s (accel %s)", took.Round(10*time.Millisecond), hypervisor.Accel())
	testutil.WaitFor(t, 30*time.Second, "the console to show the setup code", func() error {
		if !strings.Contains(b.Console(), "First-time setup: open the web UI and enter the code") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	for _, want := range []string{"first boot: formatting the data disk", "management network up", "Cairn appliance    node cairn-ca1101"} {
		if !strings.Contains(b.Console(), want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if strings.Contains(b.Console(), "toggle key help") {
		t.Error("a shell on the console without cairn.debug=1")
	}
	ca := b.caKey()

	b.powerOff()

	netdev, api = userNet(t)
	b2 := boot(t, direct(files, disk, "cairn.expect=1"), netdev, api, 1)
	b2.waitReady(time.Now(), 3*time.Minute)
	if strings.Contains(b2.Console(), "formatting the data disk") {
		t.Error("the second boot formatted the data disk again")
	}
	if got := b2.caKey(); got != ca {
		t.Errorf("cluster CA after reboot %s, before %s: the data disk lost the state", got, ca)
	}
}

// Building twice from the same inputs gives the same bytes.
func TestReproducibleBuild(t *testing.T) {
	first := bootFiles(t)
	second := t.TempDir()
	root, _ := filepath.Abs("../..")
	cmd := exec.Command(filepath.Join(root, "image-build", "build.sh"), filepath.Join(runtime.GOROOT(), "bin", "go"))
	cmd.Env = append(os.Environ(), "OUT="+second)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second build: %v\n%s", err, out)
	}
	for _, f := range []string{"vmlinuz", "initramfs.cpio.zst", "cairn.img"} {
		a, err := os.ReadFile(filepath.Join(first, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(second, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same inputs (%d and %d bytes)", f, len(a), len(b))
			continue
		}
		t.Logf("%s: %d bytes, identical", f, len(a))
	}
}

func mustCreate(t *testing.T, path string) string {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

func shellJoin(args []string) string {
	var out []string
	for _, a := range args {
		if strings.ContainsAny(a, " ,=") && !strings.ContainsAny(a, "'") {
			a = "'" + a + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}
