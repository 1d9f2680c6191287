package nbd

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI is a CA with a server and a client certificate, written as the
// x509 directory libnbd and QEMU read (ca-cert.pem, client-cert.pem,
// client-key.pem).
type testPKI struct {
	dir    string
	server tls.Certificate
	client tls.Certificate
	pool   *x509.CertPool
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nbd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{dir: t.TempDir(), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c, certPEM, keyPEM
	}
	p.server, _, _ = leaf(2, "localhost", x509.ExtKeyUsageServerAuth)
	var certPEM, keyPEM []byte
	p.client, certPEM, keyPEM = leaf(3, "nbd test client", x509.ExtKeyUsageClientAuth)
	for name, b := range map[string][]byte{
		"ca-cert.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"client-cert.pem": certPEM,
		"client-key.pem":  keyPEM,
	} {
		if err := os.WriteFile(filepath.Join(p.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *testPKI) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// TestTLSExport: with TLS configured, real clients with the cluster's
// certificates read and write; clients without TLS, or without a
// certificate the CA signed, get nothing.
func TestTLSExport(t *testing.T) {
	const size = 4 << 20
	pki := newPKI(t)
	exp, backing := newFileExport(t, "disk", size, false, nil)
	cfg := DefaultConfig()
	cfg.TLS = pki.serverConfig()
	ts := startServer(t, cfg, exp)
	_, port, _ := net.SplitHostPort(ts.tcp)
	tlsURI := fmt.Sprintf("nbds://localhost:%s/disk?tls-certificates=%s", port, pki.dir)

	out := run(t, "nbdinfo", "--json", tlsURI)
	var info struct {
		TLS     bool `json:"TLS"`
		Exports []struct {
			Size int64 `json:"export-size"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || !info.TLS || len(info.Exports) != 1 || info.Exports[0].Size != size {
		t.Fatalf("nbdinfo over TLS (%v):\n%s", err, out)
	}

	// nbdcopy both ways.
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	want := make([]byte, size)
	pattern(21)(want)
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "nbdcopy", "--connections=2", src, tlsURI)
	if sum(readFile(t, backing)) != sum(want) {
		t.Fatal("backing file differs after nbdcopy over TLS")
	}
	run(t, "nbdcopy", tlsURI, dst)
	if sum(readFile(t, dst)) != sum(want) {
		t.Fatal("nbdcopy over TLS read different bytes")
	}

	// QEMU with its x509 credentials object.
	obj := "tls-creds-x509,id=tls0,endpoint=client,dir=" + pki.dir
	opts := fmt.Sprintf("driver=nbd,server.type=inet,server.host=localhost,server.port=%s,export=disk,tls-creds=tls0", port)
	out = run(t, "qemu-io", "--object", obj, "--image-opts", "-c", "write -P 0x5a 1M 256k", "-c", "flush", "-c", "read -P 0x5a 1M 256k", opts)
	if strings.Contains(out, "failed") {
		t.Fatalf("qemu-io over TLS:\n%s", out)
	}
	copy(want[1<<20:], bytes.Repeat([]byte{0x5a}, 256<<10))
	if sum(readFile(t, backing)) != sum(want) {
		t.Fatal("backing file differs after qemu-io over TLS")
	}

	// Without TLS: refused before any detail of the export.
	out = runFail(t, "nbdinfo", "nbd://"+ts.tcp+"/disk")
	if !strings.Contains(strings.ToLower(out), "tls") {
		t.Errorf("plain nbdinfo against a TLS server:\n%s", out)
	}
	runFail(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 0 4k", "nbd://"+ts.tcp+"/disk")
	runFail(t, "nbdcopy", src, "nbd+unix:///disk?socket="+ts.sock)

	// A client certificate from another CA is refused by the handshake.
	other := newPKI(t)
	nc, err := net.Dial("tcp", ts.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &testClient{t: t, nc: nc}
	c.r = bufio.NewReader(nc)
	err = c.handshake("disk", &tls.Config{RootCAs: pki.pool, ServerName: "localhost", Certificates: []tls.Certificate{other.client}})
	if err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	// And the Go client with the right certificate works.
	ok := dialTest(t, "tcp", ts.tcp, "disk", &tls.Config{RootCAs: pki.pool, ServerName: "localhost", Certificates: []tls.Certificate{pki.client}})
	if errno, data := ok.do(request{typ: cmdRead, cookie: 1, offset: 1 << 20, length: 8}, nil); errno != 0 || !bytes.Equal(data, want[1<<20:1<<20+8]) {
		t.Fatalf("read over TLS: errno %d", errno)
	}
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("refused clients changed the export")
	}
}
