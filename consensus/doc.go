// Package consensus is Cairn's replicated control plane: Raft (hashicorp/raft,
// its log in hashicorp/raft-wal or raft-boltdb/v2 on disk), gossip membership and LAN discovery
// (hashicorp/memberlist), the typed replicated state store (hashicorp/go-memdb),
// leader forwarding, leader-only controllers, the cluster CA and the join protocol.
//
// It knows no domain types. Domain packages (identity, storage, compute, network)
// register their tables and numbered command handlers in a Registry before the
// Node starts; see registry.go. Anything may import consensus; consensus imports
// nothing of Cairn's but its own subpackage tlsbatch (TLS with batched system
// calls, for the cluster RPC and the S3 port).
package consensus
