package federation

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/yamux"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/leafca"
)

// Cluster is the hub's consensus node.
type Cluster interface {
	Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error)
	ConsistentRead(ctx context.Context) error
	Store() *consensus.Store
	Name() string
}

// DefaultTokenTTL is how long an enrolment token admits a site.
const DefaultTokenTTL = 24 * time.Hour

// siteCertTTL is how long a site's client certificate is valid.
const siteCertTTL = 365 * 24 * time.Hour

// Hub is central IT's side: it enrols sites, holds each connected site's
// session, and reaches the site's API through it.
type Hub struct {
	c   Cluster
	id  *identity.Service
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*yamux.Session // by site ID
	clients  map[string]*http.Client   // through each session, made on use
	working  map[string]bool           // sites whose intents a worker sends
	kickCh   chan struct{}
	sending  map[string]bool // sites an image is being pushed to
	retry    struct{ unanswered, begun time.Duration }
	certTTL  atomic.Int64 // of the sites' certificates (a time.Duration)
	enrols   *enrolLimiter

	// ImageDir keeps the images this hub node holds for sites.
	ImageDir string
	partials map[string]partialCopy // copies from other hub nodes cut short, by image
}

// Remote is the address a connected site's session comes from (behind a
// NAT, the NAT's), or "".
func (h *Hub) Remote(siteID string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.sessions[siteID]; s != nil && !s.IsClosed() {
		return s.RemoteAddr().String()
	}
	return ""
}

// NewHub returns the hub's service.
func NewHub(c Cluster, id *identity.Service, log *slog.Logger) *Hub {
	h := &Hub{c: c, id: id, log: log, sessions: map[string]*yamux.Session{}, clients: map[string]*http.Client{},
		working: map[string]bool{}, sending: map[string]bool{}, kickCh: make(chan struct{}, 1)}
	h.retry.unanswered, h.retry.begun = retryUnanswered, retryBegun
	h.certTTL.Store(int64(siteCertTTL))
	h.enrols = newEnrolLimiter(DefaultEnrolBurst)
	return h
}

// EnsureCA makes the federation CA once.
func EnsureCA(ctx context.Context, c Cluster) error {
	if consensus.First[fedCA](c.Store().ReadTxn(), tCA, "id") != nil {
		return nil
	}
	certPEM, keyPEM, err := leafca.New("Cairn federation CA")
	if err != nil {
		return err
	}
	_, err = c.Apply(ctx, MsgFederationCA, &fedCA{CertPEM: certPEM, KeyPEM: keyPEM}, nil)
	return err
}

func (h *Hub) ca() (*leafca.CA, error) {
	c := consensus.First[fedCA](h.c.Store().ReadTxn(), tCA, "id")
	if c == nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "the federation CA is not made yet")
	}
	return leafca.Parse(c.CertPEM, c.KeyPEM)
}

// CreateToken makes a one-time enrolment token for the site to be called
// site (hub admin). The token's text is shown once: the hub keeps only
// its hash. It carries the hash of the hub's CA, which the site pins when
// it enrols, so it needs nothing else to trust the hub.
func (h *Hub) CreateToken(ctx context.Context, p *identity.Principal, site string, ttl time.Duration) (string, *Token, error) {
	const action = "federation.token.create"
	if !p.IsClusterAdmin() {
		return "", nil, h.id.Deny(ctx, p, action, site, "", consensus.Errorf(consensus.CodeForbidden, "only hub admins enrol sites"))
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	ca, err := h.ca()
	if err != nil {
		return "", nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", nil, err
	}
	now := time.Now().UTC()
	t := Token{ID: newID(), Site: site, CreatedBy: p.User.Name, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	text := formatToken(t.ID, base64.RawURLEncoding.EncodeToString(secret), caHash(ca.Cert))
	t.Hash = hashSecret(base64.RawURLEncoding.EncodeToString(secret))
	var out Token
	if err := h.id.Mutate(ctx, p, action, site, "", MsgCreateToken, createTokenCmd{Token: t}, &out); err != nil {
		return "", nil, err
	}
	out.Hash = ""
	return text, &out, nil
}

// Sites lists the enrolled sites.
func (h *Hub) Sites() []Site {
	it, err := h.c.Store().ReadTxn().Get(tSites, "id")
	if err != nil {
		return nil
	}
	var out []Site
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, *o.(*Site))
	}
	return out
}

// Revoke ends a site's membership (hub admin): its certificates stop
// working, its session is closed. It may enrol again with a new token.
func (h *Hub) Revoke(ctx context.Context, p *identity.Principal, site string) (*Site, error) {
	const action = "federation.site.revoke"
	if !p.IsClusterAdmin() {
		return nil, h.id.Deny(ctx, p, action, site, "", consensus.Errorf(consensus.CodeForbidden, "only hub admins revoke sites"))
	}
	var out Site
	if err := h.id.Mutate(ctx, p, action, site, "", MsgRevokeSite, revokeSiteCmd{Site: site, By: p.User.Name, At: time.Now().UTC()}, &out); err != nil {
		return nil, err
	}
	h.drop(out.ID)
	return &out, nil
}

// EnrolRequest is what a site sends to enrol: the token's ID and secret,
// and a certificate request for the key it made (which never leaves it).
type EnrolRequest struct {
	TokenID string `json:"token_id"`
	Secret  string `json:"secret"`
	CSR     []byte `json:"csr"` // PEM
}

// EnrolResponse is the site's membership as the hub grants it.
type EnrolResponse struct {
	SiteID   string `json:"site_id"`
	SiteName string `json:"site_name"`
	CertPEM  []byte `json:"cert_pem"`
	CAPEM    []byte `json:"ca_pem"`
}

// Enrol admits a site holding a valid token: it signs the site's key and
// records the site with the certificate's serial, consuming the token in
// the same command. A refused token leaves nothing behind (the signed
// certificate is never handed out, and its serial admits nothing).
func (h *Hub) Enrol(ctx context.Context, req EnrolRequest) (*EnrolResponse, error) {
	block, _ := pem.Decode(req.CSR)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "the enrolment carries no certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "the enrolment's certificate request is not valid")
	}
	if err := h.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	txn := h.c.Store().ReadTxn()
	refused := consensus.Errorf(consensus.CodeForbidden, "the enrolment token is unknown, used or expired: create a new one on the hub")
	t := consensus.First[Token](txn, tTokens, "id", req.TokenID)
	if t == nil || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(hashSecret(req.Secret))) != 1 {
		return nil, refused
	}
	keyHash, err := publicKeyHash(csr.PublicKey)
	if err != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "the enrolment's certificate request is not valid")
	}
	if !t.UsedAt.IsZero() {
		// The same enrolment again (its answer was lost): the same answer,
		// while the site is enrolled with that certificate.
		if out := h.sameEnrolment(txn, t, keyHash); out != nil {
			return out, nil
		}
		return nil, refused
	}
	if !time.Now().Before(t.ExpiresAt) {
		return nil, refused // nothing signed for such a token (the command checks again)
	}
	siteID := newID()
	if cur := consensus.First[Site](txn, tSites, "name", t.Site); cur != nil {
		siteID = cur.ID
	}
	ca, err := h.ca()
	if err != nil {
		return nil, err
	}
	certPEM, serial, err := ca.Sign(csr.PublicKey, leafca.Leaf{CN: "site:" + siteID, Client: true, TTL: time.Duration(h.certTTL.Load()), Backdate: time.Hour})
	if err != nil {
		return nil, err
	}
	var site Site
	cmd := enrolSiteCmd{TokenID: req.TokenID, Hash: hashSecret(req.Secret), SiteID: siteID, Serial: serial.Text(16), KeyHash: keyHash, CertPEM: certPEM, At: time.Now().UTC()}
	if _, err := h.c.Apply(ctx, MsgEnrolSite, cmd, &site); err != nil {
		if errors.Is(err, errEnrolledMeanwhile) || consensus.ErrorCode(err) == consensus.CodeConflict {
			if rerr := h.c.ConsistentRead(ctx); rerr == nil {
				txn := h.c.Store().ReadTxn()
				if t := consensus.First[Token](txn, tTokens, "id", req.TokenID); t != nil {
					if out := h.sameEnrolment(txn, t, keyHash); out != nil {
						return out, nil
					}
				}
			}
		}
		return nil, err
	}
	h.log.Info("site enrolled", "site", site.Name, "id", site.ID)
	return &EnrolResponse{SiteID: site.ID, SiteName: site.Name, CertPEM: certPEM, CAPEM: ca.PEM}, nil
}

// ServerTLS is the TLS configuration of the hub's federation listener: a
// server certificate from the federation CA for names and ips, sent with
// the CA itself (which a site enrolling checks against its token's hash),
// and the sites' client certificates checked against the CA when given.
func (h *Hub) ServerTLS(names []string, ips []net.IP) (*tls.Config, error) {
	ca, err := h.ca()
	if err != nil {
		return nil, err
	}
	issue := func() (*tls.Certificate, error) {
		certPEM, keyPEM, err := ca.Issue(leafca.Leaf{CN: "cairn-hub", DNS: names, IPs: ips, TTL: siteCertTTL, Backdate: time.Hour})
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(append(certPEM, ca.PEM...), keyPEM)
		return &cert, err
	}
	cur, err := issue()
	if err != nil {
		return nil, err
	}
	// Issued again when a third of its life is left: a hub that runs for
	// years keeps a valid certificate without a restart.
	var mu sync.Mutex
	get := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		leaf := cur.Leaf
		if leaf == nil && len(cur.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(cur.Certificate[0])
		}
		if leaf != nil && leaf.NotAfter.Sub(time.Now()) < leaf.NotAfter.Sub(leaf.NotBefore)/3 {
			if next, err := issue(); err == nil {
				cur = next
			} else {
				h.log.Warn("renew the federation listener's certificate", "err", err)
			}
		}
		return cur, nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: get,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool(), NextProtos: []string{ALPN, "http/1.1"}}, nil
}

// ALPN is the protocol a site's session asks for on the hub's listener.
const ALPN = "cairn-fed/1"

// Server is the hub's federation HTTP server on a listener with
// ServerTLS: enrolment over HTTPS, and sites' sessions by ALPN.
func (h *Hub) Server(ctx context.Context) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fed/v1/enrol", h.serveEnrol)
	// Timeouts bound what an unauthenticated client may hold; they end
	// with the TLS handshake for a session (net/http resets them before
	// TLSNextProto takes the connection over).
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx },
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			ALPN: func(_ *http.Server, conn *tls.Conn, _ http.Handler) { h.serveSession(ctx, conn) },
		}}
}

func (h *Hub) serveEnrol(w http.ResponseWriter, r *http.Request) {
	if !h.enrols.allow(r.RemoteAddr) {
		w.Header().Set("Retry-After", "10")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_ = json.NewEncoder(w).Encode(errorBody{Code: "rate_limited", Message: "too many enrolments from this address: wait a little"})
		return
	}
	var req EnrolRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, consensus.Errorf(consensus.CodeInvalid, "the enrolment request is not valid JSON"))
		return
	}
	out, err := h.Enrol(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// serveSession runs a site's session: the site's client certificate names
// it, and must be one the hub allows now. A new session of a site
// replaces its old one (the site's leader changed, or its link broke
// before the hub noticed).
func (h *Hub) serveSession(ctx context.Context, conn *tls.Conn) {
	st := conn.ConnectionState()
	if len(st.VerifiedChains) == 0 {
		h.log.Warn("a federation session without a site certificate", "from", conn.RemoteAddr())
		return
	}
	leaf := st.VerifiedChains[0][0]
	siteID, ok := strings.CutPrefix(leaf.Subject.CommonName, "site:")
	serial := leaf.SerialNumber.Text(16)
	sess, err := yamux.Client(conn, yamuxConfig(h.log))
	if err != nil {
		return
	}
	if !ok || !allowed(h.c.Store().ReadTxn(), siteID, serial) {
		// Told why on its hello, then closed: its admin sees the reason.
		h.log.Warn("a federation session refused: the site is not enrolled, or revoked", "cn", leaf.Subject.CommonName, "from", conn.RemoteAddr())
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, errRevoked)
		})}
		time.AfterFunc(10*time.Second, func() { _ = sess.Close() })
		_ = srv.Serve(sess)
		return
	}
	h.mu.Lock()
	h.forget(siteID)
	h.sessions[siteID] = sess
	h.mu.Unlock()
	h.log.Info("site connected", "site", siteID, "from", conn.RemoteAddr())
	h.kick() // what waited for it
	if st := consensus.First[Site](h.c.Store().ReadTxn(), tSites, "id", siteID); st != nil && len(st.Serials) > 1 && st.Serials[len(st.Serials)-1] == serial {
		// Connected with its renewed certificate: the old one goes.
		go func() {
			if _, err := h.c.Apply(ctx, MsgKeepSerial, keepSerialCmd{SiteID: siteID, Serial: serial}, nil); err != nil {
				h.log.Warn("drop a site's old certificate", "site", siteID, "err", err)
			}
		}()
	}
	// Recorded for every hub node: which holds the session, since when.
	sessionID := newID()
	began := h.recordSession(ctx, nil, sessionCmd{SiteID: siteID, Session: sessionID, HubNode: h.c.Name(), From: conn.RemoteAddr().String(), Connected: true, At: time.Now().UTC()})
	defer func() {
		h.recordSession(ctx, began, sessionCmd{SiteID: siteID, Session: sessionID, HubNode: h.c.Name(), At: time.Now().UTC()})
	}()
	// The session lasts while the site may connect with this
	// certificate: a revocation applied on any hub node ends it here.
	go func() {
		defer sess.Close()
		for ctx.Err() == nil && !sess.IsClosed() {
			ws := memdb.NewWatchSet()
			txn := h.c.Store().ReadTxn()
			ch, _, err := txn.FirstWatch(tSites, "id", siteID)
			if err != nil || !allowed(txn, siteID, serial) {
				h.log.Info("a site's session ends: its certificate is no longer allowed", "site", siteID)
				return
			}
			ws.Add(ch)
			ws.Add(sess.CloseChan())
			_ = h.c.Store().Watch(ctx, ws)
		}
	}()
	// What the site asks of the hub, on streams it opens.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fed/v1/hello", func(w http.ResponseWriter, r *http.Request) {
		ca, err := h.ca()
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Hello{SiteID: siteID, CAPEM: ca.PEM, HubURLs: h.hubURLs()})
	})
	mux.HandleFunc("POST /fed/v1/inventory", func(w http.ResponseWriter, r *http.Request) {
		var push InventoryPush
		if err := json.NewDecoder(io.LimitReader(r.Body, maxInventoryBytes)).Decode(&push); err != nil {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "the inventory is not valid JSON"))
			return
		}
		// The site's digest is the one kept: a hub of another version may
		// decode the inventory into other bytes, and the site's next
		// heartbeat names its own.
		cmd := pushInventoryCmd{SiteID: siteID, Serial: serial, Digest: push.Digest, Inventory: push.Inventory,
			Session: sessionID, HubNode: h.c.Name(), From: conn.RemoteAddr().String(), At: time.Now().UTC()}
		if cmd.Digest == "" && push.Inventory != nil {
			cmd.Digest = Digest(push.Inventory) // a site of the first version names none
		}
		if cmd.Digest == "" || len(cmd.Digest) > 64 {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "an inventory push names its digest"))
			return
		}
		if _, err := h.c.Apply(r.Context(), MsgSiteInventory, cmd, nil); err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(InventoryPush{Digest: cmd.Digest})
	})
	mux.HandleFunc("POST /fed/v1/renew", h.serveRenew(siteID, serial))
	mux.HandleFunc("POST /fed/v1/leave", func(w http.ResponseWriter, r *http.Request) {
		// The site leaves on its own: as a revocation, by the site; only
		// with the certificate it is enrolled with now (an old session
		// cannot end a newer enrolment).
		if !allowed(h.c.Store().ReadTxn(), siteID, serial) {
			writeError(w, errRevoked)
			return
		}
		var out Site
		if _, err := h.c.Apply(r.Context(), MsgRevokeSite, revokeSiteCmd{Site: siteID, By: "the site itself", At: time.Now().UTC()}, &out); err != nil {
			writeError(w, err)
			return
		}
		h.log.Info("site left", "site", out.Name)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
		go h.drop(siteID)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	_ = srv.Serve(sess) // until the session ends
	h.mu.Lock()
	if h.sessions[siteID] == sess {
		h.forget(siteID)
	}
	h.mu.Unlock()
	h.log.Info("site disconnected", "site", siteID)
}

// recordSession records a session's start or end, in the background of
// the session (a hub without a leader for a while delays the record, not
// the site), after the record after has been tried (a session's end
// after its start). An end is recorded even as the hub shuts down, if it
// can.
func (h *Hub) recordSession(ctx context.Context, after <-chan struct{}, c sessionCmd) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if after != nil {
			<-after
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := h.c.Apply(actx, MsgSiteSession, c, nil); err != nil {
			h.log.Warn("record a site's session", "site", c.SiteID, "connected", c.Connected, "err", err)
		}
	}()
	return done
}

// InventoryPush is a site's inventory, or (Inventory nil) only the digest
// of the one the hub holds, as a heartbeat; the hub answers with the
// digest it holds now.
type InventoryPush struct {
	Digest    string     `json:"digest,omitempty"`
	Inventory *Inventory `json:"inventory,omitempty"`
}

// maxInventoryBytes bounds one push: a site of 1,000 VMs sends ~200 KB.
const maxInventoryBytes = 32 << 20

// Hello is the hub's answer to a site's hello: the CA set the site pins
// (a rotated CA reaches the sites here, before any certificate uses it),
// and where every hub node takes sessions.
type Hello struct {
	SiteID  string   `json:"site_id"`
	CAPEM   []byte   `json:"ca_pem"`
	HubURLs []string `json:"hub_urls,omitempty"`
}

// errRevoked is what a site that may not connect is told.
var errRevoked = consensus.NewError(consensus.CodeForbidden, "this site is not enrolled with the hub, or was revoked: enrol it again with a new token")

// drop closes a site's session.
func (h *Hub) drop(siteID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forget(siteID)
}

// forget closes a site's session and its client (h.mu held).
func (h *Hub) forget(siteID string) {
	if s := h.sessions[siteID]; s != nil {
		_ = s.Close()
	}
	if c := h.clients[siteID]; c != nil {
		c.CloseIdleConnections()
	}
	delete(h.sessions, siteID)
	delete(h.clients, siteID)
}

// Connected tells whether a site has a session with this hub node.
func (h *Hub) Connected(siteID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[siteID]
	return s != nil && !s.IsClosed()
}

// SiteClient is an HTTP client whose requests reach the site's API
// through its session (any host in the URL: the session decides): this
// node's, or, relayed, the hub node's that holds it.
func (h *Hub) SiteClient(siteID string) (*http.Client, error) {
	c, err := h.localClient(siteID)
	if err == nil {
		return c, nil
	}
	if rc := h.relayClient(siteID); rc != nil {
		return rc, nil
	}
	return nil, err
}

// localClient is SiteClient through this node's own session only.
func (h *Hub) localClient(siteID string) (*http.Client, error) {
	h.mu.Lock()
	sess, c := h.sessions[siteID], h.clients[siteID]
	if sess != nil && c == nil {
		c = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Transport: &http.Transport{
			DialContext: func(context.Context, string, string) (net.Conn, error) { return sess.Open() },
			// A step or an import may take minutes at the site; an
			// interactive call ends with its caller.
			MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second, ResponseHeaderTimeout: stepTimeout,
		}}
		h.clients[siteID] = c
	}
	h.mu.Unlock()
	if sess == nil || sess.IsClosed() {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "site %s is not connected", siteID)
	}
	return c, nil
}

// Ask gets path of a site (by ID or name) through its session, and
// decodes the site's JSON answer into out.
func (h *Hub) Ask(ctx context.Context, site, path string, out any) error {
	st := siteByRef(h.c.Store().ReadTxn(), site)
	if st == nil {
		return consensus.Errorf(consensus.CodeNotFound, "no site %s", site)
	}
	c, err := h.SiteClient(st.ID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://site"+path, nil)
	if err != nil {
		return err
	}
	res, err := c.Do(req)
	if err != nil {
		return consensus.Errorf(consensus.CodeUnavailable, "site %s did not answer: %v", st.Name, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return consensus.Errorf(consensus.CodeUnavailable, "site %s answered %s", st.Name, res.Status)
	}
	return json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(out)
}

func yamuxConfig(log *slog.Logger) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.KeepAliveInterval = 10 * time.Second
	cfg.ConnectionWriteTimeout = 10 * time.Second
	cfg.StreamOpenTimeout = 30 * time.Second
	cfg.LogOutput = nil
	cfg.Logger = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	return cfg
}

// errorBody is an error as the federation endpoints send it.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, err error) {
	code := consensus.ErrorCode(err)
	status := http.StatusInternalServerError
	switch code {
	case consensus.CodeInvalid:
		status = http.StatusBadRequest
	case consensus.CodeForbidden:
		status = http.StatusForbidden
	case consensus.CodeAlreadyExists, consensus.CodeConflict:
		status = http.StatusConflict
	case consensus.CodeUnavailable:
		status = http.StatusServiceUnavailable
	}
	msg := err.Error()
	if code == "" {
		msg = "internal error"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Code: code, Message: msg})
}

// The token's text: cfed1.ID.SECRET.CAHASH.
const tokenPrefix = "cfed1"

// IsEnrolToken tells whether s looks like an enrolment token (made by
// CreateToken), not an API token.
func IsEnrolToken(s string) bool { return strings.HasPrefix(s, tokenPrefix+".") }

func formatToken(id, secret, ca string) string {
	return strings.Join([]string{tokenPrefix, id, secret, ca}, ".")
}

func parseToken(s string) (id, secret, ca string, err error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenPrefix || parts[1] == "" || parts[2] == "" || len(parts[3]) != 64 {
		return "", "", "", errors.New("not a federation enrolment token (cfed1.…)")
	}
	return parts[1], parts[2], parts[3], nil
}

// caHash is the hex SHA-256 of a CA certificate, as tokens carry it.
func caHash(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

func newID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
