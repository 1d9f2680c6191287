package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

func csrFor(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cairn-site"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func serialOf(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

// An enrolment sent again with the same token and key (its answer lost)
// gets the same answer and spends nothing more; another key with that
// token, or the same after a revocation, is refused. Enrolments from one
// address are rate-limited.
func TestSameEnrolmentAgain(t *testing.T) {
	e := startHub(t)
	ctx := context.Background()
	token, _, err := e.hub.CreateToken(ctx, e.admin, "ward-east", 0)
	if err != nil {
		t.Fatal(err)
	}
	id, secret, _, err := parseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	req := EnrolRequest{TokenID: id, Secret: secret, CSR: csrFor(t)}
	first, err := e.hub.Enrol(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.hub.Enrol(ctx, req)
	if err != nil || string(again.CertPEM) != string(first.CertPEM) || again.SiteID != first.SiteID {
		t.Fatalf("the same enrolment again: %v", err)
	}
	if s := e.hub.Sites(); len(s) != 1 || len(s[0].Serials) != 1 {
		t.Fatalf("sites after the same enrolment twice: %+v", s)
	}
	other := req
	other.CSR = csrFor(t)
	if _, err := e.hub.Enrol(ctx, other); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("the token with another key: %v", err)
	}
	wrong := req
	wrong.Secret += "x"
	if _, err := e.hub.Enrol(ctx, wrong); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("the same key with a wrong secret: %v", err)
	}
	// Two of one enrolment at once: the second to commit is told the
	// first was made, and answered with it.
	tok := consensus.First[Token](e.hub.c.Store().ReadTxn(), tTokens, "id", id)
	if _, err := e.hub.c.Apply(ctx, MsgEnrolSite, enrolSiteCmd{TokenID: id, Hash: hashSecret(secret), SiteID: first.SiteID, Serial: "ab", KeyHash: tok.KeyHash, At: time.Now()}, nil); err != errEnrolledMeanwhile && consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("the same enrolment committed twice: %v", err)
	}
	if s := e.hub.Sites(); len(s[0].Serials) != 1 || s[0].Serials[0] != serialOf(t, first.CertPEM) {
		t.Fatalf("the second commit changed the site: %+v", s[0])
	}
	if _, err := e.hub.Revoke(ctx, e.admin, "ward-east"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Enrol(ctx, req); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("the same enrolment after a revocation: %v", err)
	}

	l := newEnrolLimiter(DefaultEnrolBurst)
	n := 0
	for l.allow("192.0.2.7:4000") {
		n++
	}
	if n != 10 || !l.allow("192.0.2.8:4000") {
		t.Fatalf("%d enrolments at once from one address", n)
	}
}

// A site's certificate is renewed over its session when a third of its
// life is left, with a new key the site keeps for every node; the hub
// allows the old and the new until the site connects with the new one,
// then the new alone; the old stops working. A renewal the site never
// recorded locks nothing out.
func TestCertificateRenewal(t *testing.T) {
	e := startHub(t)
	e.hub.certTTL.Store(int64(time.Minute)) // due at once: an hour's backdating is most of its life
	site := joinSite(t, e, "ward-east")
	e.hub.certTTL.Store(int64(siteCertTTL))
	site.m.RenewCheck = 100 * time.Millisecond
	old := site.m.membership()
	site.run()
	testutil.WaitFor(t, 15*time.Second, "the certificate renewed", func() error {
		if m := site.m.membership(); string(m.CertPEM) == string(old.CertPEM) || string(m.KeyPEM) == string(old.KeyPEM) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	newSerial := serialOf(t, site.m.membership().CertPEM)
	// The changed membership starts a new session, with the new
	// certificate; then the old one goes.
	testutil.WaitFor(t, 30*time.Second, "the new certificate alone", func() error {
		if s := e.hub.Sites()[0]; !e.hub.Connected(old.SiteID) || !slices.Equal(s.Serials, []string{newSerial}) {
			return fmt.Errorf("connected %v, serials %v", e.hub.Connected(old.SiteID), s.Serials)
		}
		return nil
	})
	// A renewal the site did not record (it crashed before): the hub
	// allows the old and the new, and the old still connects.
	ctx := context.Background()
	if _, err := e.hub.c.Apply(ctx, MsgRenewSite, renewSiteCmd{SiteID: old.SiteID, Serial: newSerial, NewSerial: "feed"}, nil); err != nil {
		t.Fatal(err)
	}
	if s := e.hub.Sites()[0]; !slices.Equal(s.Serials, []string{newSerial, "feed"}) {
		t.Fatalf("after a renewal not recorded: %v", s.Serials)
	}
	// Another renewal with the older serial (a site node that had not
	// seen the last) keeps the newest beside its own.
	if _, err := e.hub.c.Apply(ctx, MsgRenewSite, renewSiteCmd{SiteID: old.SiteID, Serial: newSerial, NewSerial: "beef"}, nil); err != nil {
		t.Fatal(err)
	}
	if s := e.hub.Sites()[0]; !slices.Equal(s.Serials, []string{newSerial, "feed", "beef"}) {
		t.Fatalf("a renewal from an older serial: %v", s.Serials)
	}
	site.stop()
	testutil.WaitFor(t, 10*time.Second, "the session ended", func() error {
		if e.hub.Connected(old.SiteID) {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	site.run()
	testutil.WaitFor(t, 30*time.Second, "back with the certificate it kept", func() error {
		if !e.hub.Connected(old.SiteID) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err := Connect(context.Background(), old, site.api, nil, slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("a session with the old certificate: %v", err)
	}
}
