package volume

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/nbd"
)

// NodeCluster is what the node side needs of the consensus node.
type NodeCluster interface {
	Cluster
	RPCClient() *http.Client
	PeerAddr(name string) (string, bool)
}

// NodeConfig configures a node's volume server.
type NodeConfig struct {
	// SocketDir holds one NBD unix socket per volume attached to this
	// node, VOLUME.sock.
	SocketDir string
	Writer    WriterConfig // CallTimeout, RetryInterval; the rest is filled in
	Log       *slog.Logger
}

// NodeServer opens, as their writer, the volumes attached to this node and
// serves each over NBD on a unix socket of its own, so QEMU (or an admin's
// tool, for a volume attached to the node's host) reaches it.
type NodeServer struct {
	c    NodeCluster
	host *Host
	cfg  NodeConfig
	log  *slog.Logger

	mu     sync.Mutex
	served map[string]*served
}

type served struct {
	w     *Writer
	srv   *nbd.Server
	ln    net.Listener
	epoch uint64
}

// NewNodeServer returns the node's volume server; Run serves.
func NewNodeServer(c NodeCluster, host *Host, cfg NodeConfig) *NodeServer {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &NodeServer{c: c, host: host, cfg: cfg, log: cfg.Log, served: map[string]*served{}}
}

// SocketPath is where an attached volume is served on this node.
func (n *NodeServer) SocketPath(volumeID string) string {
	return filepath.Join(n.cfg.SocketDir, volumeID+".sock")
}

// Run converges until ctx ends, then closes every served volume.
func (n *NodeServer) Run(ctx context.Context) {
	if err := os.MkdirAll(n.cfg.SocketDir, 0o700); err != nil {
		n.log.Error("create the volume socket directory", "err", err)
	}
	// Sockets an earlier run left (it may have crashed) serve nothing: the
	// volumes still attached here get theirs again when they are opened.
	if old, err := filepath.Glob(filepath.Join(n.cfg.SocketDir, "*.sock")); err == nil {
		for _, p := range old {
			_ = os.Remove(p)
		}
	}
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := n.c.Store().ReadTxn()
		want, ch := attachedHere(txn, n.c.Name())
		ws.Add(ch)
		n.converge(ctx, want)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = n.c.Store().Watch(wctx, ws)
		cancel()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, s := range n.served {
		n.close(id, s)
	}
}

func (n *NodeServer) converge(ctx context.Context, want map[string]*Volume) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, s := range n.served {
		// Detached, attached anew (even here: the old guest's writer must
		// not live on beside the new one's), or fenced: close it; a volume
		// still attached here is opened again with a new epoch.
		if v := want[id]; v == nil || v.Writer != n.c.Name() || v.Epoch != s.epoch || s.w.fenced.Load() {
			n.close(id, s)
		}
	}
	for id, v := range want {
		if n.served[id] != nil {
			continue
		}
		s, err := n.open(ctx, v)
		if err != nil {
			n.log.Error("open attached volume", "volume", id, "err", err)
			continue
		}
		n.served[id] = s
	}
}

func (n *NodeServer) close(id string, s *served) {
	delete(n.served, id)
	s.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	if err := s.w.Close(ctx); err != nil {
		n.log.Warn("close volume", "volume", id, "err", err)
	}
	_ = os.Remove(n.SocketPath(id))
}

// open takes the writer epoch for this node and serves the volume.
func (n *NodeServer) open(ctx context.Context, v *Volume) (*served, error) {
	var got Volume
	if _, err := n.c.Apply(ctx, MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: n.c.Name()}, &got); err != nil {
		return nil, fmt.Errorf("take the writer epoch: %w", err)
	}
	cfg := n.cfg.Writer
	cfg.VolumeID, cfg.Epoch, cfg.Size = got.ID, got.Epoch, got.SizeBytes
	cfg.MinInSync = min(2, len(got.Replicas))
	cfg.Control = control{n.c}
	cfg.Dial = n.dial
	cfg.Log = n.log
	for _, r := range got.Replicas {
		cfg.Members = append(cfg.Members, Member{ID: r.ID, Node: r.Node, State: r.State, Local: r.Node == n.c.Name()})
	}
	w, err := OpenWriter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	path := n.SocketPath(v.ID)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		w.Close(ctx)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	exp := &nbd.Export{Name: v.ID, Backend: w, MultiConn: true, MinBlockSize: BlockSize, PreferredBlockSize: 64 << 10}
	srv, err := nbd.NewServer(nbd.Config{
		Lookup: func(_ context.Context, name string) (*nbd.Export, error) {
			if name != "" && name != v.ID {
				return nil, nbd.ErrNoExport
			}
			return exp, nil
		},
		List:   func(context.Context) []string { return []string{v.ID} },
		Logger: n.log.With("volume", v.ID),
	})
	if err != nil {
		ln.Close()
		w.Close(ctx)
		return nil, err
	}
	go func() { _ = srv.Serve(ln) }()
	n.log.Info("serving volume", "volume", v.ID, "epoch", got.Epoch, "socket", path)
	return &served{w: w, srv: srv, ln: ln, epoch: got.Epoch}, nil
}

func (n *NodeServer) dial(ctx context.Context, m Member) (Target, error) {
	if m.Node == n.c.Name() {
		return n.host.Local(m.ID)
	}
	addr, ok := n.c.PeerAddr(m.Node)
	client := n.c.RPCClient()
	if !ok || client == nil {
		return nil, fmt.Errorf("node %s is not reachable", m.Node)
	}
	return Dial(ctx, client, addr, m.ID)
}

// Stats reports each served volume's writer statistics.
func (n *NodeServer) Stats() map[string]Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]Stats{}
	for id, s := range n.served {
		out[id] = s.w.Stats()
	}
	return out
}

// control records replica states through the replicated state.
type control struct{ c NodeCluster }

func (c control) SetReplicaState(ctx context.Context, volumeID string, epoch uint64, replicaID, state string) error {
	_, err := c.c.Apply(ctx, MsgSetReplicaState, &SetReplicaState{Volume: volumeID, Node: c.c.Name(), Epoch: epoch, Replica: replicaID, State: state}, nil)
	if err != nil && consensus.ErrorReason(err) == ReasonFenced {
		return fmt.Errorf("%w: %v", ErrFenced, err)
	}
	return err
}

// attachedHere lists the volumes attached to node, with a channel that
// fires when the volumes table changes.
func attachedHere(txn *memdb.Txn, node string) (map[string]*Volume, <-chan struct{}) {
	it, err := txn.Get(tVolumes, "id")
	if err != nil {
		panic(fmt.Sprintf("volume table: %v", err)) // the schema is ours
	}
	out := map[string]*Volume{}
	for o := it.Next(); o != nil; o = it.Next() {
		if v := o.(*Volume); v.Attachment != nil && v.Attachment.Node == node {
			out[v.ID] = v
		}
	}
	return out, it.WatchCh()
}

// ReplicaKnown tells whether the local state names a replica; the sweeper
// keeps those (the caller reads linearizably first).
func (n *NodeServer) ReplicaKnown(replicaID string) bool {
	it, err := n.c.Store().ReadTxn().Get(tVolumes, "id")
	if err != nil {
		return true
	}
	for o := it.Next(); o != nil; o = it.Next() {
		for _, r := range o.(*Volume).Replicas {
			if r.ID == replicaID {
				return true
			}
		}
	}
	return false
}
