package consensus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// clusterServerName is a SAN every node certificate carries, so a node can
// verify any peer's certificate against the CA without knowing its name first.
const clusterServerName = "cairn.cluster"

// ca is the cluster certificate authority.
type ca struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

func newCA(clusterName string) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Cairn cluster CA " + clusterName, Organization: []string{"Cairn"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return parseCA(pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER))
}

func parseCA(certPEM, keyPEM []byte) (*ca, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("parse CA: no PEM data")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	return &ca{cert: cert, key: key, certPEM: certPEM, keyPEM: keyPEM}, nil
}

// issue signs a certificate for a node: usable as TLS server and client, naming
// the node, the shared cluster name, localhost, the given IPs and any extra
// DNS names.
func (c *ca) issue(pub *ecdsa.PublicKey, nodeName string, ips []net.IP, extraDNS ...string) ([]byte, error) {
	for _, lo := range []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")} {
		if !slices.ContainsFunc(ips, lo.Equal) {
			ips = append(ips, lo)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: nodeName, Organization: []string{"Cairn"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     append([]string{nodeName, clusterServerName, "localhost"}, extraDNS...),
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", nodeName, err)
	}
	return pemBlock("CERTIFICATE", der), nil
}

func (c *ca) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newNodeKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pemBlock("EC PRIVATE KEY", der), nil
}

// identity is what a node keeps in its data dir once it belongs to a cluster.
type identity struct {
	ca      *ca
	cert    tls.Certificate
	certPEM []byte
	token   string
}

const (
	fileCACert   = "ca.crt"
	fileCAKey    = "ca.key"
	fileNodeCert = "node.crt"
	fileNodeKey  = "node.key"
	fileToken    = "join-token"
)

// saveIdentity writes the node's credentials atomically: a crash leaves either
// the old set or the new one, never a mix. ca.crt is written last on purpose:
// operators and tests read its presence as "this node belongs to a cluster".
func saveIdentity(dir string, caCert, caKey, nodeCert, nodeKey []byte, token string) error {
	files := []struct {
		name string
		data []byte
	}{
		{fileCAKey, caKey}, {fileNodeKey, nodeKey}, {fileNodeCert, nodeCert},
		{fileToken, []byte(token + "\n")}, {fileCACert, caCert},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("save identity: %w", err)
		}
	}
	return nil
}

// loadIdentity returns nil, nil when the node has not joined a cluster yet.
func loadIdentity(dir string) (*identity, error) {
	caCert, err := os.ReadFile(filepath.Join(dir, fileCACert))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	read := func(name string) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = os.ReadFile(filepath.Join(dir, name))
		return b
	}
	caKey, nodeCert, nodeKey, token := read(fileCAKey), read(fileNodeCert), read(fileNodeKey), read(fileToken)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	c, err := parseCA(caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	pair, err := tls.X509KeyPair(nodeCert, nodeKey)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	return &identity{ca: c, cert: pair, certPEM: nodeCert, token: trimNL(string(token))}, nil
}

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// writeFileAtomic writes via a synced temp file and a rename, then syncs the dir.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tlsConfigs builds the node's server and client TLS configurations. The server
// asks for but does not demand a client certificate, because the join endpoint
// serves nodes that have none yet; every other route checks for a verified one.
func (id *identity) serverTLS(protos []string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientCAs:    id.ca.pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   protos,
	}
}

func (id *identity) clientTLS(proto string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		RootCAs:      id.ca.pool(),
		ServerName:   clusterServerName,
		NextProtos:   []string{proto},
	}
}
