package ui

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"time"

	"github.com/cairnhq/cairn/appliance/federation"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
)

// Deps are the UI's explicit dependencies; the agent fills them in.
type Deps struct {
	Identity  *identity.Service       // every read and write goes through it
	Status    func() consensus.Status // cluster health for the dashboard; nil shows none
	JoinToken func() string           // shown to cluster admins on the dashboard; nil hides it
	Admission Admission               // enrolment tokens and pending nodes for cluster admins; nil hides them
	Logger    *slog.Logger            // already named for the UI by the caller

	// Storage. nil: the storage and bucket pages say storage is unavailable.
	Objects      *storage.Objects
	Storage      *storage.Service
	StorageStats func() (scrub, heal storage.RepairStats) // this node's scrubber, and the healer (meaningful on the leader)
	GCStats      func() storage.GCStats                   // this node's orphan-shard sweeper; nil shows none

	// Compute. nil: the VM and image pages say compute is unavailable.
	// The console pages get their tickets from Compute; the API serves the
	// WebSockets the tickets are for.
	Compute *hypervisor.Service
	Images  *hypervisor.Images
	// Volumes: block volumes. nil: the volume pages say they are
	// unavailable, and VMs get a local boot disk.
	Volumes *volume.Service
	// Networks: project networks and security groups. nil: their pages
	// say they are unavailable, and VMs join the default network.
	Networks *netfabric.Service

	// S3URL is where this node serves the S3 API; the buckets page shows
	// it. CACert returns the cluster CA certificate (PEM) clients trust;
	// nil serves none.
	S3URL  string
	CACert func() []byte

	// Consoles reads a VM's serial log, whose tail the serial console
	// page opens with; nil opens it empty.
	Consoles *hypervisor.Consoles
	// Usage reads a VM's usage history for the graphs on its page; nil
	// draws none.
	Usage *hypervisor.UsageReader

	// Hub makes this a federation hub's UI: the sites, their inventories
	// and image pushes, instead of a site's own pages.
	Hub *federation.Hub
	// Member is a site's federation: its page joins a hub and leaves it;
	// nil shows none.
	Member *federation.Member
}

// server holds what the handlers share. Nothing in it changes after New.
type server struct {
	id        *identity.Service
	status    func() consensus.Status
	joinToken func() string
	admission Admission
	objects   *storage.Objects
	disks     *storage.Service
	repair    func() (scrub, heal storage.RepairStats)
	gc        func() storage.GCStats
	compute   *hypervisor.Service
	images    *hypervisor.Images
	volumes   *volume.Service
	networks  *netfabric.Service
	s3URL     string
	ca        func() []byte
	consoles  *hypervisor.Consoles
	usage     *hypervisor.UsageReader
	hub       *federation.Hub
	member    *federation.Member
	log       *slog.Logger
	csrfKey   []byte
	catalogs  map[string]map[string]string
	static    map[string]asset
	loc       *time.Location // times are shown in the appliance's zone
}

// New returns the web UI, to be mounted at "/" and served over HTTPS.
func New(d Deps) (http.Handler, error) {
	if d.Identity == nil {
		return nil, errors.New("new ui: identity service is required")
	}
	log := d.Logger
	if log == nil {
		log = slog.Default().With("component", "ui")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("new ui: csrf key: %w", err)
	}
	static, err := loadStatic()
	if err != nil {
		return nil, fmt.Errorf("new ui: %w", err)
	}
	s := &server{
		id:        d.Identity,
		status:    d.Status,
		joinToken: d.JoinToken,
		admission: d.Admission,
		objects:   d.Objects,
		disks:     d.Storage,
		repair:    d.StorageStats,
		gc:        d.GCStats,
		compute:   d.Compute,
		images:    d.Images,
		volumes:   d.Volumes,
		networks:  d.Networks,
		s3URL:     d.S3URL,
		ca:        d.CACert,
		consoles:  d.Consoles,
		usage:     d.Usage,
		hub:       d.Hub,
		member:    d.Member,
		log:       log,
		csrfKey:   key,
		catalogs:  catalogs(),
		static:    static,
		loc:       time.Local,
	}
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(s.refuseCrossOrigin))
	return cop.Handler(s.harden(s.routes())), nil
}

func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /static/{name...}", s.serveStatic)
	mux.HandleFunc("GET /{$}", s.root)
	mux.HandleFunc("GET /lang/{lang}", s.setLang)
	mux.HandleFunc("GET /setup", s.setupPage)
	mux.HandleFunc("POST /setup", s.setupSubmit)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.loginSubmit)
	mux.Handle("POST /logout", s.authed(s.logout))
	mux.Handle("GET /dashboard", s.authed(s.dashboard))
	mux.Handle("GET /dashboard/cluster", s.authed(s.clusterFragment))
	mux.Handle("POST /dashboard/enrol-token", s.authed(s.createEnrolToken))
	mux.Handle("POST /dashboard/pending/{name}/approve", s.authed(s.approveNode))
	mux.Handle("GET /projects", s.authed(s.projects))
	mux.Handle("POST /projects", s.authed(s.createProject))
	mux.Handle("GET /projects/{ref}", s.authed(s.project))
	mux.Handle("POST /projects/{ref}/members", s.authed(s.setMember))
	mux.Handle("POST /projects/{ref}/members/{user}/remove", s.authed(s.removeMember))
	mux.Handle("POST /projects/{ref}/delete", s.authed(s.deleteProject))
	mux.Handle("POST /projects/{ref}/quota", s.authed(s.setQuota))
	mux.Handle("GET /account", s.authed(s.account))
	mux.Handle("POST /account/password", s.authed(s.changePassword))
	mux.Handle("POST /account/tokens/{id}/revoke", s.authed(s.revokeToken))
	mux.Handle("POST /account/token-lifetime", s.authed(s.setTokenLifetime))
	mux.Handle("POST /users/password", s.authed(s.resetPassword))
	mux.Handle("GET /users", s.authed(s.users))
	mux.Handle("POST /users", s.authed(s.createUser))
	mux.Handle("GET /users/{user}", s.authed(s.user))
	mux.Handle("POST /users/{user}/edit", s.authed(s.editUser))
	mux.Handle("POST /users/{user}/{action}", s.authed(s.userAct))
	mux.Handle("GET /flavors", s.authed(s.flavors))
	mux.Handle("POST /flavors", s.authed(s.createFlavor))
	mux.Handle("GET /audit", s.authed(s.audit))
	mux.Handle("GET /hosts", s.authed(s.hosts))
	mux.Handle("GET /hosts/panel", s.authed(s.hostsFragment))
	mux.Handle("POST /hosts/{node}/cordon", s.authed(s.hostAction("cordon")))
	mux.Handle("POST /hosts/{node}/uncordon", s.authed(s.hostAction("uncordon")))
	mux.Handle("POST /hosts/{node}/drain", s.authed(s.hostAction("drain")))
	mux.Handle("GET /storage", s.authed(s.storagePage))
	mux.Handle("GET /storage/panel", s.authed(s.storageFragment))
	mux.Handle("POST /storage/disks", s.authed(s.addDisk))
	mux.Handle("POST /storage/disks/{id}/state", s.authed(s.setDiskState))
	mux.Handle("POST /storage/disks/{id}/remove", s.authed(s.removeDisk))
	mux.Handle("GET /buckets", s.authed(s.buckets))
	mux.Handle("POST /buckets", s.authed(s.createBucket))
	mux.Handle("GET /buckets/{bucket}", s.authed(s.bucket))
	mux.Handle("POST /buckets/{bucket}/delete", s.authed(s.deleteBucket))
	mux.Handle("GET /buckets/{bucket}/download", s.authed(s.download))
	mux.Handle(uploadRoute, s.authed(s.upload))
	mux.Handle("POST /buckets/{bucket}/objects/delete", s.authed(s.deleteObject))
	mux.Handle("POST /s3-keys", s.authed(s.createS3Key))
	mux.Handle("POST /s3-keys/{key}/revoke", s.authed(s.revokeS3Key))
	mux.HandleFunc("GET /ca.crt", s.caCert)
	if s.member != nil {
		mux.Handle("GET /federation", s.authed(s.federationPage))
		mux.Handle("POST /federation/join", s.authed(s.joinHub))
		mux.Handle("POST /federation/leave", s.authed(s.leaveHub))
	}
	if s.hub != nil {
		mux.Handle("GET /sites", s.authed(s.sitesPage))
		mux.Handle("GET /sites/panel", s.authed(s.sitesFragment))
		mux.Handle("GET /sites/{site}", s.authed(s.sitePage))
		mux.Handle("GET /pushes", s.authed(s.pushesPage))
		mux.Handle("GET /pushes/panel", s.authed(s.pushesFragment))
		mux.Handle("POST /pushes", s.authed(s.pushImage))
	}
	mux.Handle("GET /vms", s.authed(s.vms))
	mux.Handle("GET /vms/list", s.authed(s.vmsFragment))
	mux.Handle("GET /vms/new", s.authed(s.newVM))
	mux.Handle("POST /vms", s.authed(s.createVM))
	mux.Handle("POST /vms/bulk", s.authed(s.bulkVMs))
	mux.Handle("GET /vms/{vm}", s.authed(s.vm))
	mux.Handle("GET /vms/{vm}/status", s.authed(s.vmFragment))
	mux.Handle("GET /vms/{vm}/usage", s.authed(s.vmUsage))
	mux.Handle("POST /vms/{vm}/op/{op}", s.authed(s.vmOp))
	mux.Handle("POST /vms/{vm}/rename", s.authed(s.renameVM))
	mux.Handle("POST /vms/{vm}/resize", s.authed(s.resizeVM))
	mux.Handle("POST /vms/{vm}/migrate", s.authed(s.migrateVM))
	mux.Handle("POST /vms/{vm}/migrate/cancel", s.authed(s.cancelMigration))
	mux.Handle("POST /vms/{vm}/ha", s.authed(s.setVMHA))
	mux.Handle("GET /vms/{vm}/console", s.authed(s.console))
	mux.Handle("GET /vms/{vm}/serial", s.authed(s.serial))
	mux.Handle("GET /volumes", s.authed(s.volumesPage))
	mux.Handle("POST /volumes", s.authed(s.createVolume))
	mux.Handle("GET /volumes/list", s.authed(s.volumesFragment))
	mux.Handle("GET /volumes/{volume}", s.authed(s.volumePage))
	mux.Handle("GET /volumes/{volume}/status", s.authed(s.volumeFragment))
	mux.Handle("POST /volumes/{volume}/{action}", s.authed(s.volumeAction))
	mux.Handle("POST /snapshots/{snapshot}/{action}", s.authed(s.snapshotAct))
	mux.Handle("GET /networks", s.authed(s.networksPage))
	mux.Handle("POST /networks", s.authed(s.createNetwork))
	mux.Handle("GET /networks/{network}", s.authed(s.networkPage))
	mux.Handle("POST /networks/{network}/delete", s.authed(s.deleteNetwork))
	mux.Handle("POST /networks/{network}/subnets", s.authed(s.addSubnet))
	mux.Handle("GET /topology", s.authed(s.topologyPage))
	mux.Handle("GET /routers", s.authed(s.routersPage))
	mux.Handle("POST /routers", s.authed(s.createRouter))
	mux.Handle("GET /routers/{router}", s.authed(s.routerPage))
	mux.Handle("POST /routers/{router}/{action}", s.authed(s.routerAction))
	mux.Handle("GET /floating-ips", s.authed(s.floatingPage))
	mux.Handle("POST /floating-ips", s.authed(s.createFloating))
	mux.Handle("POST /floating-ips/{fip}/{action}", s.authed(s.floatingAction))
	mux.Handle("GET /security-groups", s.authed(s.groupsPage))
	mux.Handle("POST /security-groups", s.authed(s.createGroup))
	mux.Handle("GET /security-groups/{group}", s.authed(s.groupPage))
	mux.Handle("POST /security-groups/{group}/{action}", s.authed(s.groupAction))
	mux.Handle("POST /security-groups/{group}/rules/{rule}/delete", s.authed(s.deleteRule))
	mux.Handle("GET /images", s.authed(s.imagesPage))
	mux.Handle(imageUploadRoute, s.authed(s.uploadImage))
	mux.Handle("POST /images/import", s.authed(s.importImage))
	mux.Handle("POST /images/{image}/visibility", s.authed(s.setImageVisibility))
	mux.Handle("POST /images/{image}/delete", s.authed(s.deleteImage))
	mux.HandleFunc("/", s.notFound)
	return mux
}

// csp allows only this origin's own script and style: htmx is configured (in
// the layout's htmx-config) not to inject inline styles or evaluate code.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

// harden adds security headers, bounds form bodies (all but uploads, which
// stream into the object store) and records the client address on the
// request context for the audit log.
func (s *server) harden(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		if r.Body != nil && !streamsBody(r) {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		}
		r = r.WithContext(identity.WithRemoteAddr(r.Context(), r.RemoteAddr))
		next.ServeHTTP(w, r)
	})
}

// uploadRoute and imageUploadRoute take a file as the raw request body.
const (
	uploadRoute      = "POST /buckets/{bucket}/upload"
	imageUploadRoute = "POST /images/upload"
)

// streamsBody reports whether r is an upload, whose body is a file of any
// size rather than a form. Bucket names have no "/", so the pattern is exact.
func streamsBody(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	ok, _ := path.Match("/buckets/*/upload", r.URL.Path)
	return ok || r.URL.Path == "/images/upload"
}

// translator returns the translator for the request's language.
func (s *server) translator(r *http.Request) *translator {
	l := pickLang(r)
	return &translator{lang: l, msgs: s.catalogs[l]}
}

// root sends a visitor wherever they should start.
func (s *server) root(w http.ResponseWriter, r *http.Request) {
	if s.id.SetupNeeded() {
		s.redirect(w, r, "/setup")
		return
	}
	if s.hub != nil {
		s.redirect(w, r, "/sites")
		return
	}
	s.redirect(w, r, "/dashboard")
}

// setLang remembers a language choice for a year and goes back to the page
// it was made on. A GET suffices: the only state it changes is a preference.
func (s *server) setLang(w http.ResponseWriter, r *http.Request) {
	l, ok := normalizeLang(r.PathValue("lang"))
	if !ok {
		s.notFound(w, r)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: langCookie, Value: l, Path: "/", MaxAge: 365 * 24 * 3600,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	s.redirect(w, r, safeNext(r.URL.Query().Get("next")))
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	tr := s.translator(r)
	v := s.newView(r, tr)
	// A signed-in user keeps the navigation and their name: the page is
	// missing, not the session. Nothing is refused or cleared here.
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" && !s.id.SetupNeeded() {
		if p, err := s.id.Authenticate(r.Context(), c.Value); err == nil {
			v.p = p
			v.csrf = s.csrfToken(csrfSession, c.Value)
		}
	}
	s.render(w, r, http.StatusNotFound, messagePage(v, tr.T("notfound.title"), tr.T("notfound.body")))
}

// refuseCrossOrigin answers a POST that a browser says came from another site.
func (s *server) refuseCrossOrigin(w http.ResponseWriter, r *http.Request) {
	tr := s.translator(r)
	s.log.Warn("cross-origin request refused", "path", r.URL.Path, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
	s.render(w, r, http.StatusForbidden, messagePage(s.newView(r, tr), tr.T("csrf.title"), tr.T("csrf.cross_origin")))
}

// refuseCSRF answers a POST whose form token is missing or wrong, most often
// a page left open across a restart of the appliance.
func (s *server) refuseCSRF(w http.ResponseWriter, r *http.Request, v *view) {
	s.log.Warn("form token refused", "path", r.URL.Path, "remote", r.RemoteAddr)
	s.render(w, r, http.StatusForbidden, messagePage(v, v.T("csrf.title"), v.T("csrf.stale")))
}
