package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// project is the project the benchmark's volume belongs to.
const project = "bench"

// cluster is three Cairn nodes with one disk each and an API client per node.
type cluster struct {
	c      *harness.Cluster
	api    []*http.Client
	token  string // the cluster admin's
	runDir string // each node's --vm-run-dir is runDir/NODE
}

// volume is the part of GET /api/v1/volumes/NAME the benchmark reads.
type volume struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	State    string `json:"state"`
	Writer   string `json:"writer"`
	Replicas []struct {
		Node  string `json:"node"`
		State string `json:"state"`
	} `json:"replicas"`
}

// inSync reports whether every replica is in sync, and otherwise names the
// first that is not.
func (v volume) inSync() (bool, string) {
	for _, r := range v.Replicas {
		if r.State != "in_sync" {
			return false, r.Node + " " + r.State
		}
	}
	return len(v.Replicas) > 0, "no replicas"
}

// startCluster starts the nodes, each with one directory disk under its data
// dir (so on the filesystem of the temp dir, not tmpfs: the reference file
// goes beside them), and waits for the three disks.
func startCluster(ctx context.Context, t harness.T, bin string, debug bool) (*cluster, error) {
	password, joinToken := rand.Text(), rand.Text()
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	// The NBD sockets live beside each node's VM run directory; /run, as on a
	// real node, with paths short enough for a unix socket.
	runDir := filepath.Join("/run", "cairn-bench", "volumes-"+rand.Text()[:6])
	if err := os.MkdirAll(runDir, 0o711); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		_ = os.RemoveAll(runDir)
		_ = os.Remove(filepath.Dir(runDir)) // if no other run uses it
	})
	c := harness.New(t, harness.Options{N: 3, Binary: bin, Args: func(n *harness.Node) []string {
		var peers []string
		for _, m := range n.Cluster().Nodes {
			if m != n {
				peers = append(peers, m.IP)
			}
		}
		args := []string{"agent", "--name", n.Name, "--data-dir", n.DataDir, "--bind", n.IP,
			"--vm-run-dir", filepath.Join(runDir, n.Name),
			"--expect", "3", "--join-token", joinToken, "--admin-password-file", pwFile,
			"--discovery-port", "0", "--join", strings.Join(peers, ","),
			"--disk", "disks/d1", "--disk-report-interval", "1s"}
		if debug {
			args = append(args, benchrun.DebugArgs(n)...)
		}
		return args
	}})
	cl := &cluster{c: c, runDir: runDir}

	pool := x509.NewCertPool()
	caFile := filepath.Join(c.Nodes[0].DataDir, "ca.crt")
	err := testutil.Eventually(90*time.Second, func() error {
		b, err := os.ReadFile(caFile)
		if err == nil && !pool.AppendCertsFromPEM(b) {
			err = fmt.Errorf("%s: no certificate yet", caFile)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start cairn: %w", err)
	}
	for range c.Nodes {
		cl.api = append(cl.api, benchrun.NewClient(&tls.Config{RootCAs: pool}, nil))
	}
	err = testutil.Eventually(90*time.Second, func() error {
		var res struct{ Token string }
		err := cl.call(ctx, 0, "POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": password}, &res, 200)
		cl.token = res.Token
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("log in: %w", err)
	}
	err = testutil.Eventually(90*time.Second, func() error {
		var ds []struct{ Health string }
		if err := cl.call(ctx, 0, "GET", "/api/v1/disks", nil, &ds, 200); err != nil {
			return err
		}
		ok := 0
		for _, d := range ds {
			if d.Health == "ok" {
				ok++
			}
		}
		if ok != 3 {
			return fmt.Errorf("%d of %d disks healthy, want 3", ok, len(ds))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("disks: %w", err)
	}
	if err := cl.call(ctx, 0, "POST", "/api/v1/projects", map[string]string{"name": project}, nil, 201); err != nil {
		return nil, fmt.Errorf("create project: %w", err)
	}
	return cl, nil
}

// url is node i's (0-based) API.
func (cl *cluster) url(i int, path string) string {
	return "https://" + cl.c.Nodes[i].IP + ":8443" + path
}

// call sends body as JSON to node i's API as the admin and decodes the
// answer into out when the status is want.
func (cl *cluster) call(ctx context.Context, i int, method, path string, body, out any, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return benchrun.CallJSON(ctx, cl.api[i], method, cl.url(i, path), cl.token, body, out, want)
}

// createVolume creates a volume of sizeGiB in the benchmark's project.
func (cl *cluster) createVolume(ctx context.Context, name string, sizeGiB int) (volume, error) {
	var v volume
	body := map[string]any{"name": name, "size_gib": sizeGiB, "project": project}
	if err := cl.call(ctx, 0, "POST", "/api/v1/volumes", body, &v, 201); err != nil {
		return v, fmt.Errorf("create volume %s: %w", name, err)
	}
	if len(v.Replicas) != 3 {
		return v, fmt.Errorf("create volume %s: %d replicas, want 3", name, len(v.Replicas))
	}
	return v, nil
}

// getVolume reads the volume through node i.
func (cl *cluster) getVolume(ctx context.Context, i int, name string) (volume, error) {
	var v volume
	err := cl.call(ctx, i, "GET", "/api/v1/volumes/"+name+"?project="+project, nil, &v, 200)
	return v, err
}

// attach attaches the volume to node n's host and returns the NBD URI it
// is served on there, once an NBD client can open it.
func (cl *cluster) attach(ctx context.Context, name string, n *harness.Node) (string, error) {
	if err := cl.call(ctx, 0, "POST", "/api/v1/volumes/"+name+"/attach?project="+project, map[string]string{"node": n.Name}, nil, 200); err != nil {
		return "", fmt.Errorf("attach volume %s: %w", name, err)
	}
	v, err := cl.getVolume(ctx, 0, name)
	if err != nil {
		return "", fmt.Errorf("attach volume %s: %w", name, err)
	}
	var uri string
	err = testutil.Eventually(60*time.Second, func() error {
		sock, err := cl.socket(n, v.ID)
		if err != nil {
			return err
		}
		uri = "nbd+unix:///" + v.ID + "?socket=" + sock
		return fioProbe(ctx, uri)
	})
	if err != nil {
		return "", fmt.Errorf("attach volume %s: served on %s: %w", name, n.Name, err)
	}
	return uri, nil
}

// socket finds the NBD socket of volume id on node n: directly in the
// node's volume socket directory, or in a subdirectory of it per
// attachment.
func (cl *cluster) socket(n *harness.Node, id string) (string, error) {
	dir := filepath.Join(cl.runDir, n.Name+"-volumes")
	for _, pattern := range []string{filepath.Join(dir, id+".sock"), filepath.Join(dir, "*", id+".sock")} {
		m, _ := filepath.Glob(pattern)
		if len(m) == 1 {
			return m[0], nil
		}
		if len(m) > 1 {
			return "", fmt.Errorf("%d sockets for %s: %v", len(m), id, m)
		}
	}
	return "", fmt.Errorf("no socket for %s in %s yet", id, dir)
}

// resyncBytes reads cairn_volume_resync_bytes_total for the volume from node
// i's /metrics: what that node, as the writer, copied into replicas to bring
// them back in sync. 0 when the series is absent (nothing copied yet).
func (cl *cluster) resyncBytes(ctx context.Context, i int, volID string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", cl.url(i, "/metrics"), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+cl.token)
	res, err := cl.api[i].Do(req)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return 0, fmt.Errorf("metrics: status %d", res.StatusCode)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	prefix := `cairn_volume_resync_bytes_total{volume="` + volID + `"} `
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, sc.Err()
}

// roundTrip is the median of n HTTPS GET /healthz round trips to node i on
// a kept-alive connection: a request and its answer through TCP, TLS and a
// Go server across the cluster's bridge, as a replica write's round trip
// takes them (less its payload and the replica's own work).
func (cl *cluster) roundTrip(ctx context.Context, i, n int) (time.Duration, error) {
	var s benchrun.Sample
	for k := range n + 5 {
		req, err := http.NewRequestWithContext(ctx, "GET", cl.url(i, "/healthz"), nil)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		res, err := cl.api[i].Do(req)
		if err != nil {
			return 0, fmt.Errorf("round trip: %w", err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if k >= 5 { // the first few open and warm the connection
			s.Lat = append(s.Lat, time.Since(t0))
		}
	}
	return s.Percentile(50), nil
}
