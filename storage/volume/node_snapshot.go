package volume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/nbd"
)

// quiesceTimeout bounds freezing a guest's file systems for a snapshot.
const quiesceTimeout = 15 * time.Second

// snapshotRetry is how long a snapshot that could not be taken waits for
// the next try.
const snapshotRetry = 10 * time.Second

// takeSnapshot takes the snapshot the state asks of volume v, served here
// by s: the guest is quiesced if it can be, the volume's new replicas are
// made on the disks of its copies, and the writer swaps to them under a
// barrier that holds every write back until the replicated state says the
// old replicas are the snapshot's.
func (n *NodeServer) takeSnapshot(ctx context.Context, s *served, v *Volume) {
	snapID := v.Snapshotting
	err := n.snapshot(ctx, s, v)
	n.mu.Lock()
	s.snapping = false
	if err != nil {
		s.snapRetry = time.Now().Add(snapshotRetry)
		time.AfterFunc(snapshotRetry, n.wake)
	}
	n.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			n.log.Error("snapshot not taken; trying again", "volume", v.ID, "snapshot", snapID, "err", err)
		}
		return
	}
	n.wake()
}

func (n *NodeServer) snapshot(ctx context.Context, s *served, v *Volume) error {
	snapID := v.Snapshotting
	quiesced := false
	if a := v.Attachment; a != nil && a.VM != "" && n.cfg.Quiesce != nil {
		qctx, cancel := context.WithTimeout(ctx, quiesceTimeout)
		thaw, err := n.cfg.Quiesce(qctx, a.VM)
		cancel()
		if err != nil {
			n.log.Info("guest not quiesced; the snapshot is crash-consistent", "volume", v.ID, "vm", a.VM, "err", err)
		} else {
			quiesced = true
			defer thaw()
		}
	}
	size := max(v.SizeBytes, s.w.Size())
	var top []Replica
	for i, r := range v.Replicas {
		nr := Replica{ID: topID(v.ID, snapID, s.epoch, i), Node: r.Node, Disk: r.Disk, State: ReplicaInSync}
		if err := n.provisioner().Create(ctx, nr.Node, nr.Disk, nr.ID, size, true); err != nil {
			n.log.Warn("snapshot: a new replica of the volume could not be made; the repair adds one later", "volume", v.ID, "replica", nr.ID, "node", nr.Node, "err", err)
			continue
		}
		top = append(top, nr)
	}
	if len(top) == 0 {
		return errors.New("no node holding a copy could make the volume's new replicas")
	}
	start := time.Now()
	err := s.w.Snapshot(ctx, func(ctx context.Context) (*Swap, error) {
		cmd := &SnapshotTaken{Volume: v.ID, Snapshot: snapID, Node: n.c.Name(), Epoch: s.epoch, Top: top, Quiesced: quiesced, Size: s.w.Size()}
		if _, err := n.c.Apply(ctx, MsgSnapshotTaken, cmd, nil); err != nil {
			if code := consensus.ErrorCode(err); code != "" && code != consensus.CodeUnavailable {
				return nil, err // refused: nothing changed
			}
			// Not known to be taken, nor known not to be: a command that
			// timed out here may still be applied a moment later, so no
			// read can tell. The writer stops; the volume is opened again
			// under a new epoch, which refuses this command from then on,
			// and from the replicas the state names then.
			return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
		}
		var ms []Member
		for _, r := range top {
			ms = append(ms, Member{ID: r.ID, Node: r.Node, State: ReplicaInSync, Local: r.Node == n.c.Name()})
		}
		return &Swap{Members: ms, Base: s.chain.layer(snapID)}, nil
	})
	if err != nil {
		if !errors.Is(err, ErrOutcomeUnknown) {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			for _, r := range top {
				if rerr := n.provisioner().Remove(rctx, r.Node, r.ID); rerr != nil {
					n.log.Warn("snapshot: replica left to the sweeper", "replica", r.ID, "err", rerr)
				}
			}
			cancel()
		}
		return err
	}
	n.mu.Lock()
	s.replicas = replicaSet(&Volume{Replicas: top})
	n.mu.Unlock()
	n.log.Info("snapshot taken", "volume", v.ID, "snapshot", snapID, "quiesced", quiesced, "writes_held", time.Since(start).Round(time.Microsecond))
	return nil
}

// dialReader reaches a snapshot's replica for reads alone: this node's
// directly, another's over a reader's stream, which ends no writer's or
// other reader's stream.
func (n *NodeServer) dialReader(ctx context.Context, r Replica) (Target, error) {
	if r.Node == n.c.Name() {
		t, err := n.host.Local(r.ID)
		if err != nil {
			return nil, err
		}
		return readOnlyTarget{t}, nil
	}
	addr, ok := n.c.PeerAddr(r.Node)
	client := n.c.RPCClient()
	if !ok || client == nil {
		return nil, fmt.Errorf("node %s is not reachable", r.Node)
	}
	return DialReader(ctx, client, addr, r.ID)
}

// provisioner makes and removes replicas on any node.
func (n *NodeServer) provisioner() *ReplicaProvisioner {
	n.provOnce.Do(func() {
		n.prov = NewProvisioner(n.c.RPCClient, n.c.PeerAddr, n.c.Name(), n.host)
	})
	return n.prov
}

// chain reads the snapshots a served volume is layered on, keeping a
// connection to each replica it has read.
type chain struct {
	n      *NodeServer
	mu     sync.Mutex
	conns  map[string]Target
	closed bool
}

func newChain(n *NodeServer) *chain { return &chain{n: n, conns: map[string]Target{}} }

// layer is snapshot id as a Base.
func (c *chain) layer(id string) Base { return layer{c, id} }

func (c *chain) target(ctx context.Context, r Replica) (Target, error) {
	c.mu.Lock()
	t := c.conns[r.ID]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errors.New("the volume was closed")
	}
	if t != nil {
		return t, nil
	}
	t, err := c.n.dialReader(ctx, r)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		t.Close()
		return nil, errors.New("the volume was closed")
	}
	if old := c.conns[r.ID]; old != nil {
		t.Close()
		return old, nil
	}
	c.conns[r.ID] = t
	return t, nil
}

// forget drops a replica's connection after it failed.
func (c *chain) forget(id string, t Target) {
	c.mu.Lock()
	if c.conns[id] == t {
		delete(c.conns, id)
		go t.Close()
	}
	c.mu.Unlock()
}

// drop closes the connection to a replica no longer read.
func (c *chain) drop(id string) {
	c.mu.Lock()
	if t := c.conns[id]; t != nil {
		delete(c.conns, id)
		go t.Close()
	}
	c.mu.Unlock()
}

func (c *chain) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for id, t := range c.conns {
		t.Close()
		delete(c.conns, id)
	}
}

type layer struct {
	c  *chain
	id string
}

// ReadAt reads the snapshot's bytes: from one of its in-sync replicas (this
// node's first), and where that replica never wrote a block, from the
// snapshot it is layered on in turn. Past its end it reads zeroes (the
// volume was extended since).
func (l layer) ReadAt(ctx context.Context, p []byte, off int64) error {
	s := getVolume(l.c.n.c.Store().ReadTxn(), l.id)
	if s == nil {
		return fmt.Errorf("snapshot %s is gone: %w", l.id, nbd.EIO)
	}
	if off >= s.SizeBytes {
		clear(p)
		return nil
	}
	q := p[:min(int64(len(p)), s.SizeBytes-off)]
	clear(p[len(q):])
	blocks := int64(len(q)) / BlockSize
	have := NewPresence(blocks)
	if err := l.readOwn(ctx, s, q, off, have); err != nil {
		return err
	}
	if s.Parent == "" {
		return nil // blocks it never wrote are zeroes
	}
	below := layer{l.c, s.Parent}
	for i := int64(0); i < blocks; {
		if have.Has(i) {
			i++
			continue
		}
		j := i + 1
		for j < blocks && !have.Has(j) {
			j++
		}
		if err := below.ReadAt(ctx, q[i*BlockSize:j*BlockSize], off+i*BlockSize); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// readOwn reads q at off from one of snapshot s's in-sync replicas (this
// node's first), and which blocks it holds into have.
func (l layer) readOwn(ctx context.Context, s *Volume, q []byte, off int64, have Presence) error {
	self := l.c.n.c.Name()
	var order []Replica
	for _, r := range s.Replicas {
		if r.State != ReplicaInSync {
			continue
		}
		if r.Node == self {
			order = append([]Replica{r}, order...)
		} else {
			order = append(order, r)
		}
	}
	var lastErr error = fmt.Errorf("snapshot %s has no in-sync replica: %w", s.Name, nbd.EIO)
	read := false
	// Twice round: a connection that failed (its replica's node
	// restarted, a repair's writer ended the streams) is dialled anew.
	for pass := 0; pass < 2 && !read; pass++ {
		for _, r := range order {
			t, err := l.c.target(ctx, r)
			if err == nil {
				if err = t.ReadLayer(ctx, q, off, have); err == nil {
					read = true
					break
				}
				l.c.forget(r.ID, t)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lastErr = fmt.Errorf("snapshot %s, replica %s: %w", s.Name, r.ID, err)
		}
	}
	if !read {
		return lastErr
	}
	return nil
}

// mergeRetry is how long a merge that failed waits for the next try,
// doubled after each failure in a row up to 64 times; mergePace is its
// pause between extents, which leaves the disks and the range locks to
// the guest's I/O.
const (
	mergeRetry = 30 * time.Second
	mergePace  = 5 * time.Millisecond
)

// mergeable is the hidden snapshot volume v reads through to, if v alone
// does and it can be folded into v now.
func (n *NodeServer) mergeable(v *Volume) *Volume {
	if v.Kind != "" || v.Parent == "" {
		return nil
	}
	txn := n.c.Store().ReadTxn()
	h := getVolume(txn, v.Parent)
	if h == nil || !h.Hidden || h.Attachment != nil || referenced(txn, h.ID, v.ID) {
		return nil
	}
	return h
}

// merge folds hidden snapshot h into volume v, served here by s.
func (n *NodeServer) merge(ctx context.Context, s *served, v, h *Volume) {
	start := time.Now()
	err := s.w.Merge(ctx, ownLayer{s.chain, h.ID}, h.SizeBytes, h.Parent == "", mergePace, func(ctx context.Context) (Base, error) {
		cmd := &SnapshotMerged{Volume: v.ID, Snapshot: h.ID, Node: n.c.Name(), Epoch: s.epoch}
		if _, err := n.c.Apply(ctx, MsgSnapshotMerged, cmd, nil); err != nil {
			if code := consensus.ErrorCode(err); code != "" && code != consensus.CodeUnavailable {
				return nil, err // refused: nothing changed
			}
			return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
		}
		if h.Parent == "" {
			return nil, nil
		}
		return s.chain.layer(h.Parent), nil
	})
	n.mu.Lock()
	s.merging = false
	if err != nil {
		wait := mergeRetry << min(s.mergeFails, 6)
		s.mergeFails++
		s.mergeRetry = time.Now().Add(wait)
		time.AfterFunc(wait, n.wake)
	} else {
		s.mergeFails = 0
	}
	n.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("deleted snapshot not merged yet; trying again", "volume", v.ID, "snapshot", h.ID, "err", err)
		}
		if errors.Is(err, errDisagree) {
			// Opened again, under a new epoch, the writer reconciles its
			// replicas first.
			s.w.halt("the volume's replicas disagree; reopening it to reconcile them")
			n.wake()
		}
		return
	}
	// Its replicas are no record's now: the sweeper removes them.
	for _, r := range h.Replicas {
		s.chain.drop(r.ID)
	}
	n.log.Info("deleted snapshot merged into its volume", "volume", v.ID, "snapshot", h.ID, "took", time.Since(start).Round(time.Millisecond))
	n.wake()
}

// ownLayer reads one snapshot's own blocks (Layer), through a chain's
// connections.
type ownLayer struct {
	c  *chain
	id string
}

func (o ownLayer) ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error {
	s := getVolume(o.c.n.c.Store().ReadTxn(), o.id)
	if s == nil {
		return fmt.Errorf("snapshot %s is gone: %w", o.id, nbd.EIO)
	}
	if off+int64(len(p)) > s.SizeBytes {
		return fmt.Errorf("snapshot %s: %d+%d is past its %d bytes", s.Name, off, len(p), s.SizeBytes)
	}
	return layer{o.c, o.id}.readOwn(ctx, s, p, off, have)
}
