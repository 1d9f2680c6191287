package volume

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	// Fill writes a volume's source into it, before the volume
	// serves anything: target is an NBD URL the volume is served on for
	// that alone. nil: such volumes are not opened here.
	Fill func(ctx context.Context, src Source, target string) error
	// Owner is the user a VM's QEMU runs as, once known: the socket of a
	// volume attached to the VM is that user's alone (the QEMU driver
	// hands it over when it starts the VM, too).
	Owner func(vmID string) (uid, gid int, ok bool)
	// Quiesce, when set, asks the guest of VM vmID to flush and freeze its
	// file systems (qemu-guest-agent's fsfreeze) before one of its volumes
	// is snapshotted; thaw undoes it and is called once the snapshot is
	// taken or abandoned. An error means the guest could not be frozen
	// (no agent, or it refused): the snapshot is then crash-consistent.
	Quiesce func(ctx context.Context, vmID string) (thaw func(), err error)
	// ScrubEvery is how often each volume served here is read whole from
	// every copy (0: never); ScrubPace the pause after each extent.
	ScrubEvery, ScrubPace time.Duration
	// ExportAddr is where exported volumes are served read-only over NBD
	// with TLS (host:port; the host an IP the server certificate names);
	// "": no export port.
	ExportAddr string
	Log        *slog.Logger
}

// NodeServer opens, as their writer, the volumes attached to this node and
// serves each over NBD on a unix socket of its own, so QEMU (or an admin's
// tool, for a volume attached to the node's host) reaches it.
type NodeServer struct {
	c    NodeCluster
	host *Host
	cfg  NodeConfig
	log  *slog.Logger

	mu      sync.Mutex
	served  map[string]*served
	standby map[string]*standby // coming here by live migration (node_incoming.go)
	opening map[string]bool
	retryAt map[string]time.Time // after a failed open
	opens   sync.WaitGroup
	kick    chan struct{}
	started time.Time

	provOnce sync.Once
	prov     *ReplicaProvisioner
}

type served struct {
	w        *Writer
	srv      *nbd.Server
	ln       net.Listener
	epoch    uint64
	replicas string // the replica IDs it writes to
	chain    *chain // reads the snapshots it is layered on
	// snapping: a snapshot is being taken (its writer swaps replicas, so
	// a replica set that changes under it is no reason to reopen);
	// snapRetry: not before then after one failed. Guarded by
	// NodeServer.mu.
	snapping  bool
	snapRetry time.Time
	// merging: the hidden snapshot it reads through to is being folded
	// in; mergeRetry: not before then after one failed.
	merging    bool
	mergeRetry time.Time
	mergeFails int
}

// replicaSet names a volume's replicas, to see when they change.
func replicaSet(v *Volume) string {
	ids := make([]string, len(v.Replicas))
	for i, r := range v.Replicas {
		ids[i] = r.ID
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// NewNodeServer returns the node's volume server; Run serves.
func NewNodeServer(c NodeCluster, host *Host, cfg NodeConfig) *NodeServer {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &NodeServer{c: c, host: host, cfg: cfg, log: cfg.Log, served: map[string]*served{}, standby: map[string]*standby{},
		opening: map[string]bool{}, retryAt: map[string]time.Time{}, kick: make(chan struct{}, 1), started: time.Now()}
}

// openRetry is how long a volume whose open failed waits for the next try.
const openRetry = 10 * time.Second

// SocketPath is where an attached volume is served on this node.
func (n *NodeServer) SocketPath(volumeID string) string {
	return filepath.Join(n.cfg.SocketDir, volumeID+".sock")
}

// Run converges until ctx ends, then closes every served volume.
func (n *NodeServer) Run(ctx context.Context) {
	// Searchable, not listable: a VM's QEMU, as the VM's user, connects
	// to its volumes' sockets, which are that user's alone.
	if err := os.MkdirAll(n.cfg.SocketDir, 0o711); err != nil || os.Chmod(n.cfg.SocketDir, 0o711) != nil {
		n.log.Error("create the volume socket directory", "err", err)
	}
	// Sockets an earlier run left (it may have crashed) serve nothing: the
	// volumes still attached here get theirs again when they are opened.
	if old, err := filepath.Glob(filepath.Join(n.cfg.SocketDir, "*.sock")); err == nil {
		hidden, _ := filepath.Glob(filepath.Join(n.cfg.SocketDir, ".*.sock"))
		old = append(old, hidden...)
		for _, p := range old {
			_ = os.Remove(p)
		}
	}
	go n.endStaleTransfers(ctx)
	if n.cfg.ScrubEvery > 0 {
		go n.scrubLoop(ctx)
	}
	if n.cfg.ExportAddr != "" {
		go n.serveExports(ctx)
	}
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := n.c.Store().ReadTxn()
		want, incoming, ch := attachedHere(txn, n.c.Name())
		ws.Add(ch)
		n.converge(ctx, want, incoming)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		go func() {
			select {
			case <-n.kick:
				cancel()
			case <-wctx.Done():
			}
		}()
		_ = n.c.Store().Watch(wctx, ws)
		cancel()
	}
	n.opens.Wait() // they end with ctx
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, s := range n.served {
		n.close(id, s)
	}
	for id, sb := range n.standby {
		n.closeStandby(id, sb)
	}
}

func (n *NodeServer) converge(ctx context.Context, want, incoming map[string]*Volume) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.convergeIncoming(want, incoming)
	for id, s := range n.served {
		// Detached, attached anew (even here: the old guest's writer must
		// not live on beside the new one's), or fenced: close it; a volume
		// still attached here is opened again with a new epoch.
		// A replica added or dropped (a repair) takes a new writer too.
		if v := want[id]; v == nil || v.Writer != n.c.Name() || v.Epoch != s.epoch || s.w.fenced.Load() || replicaSet(v) != s.replicas && !s.snapping {
			if cur := getVolume(n.c.Store().ReadTxn(), id); cur != nil && cur.Writer != "" && cur.Writer != n.c.Name() {
				// Handed over (a live migration's switchover): the new
				// writer holds the epoch, and the guest flushed before
				// it was paused. Closed without a flush of its own,
				// which would only wait to be refused.
				s.w.fenced.Store(true)
			}
			n.close(id, s)
		}
	}
	for id, v := range want {
		if s := n.served[id]; s != nil && v.Snapshotting != "" && !s.snapping && time.Now().After(s.snapRetry) && v.Epoch == s.epoch {
			s.snapping = true
			n.opens.Add(1)
			go func() {
				defer n.opens.Done()
				n.takeSnapshot(ctx, s, v)
			}()
		}
	}
	for id, v := range want {
		if s := n.served[id]; s != nil && !s.merging && !s.snapping && v.Snapshotting == "" && v.Epoch == s.epoch && time.Now().After(s.mergeRetry) {
			if h := n.mergeable(v); h != nil {
				s.merging = true
				n.opens.Add(1)
				go func() {
					defer n.opens.Done()
					n.merge(ctx, s, v, h)
				}()
			}
		}
	}
	for id, v := range want {
		if s := n.served[id]; s != nil && v.SizeBytes > s.w.Size() {
			// Extended online: the replicas grow, then new connections
			// (QEMU's block_resize opens one) see the new size.
			if err := s.w.Grow(ctx, v.SizeBytes); err != nil {
				n.log.Error("grow attached volume", "volume", id, "err", err)
			} else {
				n.log.Info("volume grown online", "volume", id, "size", v.SizeBytes)
			}
		}
		if n.served[id] != nil || n.opening[id] || time.Now().Before(n.retryAt[id]) {
			continue
		}
		// Opened apart: filling a volume from its image takes as long as
		// the copy, and must not hold up the other volumes here.
		n.opening[id] = true
		sb := n.standby[id] // handed over by a live migration
		delete(n.standby, id)
		n.opens.Add(1)
		go func() {
			defer n.opens.Done()
			s, err := n.open(ctx, v, sb)
			n.mu.Lock()
			defer n.mu.Unlock()
			delete(n.opening, id)
			if err != nil {
				if sb != nil {
					n.standby[id] = sb // its QEMU still holds it: the next try serves it
				}
				if ctx.Err() == nil {
					n.log.Error("open attached volume", "volume", id, "err", err)
				}
				n.retryAt[id] = time.Now().Add(openRetry)
				time.AfterFunc(openRetry, n.wake)
				return
			}
			delete(n.retryAt, id)
			n.served[id] = s
			n.wake() // detached or moved meanwhile: the next pass closes it
		}()
	}
}

func (n *NodeServer) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Backend is the writer a volume is served with here, for in-process
// reads and writes (downloads, an upload's tail).
func (n *NodeServer) Backend(volumeID string) (nbd.Backend, bool) {
	s := n.current(volumeID)
	if s == nil {
		return nil, false
	}
	return s.w, true
}

// Served is the path of the NBD socket a volume is served on here, and the
// size it is served with, once it is.
func (n *NodeServer) Served(volumeID string) (socket string, size int64, ok bool) {
	s := n.current(volumeID)
	if s == nil {
		return "", 0, false
	}
	return n.SocketPath(volumeID), s.w.Size(), true
}

// current is the volume's served writer if it is the one the replicated
// state says writes it now: not one about to be closed because the volume
// was detached, attached anew or fenced.
func (n *NodeServer) current(volumeID string) *served {
	n.mu.Lock()
	s := n.served[volumeID]
	n.mu.Unlock()
	if s == nil || s.w.fenced.Load() {
		return nil
	}
	if v := getVolume(n.c.Store().ReadTxn(), volumeID); v == nil || v.Writer != n.c.Name() || v.Epoch != s.epoch {
		return nil
	}
	return s
}

func (n *NodeServer) close(id string, s *served) {
	delete(n.served, id)
	defer s.chain.Close()
	s.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	if err := s.w.Close(ctx); err != nil {
		n.log.Warn("close volume", "volume", id, "err", err)
	}
	_ = os.Remove(n.SocketPath(id))
}

// open takes the writer epoch for this node and serves the volume. A
// volume handed over by a live migration (sb, its standby socket) comes
// with its epoch already this node's, and goes on being served on the
// socket its QEMU is connected to.
func (n *NodeServer) open(ctx context.Context, v *Volume, sb *standby) (*served, error) {
	var got Volume
	if cur := getVolume(n.c.Store().ReadTxn(), v.ID); sb != nil && cur != nil && cur.Writer == n.c.Name() {
		got = *cur
	} else if _, err := n.c.Apply(ctx, MsgAcquireWriter, &AcquireWriter{Volume: v.ID, Node: n.c.Name()}, &got); err != nil {
		return nil, fmt.Errorf("take the writer epoch: %w", err)
	}
	cfg := n.cfg.Writer
	cfg.VolumeID, cfg.Epoch, cfg.Size = got.ID, got.Epoch, got.SizeBytes
	cfg.MinInSync = min(2, len(got.Replicas))
	cfg.Control = control{n.c}
	cfg.Dial = n.dial
	cfg.Log = n.log
	ch := newChain(n)
	if got.Parent != "" {
		cfg.Base = ch.layer(got.Parent)
	}
	for _, r := range got.Replicas {
		cfg.Members = append(cfg.Members, Member{ID: r.ID, Node: r.Node, State: r.State, Local: r.Node == n.c.Name()})
	}
	w, err := OpenWriter(ctx, cfg)
	if err != nil {
		ch.Close()
		return nil, err
	}
	if got.Unfilled() {
		if err := n.fill(ctx, &got, w); err != nil {
			w.Close(context.WithoutCancel(ctx))
			ch.Close()
			return nil, err
		}
	}
	path := n.SocketPath(v.ID)
	if sb != nil {
		sb.gate.open(w)
		n.log.Info("serving volume handed over", "volume", v.ID, "epoch", got.Epoch)
		return &served{w: w, srv: sb.srv, ln: sb.ln, epoch: got.Epoch, replicas: replicaSet(&got), chain: ch}, nil
	}
	ln, srv, err := n.serve(v.ID, w, path)
	if err != nil {
		w.Close(ctx)
		ch.Close()
		return nil, err
	}
	if a := got.Attachment; a != nil && a.VM != "" && n.cfg.Owner != nil {
		if uid, gid, ok := n.cfg.Owner(a.VM); ok {
			if err := os.Lchown(path, uid, gid); err != nil {
				n.log.Warn("hand the volume socket to the VM's user", "volume", v.ID, "err", err)
			}
		}
	}
	go func() { _ = srv.Serve(ln) }()
	n.log.Info("serving volume", "volume", v.ID, "epoch", got.Epoch, "socket", path)
	return &served{w: w, srv: srv, ln: ln, epoch: got.Epoch, replicas: replicaSet(&got), chain: ch}, nil
}

// serve makes an NBD server of the volume's writer on a new unix socket
// (root's alone until it is handed over), not yet serving.
func (n *NodeServer) serve(id string, w *Writer, path string) (net.Listener, *nbd.Server, error) {
	return n.serveBackend(id, w, path)
}

func (n *NodeServer) serveBackend(id string, w nbd.Backend, path string) (net.Listener, *nbd.Server, error) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	exp := &nbd.Export{Name: id, Backend: w, MultiConn: true, MinBlockSize: BlockSize, PreferredBlockSize: 64 << 10}
	srv, err := nbd.NewServer(nbd.Config{
		Lookup: func(_ context.Context, name string) (*nbd.Export, error) {
			if name != "" && name != id {
				return nil, nbd.ErrNoExport
			}
			return exp, nil
		},
		List:   func(context.Context) []string { return []string{id} },
		Logger: n.log.With("volume", id),
	})
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return ln, srv, nil
}

// fill writes the volume's source image through its writer, on a socket of
// its own that nothing else uses, makes it durable and records it. A fill
// cut short is done again in full by the next writer: nothing reads the
// volume before it is recorded.
func (n *NodeServer) fill(ctx context.Context, v *Volume, w *Writer) error {
	if n.cfg.Fill == nil {
		return fmt.Errorf("volume %s is made from %s, which this node cannot write", v.ID, v.Source)
	}
	path := filepath.Join(n.cfg.SocketDir, ".fill-"+v.ID+".sock")
	ln, srv, err := n.serve(v.ID, w, path)
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(ln) }()
	start := time.Now()
	err = n.cfg.Fill(ctx, *v.Source, "nbd+unix:///"+v.ID+"?socket="+path)
	ln.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	_ = os.Remove(path)
	if err != nil {
		return fmt.Errorf("fill volume %s from %s: %w", v.ID, v.Source, err)
	}
	if err := w.Flush(ctx); err != nil {
		return fmt.Errorf("fill volume %s: flush: %w", v.ID, err)
	}
	if _, err := n.c.Apply(ctx, MsgSourceFilled, &SourceFilled{Volume: v.ID, Node: n.c.Name(), Epoch: v.Epoch}, nil); err != nil {
		return fmt.Errorf("fill volume %s: record it: %w", v.ID, err)
	}
	n.log.Info("volume filled", "volume", v.ID, "from", v.Source.String(), "took", time.Since(start).Round(time.Millisecond))
	return nil
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

// WriteCount is how many writes one writer of a volume has been asked
// for (Stats.Writes) and which writer that is: a count from another
// writer (the volume closed and opened again since) is another count.
type WriteCount struct {
	Writer *Writer
	N      int64
}

// Writes is the write count of this node's writer of the volume, while
// it is the volume's writer here.
func (n *NodeServer) Writes(volumeID string) (WriteCount, bool) {
	s := n.current(volumeID)
	if s == nil {
		return WriteCount{}, false
	}
	return WriteCount{Writer: s.w, N: s.w.Stats().Writes}, true
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

// attachedHere lists the volumes attached to node and those a live
// migration brings to it, with a channel that fires when the volumes
// table changes.
func attachedHere(txn *memdb.Txn, node string) (here, incoming map[string]*Volume, _ <-chan struct{}) {
	it, err := txn.Get(tVolumes, "id")
	if err != nil {
		panic(fmt.Sprintf("volume table: %v", err)) // the schema is ours
	}
	here, incoming = map[string]*Volume{}, map[string]*Volume{}
	for o := it.Next(); o != nil; o = it.Next() {
		v := o.(*Volume)
		switch {
		case v.Attachment == nil:
		case v.Attachment.Node == node:
			here[v.ID] = v
		case v.Attachment.Incoming == node:
			incoming[v.ID] = v
		}
	}
	return here, incoming, it.WatchCh()
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

// scrubLoop scrubs the volumes served here that are due, one at a time,
// and records each whole scrub.
func (n *NodeServer) scrubLoop(ctx context.Context) {
	tick := min(time.Minute, max(n.cfg.ScrubEvery/2, time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(tick):
		}
		n.mu.Lock()
		var due []*served
		var ids []string
		txn := n.c.Store().ReadTxn()
		for id, s := range n.served {
			if v := getVolume(txn, id); v != nil && v.Writer == n.c.Name() && v.Epoch == s.epoch && v.scrubDue(time.Now(), n.cfg.ScrubEvery) {
				due, ids = append(due, s), append(ids, id)
			}
		}
		n.mu.Unlock()
		for i, s := range due {
			start := time.Now()
			read, repaired, err := s.w.Scrub(ctx, n.cfg.ScrubPace)
			if err != nil {
				if ctx.Err() == nil {
					n.log.Warn("scrub a volume", "volume", ids[i], "err", err)
				}
				continue
			}
			if _, err := n.c.Apply(ctx, MsgVolumeScrubbed, &Scrubbed{Volume: ids[i], Node: n.c.Name(), Epoch: s.epoch, At: start.UTC()}, nil); err != nil {
				n.log.Warn("record a volume's scrub", "volume", ids[i], "err", err)
			}
			n.log.Info("volume scrubbed", "volume", ids[i], "bytes", read, "repaired", repaired, "took", time.Since(start).Round(time.Second))
		}
	}
}

// serveExports serves the volumes exported through this node, read-only,
// on the export port: TLS required (NBD STARTTLS), with a client
// certificate the export CA issued for the volume asked for.
func (n *NodeServer) serveExports(ctx context.Context) {
	host, _, err := net.SplitHostPort(n.cfg.ExportAddr)
	ip := net.ParseIP(host)
	if err != nil || ip == nil {
		n.log.Error("volume export port: want IP:PORT", "addr", n.cfg.ExportAddr)
		return
	}
	var tlsCfg *tls.Config
	for ctx.Err() == nil { // the export CA is made by the leader at start
		if tlsCfg, err = exportTLS(n.c.Store().ReadTxn(), ip); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	if tlsCfg == nil {
		return
	}
	ln, err := net.Listen("tcp", n.cfg.ExportAddr)
	if err != nil {
		n.log.Error("volume export port", "err", err)
		return
	}
	srv, err := nbd.NewServer(nbd.Config{
		TLS: tlsCfg,
		Lookup: func(ctx context.Context, name string) (*nbd.Export, error) {
			certs := nbd.PeerCertificates(ctx)
			if len(certs) == 0 || certs[0].Subject.CommonName != ExportCN(name) {
				return nil, nbd.ErrNoExport // granted for another volume, or none
			}
			v := getVolume(n.c.Store().ReadTxn(), name)
			s := n.current(name)
			if v == nil || v.Attachment == nil || !v.Attachment.Export || v.Attachment.Node != n.c.Name() || s == nil {
				return nil, nbd.ErrNoExport
			}
			// A grant from an earlier export of the volume ends with it.
			if certs[0].NotBefore.Before(v.Attachment.At.Add(-grantSlack)) {
				return nil, nbd.ErrNoExport
			}
			return &nbd.Export{Name: name, Backend: s.w, ReadOnly: true, MultiConn: true, MinBlockSize: BlockSize, PreferredBlockSize: 64 << 10}, nil
		},
		Logger: n.log.With("port", "export"),
	})
	if err != nil {
		ln.Close()
		n.log.Error("volume export port", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	n.log.Info("exporting volumes", "addr", n.cfg.ExportAddr)
	_ = srv.Serve(ln)
}

// endStaleTransfers detaches the volumes an earlier run of this node had
// borrowed for an upload or a download: no transfer of this run has begun
// yet, so any such attachment is left over (a crash mid-transfer).
func (n *NodeServer) endStaleTransfers(ctx context.Context) {
	for _, v := range All(n.c.Store().ReadTxn()) {
		if a := v.Attachment; a != nil && a.Transfer && a.Node == n.c.Name() && a.At.Before(n.started) {
			if _, err := n.c.Apply(ctx, MsgDetachVolume, detachVolumeCmd{ID: v.ID, Transfer: n.c.Name()}, nil); err != nil && ctx.Err() == nil {
				n.log.Warn("end a transfer an earlier run left", "volume", v.ID, "err", err)
			}
		}
	}
}
