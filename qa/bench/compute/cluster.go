package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// node is one Cairn node with VMs on and an admin session on its API.
type node struct {
	n     *harness.Node
	api   *http.Client
	token string
}

// The flavors and the project the benchmark creates.
const (
	project      = "bench"
	image        = "guest"
	bootFlavor   = "bench-boot"
	burstFlavor  = "bench-burst"
	bootRAMMiB   = 256
	bootVCPUs    = 1
	bootDiskGiB  = 1
	burstRAMMiB  = 128
	apiTimeout   = 30 * time.Second
	startTimeout = 90 * time.Second
)

// startNode starts one agent with two directory disks, logs in as admin,
// waits for the disks and the host's capacity report, and prepares the
// flavors, the project (with room for the burst), the overcommit the burst
// needs and the guest image.
func startNode(ctx context.Context, t harness.T, bin, guest string, burst int) (*node, error) {
	password := rand.Text()
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	c := harness.New(t, harness.Options{N: 1, Binary: bin, Args: func(n *harness.Node) []string {
		return []string{"agent", "--name", n.Name, "--data-dir", n.DataDir, "--bind", n.IP,
			"--expect", "1", "--join-token", rand.Text(), "--admin-password-file", pwFile,
			"--discovery-port", "0", "--disk", "disks/d1", "--disk", "disks/d2",
			"--vm-stop-timeout", "30s"}
	}})
	nd := &node{n: c.Nodes[0]}

	pool := x509.NewCertPool()
	caFile := filepath.Join(nd.n.DataDir, "ca.crt")
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
	nd.api = &http.Client{Timeout: apiTimeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64}}

	err = testutil.Eventually(startTimeout, func() error {
		var res struct{ Token string }
		err := nd.call(ctx, "POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": password}, &res, 200)
		nd.token = res.Token
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("log in: %w", err)
	}
	err = testutil.Eventually(startTimeout, func() error {
		var ds []struct{ Health string }
		if err := nd.call(ctx, "GET", "/api/v1/disks", nil, &ds, 200); err != nil {
			return err
		}
		ok := 0
		for _, d := range ds {
			if d.Health == "ok" {
				ok++
			}
		}
		if ok != 2 {
			return fmt.Errorf("%d of %d disks healthy, want 2", ok, len(ds))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("disks: %w", err)
	}
	err = testutil.Eventually(startTimeout, func() error {
		var hs []json.RawMessage
		if err := nd.call(ctx, "GET", "/api/v1/hosts", nil, &hs, 200); err != nil {
			return err
		}
		if len(hs) != 1 {
			return fmt.Errorf("%d hosts reported, want 1", len(hs))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("host capacity: %w", err)
	}
	return nd, nd.setup(ctx, guest, burst)
}

func (nd *node) setup(ctx context.Context, guest string, burst int) error {
	for _, f := range []map[string]any{
		{"name": bootFlavor, "vcpus": bootVCPUs, "ram_mib": bootRAMMiB, "disk_gib": bootDiskGiB},
		{"name": burstFlavor, "vcpus": 1, "ram_mib": burstRAMMiB, "disk_gib": bootDiskGiB},
	} {
		if err := nd.call(ctx, "POST", "/api/v1/flavors", f, nil, 201); err != nil {
			return fmt.Errorf("create flavor: %w", err)
		}
	}
	if err := nd.call(ctx, "POST", "/api/v1/projects", map[string]string{"name": project}, nil, 201); err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	n := int64(burst + 2)
	quota := map[string]int64{"instances": n, "vcpus": n, "ram_mib": n * bootRAMMiB, "disk_gib": n * bootDiskGiB,
		"object_gib": 10, "floating_ips": 1}
	if err := nd.call(ctx, "PUT", "/api/v1/projects/"+project+"/quota", quota, nil, 200); err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	// The default (4 vCPUs per core) places 8 one-vCPU VMs on two cores.
	settings := map[string]any{"cpu_allocation_ratio": 16, "ram_allocation_ratio": 1, "reserved_ram_mib": 1024}
	if err := nd.call(ctx, "PUT", "/api/v1/compute/settings", settings, nil, 200); err != nil {
		return fmt.Errorf("compute settings: %w", err)
	}
	return nd.upload(ctx, guest)
}

// upload streams the guest image to the image upload route.
func (nd *node) upload(ctx context.Context, path string) error {
	q := url.Values{"name": {image}, "project": {project}, "visibility": {"public"}, "os_type": {"linux"}}
	return benchrun.UploadImage(ctx, nd.api, nd.url("/api/v1/images/upload?"+q.Encode()), nd.token, path)
}

func (nd *node) url(path string) string { return "https://" + nd.n.IP + ":8443" + path }

// call sends body as JSON and decodes the answer into out when the status
// is want.
func (nd *node) call(ctx context.Context, method, path string, body, out any, want int) error {
	return benchrun.CallJSON(ctx, nd.api, method, nd.url(path), nd.token, body, out, want)
}

// vmView is the part of the API's VM the benchmark reads.
type vmView struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status struct {
		State string `json:"state"`
		Error string `json:"error"`
		PID   int    `json:"pid"`
	} `json:"status"`
}

// event is one entry of a VM's history.
type event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
}

func (nd *node) createVM(ctx context.Context, name, flavor string) (vmView, error) {
	var v vmView
	err := nd.call(ctx, "POST", "/api/v1/vms", map[string]any{"name": name, "project": project, "image": image, "flavor": flavor}, &v, 201)
	return v, err
}

func (nd *node) getVM(ctx context.Context, name string) (vmView, error) {
	var v vmView
	err := nd.call(ctx, "GET", "/api/v1/vms/"+name, nil, &v, 200)
	return v, err
}

func (nd *node) listVMs(ctx context.Context) ([]vmView, error) {
	var vs []vmView
	err := nd.call(ctx, "GET", "/api/v1/vms?project="+project, nil, &vs, 200)
	return vs, err
}

func (nd *node) events(ctx context.Context, name string) ([]event, error) {
	var evs []event
	err := nd.call(ctx, "GET", "/api/v1/vms/"+name+"/events", nil, &evs, 200)
	return evs, err
}

// deleteVM asks for the VM's deletion and waits until the API no longer
// knows it.
func (nd *node) deleteVM(ctx context.Context, name string, timeout time.Duration) error {
	if err := nd.call(ctx, "DELETE", "/api/v1/vms/"+name, nil, nil, 202); err != nil {
		return err
	}
	return testutil.Eventually(timeout, func() error {
		err := nd.call(ctx, "GET", "/api/v1/vms/"+name, nil, nil, 404)
		if err != nil {
			return fmt.Errorf("%s not gone: %w", name, err)
		}
		return nil
	})
}

// vmDir is where the node keeps a VM's disks, seed and serial log.
func (nd *node) vmDir(id string) string { return filepath.Join(nd.n.DataDir, "vms", id) }
