package volume

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/leafca"
)

// Export serves a detached volume read-only over NBD with TLS to backup
// tools (nbdcopy, qemu-img convert): Cairn's `rbd export`. The volume is
// attached to the exporting node's host (Attachment.Export) and served on
// the node's export port, to clients holding a certificate issued for that
// volume alone.
//
// Its certificates come from an export CA of its own, kept in the
// replicated state, not from the cluster CA: a certificate the cluster CA
// signed is a node's identity on the cluster port, and one handed to a
// backup host must not open that.

const tExportCA = "volume_export_ca"

// exportCA is the singleton export CA.
type exportCA struct {
	CertPEM []byte `json:"cert_pem"`
	KeyPEM  []byte `json:"key_pem"`
}

// ExportGrant is what a backup tool needs to read an exported volume.
type ExportGrant struct {
	Volume  *Volume   `json:"volume"`
	URI     string    `json:"uri"`     // nbds://NODE:PORT/VOLUME
	CACert  string    `json:"ca_cert"` // PEM: verifies the server
	Cert    string    `json:"client_cert"`
	Key     string    `json:"client_key"`
	Expires time.Time `json:"expires"`
}

// ExportCN names the one volume a client certificate may read.
func ExportCN(volumeID string) string { return "volume-export:" + volumeID }

// exportTTL bounds a grant: a backup that takes longer asks again.
const exportTTL = 24 * time.Hour

// A grant is dated grantBackdate before it is issued (clocks differ); one
// dated more than grantSlack before its export began is an earlier
// export's, and is refused.
const (
	grantBackdate = 5 * time.Minute
	grantSlack    = 10 * time.Minute
)

func registerExport(reg *consensus.Registry) {
	consensus.RegisterTable[exportCA](reg, &memdb.TableSchema{Name: tExportCA, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: consensus.Singleton{}},
	}})
	consensus.Handle(reg, MsgExportCA, "SetVolumeExportCA", applyExportCA)
}

// applyExportCA keeps the first export CA proposed; later ones are moot.
func applyExportCA(tx *consensus.Tx, c *exportCA) (any, error) {
	if consensus.First[exportCA](tx.Txn, tExportCA, "id") != nil {
		return nil, nil
	}
	if _, err := parseExportCA(c); err != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "export CA: %v", err)
	}
	return nil, tx.Insert(tExportCA, c)
}

// EnsureExportCA makes the cluster's export CA once (leader).
func EnsureExportCA(ctx context.Context, c Cluster) error {
	if consensus.First[exportCA](c.Store().ReadTxn(), tExportCA, "id") != nil {
		return nil
	}
	certPEM, keyPEM, err := leafca.New("Cairn volume export CA")
	if err != nil {
		return err
	}
	_, err = c.Apply(ctx, MsgExportCA, &exportCA{CertPEM: certPEM, KeyPEM: keyPEM}, nil)
	return err
}

func parseExportCA(c *exportCA) (*leafca.CA, error) { return leafca.Parse(c.CertPEM, c.KeyPEM) }

func loadExportCA(txn *memdb.Txn) (*leafca.CA, error) {
	c := consensus.First[exportCA](txn, tExportCA, "id")
	if c == nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "the export CA is not made yet; try again in a moment")
	}
	return parseExportCA(c)
}

// exportTLS is the export port's TLS: a server certificate for ip from the
// export CA, and client certificates from it required.
func exportTLS(txn *memdb.Txn, ip net.IP) (*tls.Config, error) {
	ca, err := loadExportCA(txn)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.Issue(leafca.Leaf{CN: "cairn volume export", IPs: []net.IP{ip}, TTL: 10 * 365 * 24 * time.Hour, Backdate: grantBackdate})
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS13}, nil
}

// Export attaches a detached volume or a snapshot (kind "" or
// KindSnapshot: ref names one of that kind) to this node's host for a
// read-only export and grants a client certificate for it, valid
// exportTTL.
func (s *Service) Export(ctx context.Context, p *identity.Principal, kind, ref string) (*ExportGrant, error) {
	const action = "volume.export"
	v, err := s.changeableKind(ctx, p, action, ref, kind)
	if err != nil {
		return nil, err
	}
	if s.exportAddr == "" {
		return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, consensus.Errorf(consensus.CodeUnavailable, "this node exports no volumes (its volume export port is off)"))
	}
	exported := v.Attachment != nil && v.Attachment.Export && v.Attachment.Node == s.c.Name()
	if !exported && !detachedOrRepairing(v) {
		return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID,
			consensus.Errorf(consensus.CodeConflict, "volume %s is %s: only a detached volume or a snapshot is exported (snapshot an attached one and export that)", v.Name, describe(v)))
	}
	ca, err := loadExportCA(s.c.Store().ReadTxn())
	if err != nil {
		return nil, err
	}
	out := v
	if !exported {
		var got Volume
		a := Attachment{Node: s.c.Name(), At: time.Now().UTC(), Export: true}
		if err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgAttachVolume, attachVolumeCmd{ID: v.ID, Attachment: a, IfMatch: v.Version}, &got); err != nil {
			return nil, err
		}
		out = &got
	}
	if s.local != nil {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		for {
			if _, _, ok := s.local.Served(v.ID); ok {
				break
			}
			select {
			case <-wctx.Done():
				return nil, fmt.Errorf("volume %s is exported but not served yet; ask again in a moment", v.Name)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	certPEM, keyPEM, err := ca.Issue(leafca.Leaf{CN: ExportCN(v.ID), Client: true, TTL: exportTTL, Backdate: grantBackdate})
	if err != nil {
		return nil, err
	}
	// Whoever holds it reads the whole volume: every grant is audited, and
	// one that cannot be is not handed out.
	if err := s.id.Record(ctx, p.User.ID, "volume.export.grant", v.Name, v.ProjectID,
		"a client certificate to read the volume, valid until %s", time.Now().Add(exportTTL).UTC().Format(time.RFC3339)); err != nil {
		return nil, err
	}
	return &ExportGrant{Volume: out, URI: fmt.Sprintf("nbds://%s/%s", s.exportAddr, v.ID), CACert: string(ca.PEM),
		Cert: string(certPEM), Key: string(keyPEM), Expires: time.Now().Add(exportTTL).UTC()}, nil
}

// Unexport ends a volume's export: it is detached again.
func (s *Service) Unexport(ctx context.Context, p *identity.Principal, kind, ref string) (*Volume, error) {
	const action = "volume.unexport"
	v, err := s.changeableKind(ctx, p, action, ref, kind)
	if err != nil {
		return nil, err
	}
	if a := v.Attachment; a == nil || !a.Export {
		return nil, s.id.Deny(ctx, p, action, v.Name, v.ProjectID, consensus.Errorf(consensus.CodeConflict, "volume %s is not exported", v.Name))
	}
	var out Volume
	if err := s.id.Mutate(ctx, p, action, v.Name, v.ProjectID, MsgDetachVolume, detachVolumeCmd{ID: v.ID, Export: v.Attachment.Node}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
