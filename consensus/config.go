package consensus

import (
	"log/slog"
	"os"
	"time"
)

// Config configures a Node. DefaultConfig is the only place defaults live.
type Config struct {
	Name          string // unique node name; the Raft server ID and gossip name
	DataDir       string // Raft log, snapshots and the node's credentials
	BindAddr      string // IP to listen on
	AdvertiseAddr string // IP peers reach us at; defaults to BindAddr
	RPCPort       int    // Raft and cluster RPC, multiplexed over mutual TLS
	GossipPort    int    // memberlist, TCP and UDP, encrypted with the gossip key
	DiscoveryPort int    // UDP LAN discovery beacon; 0 disables discovery

	Expect    int      // voters to wait for before bootstrapping a new cluster
	Join      []string // gossip seed addresses, host or host:port
	JoinToken string   // cluster key: gossip and discovery; admits only the first voters; generated when empty
	// EnrolToken is a one-time enrolment token (cairn node enrol-token
	// create) that admits this node to a formed cluster; without one, the
	// node waits as pending until an admin approves it.
	EnrolToken string

	// Tags travel in gossip metadata; the appliance puts its API address here.
	Tags map[string]string

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	LogStore           string // Raft log store of a new node: LogStoreWAL or LogStoreBoltDB; "" is LogStoreWAL
	WALSegmentSize     int    // bytes per raft-wal segment file; compaction frees whole segments

	MaxVoters       int           // voters beyond this join as non-voters
	DeadServerGrace time.Duration // a voter gone this long is removed
	BootstrapSettle time.Duration // the peer set must be stable this long before bootstrapping

	Logger *slog.Logger

	protocol int // the protocol this node says it speaks; 0: Protocol (tests pretend older nodes)
}

// DefaultConfig returns timings tuned for nodes on one LAN switch: a dead
// leader is replaced within about a second (pre-vote keeps a flapping node from
// disrupting a healthy leader).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:               host,
		BindAddr:           "0.0.0.0",
		RPCPort:            8444,
		GossipPort:         8445,
		DiscoveryPort:      8446,
		Expect:             1,
		HeartbeatTimeout:   400 * time.Millisecond,
		ElectionTimeout:    400 * time.Millisecond,
		LeaderLeaseTimeout: 200 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   30 * time.Second,
		TrailingLogs:       10240,
		WALSegmentSize:     64 << 20,
		MaxVoters:          5,
		DeadServerGrace:    5 * time.Minute,
		BootstrapSettle:    time.Second,
		Logger:             slog.Default(),
	}
}
