package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/cairnhq/cairn/appliance/federation"
)

// site is a simulated site: a membership got by a real enrolment, a
// session the real client code keeps, an inventory of a site with three
// nodes and 50 VMs, and an API that answers intent steps at once.
type site struct {
	name  string
	m     *federation.Membership
	up    atomic.Bool
	beats atomic.Int64 // heartbeats sent
	steps atomic.Int64 // intent steps answered

	mu  sync.Mutex
	inv federation.Inventory
}

func enrol(ctx context.Context, api *hubAPI, hubURL, name string) (*site, error) {
	var tok struct {
		Token string `json:"token"`
	}
	if err := api.call(ctx, "POST", "/api/v1/federation/tokens", map[string]string{"site": name}, &tok, 201); err != nil {
		return nil, fmt.Errorf("token for %s: %w", name, err)
	}
	m, err := federation.Join(ctx, hubURL, tok.Token)
	if err != nil {
		return nil, fmt.Errorf("enrol %s: %w", name, err)
	}
	return &site{name: name, m: m, inv: inventory()}, nil
}

// inventory is a branch site's: three nodes, five projects, 50 VMs, 60
// volumes, images and buckets.
func inventory() federation.Inventory {
	inv := federation.Inventory{Version: "bench", Protocol: 8, Leader: "node1", Health: "ok",
		Capacity: federation.InvCapacity{VCPUs: 192, UsedVCPUs: 120, RAMMiB: 768 << 10, UsedRAMMiB: 400 << 10, StorageBytes: 36 << 40, StorageFree: 20 << 40, NPlusOne: true}}
	for i := range 3 {
		inv.Nodes = append(inv.Nodes, federation.InvNode{Name: fmt.Sprintf("node%d", i+1), Role: "voter", Healthy: true, Leader: i == 0, CPUs: 64, RAMMiB: 256 << 10, VMs: 17, DiskBytes: 12 << 40, DiskFree: 7 << 40})
	}
	projects := []string{"radiology", "pathology", "emergency", "pharmacy", "records"}
	for _, p := range projects {
		inv.Projects = append(inv.Projects, federation.InvProject{Name: p, VMs: 10, VCPUs: 24, RAMMiB: 80 << 10, VolumeBytes: 2 << 40, BucketBytes: 1 << 40})
	}
	for i := range 50 {
		inv.VMs = append(inv.VMs, federation.InvVM{Name: fmt.Sprintf("vm-%02d", i), Project: projects[i%5], State: "running", Node: fmt.Sprintf("node%d", i%3+1), VCPUs: 2, RAMMiB: 8192})
	}
	for i := range 60 {
		inv.Volumes = append(inv.Volumes, federation.InvVolume{Name: fmt.Sprintf("vol-%02d", i), Project: projects[i%5], SizeBytes: 100 << 30, State: "attached"})
	}
	for i := range 6 {
		inv.Images = append(inv.Images, federation.InvImage{Name: fmt.Sprintf("image-%d", i), Project: projects[i%5], Size: 2 << 30, SHA256: fmt.Sprintf("%064x", i)})
	}
	for _, p := range projects {
		inv.Buckets = append(inv.Buckets, federation.InvBucket{Name: p + "-archive", Project: p, Objects: 120000, Bytes: 900 << 30})
	}
	inv.Sort()
	return inv
}

func (s *site) addVM(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inv.VMs = append(s.inv.VMs, federation.InvVM{Name: name, Project: "radiology", State: "running", Node: "node1", VCPUs: 1, RAMMiB: 1024})
	s.inv.Sort()
}

func (s *site) inventory(context.Context) (*federation.Inventory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := s.inv
	cp.VMs = append([]federation.InvVM(nil), s.inv.VMs...)
	return &cp, nil
}

// ServeHTTP is the site's API as the hub reaches it: intent steps are
// answered at once.
func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(federation.HeaderIntent) != "" {
		s.steps.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"name":"telehealth"}`)
		return
	}
	http.NotFound(w, r)
}

// run keeps the site's session until ctx ends, as a site's leader does.
func (s *site) run(ctx context.Context) {
	federation.RunWith(ctx, func() *federation.Membership { return s.m }, s, discard,
		func(up bool, _ error) { s.up.Store(up) },
		func(ctx context.Context, hub federation.HubCaller) {
			counted := func(ctx context.Context, method, path string, in, out any) error {
				if p, ok := in.(federation.InventoryPush); ok && p.Inventory == nil {
					s.beats.Add(1)
				}
				return hub(ctx, method, path, in, out)
			}
			federation.PushInventory(ctx, counted, s.inventory, federation.DefaultPushEvery, discard)
		})
}
