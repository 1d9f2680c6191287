package consensus

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// A write forwarded to the leader is acknowledged once the leader applied it,
// and reads on the forwarding node then wait until it applied the write too
// (Store.ReadTxn). A follower applies an entry only when it learns that the
// entry is committed, and hashicorp/raft tells it so only with the next
// AppendEntries: one that carries new entries, or the one sent after
// CommitTimeout of quiet. At low load that left every read after a write on
// a follower waiting 5–10 ms.
//
// But the leader's answer to the forwarded batch already says that the entry
// at index i, of term t, is committed. So the follower hands its own Raft the
// AppendEntries the leader would send next: its current term and leader,
// no entries, previous entry (i, t), commit index i. Raft runs it through its
// ordinary checks: it is accepted only if the follower's log holds entry i
// of term t, and by Raft's log matching property it then holds exactly the
// leader's log up to i, which is committed. Nothing is written to disk and
// no other node is involved: the node sends the message to itself through
// Raft's own transport. When entry i has not reached this follower yet (the
// leader committed with the other follower's ack), the hint waits for the
// log store to take it.
//
// Only a committed index is ever claimed, and only to a follower that keeps
// its current term and leader; anything that does not match is dropped, and
// the leader's own AppendEntries deliver the commit soon after regardless.

// commitHint is what the leader's answer told us: entry index, of term, is
// committed, by leader.
type commitHint struct {
	index, term uint64
	leader      raft.ServerID
	addr        raft.ServerAddress
}

// commitHinter delivers commit hints to the local Raft.
type commitHinter struct {
	mu     sync.Mutex
	hint   commitHint    // the newest hint not yet delivered
	want   atomic.Uint64 // hint.index, for the log store's lock-free check
	stored atomic.Uint64 // last index the log store took
	wake   chan struct{}
}

func newCommitHinter() *commitHinter {
	return &commitHinter{wake: make(chan struct{}, 1)}
}

// offer records a hint newer than the one pending.
func (h *commitHinter) offer(c commitHint) {
	if c.index == 0 || c.term == 0 {
		return
	}
	h.mu.Lock()
	if c.index > h.hint.index {
		h.hint = c
		h.want.Store(c.index)
	}
	h.mu.Unlock()
	h.poke()
}

// logged is called by the log store after it took entries up to index.
func (h *commitHinter) logged(index uint64) {
	raise(&h.stored, index)
	if w := h.want.Load(); w != 0 && index >= w {
		h.poke()
	}
}

func (h *commitHinter) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// take returns the pending hint once the log store holds its entry, and
// forgets it: each hint is tried once, what fails is left to the leader.
func (h *commitHinter) take() (commitHint, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.hint
	if c.index == 0 || h.stored.Load() < c.index {
		return c, false // the log store pokes us when the entry arrives
	}
	h.hint = commitHint{}
	h.want.Store(0)
	return c, true
}

// run delivers hints until ctx ends. The AppendEntries goes to this node's
// own Raft through the ordinary transport (a loopback connection of the
// pool), so Raft handles it like any other.
func (h *commitHinter) run(ctx context.Context, n *Node) {
	for {
		select {
		case <-h.wake:
		case <-ctx.Done():
			return
		}
		c, ok := h.take()
		if !ok {
			continue
		}
		r, trans := n.Raft(), n.transport()
		if r == nil || trans == nil || c.index <= r.CommitIndex() || r.State() != raft.Follower {
			continue // the leader's own AppendEntries were faster, or things moved on
		}
		if _, lid := r.LeaderWithID(); lid != c.leader {
			continue
		}
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{
				ProtocolVersion: raft.ProtocolVersionMax,
				ID:              []byte(c.leader),
				Addr:            []byte(c.addr),
			},
			Term:              r.CurrentTerm(),
			PrevLogEntry:      c.index,
			PrevLogTerm:       c.term,
			LeaderCommitIndex: c.index,
		}
		var resp raft.AppendEntriesResponse
		if err := trans.AppendEntries(raft.ServerID(n.cfg.Name), raft.ServerAddress(n.RaftAddr()), req, &resp); err != nil {
			n.log.Debug("commit hint not delivered", "index", c.index, "err", err)
		}
	}
}

// hintedLogs is the log store that tells the hinter what it took.
type hintedLogs struct {
	*raft.LogCache
	h *commitHinter
}

func (l hintedLogs) StoreLog(log *raft.Log) error {
	if err := l.LogCache.StoreLog(log); err != nil {
		return err
	}
	l.h.logged(log.Index)
	return nil
}

func (l hintedLogs) StoreLogs(logs []*raft.Log) error {
	if err := l.LogCache.StoreLogs(logs); err != nil {
		return err
	}
	if len(logs) > 0 {
		l.h.logged(logs[len(logs)-1].Index)
	}
	return nil
}

// transport is Raft's transport, nil before Raft starts.
func (n *Node) transport() *raft.NetworkTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.trans
}
