package consensus

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Phases of a node, advertised in gossip so peers know whom to ask for a
// certificate.
const (
	phaseJoining       = "joining"       // no credentials yet
	phaseBootstrapping = "bootstrapping" // holds a fresh CA, collecting the first voters
	phaseWaiting       = "waiting"       // has credentials, runs Raft, not yet in a configuration
	phaseMember        = "member"        // in the Raft configuration: may admit others
)

// Node is one member of the control plane.
type Node struct {
	cfg   Config
	log   *slog.Logger
	reg   *Registry
	store *Store

	// attachAnyway makes this node send attached commands whatever its
	// gate says (tests: a proposer whose view is ahead of the leader's).
	attachAnyway atomic.Bool

	mu             sync.Mutex
	phase          string
	id             *identity
	rpcClient      *http.Client
	listener       *clusterListener
	rpcServer      *http.Server
	boot           *bootstrapState
	pairing        bool                 // started with no cluster key: may ask a formed cluster to pair
	pairCandidates map[string]time.Time // hosts whose beacons we heard, for pairing
	pairedSeed     string               // gossip address of the node that paired us
	// The key this node asks a certificate for, kept across join attempts.
	joinPriv    *ecdsa.PrivateKey
	joinPrivPEM []byte
	// pendingLimit bounds the pending-node writes each source causes.
	pendingLimit *sourceLimit
	// certChecks remembers the leader's recent certificate checks.
	certChecks certChecker

	raft         atomic.Pointer[raft.Raft]
	raftDisk     *raftDisk
	raftLogs     raft.LogStore // the log store behind a cache of recent entries
	trans        *raft.NetworkTransport
	hinter       *commitHinter
	gossip       *memberlist.Memberlist
	gossipEvents *gossipEvents // our copy of the membership
	gossipKey    []byte
	keyring      *memberlist.Keyring
	events       chan struct{} // pokes the membership reconciler
	forwardCh    chan *forwardedCmd
	reads        *readBatch // this node's linearizable reads, wherever the leader is
	leaderReads  *readBatch // read indexes taken as leader, for this node and followers

	oldJoiners  map[string]int // nodes refused for their protocol, said once (leader.go)
	controllers []controller
	extraRPC    []rpcRoute
	leaderSince atomic.Int64 // unix nanos; 0 when not leader

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	joinedCh chan struct{} // closed once the node runs Raft

	shutdownOnce sync.Once
	shutdownErr  error

	failOnce sync.Once
	failed   chan error // receives the error that keeps this node from ever joining
}

// New builds a node. Nothing listens until Start.
func New(cfg Config, reg *Registry) (*Node, error) {
	if cfg.Name == "" || cfg.DataDir == "" {
		return nil, errors.New("new node: name and data dir are required")
	}
	if cfg.Expect < 1 {
		return nil, fmt.Errorf("new node: expect must be at least 1, got %d", cfg.Expect)
	}
	if cfg.AdvertiseAddr == "" {
		cfg.AdvertiseAddr = cfg.BindAddr
	}
	if ip := net.ParseIP(cfg.AdvertiseAddr); ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("new node: advertise address %q must be a concrete IP (set --bind)", cfg.AdvertiseAddr)
	}
	if _, err := logStoreOf(filepath.Join(cfg.DataDir, "raft"), cfg.LogStore); err != nil {
		return nil, fmt.Errorf("new node: %w", err)
	}
	if cfg.WALSegmentSize < minWALSegmentSize {
		return nil, fmt.Errorf("new node: raft-wal segment size must be at least %d bytes, got %d", minWALSegmentSize, cfg.WALSegmentSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	store, err := newStore(reg)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, reg: reg, store: store,
		events: make(chan struct{}, 1), oldJoiners: map[string]int{}, joinedCh: make(chan struct{}), failed: make(chan error, 1),
		forwardCh:    make(chan *forwardedCmd, forwardQueueSize),
		pendingLimit: newSourceLimit(pendingWritesPerMinute, time.Minute, 4096)}
	n.gossipEvents = newGossipEvents(n)
	n.leaderReads = &readBatch{fetch: func(context.Context) (uint64, error) { return n.leaderReadIndex() }}
	n.reads = &readBatch{fetch: n.fetchReadIndex}
	return n, nil
}

// Store is the node's local copy of the replicated state.
func (n *Node) Store() *Store { return n.store }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// RaftAddr is where peers reach this node's Raft and RPC.
func (n *Node) RaftAddr() string {
	return net.JoinHostPort(n.cfg.AdvertiseAddr, strconv.Itoa(n.cfg.RPCPort))
}

// JoinToken is the secret other nodes need to join this cluster.
func (n *Node) JoinToken() string { return n.clusterKey() }

// Joined is closed once the node holds cluster credentials and runs Raft.
func (n *Node) Joined() <-chan struct{} { return n.joinedCh }

// Failed delivers, once, an error that keeps this node from ever joining a
// cluster (its name is taken by another node): the caller should stop.
func (n *Node) Failed() <-chan error { return n.failed }

func (n *Node) fail(err error) {
	n.failOnce.Do(func() {
		n.log.Error("this node cannot join", "err", err)
		n.failed <- err
	})
}

// Start loads or creates the node's credentials, starts gossip and, when the
// node already belongs to a cluster, Raft. A new node joins in the background.
func (n *Node) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := os.MkdirAll(filepath.Join(n.cfg.DataDir, "raft"), 0o700); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if err := n.loadToken(); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	id, err := loadIdentity(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	boot, err := loadBootstrapState(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if boot != nil && n.hasRaftState() {
		// Raft was bootstrapped: the list of first voters served its
		// purpose, and kept it would make a box that lost its Raft state
		// bootstrap again.
		if err := os.Remove(filepath.Join(n.cfg.DataDir, fileBootstrap)); err != nil {
			return fmt.Errorf("start node: %w", err)
		}
		boot = nil
	}
	if id != nil && boot == nil && !n.hasRaftState() {
		// A node with a certificate was admitted, and may be a voter: with
		// an empty log it would vote as if it had never acknowledged
		// anything, and Raft's safety rests on a voter never forgetting.
		return fmt.Errorf("start node: %s holds its cluster certificate (%s) but its Raft state (%s) is missing: "+
			"restore %s from a backup, or keep this box off until the cluster removes %s (after its dead-server grace), "+
			"then empty %s and join it again as a new node with an enrolment token",
			n.cfg.Name, filepath.Join(n.cfg.DataDir, fileNodeCert), filepath.Join(n.cfg.DataDir, "raft"),
			filepath.Join(n.cfg.DataDir, "raft"), n.cfg.Name, n.cfg.DataDir)
	}
	n.phase = phaseJoining
	if err := n.startGossip(); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	switch {
	case id != nil && boot != nil && !n.hasRaftState():
		// We crashed while collecting the first voters: carry on.
		if err := n.becomeBootstrapper(id, boot); err != nil {
			return fmt.Errorf("start node: %w", err)
		}
	case id != nil:
		if err := n.startRaft(id, nil); err != nil {
			return fmt.Errorf("start node: %w", err)
		}
	}
	n.goRun(n.joinLoop)
	n.goRun(n.gossipJoinLoop)
	n.goRun(n.forwardLoop)
	if n.cfg.DiscoveryPort != 0 {
		if err := n.startDiscovery(); err != nil {
			return fmt.Errorf("start node: %w", err)
		}
	}
	return nil
}

func (n *Node) goRun(fn func(ctx context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn(n.ctx)
	}()
}

// loadToken settles the join token: the flag, else the one saved in the data
// dir, else a new one that this node shows so others can join it.
func (n *Node) loadToken() error {
	path := filepath.Join(n.cfg.DataDir, fileToken)
	saved, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	switch {
	case n.cfg.JoinToken != "":
	case len(saved) > 0:
		n.cfg.JoinToken = trimNL(string(saved))
		return nil
	default:
		b := make([]byte, 20)
		_, _ = rand.Read(b)
		n.cfg.JoinToken = "cairn-" + hex.EncodeToString(b)
		// The key itself goes to the console only (the agent prints it
		// there): logs are shipped to people who should not hold it.
		n.log.Info("generated a join token; the console shows it, start other nodes with --join-token to let them find this one")
		// Not saved: until this node forms or joins a cluster (and saves
		// its credentials with the key) it may yet be paired with another.
		n.pairing = true
		return nil
	}
	return writeFileAtomic(path, []byte(n.cfg.JoinToken+"\n"), 0o600)
}

func (n *Node) hasRaftState() bool {
	_, err := os.Stat(filepath.Join(n.cfg.DataDir, "raft", "raft.db"))
	return err == nil
}

// startListener serves the cluster port with the node's credentials.
func (n *Node) startListener(id *identity) error {
	ln, err := listenCluster(net.JoinHostPort(n.cfg.BindAddr, strconv.Itoa(n.cfg.RPCPort)),
		id.serverTLS([]string{alpnRaft, alpnRPC}), n.log)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: n.rpcHandler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	go func() { _ = srv.Serve(ln.rpc) }()
	n.mu.Lock()
	n.id, n.listener, n.rpcServer, n.rpcClient = id, ln, srv, newRPCClient(id)
	n.mu.Unlock()
	return nil
}

// startRaft opens the on-disk log and starts Raft. With a configuration and
// no existing state, it bootstraps a new cluster.
func (n *Node) startRaft(id *identity, bootstrap *raft.Configuration) error {
	if n.listener == nil {
		if err := n.startListener(id); err != nil {
			return err
		}
	}
	dir := filepath.Join(n.cfg.DataDir, "raft")
	hlog := newHCLogger(n.log.With("component", "raft"))
	disk, err := openRaftDisk(dir, n.cfg.LogStore, n.cfg.WALSegmentSize, hlog)
	if err != nil {
		return err
	}
	// Recent entries from memory: replication and the read index do not hit disk.
	cache, err := raft.NewLogCache(512, disk.logs)
	if err != nil {
		disk.Close()
		return err
	}
	hinter := newCommitHinter()
	logs := hintedLogs{LogCache: cache, h: hinter}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		disk.Close()
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", n.RaftAddr())
	if err != nil {
		disk.Close()
		return err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &raftStream{chanListener: n.listener.raft, advertise: adv, tls: id.clientTLS(alpnRaft), names: n.raftNamesAt},
		MaxPool: 5, Timeout: 5 * time.Second, Logger: hlog,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.Logger = hlog
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.BatchApplyCh = true
	notify := make(chan bool, 16)
	rc.NotifyCh = notify

	r, err := raft.NewRaft(rc, &fsm{store: n.store, log: n.log}, logs, disk.stable, snaps, trans)
	if err != nil {
		trans.Close()
		disk.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	if bootstrap != nil {
		berr := r.BootstrapCluster(*bootstrap).Error()
		if berr != nil && !errors.Is(berr, raft.ErrCantBootstrap) {
			r.Shutdown()
			disk.Close()
			return fmt.Errorf("bootstrap raft: %w", berr)
		}
		// The list of first voters is in the Raft state now (see Start).
		_ = os.Remove(filepath.Join(n.cfg.DataDir, fileBootstrap))
		n.log.Info("bootstrapped a new cluster", "voters", len(bootstrap.Servers))
		if berr == nil && len(bootstrap.Servers) == 1 {
			campaignNow(r)
		}
	}
	phase := phaseWaiting
	if f := r.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) > 0 {
		phase = phaseMember
	}
	n.mu.Lock()
	n.raftDisk, n.raftLogs, n.trans, n.hinter, n.phase = disk, logs, trans, hinter, phase
	n.mu.Unlock()
	n.raft.Store(r)
	n.goRun(func(ctx context.Context) { hinter.run(ctx, n) })
	n.updateGossipMeta()
	close(n.joinedCh)
	n.goRun(func(ctx context.Context) { n.monitorLeadership(ctx, notify) })
	n.log.Info("raft started", "addr", n.RaftAddr(), "log_store", disk.kind)
	return nil
}

// campaignNow makes a follower that has just bootstrapped itself as the only
// voter stand for election at once, rather than first waiting out a
// heartbeat timeout for a leader that cannot exist (a one-box site starts
// ~0.6 s sooner). hashicorp/raft re-checks its heartbeat at once when the
// timeout is lowered; the second reload restores it.
func campaignNow(r *raft.Raft) {
	cfg := r.ReloadableConfig()
	lower := cfg
	lower.HeartbeatTimeout -= time.Millisecond
	if r.ReloadConfig(lower) == nil {
		_ = r.ReloadConfig(cfg)
	}
}

// Raft returns the running Raft, or nil before the node has joined.
func (n *Node) Raft() *raft.Raft { return n.raft.Load() }

func (n *Node) identity() *identity {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.id
}

func (n *Node) rpc() *http.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rpcClient
}

// CACertPEM returns the cluster CA certificate, or nil before the node joined.
func (n *Node) CACertPEM() []byte {
	if id := n.identity(); id != nil {
		return id.ca.certPEM
	}
	return nil
}

// ServerTLS returns a TLS config for serving with the node's cluster
// certificate (the API uses it), or nil before the node joined.
func (n *Node) ServerTLS() *tls.Config {
	id := n.identity()
	if id == nil {
		return nil
	}
	return id.serverTLS(nil)
}

// ServerCertificate issues this node, in memory, a serving certificate that
// names what its own does plus dnsNames (an S3 domain and its wildcard, for
// instance, or an IP address), signed by the cluster CA: a client that trusts ca.crt accepts it
// for those names too. The node's own certificate is unchanged.
func (n *Node) ServerCertificate(dnsNames ...string) (tls.Certificate, error) {
	id := n.identity()
	if id == nil {
		return tls.Certificate{}, errors.New("this node has not joined a cluster yet")
	}
	leaf, err := x509.ParseCertificate(id.cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, err
	}
	key, keyPEM, err := newNodeKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	// Names that are IP addresses (the cluster's virtual address) go in
	// as such.
	ips, names := append([]net.IP(nil), leaf.IPAddresses...), []string{}
	for _, d := range dnsNames {
		if ip := net.ParseIP(d); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, d)
		}
	}
	certPEM, err := id.ca.issue(&key.PublicKey, leaf.Subject.CommonName, ips, names...)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// Shutdown leaves gossip, stops Raft and closes everything, in that order. It
// is safe to call more than once.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown() })
	return n.shutdownErr
}

func (n *Node) shutdown() error {
	if n.cancel != nil {
		n.cancel()
	}
	if g := n.gossip; g != nil {
		_ = g.Leave(time.Second)
		_ = g.Shutdown()
	}
	var errs []error
	if r := n.Raft(); r != nil {
		errs = append(errs, r.Shutdown().Error())
	}
	n.mu.Lock()
	if n.rpcServer != nil {
		errs = append(errs, n.rpcServer.Close())
	}
	if n.listener != nil {
		errs = append(errs, n.listener.Close())
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.raftDisk != nil {
		errs = append(errs, n.raftDisk.Close())
	}
	n.mu.Unlock()
	n.wg.Wait()
	return errors.Join(errs...)
}

// Apply replicates a command and decodes its result into out (may be nil). A
// follower forwards to the leader and returns once the leader applied it,
// without waiting for the commit to reach this node: reads here wait for
// that instead (Store.ReadTxn), so a read here afterwards still sees it.
func (n *Node) Apply(ctx context.Context, t MessageType, cmd any, out any) (uint64, error) {
	if err := n.Gate(t); err != nil {
		return 0, err
	}
	typ, payload, err := n.encode(t, cmd)
	if err != nil {
		return 0, fmt.Errorf("apply %s: %w", n.reg.CommandName(t), err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	var res json.RawMessage
	var idx uint64
	send := func() error {
		return n.withLeader(ctx, func(local bool, addr string) error {
			if local {
				res, idx, err = n.applyLocal(ctx, typ, payload)
				return err
			}
			res, idx, err = n.forward(ctx, addr, typ, payload)
			return err
		})
	}
	err = send()
	if typ&AttachedFlag != 0 && ErrorReason(err) == ReasonProtocol {
		// The leader does not see every server at protocol 9 where this
		// node did (a server just added, a leader behind on the log): the
		// command was not applied, and goes again in its plain form.
		typ = t
		if payload, err = Marshal(cmd); err != nil { // an Attached marshals to its plain form
			return 0, fmt.Errorf("apply %s: %w", n.reg.CommandName(t), err)
		}
		err = send()
	}
	if err != nil {
		if ErrorCode(err) != "" {
			return idx, err
		}
		// Anything else (raft's own errors, lost leadership, timeouts): the
		// cluster could not serve the request, and its outcome is unknown.
		return idx, Errorf(CodeUnavailable, "apply %s: %v", n.reg.CommandName(t), err)
	}
	n.store.ackWrite(idx)
	if out != nil && len(res) > 0 {
		if err := unmarshal(res, out); err != nil {
			return idx, fmt.Errorf("apply %s: decode result: %w", n.reg.CommandName(t), err)
		}
	}
	return idx, nil
}

// withLeader runs fn against the current leader, retrying while there is none
// or while the one we reached says it is not the leader (both mean the
// command was never accepted, so a retry cannot apply it twice).
func (n *Node) withLeader(ctx context.Context, fn func(local bool, addr string) error) error {
	for {
		r := n.Raft()
		var err error
		if r == nil {
			err = ErrNoLeader
		} else if addr, lid := r.LeaderWithID(); addr == "" {
			err = ErrNoLeader
		} else {
			err = fn(string(lid) == n.cfg.Name, string(addr))
			if err == nil || !retryable(err) {
				return err
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(err, ErrNoLeader) || ErrorCode(err) == codeNotLeader {
				return ErrNoLeader
			}
			// Still only retryable failures (the leader unreachable): the
			// cluster is unavailable, which callers report as such.
			return Errorf(CodeUnavailable, "no cluster leader reachable: %v (%v)", err, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func retryable(err error) bool {
	if errors.Is(err, ErrNoLeader) || errors.Is(err, raft.ErrNotLeader) || ErrorCode(err) == codeNotLeader {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (n *Node) applyLocal(ctx context.Context, t MessageType, payload []byte) (json.RawMessage, uint64, error) {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := n.Gate(t); err != nil { // again, with the leader's state
		return nil, 0, err
	}
	f := applyAsync(n.Raft(), t, payload, timeout)
	if err := waitApplied(f, ctx.Done()); err != nil {
		return nil, 0, err
	}
	return applyOutcome(f)
}

// waitApplied waits for a command handed to Raft, or for stop: Raft never
// answers a command still queued when it shuts down (hashicorp/raft gives
// such a future no shutdown channel), and a caller waiting on it would
// hold up the shutdown for good. Stopped first, the outcome is unknown.
func waitApplied(f raft.ApplyFuture, stop <-chan struct{}) error {
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return err
	case <-stop:
		return errApplyAbandoned
	}
}

// errApplyAbandoned: the caller stopped waiting for a command Raft had
// taken; it may still be applied.
var errApplyAbandoned = errors.New("stopped waiting for the command to be applied; it may still be")

// servers is the Raft configuration's servers, as this node knows them.
func (n *Node) servers() ([]raft.Server, error) {
	r := n.Raft()
	if r == nil {
		return nil, ErrNoLeader
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Configuration().Servers, nil
}

// applyAsync hands a command to Raft without waiting for it.
func applyAsync(r *raft.Raft, t MessageType, payload []byte, timeout time.Duration) raft.ApplyFuture {
	if r == nil {
		return failedFuture{ErrNoLeader}
	}
	if t&AttachedFlag != 0 {
		// From a follower, maybe: a body every node would stop at must
		// never reach the log.
		if _, _, err := splitAttached(payload); err != nil {
			return failedFuture{Errorf(CodeInvalid, "a command with bytes attached is malformed: %v", err)}
		}
	}
	data := make([]byte, 2+len(payload))
	data[0], data[1] = byte(t>>8), byte(t)
	copy(data[2:], payload)
	return r.Apply(data, timeout)
}

// applyOutcome waits for a command and returns its result, JSON-encoded.
func applyOutcome(f raft.ApplyFuture) (json.RawMessage, uint64, error) {
	if err := f.Error(); err != nil {
		return nil, 0, err
	}
	res, _ := f.Response().(*applyResult)
	if res == nil {
		return nil, f.Index(), nil
	}
	if res.Err != nil {
		return nil, f.Index(), res.Err
	}
	if res.Value == nil {
		return nil, f.Index(), nil
	}
	b, err := Marshal(res.Value)
	return b, f.Index(), err
}

// failedFuture is an ApplyFuture that failed before reaching Raft.
type failedFuture struct{ err error }

func (f failedFuture) Error() error  { return f.err }
func (f failedFuture) Index() uint64 { return 0 }
func (f failedFuture) Response() any { return nil }

// ConsistentRead waits until this node's store reflects every write the
// cluster acknowledged before the call (a Raft read index). Reads after it
// are linearizable.
func (n *Node) ConsistentRead(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	idx, err := n.reads.index(ctx)
	if err != nil {
		if ErrorCode(err) != "" {
			return err
		}
		return Errorf(CodeUnavailable, "consistent read: %v", err)
	}
	if err := n.store.WaitApplied(ctx, idx); err != nil {
		return Errorf(CodeUnavailable, "consistent read: %v", err)
	}
	return nil
}

// fetchReadIndex takes a read index from the leader, wherever it is: one
// round of n.reads.
func (n *Node) fetchReadIndex(ctx context.Context) (uint64, error) {
	var idx uint64
	err := n.withLeader(ctx, func(local bool, addr string) error {
		if local {
			var err error
			idx, err = n.leaderReads.index(ctx)
			return err
		}
		var resp readIndexResponse
		if err := n.callRPC(ctx, addr, rpcReadIndex, struct{}{}, &resp); err != nil {
			return err
		}
		idx = resp.Index
		if resp.Error != nil {
			return resp.Error
		}
		return nil
	})
	return idx, err
}

// leaderReadIndex returns an index that covers every acknowledged write, after
// confirming with a quorum that we are still the leader. It starts from the
// last log index (not the commit index), so a leader new in its term cannot
// miss entries its predecessor committed, and steps back to the last command:
// only commands reach the FSM, so only a command index can be waited for.
func (n *Node) leaderReadIndex() (uint64, error) {
	r := n.Raft()
	if r == nil {
		return 0, ErrNoLeader
	}
	last := r.LastIndex()
	if err := r.VerifyLeader().Error(); err != nil {
		return 0, err
	}
	var l raft.Log
	for i := last; i > 0 && last-i < 256; i-- {
		if err := n.raftLogs.GetLog(i, &l); err != nil {
			break // compacted into a snapshot
		}
		if l.Type == raft.LogCommand {
			return i, nil
		}
		if l.Index <= n.store.AppliedIndex() {
			return n.store.AppliedIndex(), nil
		}
	}
	// A long run of non-commands, or a compacted tail: let the FSM catch up
	// with everything before now and use what it applied.
	if err := r.Barrier(5 * time.Second).Error(); err != nil {
		return 0, err
	}
	return n.store.AppliedIndex(), nil
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
