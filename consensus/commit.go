package consensus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

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
// nothing crosses the network. When entry i has not reached this follower
// yet (the leader committed with the other follower's ack), the hint waits
// for the log store to take it.
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
	hint   commitHint
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
	}
	h.mu.Unlock()
	h.poke()
}

// logged is called by the log store after it took entries up to index.
func (h *commitHinter) logged(index uint64) {
	for {
		cur := h.stored.Load()
		if index <= cur || h.stored.CompareAndSwap(cur, index) {
			break
		}
	}
	h.poke()
}

func (h *commitHinter) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// run delivers pending hints to r through inject until ctx ends.
func (h *commitHinter) run(ctx context.Context, n *Node, inject chan<- raft.RPC) {
	for {
		select {
		case <-h.wake:
		case <-ctx.Done():
			return
		}
		h.mu.Lock()
		c := h.hint
		h.mu.Unlock()
		r := n.Raft()
		if r == nil || c.index <= n.store.AppliedIndex() {
			continue
		}
		if r.State() != raft.Follower {
			continue
		}
		if _, lid := r.LeaderWithID(); lid != c.leader {
			continue
		}
		if h.stored.Load() < c.index {
			continue // the log store pokes us when the entry arrives
		}
		h.mu.Lock()
		if h.hint == c {
			h.hint = commitHint{} // one try: what fails is left to the leader
		}
		h.mu.Unlock()
		resp := make(chan raft.RPCResponse, 1)
		rpc := raft.RPC{
			Command: &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{
					ProtocolVersion: raft.ProtocolVersionMax,
					ID:              []byte(c.leader),
					Addr:            []byte(c.addr),
				},
				Term:              r.CurrentTerm(),
				PrevLogEntry:      c.index,
				PrevLogTerm:       c.term,
				LeaderCommitIndex: c.index,
			},
			RespChan: resp,
		}
		select {
		case inject <- rpc:
		case <-ctx.Done():
			return
		}
		select {
		case <-resp:
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

// hintTransport is the Raft transport with a second source of RPCs: the
// commit hints.
type hintTransport struct {
	*raft.NetworkTransport
	consumer chan raft.RPC
	inject   chan raft.RPC
}

func newHintTransport(t *raft.NetworkTransport) *hintTransport {
	return &hintTransport{NetworkTransport: t, consumer: make(chan raft.RPC), inject: make(chan raft.RPC)}
}

// Consumer implements raft.Transport: the network's RPCs and the hints.
func (t *hintTransport) Consumer() <-chan raft.RPC { return t.consumer }

// merge feeds the consumer until ctx ends.
func (t *hintTransport) merge(ctx context.Context) {
	in := t.NetworkTransport.Consumer()
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case rpc = <-t.inject:
		case <-ctx.Done():
			return
		}
		select {
		case t.consumer <- rpc:
		case <-ctx.Done():
			return
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
