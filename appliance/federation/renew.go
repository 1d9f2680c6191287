package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"golang.org/x/time/rate"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/leafca"
)

// Keeping a site's identity: its certificate is renewed over its session
// well before it expires (a third of its life left), with a new key; the
// hub allows the old and the new serial until the site connects with the
// new one, so a renewal cut short by a crash on either side locks no site
// out. An enrolment sent again after its answer was lost gets the same
// answer; enrolments are rate-limited per address.

// Renewal commands: hub 534-535, site 527.
const (
	MsgRenewSite       consensus.MessageType = 534
	MsgKeepSerial      consensus.MessageType = 535
	MsgRenewMembership consensus.MessageType = 527
)

type renewSiteCmd struct {
	SiteID    string `json:"site_id"`
	Serial    string `json:"serial"` // the one the renewal came with
	NewSerial string `json:"new_serial"`
}

// applyRenewSite allows the new serial beside the one the request came
// with and the newest before it (a renewal from a site node that had not
// yet seen the last one must not take that one away); older ones go.
func applyRenewSite(tx *consensus.Tx, c *renewSiteCmd) (any, error) {
	cur := consensus.First[Site](tx.Txn, tSites, "id", c.SiteID)
	if cur == nil || !cur.Active() || !slices.Contains(cur.Serials, c.Serial) {
		return nil, errRevoked
	}
	s := *cur
	keep := []string{c.Serial}
	if newest := cur.Serials[len(cur.Serials)-1]; newest != c.Serial {
		keep = append(keep, newest)
	}
	s.Serials, s.Version = append(keep, c.NewSerial), tx.Index
	return &s, tx.Insert(tSites, &s)
}

type keepSerialCmd struct {
	SiteID string `json:"site_id"`
	Serial string `json:"serial"`
}

// applyKeepSerial drops the serials older than the one the site now
// connects with.
func applyKeepSerial(tx *consensus.Tx, c *keepSerialCmd) (any, error) {
	cur := consensus.First[Site](tx.Txn, tSites, "id", c.SiteID)
	if cur == nil || !cur.Active() || !slices.Contains(cur.Serials, c.Serial) || len(cur.Serials) == 1 {
		return nil, nil
	}
	s := *cur
	s.Serials, s.Version = []string{c.Serial}, tx.Index
	return &s, tx.Insert(tSites, &s)
}

type renewMembershipCmd struct {
	SiteID  string `json:"site_id"`
	CertPEM []byte `json:"cert_pem"`
	KeyPEM  []byte `json:"key_pem"`
}

func applyRenewMembership(tx *consensus.Tx, c *renewMembershipCmd) (any, error) {
	cur := consensus.First[Membership](tx.Txn, tMembership, "id")
	if cur == nil || cur.SiteID != c.SiteID {
		return nil, nil // left meanwhile
	}
	m := *cur
	m.CertPEM, m.KeyPEM = c.CertPEM, c.KeyPEM
	return nil, tx.Insert(tMembership, &m)
}

func registerRenewal(reg *consensus.Registry) {
	consensus.HandleSince(reg, MsgRenewSite, "RenewSite", 8, applyRenewSite)
	consensus.HandleSince(reg, MsgKeepSerial, "KeepSiteSerial", 8, applyKeepSerial)
}

func registerSiteRenewal(reg *consensus.Registry) {
	consensus.HandleSince(reg, MsgRenewMembership, "RenewMembership", 8, applyRenewMembership)
}

// renewRequest carries the site's new key's certificate request.
type renewRequest struct {
	CSR []byte `json:"csr"`
}

// serveRenew signs a site's new key, on its session (so for the site the
// session's certificate names).
func (h *Hub) serveRenew(siteID, serial string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req renewRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "the renewal is not valid JSON"))
			return
		}
		block, _ := pem.Decode(req.CSR)
		if block == nil || block.Type != "CERTIFICATE REQUEST" {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "the enrolment carries no certificate request"))
			return
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil || csr.CheckSignature() != nil {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "the enrolment's certificate request is not valid"))
			return
		}
		ca, err := h.ca()
		if err != nil {
			writeError(w, err)
			return
		}
		certPEM, newSerial, err := ca.Sign(csr.PublicKey, leafca.Leaf{CN: "site:" + siteID, Client: true, TTL: time.Duration(h.certTTL.Load()), Backdate: time.Hour})
		if err != nil {
			writeError(w, err)
			return
		}
		if _, err := h.c.Apply(r.Context(), MsgRenewSite, renewSiteCmd{SiteID: siteID, Serial: serial, NewSerial: newSerial.Text(16)}, nil); err != nil {
			writeError(w, err)
			return
		}
		h.log.Info("site certificate renewed", "site", siteID)
		writeJSON(w, EnrolResponse{SiteID: siteID, CertPEM: certPEM, CAPEM: ca.PEM})
	}
}

// renewDue tells whether a certificate has a third of its life left or
// less.
func renewDue(certPEM []byte, now time.Time) bool {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	return c.NotAfter.Sub(now) < c.NotAfter.Sub(c.NotBefore)/3
}

// renew renews the site's certificate over the session when it is due,
// and records the new one for every node (the next session dials with
// it). A renewal the site does not record leaves the old certificate
// working: the hub allows both until the new one connects.
func (s *Member) renew(ctx context.Context, hub HubCaller) {
	for {
		if m := s.membership(); m != nil && renewDue(m.CertPEM, time.Now()) {
			if err := s.renewOnce(ctx, m, hub); err != nil && ctx.Err() == nil {
				s.log.Warn("renew the site's certificate", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.RenewCheck):
		}
	}
}

func (s *Member) renewOnce(ctx context.Context, m *Membership, hub HubCaller) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cairn-site"}}, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	var out EnrolResponse
	if err := hub(ctx, "POST", "/fed/v1/renew", renewRequest{CSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})}, &out); err != nil {
		return err
	}
	cmd := renewMembershipCmd{SiteID: m.SiteID, CertPEM: out.CertPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
	_, err = s.c.Apply(ctx, MsgRenewMembership, cmd, nil)
	if err == nil {
		s.log.Info("the site's certificate was renewed")
	}
	return err
}

// publicKeyHash names a public key.
func publicKeyHash(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:]), nil
}

// sameEnrolment answers an enrolment sent again with the same token and
// key, while the site is still enrolled with the certificate it got.
func (h *Hub) sameEnrolment(txn *memdb.Txn, t *Token, keyHash string) *EnrolResponse {
	if t.KeyHash == "" || t.KeyHash != keyHash || len(t.CertPEM) == 0 {
		return nil
	}
	block, _ := pem.Decode(t.CertPEM)
	if block == nil {
		return nil
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	site := consensus.First[Site](txn, tSites, "name", t.Site)
	if site == nil || !allowed(txn, site.ID, cert.SerialNumber.Text(16)) {
		return nil
	}
	ca, err := h.ca()
	if err != nil {
		return nil
	}
	return &EnrolResponse{SiteID: site.ID, SiteName: site.Name, CertPEM: t.CertPEM, CAPEM: ca.PEM}
}

// enrolLimiter bounds enrolments per client address: a token's secret is
// long, but nobody need try many.
type enrolLimiter struct {
	mu    sync.Mutex
	burst int // 0: no limit
	per   map[string]*rate.Limiter
}

// DefaultEnrolBurst is how many enrolments one address may make at once.
const DefaultEnrolBurst = 10

func newEnrolLimiter(burst int) *enrolLimiter {
	return &enrolLimiter{burst: burst, per: map[string]*rate.Limiter{}}
}

// SetEnrolBurst sets how many enrolments one address may make at once
// (then one more every 6 s); 0 takes away the limit.
func (h *Hub) SetEnrolBurst(n int) { h.enrols = newEnrolLimiter(n) }

// allow takes one enrolment from addr's budget: burst at once, one more
// every 6 s.
func (l *enrolLimiter) allow(addr string) bool {
	if l.burst <= 0 {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.per[host]
	if lim == nil {
		if len(l.per) >= 4096 {
			clear(l.per) // a flood of addresses forgets the others' budgets, never the bound
		}
		lim = rate.NewLimiter(rate.Every(6*time.Second), l.burst)
		l.per[host] = lim
	}
	return lim.Allow()
}
