// Package leafca is a small certificate authority whose certificate and
// key live in the replicated state, for certificates handed to parties
// that must never hold a node's identity: backup tools reading an
// exported volume, QEMU processes migrating a VM. Any node can issue from
// it; what a certificate opens is decided by whoever checks its name.
package leafca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"time"
)

// CA is a parsed authority.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte // Cert, PEM-encoded
	key  *ecdsa.PrivateKey
}

// New makes a self-signed CA called cn, valid for 20 years: its
// certificate and key, PEM-encoded.
func New(cn string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: Serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"Cairn"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(20, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemOf("CERTIFICATE", der), pemOf("EC PRIVATE KEY", kder), nil
}

// Parse reads a CA made by New.
func Parse(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("no PEM data")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, PEM: certPEM, key: key}, nil
}

// Leaf is a certificate to issue.
type Leaf struct {
	CN     string
	IPs    []net.IP
	DNS    []string
	Client bool // for a TLS client; otherwise a server
	TTL    time.Duration
	// Backdate dates it before now, for clocks that differ.
	Backdate time.Duration
}

// Issue signs l with a new key: certificate and PKCS#8 key (what GnuTLS,
// and so QEMU and libnbd, reads), PEM-encoded.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	usage := x509.ExtKeyUsageServerAuth
	if l.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	subject := pkix.Name{CommonName: l.CN}
	tmpl := &x509.Certificate{SerialNumber: Serial(), Subject: subject,
		NotBefore: time.Now().Add(-l.Backdate), NotAfter: time.Now().Add(l.TTL),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: l.IPs, DNSNames: l.DNS}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemOf("CERTIFICATE", der), pemOf("PRIVATE KEY", kder), nil
}

// Sign certifies a key its holder made and keeps (a federated site's:
// the private half never leaves it), as Issue does; the certificate,
// PEM-encoded, and its serial number.
func (ca *CA) Sign(pub crypto.PublicKey, l Leaf) (certPEM []byte, serial *big.Int, err error) {
	usage := x509.ExtKeyUsageServerAuth
	if l.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	serial = Serial()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: l.CN},
		NotBefore: time.Now().Add(-l.Backdate), NotAfter: time.Now().Add(l.TTL),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: l.IPs, DNSNames: l.DNS}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, nil, err
	}
	return pemOf("CERTIFICATE", der), serial, nil
}

// Pool is a pool holding the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Serial is a random 127-bit serial number.
func Serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
