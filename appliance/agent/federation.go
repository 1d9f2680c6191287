package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/federation"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// hubFacing is what a federation hub reaches of this site through its
// session: the cluster's status, and the site's API as a hub user with
// the role the hub gave them here (federation.Delegation): the audit log
// names them as user@hub.
func (a *Agent) hubFacing() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fed/v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.node.Status())
	})
	mux.HandleFunc("/fed/v1/api/", func(w http.ResponseWriter, r *http.Request) {
		id, name, role, ok := federation.Delegation(r)
		srv := a.apiServer.Load()
		switch {
		case !ok:
			http.Error(w, `{"code":"forbidden","message":"a hub's call names its user and role"}`, http.StatusForbidden)
			return
		case !federation.SiteAPIPath(strings.TrimPrefix(r.URL.Path, "/fed/v1")) || r.URL.RawPath != "":
			http.Error(w, `{"code":"invalid_argument","message":"a hub's call is of a path of the site's API"}`, http.StatusBadRequest)
			return
		case srv == nil:
			http.Error(w, `{"code":"unavailable","message":"the site's API is not serving yet"}`, http.StatusServiceUnavailable)
			return
		}
		r2 := r.Clone(api.WithPrincipal(r.Context(), a.identity.Delegated(id, name, role)))
		r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/fed/v1")
		r2.URL.RawPath = ""
		r2.RequestURI = r2.URL.RequestURI()
		srv.ServeHTTP(w, r2)
	})
	return mux
}

// inventory reads what the hub is told of this site, from the site's own
// API (as the site's admin), so the hub's copy says what the API says.
// A part that cannot be read is left out and said in Errors.
func (a *Agent) inventory(ctx context.Context) (*federation.Inventory, error) {
	srv := a.apiServer.Load()
	if srv == nil {
		return nil, fmt.Errorf("the API is not serving yet")
	}
	ctx = api.WithPrincipal(ctx, a.identity.Delegated("site:inventory", "inventory@"+a.cfg.Name, identity.RoleAdmin))
	inv := &federation.Inventory{Version: softwareVersion(), Protocol: consensus.Protocol}
	get := func(path string, out any) bool {
		req, _ := http.NewRequestWithContext(ctx, "GET", path, nil)
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		srv.ServeHTTP(rec, req)
		if rec.status == http.StatusNotFound {
			return false // not served here (a site without VMs, say)
		}
		if rec.status != http.StatusOK {
			inv.Errors = setError(inv.Errors, path, fmt.Sprintf("HTTP %d: %s", rec.status, bytes.TrimSpace(rec.body.Bytes())))
			return false
		}
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			inv.Errors = setError(inv.Errors, path, err.Error())
			return false
		}
		return true
	}
	var cluster struct {
		Leader string `json:"leader"`
		Nodes  []struct {
			Name    string `json:"name"`
			Role    string `json:"role"`
			Healthy bool   `json:"healthy"`
			Leader  bool   `json:"leader"`
		} `json:"nodes"`
	}
	if !get("/api/v1/cluster", &cluster) {
		return nil, fmt.Errorf("read the cluster's status: %v", inv.Errors)
	}
	inv.Leader = cluster.Leader
	critical := func(a federation.Alert) {
		a.Severity = "critical"
		inv.Alerts = append(inv.Alerts, a)
	}
	byNode := map[string]*federation.InvNode{}
	for _, n := range cluster.Nodes {
		inv.Nodes = append(inv.Nodes, federation.InvNode{Name: n.Name, Role: n.Role, Healthy: n.Healthy, Leader: n.Leader})
		if !n.Healthy && n.Role != "none" {
			critical(federation.Alert{Kind: "node_down", Node: n.Name, Text: "node " + n.Name + " is not healthy"})
		}
	}
	for i := range inv.Nodes {
		byNode[inv.Nodes[i].Name] = &inv.Nodes[i]
	}

	var projects []identity.Project
	get("/api/v1/projects", &projects)
	project := map[string]*federation.InvProject{}
	for _, p := range projects {
		inv.Projects = append(inv.Projects, federation.InvProject{Name: p.Name})
	}
	for i := range inv.Projects {
		for _, p := range projects {
			if p.Name == inv.Projects[i].Name {
				project[p.ID] = &inv.Projects[i]
			}
		}
	}
	nameOf := func(id string) string {
		if p := project[id]; p != nil {
			return p.Name
		}
		return id
	}

	var capacity struct {
		Nodes []struct {
			Node       string `json:"node"`
			CPUs       int64  `json:"cpus"`
			HostRAMMiB int64  `json:"host_ram_mib"`
			VMs        int    `json:"vms"`
			DiskBytes  uint64 `json:"disk_bytes"`
			DiskFree   uint64 `json:"disk_free_bytes"`
			Cordoned   bool   `json:"cordoned"`
		} `json:"nodes"`
		VCPUs, UsedVCPUs, RAMMiB, UsedRAMMiB int64
		Storage                              struct {
			RawBytes uint64 `json:"raw_bytes"`
			RawFree  uint64 `json:"raw_free_bytes"`
		} `json:"storage"`
		NPlusOne bool `json:"n_plus_one"`
		Reasons  []struct {
			Kind  string   `json:"kind"`
			Node  string   `json:"node"`
			Names []string `json:"names"`
			Count int64    `json:"count"`
			Text  string   `json:"text"`
		} `json:"reasons"`
	}
	if get("/api/v1/capacity", &capacity) {
		for _, c := range capacity.Nodes {
			if n := byNode[c.Node]; n != nil {
				n.CPUs, n.RAMMiB, n.VMs, n.DiskBytes, n.DiskFree, n.Cordoned = c.CPUs, c.HostRAMMiB, c.VMs, c.DiskBytes, federation.Approx(c.DiskFree), c.Cordoned
			}
		}
		inv.Capacity = federation.InvCapacity{VCPUs: capacity.VCPUs, UsedVCPUs: capacity.UsedVCPUs, RAMMiB: capacity.RAMMiB, UsedRAMMiB: capacity.UsedRAMMiB,
			StorageBytes: capacity.Storage.RawBytes, StorageFree: federation.Approx(capacity.Storage.RawFree), NPlusOne: capacity.NPlusOne}
		for _, r := range capacity.Reasons {
			sev := "warning"
			if r.Kind == "node_down" || r.Kind == "degraded" || r.Kind == "no_copy" || r.Kind == "unknown" {
				sev = "critical"
			}
			inv.Alerts = append(inv.Alerts, federation.Alert{Kind: r.Kind, Severity: sev, Node: r.Node, Names: r.Names, Count: r.Count, Text: r.Text})
		}
	}

	var vms []struct {
		Name      string `json:"name"`
		ProjectID string `json:"project_id"`
		Node      string `json:"node"`
		Spec      struct {
			VCPUs  int64 `json:"vcpus"`
			RAMMiB int64 `json:"ram_mib"`
		} `json:"spec"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	get("/api/v1/vms", &vms)
	for _, v := range vms {
		inv.VMs = append(inv.VMs, federation.InvVM{Name: v.Name, Project: nameOf(v.ProjectID), State: v.Status.State, Node: v.Node, VCPUs: v.Spec.VCPUs, RAMMiB: v.Spec.RAMMiB})
		if p := project[v.ProjectID]; p != nil {
			p.VMs, p.VCPUs, p.RAMMiB = p.VMs+1, p.VCPUs+v.Spec.VCPUs, p.RAMMiB+v.Spec.RAMMiB
		}
		if v.Status.State == "error" {
			critical(federation.Alert{Kind: "vm_error", Names: []string{nameOf(v.ProjectID) + "/" + v.Name}, Text: "VM " + v.Name + " of " + nameOf(v.ProjectID) + " is in error"})
		}
	}
	var volumes []struct {
		Name      string `json:"name"`
		ProjectID string `json:"project_id"`
		SizeBytes int64  `json:"size_bytes"`
		State     string `json:"state"`
		Degraded  bool   `json:"degraded"`
		Kind      string `json:"kind"`
	}
	get("/api/v1/volumes", &volumes)
	for _, v := range volumes {
		if v.Kind != "" {
			continue // snapshots
		}
		inv.Volumes = append(inv.Volumes, federation.InvVolume{Name: v.Name, Project: nameOf(v.ProjectID), SizeBytes: v.SizeBytes, State: v.State, Degraded: v.Degraded})
		if p := project[v.ProjectID]; p != nil {
			p.VolumeBytes += v.SizeBytes
		}
	}
	if n := inv.DegradedVolumes(); n > 0 {
		critical(federation.Alert{Kind: "degraded_volumes", Count: int64(n), Text: fmt.Sprintf("%d volumes are below full redundancy", n)})
	}
	var images []struct {
		Name      string `json:"name"`
		ProjectID string `json:"project_id"`
		Size      int64  `json:"size"`
		SHA256    string `json:"sha256"`
	}
	get("/api/v1/images", &images)
	for _, im := range images {
		inv.Images = append(inv.Images, federation.InvImage{Name: im.Name, Project: nameOf(im.ProjectID), Size: im.Size, SHA256: im.SHA256})
	}
	var buckets []struct {
		Name      string `json:"name"`
		ProjectID string `json:"project_id"`
		Objects   int64  `json:"objects"`
		Bytes     int64  `json:"bytes"`
	}
	get("/api/v1/buckets", &buckets)
	for _, b := range buckets {
		// Figures that move at every write, to three digits: the hub
		// hears of a busy bucket when it grows in earnest.
		objects, size := federation.Approx(b.Objects), federation.Approx(b.Bytes)
		inv.Buckets = append(inv.Buckets, federation.InvBucket{Name: b.Name, Project: nameOf(b.ProjectID), Objects: objects, Bytes: size})
		if p := project[b.ProjectID]; p != nil {
			p.BucketBytes += size
		}
	}
	inv.Health = "ok"
	for _, al := range inv.Alerts {
		if al.Severity == "critical" {
			inv.Health = "degraded"
		}
	}
	inv.Sort()
	return inv, nil
}

func setError(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// softwareVersion is this binary's module version and VCS revision.
func softwareVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v = strings.TrimSuffix(v+" "+s.Value[:12], " ")
		}
	}
	return strings.TrimSpace(v)
}

// recorder takes an in-process API answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(code int)        { r.status = code }
