package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"golang.org/x/sys/unix"
)

const (
	project      = "bench"
	image        = "guest"
	flavor       = "bench-ha"
	ramMiB       = 256
	startTimeout = 2 * time.Minute
	helloMarker  = "cairn-guest: hostname="
)

// cluster is three Cairn nodes and an admin session on the first's API.
type cluster struct {
	c     *harness.Cluster
	api   *http.Client
	token string
	via   int // the node whose API is asked
}

// precopy: TCG guests move as KVM ones do (--unsafe-tcg-precopy).
func startCluster(ctx context.Context, t harness.T, bin, guest string, precopy bool) (*cluster, error) {
	password, joinToken := rand.Text(), rand.Text()
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	// QEMU's sockets: short paths, reachable by each VM's user.
	runDirs := fmt.Sprintf("/run/cairn-bench-ha-%d", os.Getpid())
	if err := os.MkdirAll(runDirs, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(runDirs, 0o711); err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(runDirs) })
	c := harness.New(t, harness.Options{N: 3, Binary: bin, Args: func(n *harness.Node) []string {
		var peers []string
		for _, o := range n.Cluster().Nodes {
			if o != n {
				peers = append(peers, o.IP)
			}
		}
		return []string{"agent", "--name", n.Name, "--data-dir", n.DataDir, "--bind", n.IP,
			"--vm-run-dir", filepath.Join(runDirs, n.Name),
			"--expect", "3", "--join-token", joinToken, "--admin-password-file", pwFile,
			"--discovery-port", "0", "--disk", "disks/d1", "--vm-stop-timeout", "30s", "--join", strings.Join(peers, ","),
			"--unsafe-tcg-precopy=" + strconv.FormatBool(precopy)}
	}})
	cl := &cluster{c: c}
	pool := x509.NewCertPool()
	caFile := filepath.Join(c.Nodes[0].DataDir, "ca.crt")
	err := testutil.Eventually(startTimeout, func() error {
		b, err := os.ReadFile(caFile)
		if err == nil && !pool.AppendCertsFromPEM(b) {
			err = fmt.Errorf("%s: no certificate yet", caFile)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start cairn: %w", err)
	}
	cl.api = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	err = testutil.Eventually(startTimeout, func() error {
		var res struct{ Token string }
		err := cl.call(ctx, "POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": password}, &res, 200)
		cl.token = res.Token
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("log in: %w", err)
	}
	err = testutil.Eventually(startTimeout, func() error {
		var ds []struct{ Health string }
		if err := cl.call(ctx, "GET", "/api/v1/disks", nil, &ds, 200); err != nil {
			return err
		}
		ok := 0
		for _, d := range ds {
			if d.Health == "ok" {
				ok++
			}
		}
		var hs []struct{ Name string }
		if err := cl.call(ctx, "GET", "/api/v1/hosts", nil, &hs, 200); err != nil {
			return err
		}
		if ok != 3 || len(hs) != 3 {
			return fmt.Errorf("%d healthy disks, %d hosts; want 3 of each", ok, len(hs))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := cl.call(ctx, "POST", "/api/v1/flavors", map[string]any{"name": flavor, "vcpus": 1, "ram_mib": ramMiB, "disk_gib": 1}, nil, 201); err != nil {
		return nil, err
	}
	if err := cl.call(ctx, "POST", "/api/v1/projects", map[string]string{"name": project}, nil, 201); err != nil {
		return nil, err
	}
	return cl, cl.upload(ctx, guest)
}

func (cl *cluster) url(path string) string {
	return "https://" + cl.c.Nodes[cl.via].IP + ":8443" + path
}

func (cl *cluster) call(ctx context.Context, method, path string, body, out any, want int) error {
	return benchrun.CallJSON(ctx, cl.api, method, cl.url(path), cl.token, body, out, want)
}

func (cl *cluster) upload(ctx context.Context, path string) error {
	q := url.Values{"name": {image}, "project": {project}, "visibility": {"public"}, "os_type": {"linux"}}
	return benchrun.UploadImage(ctx, cl.api, cl.url("/api/v1/images/upload?"+q.Encode()), cl.token, path)
}

type vmView struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Node   string `json:"node"`
	Status struct {
		State string `json:"state"`
	} `json:"status"`
	NICs []struct {
		IP string `json:"ip"`
	} `json:"nics"`
	Migration *struct {
		Phase string `json:"phase"`
	} `json:"migration"`
}

// bootVM creates the guest (booted from a volume) and waits for its
// hostname line.
func (cl *cluster) bootVM(ctx context.Context, name string) (vmView, error) {
	var v vmView
	if err := cl.call(ctx, "POST", "/api/v1/vms", map[string]any{"name": name, "project": project, "image": image, "flavor": flavor}, &v, 201); err != nil {
		return v, err
	}
	err := testutil.Eventually(4*time.Minute, func() error {
		if err := cl.call(ctx, "GET", "/api/v1/vms/"+name, nil, &v, 200); err != nil {
			return err
		}
		log, err := cl.serialLog(ctx, name)
		if err != nil {
			return err
		}
		if v.Status.State != "running" || !strings.Contains(log, helloMarker) {
			return fmt.Errorf("%s, no hostname line yet", v.Status.State)
		}
		return nil
	})
	return v, err
}

func (cl *cluster) serialLog(ctx context.Context, name string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", cl.url("/api/v1/vms/"+name+"/serial-log"), nil)
	req.Header.Set("Authorization", "Bearer "+cl.token)
	res, err := cl.api.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

var pausedFor = regexp.MustCompile(`the guest paused for (\d+) ms`)

// migrate moves the VM live to the next node and measures it.
func (cl *cluster) migrate(ctx context.Context, vm vmView) (run, error) {
	var r run
	var cur vmView
	if err := cl.call(ctx, "GET", "/api/v1/vms/"+vm.Name, nil, &cur, 200); err != nil {
		return r, err
	}
	target := ""
	for i, n := range cl.c.Nodes {
		if n.Name == cur.Node {
			target = cl.c.Nodes[(i+1)%len(cl.c.Nodes)].Name
		}
	}
	p := startProbes(cl.c, cur.NICs[0].IP)
	defer p.kill()
	time.Sleep(time.Second) // answers before the move, to measure a gap against
	t0 := time.Now()
	if err := cl.call(ctx, "POST", "/api/v1/vms/"+vm.Name+"/migrate", map[string]string{"node": target}, nil, 200); err != nil {
		return r, err
	}
	// Asked every 10 ms, as the bare run asks its QEMU every few: a
	// backing-off poll would add up to its last interval to the figure.
	for deadline := t0.Add(5 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		cur = vmView{} // a field left out of the answer (the migration, once over) must not keep its old value
		err := cl.call(ctx, "GET", "/api/v1/vms/"+vm.Name, nil, &cur, 200)
		if err == nil && cur.Migration == nil && cur.Node == target && cur.Status.State == "running" {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("migration not done after 5 minutes: on %s, %s (%v)", cur.Node, cur.Status.State, err)
		}
	}
	r.total = time.Since(t0)
	time.Sleep(2 * time.Second) // answers after it
	var err error
	if r.gap, err = p.gap(t0.Add(-time.Second)); err != nil {
		return r, err
	}
	var evs []struct{ Message string }
	if err := cl.call(ctx, "GET", "/api/v1/vms/"+vm.Name+"/events", nil, &evs, 200); err != nil {
		return r, err
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if m := pausedFor.FindStringSubmatch(evs[i].Message); m != nil {
			ms, _ := strconv.Atoi(m[1])
			r.downtime = time.Duration(ms) * time.Millisecond
			return r, nil
		}
	}
	return r, errNoFigures
}

// probes ask the guest's TCP service on 8080 from inside every node's
// network namespace, every 10 ms, and record when it answered. They are
// goroutines on threads moved into the namespaces, not processes, so
// that asking costs the machine next to nothing.
type probes struct {
	mu   sync.Mutex
	at   []time.Time
	stop chan struct{}
	wg   sync.WaitGroup
}

func startProbes(c *harness.Cluster, ip string) *probes {
	p := &probes{stop: make(chan struct{})}
	for _, n := range c.Nodes {
		p.wg.Add(1)
		go p.probe(n.Netns, net.JoinHostPort(ip, "8080"))
	}
	return p
}

// startProbesAt asks each of addrs from network namespace netns ("": this
// process's).
func startProbesAt(netns string, addrs ...string) *probes {
	p := &probes{stop: make(chan struct{})}
	for _, a := range addrs {
		p.wg.Add(1)
		go p.probe(netns, a)
	}
	return p
}

func (p *probes) probe(netns, addr string) {
	defer p.wg.Done()
	// The thread stays in the node's namespace: it is not handed back.
	runtime.LockOSThread()
	if netns != "" {
		f, err := os.Open("/run/netns/" + netns)
		if err != nil {
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			return
		}
	}
	buf := make([]byte, 256)
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
		n, _ := io.ReadFull(conn, buf[:9])
		conn.Close()
		if n == 9 && string(buf[:9]) == "hostname=" {
			p.mu.Lock()
			p.at = append(p.at, time.Now())
			p.mu.Unlock()
		}
	}
}

func (p *probes) kill() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

// gap is the longest time without an answer since since (a second before
// the move), up to now (two seconds after it ended). A guest that did not
// answer in the first or the last half second of that is an error, not a
// gap of zero.
func (p *probes) gap(since time.Time) (time.Duration, error) {
	end := time.Now() // before the probes stop: one may be in a dial or a read
	p.kill()
	p.mu.Lock()
	defer p.mu.Unlock()
	var at []time.Time
	for _, t := range p.at {
		if !t.Before(since) {
			at = append(at, t)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	if len(at) < 2 || at[0].Sub(since) > 500*time.Millisecond || end.Sub(at[len(at)-1]) > 500*time.Millisecond {
		return 0, fmt.Errorf("the guest's port 8080 did not answer before and after the move (%d answers)", len(at))
	}
	var g time.Duration
	for i := 1; i < len(at); i++ {
		g = max(g, at[i].Sub(at[i-1]))
	}
	return g, nil
}
