package consensus

import (
	"github.com/hashicorp/go-memdb"
)

// Consensus' own commands. Numbers are never reused.
const (
	msgSetClusterSecrets MessageType = 1
)

// clusterSecrets is the cluster's identity, replicated so that any node can issue
// certificates to joiners and show the join token. One row, ID "cluster".
type clusterSecrets struct {
	ID        string `json:"id"`
	CACert    []byte `json:"ca_cert"` // PEM
	CAKey     []byte `json:"ca_key"`  // PEM
	JoinToken string `json:"join_token"`
}

const tableCluster = "cluster"

func registerClusterTables(r *Registry) {
	RegisterTable[clusterSecrets](r, &memdb.TableSchema{
		Name: tableCluster,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		},
	})
	Handle(r, msgSetClusterSecrets, "SetClusterSecrets", applySetClusterSecrets)
}

// applySetClusterSecrets records the CA and token once. Every node of a
// bootstrap carries the same CA, so a repeat with equal values is a no-op and a
// different CA is refused: a cluster never changes identity by accident.
func applySetClusterSecrets(tx *Tx, c *clusterSecrets) (any, error) {
	raw, err := tx.First(tableCluster, "id", "cluster")
	if err != nil {
		return nil, err
	}
	if raw != nil {
		cur := raw.(*clusterSecrets)
		if string(cur.CACert) != string(c.CACert) {
			return nil, Errorf(CodeConflict, "cluster CA is already set to a different certificate")
		}
		return nil, nil
	}
	row := *c
	row.ID = "cluster"
	return nil, tx.Insert(tableCluster, &row)
}

// secrets returns the replicated cluster secrets, or nil before they are set.
func (s *Store) secrets() *clusterSecrets {
	raw, err := s.txn().First(tableCluster, "id", "cluster")
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*clusterSecrets)
}
