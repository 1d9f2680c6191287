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
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/federation"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/ui"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// A hub is central IT's Cairn: the same binary (`cairn hub`), a
// consensus cluster of its own (one node, or three for HA) with identity
// and federation only. It serves the API (hub admins, tokens, sites) on
// the API port and the sites' enrolments and sessions on the federation
// port, with a certificate of the federation CA that sites pin.

// HubMain runs `cairn hub`: the agent's flags (name, data dir, bind,
// expect, join, admin password file, ports), until SIGINT or SIGTERM.
func HubMain(args []string) int {
	cfg, err := ParseFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cairn hub:", err)
		return 2
	}
	log := newLogger(cfg)
	h, err := NewHub(cfg, log, os.Stderr)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := h.Run(ctx); err != nil {
		log.Error("hub stopped", "err", err)
		return 1
	}
	return 0
}

// Hub is a running hub node.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	console  io.Writer
	node     *consensus.Node
	identity *identity.Service
	hub      *federation.Hub
}

// NewHub builds a hub node; Run starts it.
func NewHub(cfg Config, log *slog.Logger, console io.Writer) (*Hub, error) {
	node, id, err := newNode(cfg, log, federation.Register)
	if err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, log: log, console: console, node: node, identity: id, hub: federation.NewHub(node, id, log.With("component", "federation"))}
	h.hub.ImageDir = filepath.Join(cfg.DataDir, "federation-images")
	h.hub.SetEnrolBurst(cfg.FederationEnrolBurst)
	// Calls for a site whose session another hub node holds go there.
	node.HandleRPC(federation.RPCPrefix, h.hub.RPCHandler())
	every := func(interval time.Duration, what string, fn func(context.Context) error) func(context.Context) {
		return (&Agent{log: log}).every(interval, what, fn)
	}
	node.RegisterController("token-pruner", every(time.Minute, "prune expired tokens", id.PruneExpiredTokens))
	node.RegisterController("intent-expiry", every(10*time.Second, "expire federation intents", h.hub.ExpireIntents))
	node.RegisterController("audit-pruner", every(5*time.Second, "prune the replicated audit log", func(ctx context.Context) error {
		_, err := id.PruneAudit(ctx)
		return err
	}))
	return h, nil
}

// Run starts the hub and serves until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	if err := h.node.Start(ctx); err != nil {
		return err
	}
	defer func() {
		if err := h.node.Shutdown(); err != nil {
			h.log.Warn("node shutdown", "err", err)
		}
	}()
	select {
	case <-h.node.Joined():
	case err := <-h.node.Failed():
		return fmt.Errorf("join the hub's cluster: %w", err)
	case <-ctx.Done():
		return nil
	}
	for !h.node.Ready() || h.node.ConsistentRead(ctx) != nil {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	if h.cfg.AdminPasswordFile != "" && h.identity.SetupNeeded() {
		createAdmin(ctx, h.identity, h.cfg.AdminPasswordFile, h.log)
	}
	for {
		err := federation.EnsureCA(ctx, h.node)
		if err == nil {
			break
		}
		h.log.Warn("make the federation CA", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}

	// The API: hub admins, tokens, sites.
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(h.hub.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics.MustRegister(h.node.Collectors()...)
	apiServer := api.New(api.Deps{Identity: h.identity, Cluster: h.node, Hub: h.hub, Logger: h.log.With("component", "api"), Metrics: metrics})
	mux := http.NewServeMux()
	mux.Handle("/api/", apiServer)
	// Every site's key figures with a site label (a metrics token or a
	// hub admin's).
	mux.Handle("GET /metrics", apiServer.Metrics(promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})))
	// The hub's UI: sites, their inventories, image pushes (en, zh-CN).
	uiHandler, err := ui.New(ui.Deps{Identity: h.identity, Status: h.node.Status, Hub: h.hub, Logger: h.log.With("component", "ui"), CACert: h.node.CACertPEM})
	if err != nil {
		return err
	}
	mux.Handle("/", uiHandler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	apiTLS := h.node.ServerTLS()
	apiTLS.ClientAuth = tls.NoClientCert
	apiTLS.NextProtos = []string{"h2", "http/1.1"}
	apiSrv := (&Agent{cfg: h.cfg, log: h.log}).newHTTPServer(net.JoinHostPort(h.cfg.Bind, strconv.Itoa(h.cfg.APIPort)), mux)
	apiSrv.TLSConfig = apiTLS
	apiLn, err := net.Listen("tcp", apiSrv.Addr)
	if err != nil {
		return fmt.Errorf("api server: %w", err)
	}
	// The federation port: sites' enrolments and sessions.
	names := []string{"localhost"}
	if host, err := os.Hostname(); err == nil {
		names = append(names, host)
	}
	var ips []net.IP
	for _, a := range append([]string{h.cfg.Bind, h.cfg.Advertise}, h.cfg.FederationNames...) {
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip)
		} else if a != "" {
			names = append(names, a)
		}
	}
	fedTLS, err := h.hub.ServerTLS(names, ips)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("federation certificate: %w", err)
	}
	fedLn, err := net.Listen("tcp", net.JoinHostPort(h.cfg.Bind, strconv.Itoa(h.cfg.FederationPort)))
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("federation server: %w", err)
	}
	h.hub.CleanImageDir()
	fedSrv := h.hub.Server(ctx)
	go h.hub.RunIntents(ctx)     // for the sites connected to this node
	go h.hub.RunImageCopies(ctx) // every image on every hub node
	errCh := make(chan error, 2)
	go func() { errCh <- served(apiSrv.ServeTLS(apiLn, "", "")) }()
	go func() { errCh <- served(fedSrv.Serve(tls.NewListener(fedLn, fedTLS))) }()
	fedURL := "https://" + net.JoinHostPort(h.cfg.Advertise, strconv.Itoa(h.cfg.FederationPort))
	go h.hub.Announce(ctx, fedURL) // sites dial every hub node they are told of
	fmt.Fprintf(h.console, "\n  Cairn hub %s is ready.\n  Web UI and API: %s\n  Sites join at: %s\n  CA certificate (for the API): %s/ca.crt\n"+
		"  Make a site's token: cairn federation token create SITE; on the site: cairn federation join %s --enrol-token TOKEN\n\n",
		h.cfg.Name, h.cfg.APIURL(), fedURL, h.cfg.DataDir, fedURL)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errCh:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(sctx)
	_ = fedSrv.Close() // sessions end; sites dial again
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) {
		return runErr
	}
	return nil
}
