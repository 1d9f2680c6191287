package consensus

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
)

// ServerCertificate names what the node's own certificate names plus the
// extra DNS names, under the cluster CA, and nothing else.
func TestServerCertificateNamesExtraDNS(t *testing.T) {
	c, err := newCA("test")
	if err != nil {
		t.Fatal(err)
	}
	key, keyPEM, err := newNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.issue(&key.PublicKey, "node2", []net.IP{net.ParseIP("10.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{id: &identity{ca: c, cert: pair, certPEM: certPEM}}
	if _, err := (&Node{}).ServerCertificate("s3.example"); err == nil {
		t.Fatal("a node without a cluster issued a certificate")
	}
	cert, err := n.ServerCertificate("s3.example", "*.s3.example")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"node2", clusterServerName, "s3.example", "scans.s3.example", "10.0.0.2", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.pool()}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"a.b.s3.example", "node3", "10.0.0.3"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.pool()}); err == nil {
			t.Errorf("the certificate is valid for %s", name)
		}
	}
	if len(leaf.IPAddresses) != 3 { // 10.0.0.2, 127.0.0.1, ::1: not twice
		t.Errorf("IP addresses %v", leaf.IPAddresses)
	}
}
