package ui

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
)

// env is a real single-node cluster with the identity service (and, from
// newStorageEnv, storage) and the UI served over TLS in front of it.
type env struct {
	t    *testing.T
	node *consensus.Node
	svc  *identity.Service
	srv  *httptest.Server

	// Set by newStorageEnv only.
	objects  *storage.Objects
	storage  *storage.Service
	scrubber *storage.Scrubber
	healer   *storage.Healer
	disks    []string // the node's two disk directories

	// Set by newComputeEnv only.
	compute *hypervisor.Service
	images  *hypervisor.Images

	// Set by newVolumeEnv only.
	volumes *volume.Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	node := consensustest.Start(t, 1, identity.Register).Nodes[0]
	log := testLogger(t)
	e := &env{t: t, node: node, svc: identity.NewService(node, identityConfig(log))}
	e.serve(Deps{Identity: e.svc, Status: node.Status, JoinToken: node.JoinToken, Admission: node, Logger: log})
	return e
}

// newStorageEnv is newEnv with storage: one node with two disks, so the
// pool's layout is 1+1 (one data and one parity shard per object).
// Scrubber and healer do not run by themselves; tests call their Pass.
func newStorageEnv(t *testing.T) *env {
	t.Helper()
	e := startStorage(t, false)
	e.serve(e.deps())
	return e
}

// newComputeEnv is newStorageEnv with the compute services (VMs, images)
// and the default VM network. There are no hosts: VMs stay unscheduled.
func newComputeEnv(t *testing.T) *env {
	t.Helper()
	e := startCompute(t)
	d := e.deps()
	d.Compute, d.Images = e.compute, e.images
	d.Networks = e.networksService()
	e.serve(d)
	return e
}

// newVolumeEnv is newComputeEnv with block volumes, whose replicas are
// only pretended: the provisioner makes none, so volumes exist in the
// replicated state alone (enough for every page). VMs boot from volumes.
func newVolumeEnv(t *testing.T) *env {
	t.Helper()
	e := startCompute(t)
	e.volumes = volume.NewService(volume.Deps{Cluster: e.node, Identity: e.svc, Provisioner: nopProvisioner{},
		VMs: e.compute, Images: e.compute.FindImage, Logger: testLogger(t)})
	e.compute.SetVolumes(e.volumes)
	d := e.deps()
	d.Compute, d.Images, d.Volumes = e.compute, e.images, e.volumes
	e.serve(d)
	return e
}

// nopProvisioner makes, grows and removes replicas that do not exist.
type nopProvisioner struct{}

func (nopProvisioner) Create(context.Context, string, string, string, int64, bool) error { return nil }
func (nopProvisioner) Remove(context.Context, string, string) error                      { return nil }
func (nopProvisioner) Resize(context.Context, string, string, uint64, int64) error       { return nil }

// startCompute starts storage and compute with the default VM network,
// without serving the UI yet.
func startCompute(t *testing.T) *env {
	t.Helper()
	e := startStorage(t, true)
	nw := netfabric.Network{ID: hypervisor.DefaultNetwork, Name: "default", CIDR: "10.213.0.0/16", CreatedAt: time.Now().UTC()}
	if _, err := e.node.Apply(context.Background(), netfabric.MsgCreateNetwork, &nw, nil); err != nil {
		t.Fatal(err)
	}
	if err := hypervisor.EnsureConsoleKey(context.Background(), e.node); err != nil {
		t.Fatal(err)
	}
	return e
}

// deps are the UI's dependencies on storage.
func (e *env) deps() Deps {
	return Deps{
		Identity: e.svc, Status: e.node.Status, JoinToken: e.node.JoinToken, Logger: testLogger(e.t),
		Objects: e.objects, Storage: e.storage,
		StorageStats: func() (scrub, heal storage.RepairStats) { return e.scrubber.Stats(), e.healer.Stats() },
		S3URL:        "https://192.0.2.10:8447", CACert: e.node.CACertPEM,
	}
}

// startStorage starts the node with storage (and compute) without serving
// the UI yet.
func startStorage(t *testing.T, compute bool) *env {
	t.Helper()
	log := testLogger(t)
	e := &env{t: t}
	var agent *storage.DiskAgent
	register := func(reg *consensus.Registry) {
		identity.Register(reg)
		storage.Register(reg)
		if compute {
			hypervisor.Register(reg)
			netfabric.Register(reg)
			volume.Register(reg)
		}
	}
	// The disks live under a directory taken before anything starts, so its
	// removal (clean-ups run last first) comes after the disk agent stopped.
	base := t.TempDir()
	e.node = consensustest.StartWith(t, 1, register, func(_ int, n *consensus.Node) {
		e.svc = identity.NewService(n, identityConfig(log))
		e.storage = storage.NewService(n, e.svc)
		agent = storage.NewDiskAgent(n, e.storage, log, time.Second)
		shards := storage.NewShards(n, agent)
		n.HandleRPC(storage.RPCPrefix, shards.Handler())
		e.objects = storage.NewObjects(n, e.svc, shards, log)
		e.scrubber = storage.NewScrubber(n, agent, log, time.Hour, 0)
		e.healer = storage.NewHealer(e.objects, time.Hour, time.Minute)
		if compute {
			e.images = hypervisor.NewImages(n, e.svc, e.objects, hypervisor.ImagesConfig{TempDir: filepath.Join(base, "images"), Logger: log})
			e.compute = hypervisor.NewService(n, e.svc, e.images, log)
		}
	}).Nodes[0]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { // before the node shuts down and the disks go away
		cancel()
		<-done
	})
	for range 2 {
		d, err := os.MkdirTemp(base, "disk-")
		if err != nil {
			t.Fatal(err)
		}
		e.disks = append(e.disks, d)
	}
	if err := agent.EnsureDisks(ctx, e.disks); err != nil {
		t.Fatal(err)
	}
	go func() {
		agent.Run(ctx)
		close(done)
	}()
	return e
}

func (e *env) serve(d Deps) {
	e.t.Helper()
	h, err := New(d)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = httptest.NewTLSServer(h)
	e.t.Cleanup(e.srv.Close)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testutil.LogWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func identityConfig(log *slog.Logger) identity.Config {
	cfg := identity.DefaultConfig()
	cfg.Logger = log
	return cfg
}

// admin creates the first cluster admin directly through the service.
func (e *env) admin(name, pw string) {
	e.t.Helper()
	if _, err := e.svc.CreateFirstAdmin(context.Background(), name, pw); err != nil {
		e.t.Fatal(err)
	}
}

// browser is a client with its own cookie jar, as a browser tab would be.
type browser struct {
	t    *testing.T
	c    *http.Client
	base *url.URL
	lang string // Accept-Language, if set
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client() // a copy: the server hands out one shared client
	c.Jar = jar
	base, _ := url.Parse(e.srv.URL)
	return &browser{t: e.t, c: &c, base: base}
}

// noFollow makes the browser return redirects instead of following them.
func (b *browser) noFollow() *browser {
	c := *b.c
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: b.t, c: &c, base: b.base, lang: b.lang}
}

// page is a response with its body read.
type page struct {
	status int
	path   string // where redirects ended
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	if b.lang != "" {
		req.Header.Set("Accept-Language", b.lang)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return page{status: resp.StatusCode, path: resp.Request.URL.RequestURI(), header: resp.Header, body: string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base.String()+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

// post submits a form; headers are extra request headers as name, value pairs.
func (b *browser) post(path string, form url.Values, headers ...string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base.String()+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the form token of a page.
func (p page) csrf(t *testing.T) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no csrf field on %s:\n%s", p.path, p.body)
	}
	return m[1]
}

// formOn loads path and returns form with that page's CSRF token added.
func (b *browser) formOn(path string, form url.Values) url.Values {
	b.t.Helper()
	p := b.get(path)
	if p.status != http.StatusOK {
		b.t.Fatalf("GET %s: %d\n%s", path, p.status, p.body)
	}
	form.Set("csrf", p.csrf(b.t))
	return form
}

// login signs in through the login form and expects to land on the dashboard.
func (b *browser) login(user, pw string) {
	b.t.Helper()
	p := b.post("/login", b.formOn("/login", url.Values{"username": {user}, "password": {pw}}))
	if p.status != http.StatusOK || p.path != "/dashboard" {
		b.t.Fatalf("login as %s: %d at %s\n%s", user, p.status, p.path, p.body)
	}
}

func (b *browser) cookie(name string) *http.Cookie {
	for _, c := range b.c.Jar.Cookies(b.base) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func mustContain(t *testing.T, p page, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(p.body, w) {
			t.Errorf("%s (status %d) does not contain %q:\n%s", p.path, p.status, w, p.body)
		}
	}
}

func mustNotContain(t *testing.T, p page, bad ...string) {
	t.Helper()
	for _, w := range bad {
		if strings.Contains(p.body, w) {
			t.Errorf("%s (status %d) contains %q", p.path, p.status, w)
		}
	}
}

// networksService is the network service over the env's node.
func (e *env) networksService() *netfabric.Service { return netfabric.NewService(e.node, e.svc) }
