// Package agent wires one Cairn node: the consensus node, every domain's
// tables and services, the HTTPS API and UI, metrics and health. It is the
// only place that knows all the parts (see ../../README.md).
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/federation"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/appliance/watchdog"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/tlsbatch"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/s3"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/cairnhq/cairn/ui"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
)

// Agent is a running node.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	console io.Writer // the operator's console: setup code and URLs go here

	node      *consensus.Node
	identity  *identity.Service
	storage   *storage.Service
	disks     *storage.DiskAgent
	shards    *storage.Shards
	objects   *storage.Objects
	scrubber  *storage.Scrubber
	healer    *storage.Healer
	sweeper   *storage.Sweeper
	expirer   *storage.UploadExpirer
	lifecycle *storage.Lifecycle
	images    *hypervisor.Images
	compute   *hypervisor.Service
	volumes   *volume.Service
	networks  *netfabric.Service
	vips      []*netfabric.VIP // the cluster's address and its IPv6 twin
	vipAPI    []net.Listener   // the API's and S3's listeners on them
	vipS3     []net.Listener
	volHost   *volume.Host
	volServer *volume.NodeServer
	scheduler *hypervisor.Scheduler
	leases    *hypervisor.Leases
	watchdog  *watchdog.Device
	vms       *hypervisor.NodeAgent
	vmNet     *netfabric.Host
	consoles  *hypervisor.Consoles
	usage     *hypervisor.UsageReader
	member    *federation.Member
	apiServer atomic.Pointer[api.Server] // once serving: what the hub reaches through its session
	s3        *http.Server
	http      *http.Server
	metrics   *prometheus.Registry
}

// New builds the agent; Run starts it.
func New(cfg Config, log *slog.Logger, console io.Writer) (*Agent, error) {
	node, id, err := newNode(cfg, log, storage.Register, hypervisor.Register, netfabric.Register, volume.Register, federation.RegisterSite)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, console: console, node: node, identity: id, metrics: prometheus.NewRegistry()}
	a.networks = netfabric.NewService(node, a.identity)
	a.storage = storage.NewService(node, a.identity)
	a.disks = storage.NewDiskAgent(node, a.storage, log.With("component", "disks"), cfg.DiskReport)
	a.disks.SetReserve(cfg.reserve())
	a.shards = storage.NewShards(node, a.disks)
	node.HandleRPC(storage.RPCPrefix, a.shards.Handler())
	a.objects = storage.NewObjects(node, a.identity, a.shards, log.With("component", "objects"))
	a.scrubber = storage.NewScrubber(node, a.disks, log.With("component", "scrubber"), cfg.ScrubInterval, cfg.ScrubPace)
	a.healer = storage.NewHealer(a.objects, cfg.HealInterval, cfg.DiskStaleAfter)
	node.RegisterController("healer", a.healer.Run)
	a.sweeper = storage.NewSweeper(node, a.disks, log.With("component", "gc"), cfg.GCGrace)
	a.expirer = storage.NewUploadExpirer(a.objects, cfg.MultipartExpiry, time.Now)
	node.RegisterController("upload-expirer", a.every(cfg.GCInterval, "expire abandoned multipart uploads", func(ctx context.Context) error {
		_, err := a.expirer.Pass(ctx)
		if err == nil {
			_, err = a.objects.PruneAbandoned(ctx, time.Now())
		}
		return err
	}))
	a.lifecycle = storage.NewLifecycle(a.objects, time.Now)
	node.RegisterController("lifecycle", a.every(cfg.GCInterval, "apply buckets' lifecycle rules", func(ctx context.Context) error {
		_, err := a.lifecycle.Pass(ctx)
		return err
	}))
	a.newCompute()
	a.newVolumes()
	a.member = federation.NewMember(node, cfg.Name, a.identity, log.With("component", "federation"))
	a.member.Handler = a.hubFacing()
	a.member.Inventory = a.inventory
	a.member.StagingDir = filepath.Join(cfg.DataDir, "federation-staging")
	a.member.Ready = func() bool { return a.apiServer.Load() != nil }
	node.RegisterController("federation", a.member.Run)
	a.metrics.MustRegister(storageCollectors(a)...)
	a.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics.MustRegister(node.Collectors()...)
	if err := a.setupVIP(); err != nil {
		return nil, err
	}
	node.RegisterController("token-pruner", a.every(time.Minute, "prune expired tokens", func(ctx context.Context) error {
		return a.identity.PruneExpiredTokens(ctx)
	}))
	node.RegisterController("audit-pruner", a.every(5*time.Second, "prune the replicated audit log", func(ctx context.Context) error {
		_, err := a.identity.PruneAudit(ctx)
		return err
	}))
	return a, nil
}

// newNode makes the data directory and builds the consensus node, with
// identity's commands and those register adds, and its identity service:
// what an agent and a hub both are.
func newNode(cfg Config, log *slog.Logger, register ...func(*consensus.Registry)) (*consensus.Node, *identity.Service, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data dir: %w", err)
	}
	reg := consensus.NewRegistry()
	identity.Register(reg)
	for _, r := range register {
		r(reg)
	}
	cc := cfg.consensusConfig()
	cc.Logger = log.With("component", "consensus")
	node, err := consensus.New(cc, reg)
	if err != nil {
		return nil, nil, err
	}
	idCfg := identity.DefaultConfig()
	idCfg.Logger = log.With("component", "identity")
	idCfg.AuditRetention = cfg.AuditRetention
	return node, identity.NewService(node, idCfg), nil
}

// Run starts the node and serves until ctx ends, then shuts down gracefully.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.node.Start(ctx); err != nil {
		return err
	}
	defer func() {
		if err := a.node.Shutdown(); err != nil {
			a.log.Warn("node shutdown", "err", err)
		}
	}()
	a.log.Info("node started", "name", a.cfg.Name, "bind", a.cfg.Bind, "expect", a.cfg.Expect, "data_dir", a.cfg.DataDir)
	if a.cfg.Expect > 1 {
		a.log.Info("waiting for peers before forming the cluster", "expect", a.cfg.Expect)
	}
	select {
	case <-a.node.Joined():
	case err := <-a.node.Failed():
		return fmt.Errorf("join the cluster: %w", err)
	case <-ctx.Done():
		return nil
	}
	// The servers exist and listen before anything can stop them: a
	// context that ends right after the join shuts down what is there.
	apiLn, err := a.listenAPI()
	if err != nil {
		return fmt.Errorf("api server: %w", err)
	}
	s3Ln, err := a.listenS3()
	if err != nil {
		apiLn.Close()
		for _, l := range a.vipAPI {
			l.Close()
		}
		return fmt.Errorf("s3 server: %w", err)
	}
	errCh := make(chan error, 2+2*len(a.vipAPI))
	go func() { errCh <- served(a.http.ServeTLS(apiLn, "", "")) }()
	go func() { errCh <- served(a.s3.Serve(s3Ln)) }()
	for i := range a.vipAPI {
		go func() { errCh <- served(a.http.ServeTLS(a.vipAPI[i], "", "")) }()
		go func() { errCh <- served(a.s3.Serve(a.vipS3[i])) }()
	}
	go a.announce(ctx)
	if a.cfg.DebugAddr != "" {
		go a.serveDebug(ctx)
	}
	go a.runDisks(ctx)
	go a.leases.Run(ctx)
	vmsDone, leaseDone := make(chan struct{}), make(chan struct{})
	if a.cfg.VMs {
		// From the start, not once the VM agent has caught up: a
		// restarted agent's VMs are fenced on time however long that takes.
		go func() {
			a.vms.KeepLease(ctx)
			close(leaseDone)
		}()
	} else {
		close(leaseDone)
	}
	go a.objects.RunReadRepair(ctx) // every node serves S3 reads, with disks or not
	go releaseWhenIdle(ctx, 2*time.Second)
	if a.cfg.VMs {
		go func() {
			a.runVMs(ctx)
			close(vmsDone)
		}()
	} else {
		close(vmsDone)
	}
	go func() {
		if err := a.identity.ArchiveAudit(ctx, filepath.Join(a.cfg.DataDir, "audit")); err != nil {
			a.log.Error("audit archive stopped", "err", err)
		}
	}()

	select {
	case <-ctx.Done():
	case err := <-errCh:
		return fmt.Errorf("api server: %w", err)
	}
	a.log.Info("shutting down")
	if len(a.vips) > 0 && a.node.IsLeader() {
		// Hand leadership, and with it the cluster's address, to another
		// node before the servers drain: the address answers throughout.
		if r := a.node.Raft(); r != nil {
			if err := r.LeadershipTransfer().Error(); err != nil {
				a.log.Warn("hand over leadership before stopping", "err", err)
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.http.Shutdown(sctx); err != nil {
		a.log.Warn("api shutdown", "err", err)
	}
	_ = a.s3.Shutdown(sctx)
	// The VM agent lets go of its VMs (they run on) and disarms the
	// watchdog: a power-off right after must not find it armed.
	select {
	case <-vmsDone:
	case <-time.After(10 * time.Second):
		a.log.Warn("the VM agent did not stop within 10 s")
	}
	<-leaseDone // it pets the watchdog until then
	if a.watchdog != nil {
		// A clean stop disarms it; a crash or a hang does not.
		if err := a.watchdog.Close(); err != nil {
			a.log.Error("disarm the watchdog", "err", err)
		}
	}
	return nil
}

// served is a server's end: nil once it was shut down.
func served(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// listenAPI sets up the HTTPS API and UI with the node's cluster
// certificate (a.http) and listens on their port.
func (a *Agent) listenAPI() (net.Listener, error) {
	uiHandler, err := ui.New(ui.Deps{
		Identity:  a.identity,
		Status:    a.node.Status,
		JoinToken: a.node.JoinToken,
		Admission: a.node,
		Logger:    a.log.With("component", "ui"),
		Objects:   a.objects,
		Storage:   a.storage,
		GCStats:   a.sweeper.Stats,
		Compute:   a.compute,
		Images:    a.images,
		Volumes:   a.volumes,
		Networks:  a.networks,
		S3URL:     a.cfg.S3URL(),
		CACert:    a.node.CACertPEM,
		Consoles:  a.consoles,
		Usage:     a.usage,
		Member:    a.member,
		StorageStats: func() (storage.RepairStats, storage.RepairStats) {
			return a.scrubber.Stats(), a.healer.Stats()
		},
	})
	if err != nil {
		return nil, err
	}
	apiServer := api.New(api.Deps{Identity: a.identity, Storage: a.storage, Objects: a.objects, Compute: a.compute, Volumes: a.volumes, Networks: a.networks, Images: a.images, Consoles: a.consoles, Usage: a.usage, Member: a.member, StorageHealth: a.storageHealth, Cluster: a.node, Logger: a.log.With("component", "api"), Metrics: a.metrics})
	a.apiServer.Store(apiServer)
	mux := http.NewServeMux()
	mux.Handle("/api/", apiServer)
	// Console WebSockets carry a ticket instead of a bearer token (browsers
	// cannot set headers on a WebSocket), so they bypass the API's wrapper.
	for _, kind := range []string{hypervisor.ConsoleVNC, hypervisor.ConsoleSerial} {
		mux.HandleFunc("GET /api/v1/vms/{vm}/"+kind, func(w http.ResponseWriter, r *http.Request) {
			a.consoles.ServeWebSocket(w, r, r.PathValue("vm"), kind)
		})
	}
	mux.Handle("GET /metrics", apiServer.Metrics(promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("/", uiHandler)

	tlsCfg := a.node.ServerTLS()
	tlsCfg.ClientAuth = tls.NoClientCert
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	if len(a.vips) > 0 {
		// The certificate names the cluster's addresses too.
		cert, err := a.node.ServerCertificate(a.vipNames()...)
		if err != nil {
			return nil, fmt.Errorf("certificate for %v: %w", a.vipNames(), err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	a.http = a.newHTTPServer(net.JoinHostPort(a.cfg.Bind, strconv.Itoa(a.cfg.APIPort)), mux)
	a.http.TLSConfig = tlsCfg
	ln, err := net.Listen("tcp", a.http.Addr)
	if err != nil {
		return nil, err
	}
	for _, v := range a.vips {
		vln, err := listenFreely(net.JoinHostPort(v.Prefix.Addr().String(), strconv.Itoa(a.cfg.APIPort)))
		if err != nil {
			ln.Close()
			for _, l := range a.vipAPI {
				l.Close()
			}
			return nil, err
		}
		a.vipAPI = append(a.vipAPI, vln)
	}
	a.log.Info("serving API and UI", "url", a.cfg.APIURL())
	return ln, nil
}

// storageHealth is what GET /api/v1/storage shows.
func (a *Agent) storageHealth(ctx context.Context) (api.StorageHealth, error) {
	d, err := a.objects.Degraded(ctx)
	h := api.StorageHealth{DegradedSegments: d, Scrub: a.scrubber.Stats(), Heal: a.healer.Stats(), Node: a.cfg.Name,
		GC: a.sweeper.Stats(), MultipartExpiry: a.expirer.Stats()}
	if l, lerr := a.objects.DefaultLayout(); lerr == nil {
		h.DefaultLayout = l.String()
	}
	return h, err
}

func storageCollectors(a *Agent) []prometheus.Collector {
	gauge := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "cairn", Name: name, Help: help}, fn)
	}
	return []prometheus.Collector{
		gauge("storage_scrub_shards_checked", "Shards this node verified in its last scrub pass.", func() float64 { return float64(a.scrubber.Stats().Checked) }),
		gauge("storage_scrub_shards_bad", "Missing or corrupt shards this node found in its last scrub pass.", func() float64 { return float64(a.scrubber.Stats().Repaired) }),
		gauge("storage_heal_shards_rebuilt", "Shards rebuilt in the last heal pass (leader only).", func() float64 { return float64(a.healer.Stats().Repaired) }),
		gauge("storage_degraded_segments", "Object segments below full redundancy after the last heal pass (leader only).", func() float64 { return float64(a.healer.Stats().Degraded) }),
		gauge("storage_gc_shards_checked", "Shard files this node examined in its last orphan sweep.", func() float64 { return float64(a.sweeper.Stats().Checked) }),
		gauge("storage_gc_orphans_removed", "Orphan shard files this node deleted in its last sweep.", func() float64 { return float64(a.sweeper.Stats().Removed) }),
		gauge("storage_gc_freed_bytes", "Bytes of orphan shards this node deleted in its last sweep.", func() float64 { return float64(a.sweeper.Stats().FreedBytes) }),
		gauge("storage_gc_last_pass_timestamp_seconds", "When this node last completed an orphan sweep (Unix time; 0: never).", func() float64 { return unixSeconds(a.sweeper.Stats().LastPass) }),
		gauge("storage_lifecycle_removed", "Versions and uploads removed by buckets' lifecycle rules in the last pass (leader only).", func() float64 { return float64(a.lifecycle.Stats().Removed) }),
		gauge("storage_multipart_uploads_aborted", "Abandoned multipart uploads aborted in the last expiry pass (leader only).", func() float64 { return float64(a.expirer.Stats().Removed) }),
	}
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// listenS3 sets up the S3 gateway (a.s3) on its own port with the node's
// certificate and listens there.
func (a *Agent) listenS3() (net.Listener, error) {
	tlsCfg := a.node.ServerTLS()
	tlsCfg.ClientAuth = tls.NoClientCert
	tlsCfg.NextProtos = []string{"http/1.1"}
	var names []string
	if d := a.cfg.S3Domain; d != "" {
		// Virtual-host-style clients ask for BUCKET.DOMAIN: the certificate
		// must name the domain and its wildcard.
		names = append(names, d, "*."+d)
	}
	names = append(names, a.vipNames()...)
	if len(names) > 0 {
		cert, err := a.node.ServerCertificate(names...)
		if err != nil {
			return nil, fmt.Errorf("S3 certificate for %v: %w", names, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	// Large GETs are most of this port's work: tlsbatch sends each write's
	// TLS records in one system call (see its package doc).
	a.s3 = a.newHTTPServer(net.JoinHostPort(a.cfg.Bind, strconv.Itoa(a.cfg.S3Port)),
		s3.New(a.objects, a.identity, a.log.With("component", "s3"), a.cfg.S3Domain))
	ln, err := net.Listen("tcp", a.s3.Addr)
	if err != nil {
		return nil, err
	}
	for _, v := range a.vips {
		vln, err := listenFreely(net.JoinHostPort(v.Prefix.Addr().String(), strconv.Itoa(a.cfg.S3Port)))
		if err != nil {
			ln.Close()
			for _, l := range a.vipS3 {
				l.Close()
			}
			return nil, err
		}
		a.vipS3 = append(a.vipS3, tlsbatch.NewListener(vln, tlsCfg, a.cfg.HeaderTimeout, a.log.With("component", "s3")))
	}
	a.log.Info("serving S3", "url", a.cfg.S3URL())
	return tlsbatch.NewListener(ln, tlsCfg, a.cfg.HeaderTimeout, a.log.With("component", "s3")), nil
}

// setupVIP readies the cluster's address and its IPv6 twin, if set: a
// leader controller holds each, and what a killed agent left on the
// interface goes now.
func (a *Agent) setupVIP() error {
	if a.cfg.VIP == "" {
		return nil
	}
	bind, _ := netip.ParseAddr(a.cfg.Bind)
	iface, err := netfabric.InterfaceOf(bind)
	if err != nil {
		return fmt.Errorf("--vip: the interface of --bind %s: %w", a.cfg.Bind, err)
	}
	for _, f := range []struct{ flag, value, controller string }{{"--vip", a.cfg.VIP, "vip"}, {"--vip6", a.cfg.VIP6, "vip6"}} {
		if f.value == "" {
			continue
		}
		parse := netfabric.ParseVIP
		if f.controller == "vip6" {
			parse = netfabric.ParseVIP6
		}
		prefix, err := parse(f.value)
		if err != nil {
			return err
		}
		v := &netfabric.VIP{Prefix: prefix, Iface: iface, Log: a.log.With("component", f.controller)}
		if err := v.Release(); err != nil {
			return fmt.Errorf("%s: remove a leftover %s from %s: %w", f.flag, prefix, iface, err)
		}
		a.vips = append(a.vips, v)
		a.node.RegisterController(f.controller, v.Hold)
	}
	return nil
}

// vipNames are the cluster's addresses, for the servers' certificates.
func (a *Agent) vipNames() []string {
	var out []string
	for _, v := range a.vips {
		out = append(out, v.Prefix.Addr().String())
	}
	return out
}

// listenFreely listens on addr whether or not this node has the address
// now (IP_FREEBIND): every node listens on the cluster's address, and the
// one holding it answers.
func listenFreely(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			if strings.HasPrefix(addr, "[") {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

// readyz is 200 once the node knows a leader and has caught up with it.
func (a *Agent) readyz(w http.ResponseWriter, r *http.Request) {
	if !a.node.Ready() {
		http.Error(w, "not ready: no cluster leader yet\n", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.node.ConsistentRead(ctx); err != nil {
		http.Error(w, "not ready: "+err.Error()+"\n", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// announce waits for the cluster to serve, creates the admin from
// --admin-password-file if asked, and prints where to go and how to log in.
func (a *Agent) announce(ctx context.Context) {
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for !a.node.Ready() {
		select {
		case <-ctx2.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := a.node.ConsistentRead(ctx2); err != nil {
		a.log.Warn("could not catch up with the leader", "err", err)
	}
	if a.cfg.AdminPasswordFile != "" && a.identity.SetupNeeded() {
		a.createAdminFromFile(ctx2)
	}
	if a.cfg.SampleImage != "" {
		go a.seedSample(ctx)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n  Cairn node %s is ready.\n  Web UI and API: %s\n  S3: %s\n  CA certificate: %s/ca.crt\n", a.cfg.Name, a.cfg.APIURL(), a.cfg.S3URL(), a.cfg.DataDir)
	if a.identity.SetupNeeded() {
		// The code goes to the console only: logs are shipped and kept
		// where people who should not set up the cluster can read them.
		fmt.Fprintf(&b, "  First-time setup: open the UI and enter the one-time setup code %s\n", a.identity.SetupCode())
		a.log.Info("first-time setup needed: the one-time setup code is on this node's console")
	} else {
		fmt.Fprintf(&b, "  Log in with your Cairn user, or: cairn login --endpoint %s --ca-cert %s/ca.crt --username admin --password-stdin\n",
			a.cfg.APIURL(), a.cfg.DataDir)
	}
	fmt.Fprintf(&b, "  Join token for more nodes: %s\n  (it lets them find this cluster; admit each with a one-time token, cairn node enrol-token create, or approve it: cairn node pending)\n\n", a.node.JoinToken())
	_, _ = io.WriteString(a.console, b.String())
}

func (a *Agent) createAdminFromFile(ctx context.Context) {
	createAdmin(ctx, a.identity, a.cfg.AdminPasswordFile, a.log)
}

// createAdmin makes the first cluster admin, "admin", with the password in
// file, unless one exists.
func createAdmin(ctx context.Context, id *identity.Service, file string, log *slog.Logger) {
	b, err := os.ReadFile(file)
	if err != nil {
		log.Error("read admin password file", "err", err)
		return
	}
	pw := strings.TrimRight(string(b), "\r\n")
	for {
		_, err := id.CreateFirstAdmin(ctx, "admin", pw)
		if err == nil {
			log.Info("created cluster admin from password file", "user", "admin")
			return
		}
		if identity.IsCode(err, consensus.CodeConflict) || identity.IsCode(err, consensus.CodeInvalid) {
			if !identity.IsCode(err, consensus.CodeConflict) {
				log.Error("admin password file rejected", "err", err)
			}
			return
		}
		log.Warn("creating admin failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// runDisks offers this node's --disk directories to the pool once the
// cluster serves, then keeps the node's disks reconciled.
func (a *Agent) runDisks(ctx context.Context) {
	for !a.node.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	for {
		err := a.disks.EnsureDisks(ctx, a.cfg.Disks)
		if err == nil {
			break
		}
		a.log.Warn("adding this node's disks to the pool", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	go a.scrubber.Run(ctx)
	a.runVolumes(ctx)
	go a.every(a.cfg.GCInterval, "sweep orphan shards", func(ctx context.Context) error {
		_, err := a.sweeper.Pass(ctx)
		return err
	})(ctx)
	a.disks.Run(ctx)
}

// every returns a leader controller that runs fn every interval.
func (a *Agent) every(interval time.Duration, what string, fn func(ctx context.Context) error) func(ctx context.Context) {
	return func(ctx context.Context) {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := fn(ctx); err != nil && ctx.Err() == nil {
					a.log.Warn(what, "err", err)
				}
			}
		}
	}
}

// serveDebug serves net/http/pprof for profiling a running node (as Nomad's
// enable_debug). Off unless --debug-addr is set.
func (a *Agent) serveDebug(ctx context.Context) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: a.cfg.DebugAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	a.log.Warn("serving pprof profiles without authentication", "addr", a.cfg.DebugAddr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("debug server", "err", err)
	}
}

// ConsoleStatus is what a box's console screen shows.
type ConsoleStatus struct {
	Name      string
	URL       string // of the web UI and API
	Phase     string // the consensus phase: joining, bootstrapping, waiting, member
	Ready     bool   // serving, with a leader known
	Leader    string
	Voters    int
	Nodes     int    // members seen
	SetupCode string // until the first admin exists
	// Fingerprint, while the box has not joined, is that of the key it asks
	// a certificate for: an admin checks it when approving the box.
	Fingerprint string
}

// ConsoleStatus reports the node for its console.
func (a *Agent) ConsoleStatus() ConsoleStatus {
	st := a.node.Status()
	cs := ConsoleStatus{Name: a.cfg.Name, URL: a.cfg.APIURL(), Phase: st.Phase, Ready: a.node.Ready(),
		Leader: st.Leader, Voters: st.Voters, Nodes: len(st.Nodes)}
	if st.Phase == "joining" {
		cs.Fingerprint = a.node.JoinFingerprint()
	}
	if cs.Ready && a.identity.SetupNeeded() {
		cs.SetupCode = a.identity.SetupCode()
	}
	return cs
}
