package federation

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/hashicorp/yamux"
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// Membership is a site's standing with its hub: where the hub is, the
// site's identity there (its client certificate and key) and the CA set
// it pins for the hub.
type Membership struct {
	HubURL   string `json:"hub_url"`
	SiteID   string `json:"site_id"`
	SiteName string `json:"site_name"`
	CertPEM  []byte `json:"cert_pem"`
	KeyPEM   []byte `json:"key_pem"`
	CAPEM    []byte `json:"ca_pem"`
	// HubURLs are where every hub node takes sessions, as the hub last
	// said: dialled in turn after HubURL when it does not answer.
	HubURLs []string `json:"hub_urls,omitempty"`
}

// urls is where the site dials the hub, in order: the URL it joined at
// first, then the hub's other nodes.
func (m *Membership) urls() []string {
	out := []string{m.HubURL}
	for _, u := range m.HubURLs {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// Join enrols this site with the hub at hubURL (https://host:port) with
// an enrolment token made there. The hub's certificate must chain to the
// CA whose hash the token carries: nothing else is trusted on first
// contact. The site's key is made here and never leaves it.
func Join(ctx context.Context, hubURL, token string) (*Membership, error) {
	u, err := url.Parse(hubURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("the hub's address is https://HOST[:PORT], not %q", hubURL)
	}
	id, secret, want, err := parseToken(token)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cairn-site"}}, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, // checked below, against the token's CA hash
		VerifyConnection: func(cs tls.ConnectionState) error { return pinnedChain(cs, u.Hostname(), want) }}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}}
	body, _ := json.Marshal(EnrolRequest{TokenID: id, Secret: secret, CSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})})
	// Sent again, with the same key, when no answer came: the hub answers
	// the same enrolment the same, so a lost answer spends no token.
	var res *http.Response
	for try := 0; ; try++ {
		req, err := http.NewRequestWithContext(ctx, "POST", u.JoinPath("/fed/v1/enrol").String(), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		if res, err = client.Do(req); err == nil {
			break
		}
		if try == 2 || ctx.Err() != nil {
			return nil, fmt.Errorf("reach the hub: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(try+1) * time.Second):
		}
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(raw, &e) == nil && e.Message != "" {
			return nil, fmt.Errorf("the hub refused: %s", e.Message)
		}
		return nil, fmt.Errorf("the hub refused: %s", res.Status)
	}
	var out EnrolResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("the hub's answer: %w", err)
	}
	return &Membership{HubURL: hubURL, SiteID: out.SiteID, SiteName: out.SiteName, CertPEM: out.CertPEM,
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), CAPEM: out.CAPEM}, nil
}

// pinnedChain checks a hub's certificate on first contact: the chain it
// sent holds a CA whose SHA-256 is want, and the leaf chains to it for
// the host dialled.
func pinnedChain(cs tls.ConnectionState, host, want string) error {
	for _, c := range cs.PeerCertificates {
		if !c.IsCA || caHash(c) != want {
			continue
		}
		pool := x509.NewCertPool()
		pool.AddCert(c)
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host})
		return err
	}
	return errors.New("the hub's certificate is not from the CA the enrolment token names")
}

// tlsConfig is the site's side of its session with the hub node at
// hubURL: its client certificate, the hub checked against the pinned CA
// set.
func (m *Membership) tlsConfig(hubURL string) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(m.CertPEM, m.KeyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(m.CAPEM) {
		return nil, errors.New("the membership holds no hub CA")
	}
	u, err := url.Parse(hubURL)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ServerName: u.Hostname(), NextProtos: []string{ALPN}}, nil
}

// dialTimeout bounds a session's TCP connect and TLS handshake.
const dialTimeout = 15 * time.Second

// dialSession dials the hub, trying each of its nodes in turn, and opens
// a session over the first connection made.
func dialSession(ctx context.Context, m *Membership, log *slog.Logger) (*yamux.Session, error) {
	if m == nil {
		return nil, errors.New("this site is not a member of a hub")
	}
	var errs []error
	for _, hubURL := range m.urls() {
		sess, err := dialNode(ctx, m, hubURL, log)
		if err == nil {
			return sess, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// dialNode dials one hub node.
func dialNode(ctx context.Context, m *Membership, hubURL string, log *slog.Logger) (*yamux.Session, error) {
	cfg, err := m.tlsConfig(hubURL)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(hubURL)
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("dial the hub at %s: %w", hubURL, err)
	}
	if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != ALPN {
		conn.Close()
		return nil, fmt.Errorf("the hub at %s does not speak %s (it chose %q)", hubURL, ALPN, p)
	}
	sess, err := yamux.Server(conn, yamuxConfig(log))
	if err != nil {
		conn.Close()
		return nil, err
	}
	return sess, nil
}

// Connect runs one session with the hub: it dials out (the site needs no
// inbound port), says hello (and takes the hub's CA set from the answer,
// and the hub's node URLs, through changed calling onHello when either
// changed), and serves handler to the hub on the
// streams the hub opens, until the session ends or ctx does. up, if set,
// is called once the hub has answered the hello, with a context that ends
// with the session and a way to make requests of the hub on it.
func Connect(ctx context.Context, m *Membership, handler http.Handler, onHello func(Hello), log *slog.Logger, up func(context.Context, HubCaller)) error {
	sess, err := dialSession(ctx, m, log)
	if err != nil {
		return err
	}
	defer sess.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	var hello Hello
	if err := call(ctx, sess, "GET", "/fed/v1/hello", nil, &hello); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(hello.CAPEM) {
		return errors.New("hello: the hub's CA set is not valid PEM")
	}
	for _, u := range hello.HubURLs {
		if p, err := url.Parse(u); err != nil || p.Scheme != "https" || p.Host == "" {
			return fmt.Errorf("hello: the hub names a node at %q", u)
		}
	}
	if onHello != nil && (!bytes.Equal(hello.CAPEM, m.CAPEM) || (len(hello.HubURLs) > 0 && !slices.Equal(hello.HubURLs, m.HubURLs))) {
		onHello(hello)
	}
	if up != nil {
		up(ctx, func(ctx context.Context, method, path string, in, out any) error {
			return call(ctx, sess, method, path, in, out)
		})
	}
	log.Info("connected to the hub", "hub", m.HubURL, "site", m.SiteName)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	err = srv.Serve(sess)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("the session ended: %w", err)
}

// tellLeave tells the hub this site leaves (it then shows it as left).
func tellLeave(ctx context.Context, m *Membership) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sess, err := dialSession(ctx, m, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer sess.Close()
	return call(ctx, sess, "POST", "/fed/v1/leave", nil, nil)
}

// HubCaller makes one request of the hub on a site's session: in, if set,
// is sent as JSON; out, if set, takes the JSON answer.
type HubCaller func(ctx context.Context, method, path string, in, out any) error

// call makes one request of the hub on a stream of the session.
func call(ctx context.Context, sess *yamux.Session, method, path string, in, out any) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return sess.Open() }, DisableKeepAlives: true}}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://hub"+path, body)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var e errorBody
		if json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&e) == nil && e.Message != "" {
			return errors.New(e.Message)
		}
		return errors.New(res.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(out)
}

// Backoff between sessions: full jitter (a random wait up to a cap that
// doubles), so sites cut off together do not come back together.
const (
	backoffBase = time.Second
	backoffCap  = 30 * time.Second
	// stableAfter is how long a session must have lasted for the next
	// try to start from the base again.
	stableAfter = 30 * time.Second
)

// Run keeps a session with the hub until ctx ends, dialling again after
// each end with jittered backoff. m is read afresh for each session
// (a renewal or a new CA set takes effect at the next one).
func Run(ctx context.Context, m func() *Membership, handler http.Handler, onHello func(Hello), log *slog.Logger) {
	run(ctx, m, handler, onHello, log, nil, nil)
}

// RunWith is Run calling status when a session comes up (true) or ends
// (false, and why), and during while each session is up, with a way to
// make requests of the hub on it: a site that is not a Cairn cluster of
// its own (the federation benchmark's simulated sites) runs this.
func RunWith(ctx context.Context, m func() *Membership, handler http.Handler, log *slog.Logger, status func(bool, error), during func(context.Context, HubCaller)) {
	run(ctx, m, handler, nil, log, status, during)
}

// run is Run telling status whether a session is up, and why the last
// one ended, and running during (if set) while each session is up.
func run(ctx context.Context, m func() *Membership, handler http.Handler, onHello func(Hello), log *slog.Logger, status func(bool, error), during func(context.Context, HubCaller)) {
	if status == nil {
		status = func(bool, error) {}
	}
	ceiling := backoffBase
	for ctx.Err() == nil {
		began := time.Now()
		err := Connect(ctx, m(), handler, onHello, log, func(sctx context.Context, hub HubCaller) {
			status(true, nil)
			if during != nil {
				go during(sctx, hub)
			}
		})
		if ctx.Err() != nil {
			return
		}
		status(false, err)
		if time.Since(began) > stableAfter {
			ceiling = backoffBase
		}
		wait := time.Duration(mathrand.Int64N(int64(ceiling)) + 1)
		log.Warn("no session with the hub; trying again", "err", err, "in", wait.Round(time.Millisecond))
		ceiling = min(2*ceiling, backoffCap)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}
