package cluster_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

const (
	adminPassword = "qa-admin-password"
	joinToken     = "qa-join-token"
)

type opts struct {
	n         int
	expect    int
	discovery bool   // LAN discovery instead of --join
	grace     string // --dead-server-grace
}

// startCluster runs n cairn agents and waits until every one is ready.
func startCluster(t *testing.T, o opts) *harness.Cluster {
	t.Helper()
	if o.expect == 0 {
		o.expect = o.n
	}
	if o.grace == "" {
		o.grace = "5m"
	}
	bin := harness.BuildCairn(t)
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(adminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := harness.New(t, harness.Options{N: o.n, Binary: bin, Args: func(n *harness.Node) []string {
		args := []string{"agent", "--name", n.Name, "--data-dir", n.DataDir, "--bind", n.IP,
			"--expect", strconv.Itoa(o.expect), "--join-token", joinToken, "--admin-password-file", pwFile,
			"--dead-server-grace", o.grace, "--log-level", "info"}
		if o.discovery {
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
	for _, n := range c.Nodes {
		waitReady(t, n)
	}
	return c
}

func waitReady(t *testing.T, n *harness.Node) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, n.Name+" ready", func() error {
		c, err := newClient(n, "")
		if err != nil {
			return err
		}
		return c.call("GET", "/readyz", nil, 200, nil)
	})
}

// client talks to one node's API over HTTPS, trusting the cluster CA.
type client struct {
	node  *harness.Node
	token string
	http  *http.Client
}

func newClient(n *harness.Node, token string) (*client, error) {
	pem, err := os.ReadFile(filepath.Join(n.DataDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("bad ca.crt")
	}
	return &client{node: n, token: token, http: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}, nil
}

func (c *client) url(path string) string { return "https://" + c.node.IP + ":8443" + path }

// httpError is a non-expected status from the API.
type httpError struct {
	Status int
	Code   string `json:"code"`
	Msg    string `json:"message"`
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg) }

func (c *client) call(method, path string, in any, want int, out any, hdr ...string) error {
	_, err := c.callH(method, path, in, want, out, hdr...)
	return err
}

func (c *client) callH(method, path string, in any, want int, out any, hdr ...string) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url(path), body)
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
	res, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		he := &httpError{Status: res.StatusCode}
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

// admin logs in as the admin on node n.
func admin(t *testing.T, n *harness.Node) *client {
	t.Helper()
	var c *client
	testutil.WaitFor(t, 30*time.Second, "admin login on "+n.Name, func() error {
		anon, err := newClient(n, "")
		if err != nil {
			return err
		}
		var res struct{ Token string }
		if err := anon.call("POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": adminPassword}, 200, &res); err != nil {
			return err
		}
		anon.token = res.Token
		c = anon
		return nil
	})
	return c
}

func (c *client) on(n *harness.Node) *client {
	cc, err := newClient(n, c.token)
	if err != nil {
		panic(err)
	}
	return cc
}

type nodeStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Role    string `json:"role"`
	Gossip  string `json:"gossip"`
	Healthy bool   `json:"healthy"`
}

type clusterStatus struct {
	Leader string       `json:"leader"`
	Voters int          `json:"voters"`
	Nodes  []nodeStatus `json:"nodes"`
}

func (c *client) status() (clusterStatus, error) {
	var st clusterStatus
	err := c.call("GET", "/api/v1/cluster", nil, 200, &st)
	return st, err
}

// waitShape waits until node n sees a leader and exactly these roles.
func waitShape(t *testing.T, c *client, voters, nonvoters int) clusterStatus {
	t.Helper()
	var st clusterStatus
	testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("%d voters and %d non-voters", voters, nonvoters), func() error {
		var err error
		if st, err = c.status(); err != nil {
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

func nodeByName(c *harness.Cluster, name string) *harness.Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

type project struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Version     uint64 `json:"version"`
}

func (c *client) createProject(name string) (project, error) {
	var p project
	err := c.call("POST", "/api/v1/projects", map[string]string{"name": name}, 201, &p)
	return p, err
}
