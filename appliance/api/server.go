package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/federation"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxBodyBytes limits every request body.
const MaxBodyBytes = 1 << 20

// ClusterInfo is what the API shows about the cluster.
type ClusterInfo interface {
	Status() consensus.Status
	JoinToken() string
	CreateEnrolToken(ctx context.Context, ttl time.Duration, creator string) (consensus.EnrolToken, error)
	PendingNodes() []consensus.PendingNode
	ApproveNode(ctx context.Context, name, fingerprint, by string) (consensus.PendingNode, error)
	RejectNode(ctx context.Context, name, fingerprint string) error
}

// Deps are the API's collaborators.
type Deps struct {
	Identity *identity.Service
	Storage  *storage.Service    // nil: no storage routes
	Objects  *storage.Objects    // nil: no bucket routes
	Compute  *hypervisor.Service // nil: no VM routes
	Volumes  *volume.Service     // nil: no volume routes
	Networks *netfabric.Service  // nil: no network routes
	Images   *hypervisor.Images
	Consoles *hypervisor.Consoles
	Usage    *hypervisor.UsageReader // VMs' usage graphs; nil: none
	// Member is a site's federation; Hub a hub's (nil: no such routes).
	Member *federation.Member
	Hub    *federation.Hub
	// StorageHealth reports redundancy, scrub and heal progress.
	StorageHealth func(ctx context.Context) (StorageHealth, error)
	Cluster       ClusterInfo
	Logger        *slog.Logger
	Metrics       prometheus.Registerer // may be nil
}

// Server is the /api/v1 handler.
type Server struct {
	id       *identity.Service
	storage  *storage.Service
	objects  *storage.Objects
	compute  *hypervisor.Service
	volumes  *volume.Service
	networks *netfabric.Service
	images   *hypervisor.Images
	consoles *hypervisor.Consoles
	usage    *hypervisor.UsageReader
	member   *federation.Member
	hub      *federation.Hub
	health   func(ctx context.Context) (StorageHealth, error)
	cluster  ClusterInfo
	log      *slog.Logger
	mux      *http.ServeMux
	routes   []route
	duration *prometheus.HistogramVec
}

// New builds the API handler with every route of the table registered.
func New(d Deps) *Server {
	s := &Server{id: d.Identity, storage: d.Storage, objects: d.Objects, compute: d.Compute, volumes: d.Volumes, networks: d.Networks, images: d.Images, consoles: d.Consoles, usage: d.Usage, member: d.Member, hub: d.Hub, health: d.StorageHealth, cluster: d.Cluster, log: d.Logger, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "cairn", Name: "api_request_duration_seconds", Help: "API requests by route and status.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"route", "code"})
	if d.Metrics != nil {
		d.Metrics.MustRegister(s.duration)
	}
	s.routes = s.routeTable()
	s.routes = append(s.routes, s.metricsRoutes()...)
	s.routes = append(s.routes, s.admissionRoutes()...)
	if s.storage != nil {
		s.routes = append(s.routes, s.storageRoutes()...)
	}
	if s.compute != nil {
		s.routes = append(s.routes, s.computeRoutes()...)
	}
	if s.volumes != nil {
		s.routes = append(s.routes, s.volumeRoutes()...)
	}
	if s.networks != nil {
		s.routes = append(s.routes, s.networkRoutes()...)
		s.routes = append(s.routes, s.routerRoutes()...)
	}
	if s.member != nil {
		s.routes = append(s.routes, s.memberRoutes()...)
	}
	if s.hub != nil {
		s.routes = append(s.routes, s.hubRoutes()...)
	}
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	s.mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.OpenAPI(), 0)
	})
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, codeNotFoundRoute, "no such API route: "+r.Method+" "+r.URL.Path))
	})
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// ServeMux answers a wrong method with a plain-text 405; make it JSON.
	if _, pattern := s.mux.Handler(r); pattern == "" || pattern == "/api/" {
		for _, rt := range s.routes {
			if rt.Method != r.Method && matches(rt.Path, r.URL.Path) {
				writeError(w, errorf(http.StatusMethodNotAllowed, codeMethod, r.Method+" is not allowed on "+r.URL.Path))
				return
			}
		}
	}
	s.mux.ServeHTTP(w, r)
}

// matches reports whether a URL path fits a pattern with {wildcards}.
func matches(pattern, path string) bool {
	pp, up := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(pp) != len(up) {
		return false
	}
	for i := range pp {
		if !strings.HasPrefix(pp[i], "{") && pp[i] != up[i] {
			return false
		}
	}
	return true
}

// handlerFunc serves one route. p is nil on routes without authentication.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error

// wrap adds authentication, the body limit, error rendering and metrics.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		if !rt.Upload {
			r.Body = http.MaxBytesReader(sw, r.Body, MaxBodyBytes)
		}
		ctx := identity.WithRemoteAddr(r.Context(), r.RemoteAddr)
		r = r.WithContext(ctx)
		var p *identity.Principal
		var err error
		if !rt.Public {
			p, err = s.authenticate(ctx, r)
		}
		if err == nil {
			err = rt.handler(sw, r, p)
		}
		if err != nil {
			ae := toAPIError(err)
			if ae.Status >= 500 {
				s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			retryAfter(sw, err)
			writeError(sw, ae)
		}
		s.duration.WithLabelValues(rt.Method+" "+rt.Path, strconv.Itoa(sw.status)).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) authenticate(ctx context.Context, r *http.Request) (*identity.Principal, error) {
	if p, ok := ctx.Value(principalKey{}).(*identity.Principal); ok {
		return p, nil
	}
	tok, ok := bearer(r)
	if !ok {
		return nil, identity.ErrUnauthenticated
	}
	return s.id.Authenticate(ctx, tok)
}

type principalKey struct{}

// WithPrincipal has the API take p as the caller of requests served with
// ctx, instead of their bearer token: what a site does for a hub user's
// call through its federation session (never reachable from a request).
func WithPrincipal(ctx context.Context, p *identity.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// bearer is the request's bearer token, if it has one.
func bearer(r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	return tok, ok && tok != ""
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// decode reads a JSON body strictly: known fields only, one value, JSON type.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, codeUnsupportedType, "Content-Type must be application/json")
		}
	}
	dec := json.NewDecoder(r.Body)
	var raw json.RawMessage
	err := dec.Decode(&raw)
	if err == nil {
		if k := unknownKey(raw, reflect.TypeOf(v)); k != "" {
			return errorf(http.StatusBadRequest, codeBadJSON, fmt.Sprintf("invalid JSON body: unknown field %q", k))
		}
		strict := json.NewDecoder(bytes.NewReader(raw))
		strict.DisallowUnknownFields()
		err = strict.Decode(v)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes))
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, codeBadJSON, "request body is empty; a JSON object is required")
		default:
			return errorf(http.StatusBadRequest, codeBadJSON, "invalid JSON body: "+err.Error())
		}
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, codeBadJSON, "invalid JSON body: more than one value")
	}
	return nil
}

// writeJSON writes v; a non-zero version becomes the ETag.
func writeJSON(w http.ResponseWriter, status int, v any, version uint64) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if version != 0 {
		w.Header().Set("ETag", etag(version))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

// ifMatch parses If-Match: absent or * means "any version" (0).
func ifMatch(r *http.Request) (uint64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return 0, nil
	}
	v, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	if err != nil || v == 0 {
		return 0, errorf(http.StatusBadRequest, codeBadJSON, "If-Match must be an ETag this API returned, like \"42\"")
	}
	return v, nil
}

// consistent reports whether the caller asked for a linearizable read.
func (s *Server) consistent(r *http.Request) error {
	v := r.URL.Query().Get("consistent")
	return s.id.Sync(r.Context(), v == "true" || v == "1")
}
