// Package cairntest starts real Cairn clusters for integration tests and
// talks to them through the public API only: the shared helpers of qa/cluster,
// qa/browser and benchmarks. Only tests and qa programs import it.
package cairntest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

const (
	AdminPassword = "qa-cluster-root-6161"
	JoinToken     = "qa-join-token"
)

// Options shape a test cluster.
type Options struct {
	N         int
	Expect    int      // --expect; defaults to N
	Discovery bool     // LAN discovery instead of --join
	Grace     string   // --dead-server-grace; defaults to 5m
	Extra     []string // more agent flags
	// NodeExtra, if set, gives flags for one node (n.Index is 1-based;
	// n.IP its address), after Extra.
	NodeExtra func(n *harness.Node) []string
	// VIP gives the cluster its own address (--vip), VIPOf's.
	VIP bool
	// Setup starts the cluster with no admin: the first one is made on
	// the UI's setup page, with the code on the nodes' consoles
	// (SetupCode), as on a new appliance.
	Setup bool
}

// VIPOf is the cluster address a cluster started with Options.VIP has:
// .100 of the nodes' /24.
func VIPOf(c *harness.Cluster) string {
	ip := netip.MustParseAddr(c.Nodes[0].IP).As4()
	ip[3] = 100
	return netip.AddrFrom4(ip).String()
}

// VIP6Of is the IPv6 twin a cluster started with Options.VIP has: ::100
// of a unique-local /64 made from the nodes' /24 (fd00:ca1:B:C::/64 for
// A.B.C.0/24), whose ::1 the host has on the cluster's bridge.
func VIP6Of(c *harness.Cluster) string {
	ip := netip.MustParseAddr(c.Nodes[0].IP).As4()
	return fmt.Sprintf("fd00:ca1:%x:%x::100", ip[1], ip[2])
}

// Start runs o.N cairn agents and waits until every one is ready.
func Start(t *testing.T, o Options) *harness.Cluster {
	t.Helper()
	if o.Expect == 0 {
		o.Expect = o.N
	}
	if o.Grace == "" {
		o.Grace = "5m"
	}
	bin := harness.BuildCairn(t)
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// VM run directories (QEMU's sockets) live under /run like a real
	// node's, one per test node, removed with the cluster: a VM still
	// running when the test ends is stopped with its node's namespace.
	name := strings.ReplaceAll(t.Name(), "/", "_")
	name = name[:min(len(name), 24)] // sockets have 107 bytes for their path
	runDirs := filepath.Join("/run", "cairn-qa", name+"-"+rand.Text()[:6])
	// Each VM's QEMU runs as a user of its own and must get to its run
	// directory: search (not list) permission on the way.
	if err := os.MkdirAll(runDirs, 0o711); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(runDirs), runDirs} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = os.RemoveAll(runDirs)
		_ = os.Remove(filepath.Dir(runDirs)) // if no other cluster uses it
	})
	c := harness.New(t, harness.Options{N: o.N, Binary: bin, Args: func(n *harness.Node) []string {
		args := []string{"agent", "--name", n.Name, "--data-dir", n.DataDir, "--bind", n.IP,
			"--vm-run-dir", filepath.Join(runDirs, n.Name),
			"--expect", strconv.Itoa(o.Expect), "--join-token", JoinToken,
			"--dead-server-grace", o.Grace, "--log-level", "info"}
		if !o.Setup {
			args = append(args, "--admin-password-file", pwFile)
		}
		args = append(args, o.Extra...)
		if n.Index > o.N {
			// A node added to the formed cluster needs a one-time
			// enrolment token: the join token alone no longer admits it.
			args = append(args, "--enrol-token", EnrolToken(t, n.Cluster(), n))
		}
		if o.NodeExtra != nil {
			args = append(args, o.NodeExtra(n)...)
		}
		if o.VIP {
			args = append(args, "--vip", VIPOf(n.Cluster())+"/24", "--vip6", VIP6Of(n.Cluster())+"/64")
		}
		if o.Discovery {
			return args
		}
		var peers []string
		for _, p := range n.Cluster().Nodes {
			if p != n {
				peers = append(peers, p.IP)
			}
		}
		return append(args, "--discovery-port", "0", "--join", strings.Join(peers, ","))
	}})
	if o.VIP && c.Name() != "" {
		// The host's address in the IPv6 twin's /64, on the cluster's
		// bridge, so the test reaches the twin as a client on the LAN does.
		host := strings.TrimSuffix(VIP6Of(c), "100") + "1/64"
		if out, err := exec.Command("ip", "-6", "addr", "add", host, "dev", c.Name(), "nodad").CombinedOutput(); err != nil {
			t.Fatalf("IPv6 on the cluster bridge: %v %s", err, out)
		}
	}
	for _, n := range c.Nodes {
		WaitReady(t, n)
	}
	return c
}

// WaitReady waits until n answers /readyz.
func WaitReady(t *testing.T, n *harness.Node) {
	t.Helper()
	err := testutil.Eventually(60*time.Second, func() error {
		c, err := NewClient(n, "")
		if err != nil {
			return err
		}
		return c.Call("GET", "/readyz", nil, 200, nil)
	})
	if err != nil {
		t.Fatalf("waiting for %s ready: %v\nhow the test reaches it:\n%s", n.Name, err, n.NetReport())
	}
}

// Client talks to one node's API over HTTPS, trusting the cluster CA.
type Client struct {
	Node  *harness.Node
	token string
	HTTP  *http.Client
}

// NewClient returns a client of node n with an optional bearer token.
func NewClient(n *harness.Node, token string) (*Client, error) {
	pem, err := os.ReadFile(filepath.Join(n.DataDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("bad ca.crt")
	}
	return &Client{Node: n, token: token, HTTP: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}, nil
}

// URL is the node's address for path.
func (c *Client) URL(path string) string { return "https://" + c.Node.IP + ":8443" + path }

// HTTPError is an API answer with an unexpected status.
type HTTPError struct {
	Status int
	Code   string `json:"code"`
	Msg    string `json:"message"`
}

func (e *HTTPError) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg) }

// Call sends in as JSON, expects status want and decodes the body into out.
func (c *Client) Call(method, path string, in any, want int, out any, hdr ...string) error {
	_, err := c.CallH(method, path, in, want, out, hdr...)
	return err
}

// CallH is Call that also returns the response headers.
func (c *Client) CallH(method, path string, in any, want int, out any, hdr ...string) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.URL(path), body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		he := &HTTPError{Status: res.StatusCode}
		_ = json.Unmarshal(raw, he)
		if he.Msg == "" {
			he.Msg = string(raw)
		}
		return res.Header, he
	}
	if out != nil {
		return res.Header, json.Unmarshal(raw, out)
	}
	return res.Header, nil
}

// Admin logs in as the admin on node n.
func Admin(t *testing.T, n *harness.Node) *Client {
	t.Helper()
	var c *Client
	testutil.WaitFor(t, 30*time.Second, "admin login on "+n.Name, func() error {
		anon, err := NewClient(n, "")
		if err != nil {
			return err
		}
		var res struct{ Token string }
		if err := anon.Call("POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": AdminPassword}, 200, &res); err != nil {
			return err
		}
		anon.token = res.Token
		c = anon
		return nil
	})
	return c
}

// EnrolToken creates a one-time enrolment token through the API of any
// node of c but skip, as a cluster admin.
func EnrolToken(t *testing.T, c *harness.Cluster, skip *harness.Node) string {
	t.Helper()
	var tok string
	testutil.WaitFor(t, 30*time.Second, "an enrolment token", func() error {
		var last error = errors.New("no other node")
		for _, n := range c.Nodes {
			if n == skip {
				continue
			}
			anon, err := NewClient(n, "")
			if err != nil {
				last = err
				continue
			}
			var login struct{ Token string }
			if last = anon.Call("POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": AdminPassword}, 200, &login); last != nil {
				continue
			}
			anon.token = login.Token
			var res struct{ Token string }
			if last = anon.Call("POST", "/api/v1/cluster/enrol-tokens", map[string]string{}, 201, &res); last == nil {
				tok = res.Token
				return nil
			}
		}
		return last
	})
	return tok
}

// On returns a client of node n with the same token.
func (c *Client) On(n *harness.Node) *Client {
	cc, err := NewClient(n, c.token)
	if err != nil {
		panic(err)
	}
	return cc
}

// NodeStatus is one node in /api/v1/cluster.
type NodeStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Role    string `json:"role"`
	Gossip  string `json:"gossip"`
	Healthy bool   `json:"healthy"`
}

// ClusterStatus is /api/v1/cluster.
type ClusterStatus struct {
	Leader string       `json:"leader"`
	Voters int          `json:"voters"`
	Nodes  []NodeStatus `json:"nodes"`
}

// Status reads /api/v1/cluster.
func (c *Client) Status() (ClusterStatus, error) {
	var st ClusterStatus
	err := c.Call("GET", "/api/v1/cluster", nil, 200, &st)
	return st, err
}

// WaitShape waits until the cluster has a leader and exactly these healthy roles.
func WaitShape(t *testing.T, c *Client, voters, nonvoters int) ClusterStatus {
	t.Helper()
	var st ClusterStatus
	testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("%d voters and %d non-voters", voters, nonvoters), func() error {
		var err error
		if st, err = c.Status(); err != nil {
			return err
		}
		v, nv := 0, 0
		for _, n := range st.Nodes {
			switch {
			case n.Role == "voter" && n.Healthy:
				v++
			case n.Role == "nonvoter" && n.Healthy:
				nv++
			case n.Role != "none":
				return fmt.Errorf("%s is %s but unhealthy (%s)", n.Name, n.Role, n.Gossip)
			}
		}
		if st.Leader == "" || v != voters || nv != nonvoters {
			return fmt.Errorf("leader %q, %d healthy voters, %d non-voters: %+v", st.Leader, v, nv, st.Nodes)
		}
		return nil
	})
	return st
}

// NodeByName finds a node of the harness cluster.
func NodeByName(c *harness.Cluster, name string) *harness.Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Project is the API's project.
type Project struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Version     uint64 `json:"version"`
}

// CreateProject creates a project by name.
func (c *Client) CreateProject(name string) (Project, error) {
	var p Project
	err := c.Call("POST", "/api/v1/projects", map[string]string{"name": name}, 201, &p)
	return p, err
}

// Token is the client's bearer token.
func (c *Client) Token() string { return c.token }

// WaitHealthyDisks waits until n disks report healthy, each no larger than
// maxTotal bytes when maxTotal is set.
func WaitHealthyDisks(t *testing.T, a *Client, n int, maxTotal uint64) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("%d healthy disks", n), func() error {
		var ds []struct {
			ID     string `json:"id"`
			Health string `json:"health"`
			Total  uint64 `json:"total_bytes"`
		}
		if err := a.Call("GET", "/api/v1/disks", nil, 200, &ds); err != nil {
			return err
		}
		ok := 0
		for _, d := range ds {
			if d.Health == "ok" && d.Total > 0 && (maxTotal == 0 || d.Total <= maxTotal) {
				ok++
			}
		}
		if ok != n {
			return fmt.Errorf("%d of %d disks healthy: %+v", ok, len(ds), ds)
		}
		return nil
	})
}

var setupCodeRE = regexp.MustCompile(`one-time setup code (\S+)`)

// SetupCode is the one-time setup code a node of a cluster started with
// Options.Setup printed on its console (its log), once it has.
func SetupCode(t *testing.T, n *harness.Node) string {
	t.Helper()
	var code string
	testutil.WaitFor(t, time.Minute, n.Name+"'s setup code on its console", func() error {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			return err
		}
		m := setupCodeRE.FindAllSubmatch(b, -1)
		if len(m) == 0 {
			return fmt.Errorf("not printed yet")
		}
		code = string(m[len(m)-1][1])
		return nil
	})
	return code
}
