package cluster_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/coder/websocket"
)

// vmView is the part of the API's VM the tests read.
type vmView struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Node    string `json:"node"`
	Desired string `json:"desired"`
	Version uint64 `json:"version"`
	Spec    struct {
		VCPUs      int64  `json:"vcpus"`
		RAMMiB     int64  `json:"ram_mib"`
		BootVolume string `json:"boot_volume"`
		VarsVolume string `json:"vars_volume"`
	} `json:"spec"`
	Status struct {
		State   string `json:"state"`
		Error   string `json:"error"`
		Accel   string `json:"accel"`
		PID     int    `json:"pid"`
		VCPUs   int64  `json:"vcpus"`
		RAMMiB  int64  `json:"ram_mib"`
		Pending string `json:"pending"`
	} `json:"status"`
	NICs []struct {
		ID  string `json:"id"`
		IP  string `json:"ip"`
		IP6 string `json:"ip6"`
		MAC string `json:"mac"`
	} `json:"nics"`
}

// Taps are the names of the VM's taps on its node (netfabric's TapName
// with the agent's prefix).
func (v vmView) Taps() []string {
	var taps []string
	for _, n := range v.NICs {
		sum := sha256.Sum256([]byte(n.ID))
		taps = append(taps, "cvm"+hex.EncodeToString(sum[:])[:12])
	}
	return taps
}

func (v vmView) IP() string {
	if len(v.NICs) == 0 {
		return ""
	}
	return v.NICs[0].IP
}

// computeSetup makes the flavors and project the compute tests use and
// uploads the test guest as a public image.
func computeSetup(t *testing.T, a *cairntest.Client, disks int) {
	t.Helper()
	cairntest.WaitHealthyDisks(t, a, disks, 0)
	for _, f := range []map[string]any{
		{"name": "tiny", "vcpus": 1, "ram_mib": 256, "disk_gib": 1},
		{"name": "tiny2", "vcpus": 2, "ram_mib": 384, "disk_gib": 2},
		{"name": "tiny3", "vcpus": 2, "ram_mib": 512, "disk_gib": 3},
	} {
		if err := a.Call("POST", "/api/v1/flavors", f, 201, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.CreateProject("clinic"); err != nil {
		t.Fatal(err)
	}
	uploadImage(t, a, harness.GuestImage(t), url.Values{"name": {"guest"}, "project": {"clinic"}, "visibility": {"public"}, "os_type": {"linux"}}, 201)
}

// uploadImage streams a file to the image upload route.
func uploadImage(t *testing.T, a *cairntest.Client, path string, q url.Values, want int) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, _ := http.NewRequest("POST", a.URL("/api/v1/images/upload?"+q.Encode()), f)
	req.Header.Set("Authorization", "Bearer "+a.Token())
	hc := *a.HTTP
	hc.Timeout = 2 * time.Minute
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		t.Fatalf("upload %s: HTTP %d, want %d: %s", path, res.StatusCode, want, body)
	}
	return string(body)
}

func getVM(a *cairntest.Client, name string) (vmView, error) {
	var v vmView
	err := a.Call("GET", "/api/v1/vms/"+name, nil, 200, &v)
	return v, err
}

// waitVM polls a VM until cond holds.
func waitVM(t *testing.T, a *cairntest.Client, name string, timeout time.Duration, what string, cond func(v vmView) error) vmView {
	t.Helper()
	var v vmView
	testutil.WaitFor(t, timeout, name+" "+what, func() error {
		var err error
		if v, err = getVM(a, name); err != nil {
			return err
		}
		return cond(v)
	})
	return v
}

func inState(state string) func(v vmView) error {
	return func(v vmView) error {
		if v.Status.State == "error" && state != "error" {
			return fmt.Errorf("VM failed: %s", v.Status.Error)
		}
		if v.Status.State != state {
			return fmt.Errorf("state %s, want %s", v.Status.State, state)
		}
		return nil
	}
}

// serialLog reads a VM's serial console log through the API.
func serialLog(t *testing.T, a *cairntest.Client, name string) string {
	t.Helper()
	// The whole log (up to 4 MiB), not the default 64 KiB tail: tests count
	// boots, and a boot's kernel messages take tens of KiB.
	req, _ := http.NewRequest("GET", a.URL("/api/v1/vms/"+name+"/serial-log?bytes=4194304"), nil)
	req.Header.Set("Authorization", "Bearer "+a.Token())
	res, err := a.HTTP.Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// waitSerial waits until the VM's serial log holds want n times; the test
// guest prints "cairn-guest: hostname=H ip=A" once per boot.
func waitSerial(t *testing.T, a *cairntest.Client, name, want string, n int) {
	t.Helper()
	var log string
	testutil.WaitFor(t, 3*time.Minute, fmt.Sprintf("%q ×%d on %s's serial console", want, n, name), func() error {
		log = serialLog(t, a, name)
		if got := strings.Count(log, want); got < n {
			return fmt.Errorf("seen %d times; the log ends: %q", got, log[max(0, len(log)-1500):])
		}
		return nil
	})
}

// probe connects to the guest's port 8080 from inside node n's network
// namespace, where the VM network's bridge is.
func probe(n *harness.Node, ip string) (string, error) {
	cmd := n.Command("timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+ip+"/8080 && cat <&3")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func waitProbe(t *testing.T, n *harness.Node, ip, want string) {
	t.Helper()
	testutil.WaitFor(t, 2*time.Minute, "guest "+ip+" answering on 8080", func() error {
		out, err := probe(n, ip)
		if err != nil || !strings.Contains(out, want) {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
}

// alive reports whether a process runs; a zombie waiting for its reaper
// (the agent, or init once the agent is gone) does not.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// vmLeftovers lists what of a VM remains on a node: its QEMU process, tap,
// disk directory and run directory.
func vmLeftovers(n *harness.Node, id string, pid int, taps ...string) []string {
	var left []string
	if pid > 0 && alive(pid) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(b), id) {
			left = append(left, fmt.Sprintf("QEMU pid %d", pid))
		}
	}
	// This node's QEMU of it (the nodes share the host: another node may
	// run the VM now).
	if pat := "/" + n.Name + "/" + id + "/qemu.pid"; func() bool {
		out, _ := exec.Command("pgrep", "-f", pat).Output()
		return len(strings.TrimSpace(string(out))) > 0
	}() {
		left = append(left, "process matching "+pat)
	}
	// Its taps if named (other VMs may run on n), else any VM's.
	if out, _ := n.Command("ip", "-o", "link", "show", "type", "tun").CombinedOutput(); len(taps) == 0 && strings.Contains(string(out), "cvm") {
		left = append(left, "tap: "+strings.TrimSpace(string(out)))
	} else {
		for _, tap := range taps {
			if strings.Contains(string(out), tap+":") {
				left = append(left, "tap "+tap)
			}
		}
	}
	if _, err := os.Stat(n.DataDir + "/vms/" + id); err == nil {
		left = append(left, "disk directory")
	}
	return left
}

// vncDial opens a console WebSocket; vncGreeting reads the server's first
// message, which for VNC is the RFB version.
func vncDial(a *cairntest.Client, path string) error {
	conn, err := wsDial(a, path)
	if err == nil {
		conn.CloseNow()
	}
	return err
}

func vncGreeting(t *testing.T, a *cairntest.Client, path string) string {
	t.Helper()
	conn, err := wsDial(a, path)
	if err != nil {
		t.Fatalf("console WebSocket: %v", err)
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read the console: %v", err)
	}
	return string(b)
}

func wsDial(a *cairntest.Client, path string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(a.URL(path), "https://", "wss://", 1)
	conn, res, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: a.HTTP, Subprotocols: []string{"binary"}})
	if res != nil && res.Body != nil {
		res.Body.Close()
	}
	return conn, err
}

// readUntil reads a console WebSocket until want has arrived and returns
// what it read.
func readUntil(t *testing.T, conn *websocket.Conn, want string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got strings.Builder
	for !strings.Contains(got.String(), want) {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("serial console: %v after %q", err, got.String())
		}
		got.Write(b)
	}
	return got.String()
}

// virtualSize is a disk file's size as the guest sees it.
func virtualSize(t *testing.T, path string) int64 {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize
}

// usagePoint is one step of GET /api/v1/vms/{vm}/usage.
type usagePoint struct {
	At        time.Time `json:"at"`
	CPU       float64   `json:"cpu_percent"`
	Memory    int64     `json:"memory_bytes"`
	DiskRead  float64   `json:"disk_read_bps"`
	DiskWrite float64   `json:"disk_write_bps"`
	NetIn     float64   `json:"net_in_bps"`
	NetOut    float64   `json:"net_out_bps"`
}

// checkUsage reads a running VM's usage graphs through via (relayed from
// the VM's node if it is another) while the test makes the guest work:
// its node's samples show the CPU the guest burns, its memory, the disk
// bytes it wrote and the network traffic of probes, within a few steps.
func checkUsage(t *testing.T, via *cairntest.Client, vmNode *harness.Node, name, ip string) {
	t.Helper()
	var h struct {
		Node   string       `json:"node"`
		Span   string       `json:"span"`
		VCPUs  int          `json:"vcpus"`
		Points []usagePoint `json:"points"`
	}
	seen := map[string]bool{}
	testutil.WaitFor(t, 90*time.Second, name+"'s usage graphs showing CPU, memory, disk writes and network", func() error {
		_, _ = probe(vmNode, ip) // traffic both ways
		if err := via.Call("GET", "/api/v1/vms/"+name+"/usage", nil, 200, &h); err != nil {
			return err
		}
		for _, p := range h.Points {
			seen["cpu"] = seen["cpu"] || p.CPU > 0
			seen["memory"] = seen["memory"] || p.Memory > 16<<20
			seen["disk"] = seen["disk"] || p.DiskWrite > 0
			seen["network"] = seen["network"] || p.NetIn > 0 && p.NetOut > 0
		}
		if len(seen) < 4 || !seen["cpu"] || !seen["memory"] || !seen["disk"] || !seen["network"] {
			return fmt.Errorf("%d points from %s, seen %v", len(h.Points), h.Node, seen)
		}
		return nil
	})
	if h.Span != "hour" || h.Node != vmNode.Name || h.VCPUs < 1 {
		t.Fatalf("usage of %s: span %q, node %q, %d vCPUs", name, h.Span, h.Node, h.VCPUs)
	}
	for i := 1; i < len(h.Points); i++ {
		if !h.Points[i].At.After(h.Points[i-1].At) {
			t.Fatalf("usage points out of order: %v then %v", h.Points[i-1].At, h.Points[i].At)
		}
	}
	// The day: five-minute means, the one in progress included.
	if err := via.Call("GET", "/api/v1/vms/"+name+"/usage?span=day", nil, 200, &h); err != nil || len(h.Points) == 0 || h.Span != "day" {
		t.Fatalf("a day of %s's usage: %d points, span %q (%v)", name, len(h.Points), h.Span, err)
	}
	if err := via.Call("GET", "/api/v1/vms/"+name+"/usage?span=week", nil, 400, nil); err != nil {
		t.Fatalf("an unknown span: %v", err)
	}
}
