package consensus

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Store is the replicated state: typed tables in go-memdb. Only the FSM writes
// to it; everyone else reads through Read or ReadTxn and waits with Watch.
type Store struct {
	reg *Registry

	mu        sync.RWMutex // guards db and abandonCh; written only by a restore
	db        *memdb.MemDB
	abandonCh chan struct{}

	appliedMu sync.Mutex    // guards appliedCh and changes of applied
	applied   atomic.Uint64 // read without the lock: every read checks it
	appliedCh chan struct{} // closed and replaced whenever applied grows

	// acked is the highest index of a write this node acknowledged to a
	// caller. A write forwarded to the leader is acknowledged as soon as the
	// leader applied it; reads here wait until this store has caught up, so
	// whoever wrote through this node reads its write here next.
	acked atomic.Uint64
}

// readYourWritesWait bounds how long a read waits for this node to apply the
// writes it acknowledged. Past it (a node cut off from the leader right after
// a write) the read goes ahead on the state it has, as local reads may.
const readYourWritesWait = 2 * time.Second

// Tx is a write transaction inside the FSM. Index is the Raft log index of the
// command being applied: handlers use it as the version of what they write.
type Tx struct {
	*memdb.Txn
	Index    uint64
	reg      *Registry
	attached []byte // attach.go
}

// Dispatch runs another registered command inside this transaction, so a
// wrapper command (an audited envelope, say) commits or fails with it.
func (tx *Tx) Dispatch(t MessageType, payload []byte) (any, error) {
	h, ok := tx.reg.handlers[t.base()]
	if !ok {
		return nil, Errorf(CodeInvalid, "unknown command type %d", t)
	}
	return h.fn(tx, payload)
}

func newStore(reg *Registry) (*Store, error) {
	db, err := memdb.NewMemDB(reg.schema())
	if err != nil {
		return nil, fmt.Errorf("new state store: %w", err)
	}
	return &Store{reg: reg, db: db, abandonCh: make(chan struct{}), appliedCh: make(chan struct{})}, nil
}

// ReadTxn returns a read-only snapshot transaction. It is cheap (go-memdb is an
// immutable radix tree) and consistent for as long as the caller holds it. It
// includes every write this node has acknowledged.
func (s *Store) ReadTxn() *memdb.Txn {
	if idx := s.acked.Load(); s.AppliedIndex() < idx {
		ctx, cancel := context.WithTimeout(context.Background(), readYourWritesWait)
		if err := s.WaitApplied(ctx, idx); err != nil {
			// Cut off from the leader: read what we have, and do not make
			// every later read wait for the same index again.
			s.acked.CompareAndSwap(idx, s.AppliedIndex())
		}
		cancel()
	}
	return s.txn()
}

// txn is ReadTxn without the wait, for the FSM's own goroutine (which is what
// the wait is waiting for) and for state no write of ours is awaited on.
func (s *Store) txn() *memdb.Txn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Txn(false)
}

// ackWrite records that this node acknowledged the write at idx.
func (s *Store) ackWrite(idx uint64) { raise(&s.acked, idx) }

// raise sets a to v if v is larger.
func raise(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// Read runs fn against a consistent read-only snapshot.
func (s *Store) Read(fn func(tx *memdb.Txn) error) error {
	return fn(s.ReadTxn())
}

// AbandonCh is closed when a snapshot restore replaces the whole state; watchers
// must re-read.
func (s *Store) AbandonCh() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.abandonCh
}

// Watch blocks until one of ws's channels fires, the state is replaced, or ctx
// ends. It returns ctx.Err() only when ctx ended.
func (s *Store) Watch(ctx context.Context, ws memdb.WatchSet) error {
	ws.Add(s.AbandonCh())
	return ws.WatchCtx(ctx)
}

// AppliedIndex is the Raft index of the last command applied to this store.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// WaitApplied blocks until the store has applied index idx or ctx ends.
func (s *Store) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		s.appliedMu.Lock()
		applied, ch := s.applied.Load(), s.appliedCh
		s.appliedMu.Unlock()
		if applied >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", idx, applied, ctx.Err())
		}
	}
}

func (s *Store) setApplied(idx uint64) {
	s.appliedMu.Lock()
	if idx > s.applied.Load() {
		s.applied.Store(idx)
		close(s.appliedCh)
		s.appliedCh = make(chan struct{})
	}
	s.appliedMu.Unlock()
}

// writeTxn starts the FSM's write transaction on the current database.
func (s *Store) writeTxn() *memdb.Txn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Txn(true)
}

// snapshotHeader starts every snapshot so restores can refuse foreign streams.
const snapshotHeader = "cairn-state-v1"

type snapHeader struct {
	Format string `json:"format"`
	Index  uint64 `json:"index"`
}

type snapRecord struct {
	Table string          `json:"t"`
	Row   json.RawMessage `json:"r"`
}

// persist streams every row of every table, in table-name and id order, as one
// JSON record per line: a typed record stream, like Nomad's snapshots.
func (s *Store) persist(txn *memdb.Txn, index uint64, w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(snapHeader{Format: snapshotHeader, Index: index}); err != nil {
		return err
	}
	for _, table := range s.reg.tableNames() {
		it, err := txn.Get(table, "id")
		if err != nil {
			return fmt.Errorf("snapshot table %s: %w", table, err)
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			row, err := json.Marshal(obj)
			if err != nil {
				return fmt.Errorf("snapshot table %s: %w", table, err)
			}
			if err := enc.Encode(snapRecord{Table: table, Row: row}); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}

// restore builds a fresh database from a snapshot stream and swaps it in
// atomically; readers holding the old one keep a consistent view.
func (s *Store) restore(r io.Reader) error {
	db, err := memdb.NewMemDB(s.reg.schema())
	if err != nil {
		return err
	}
	txn := db.Txn(true)
	dec := json.NewDecoder(bufio.NewReader(r))
	var header snapHeader
	if err := dec.Decode(&header); err != nil || header.Format != snapshotHeader {
		return fmt.Errorf("restore snapshot: not a cairn state snapshot (%q, %v)", header.Format, err)
	}
	for {
		var rec snapRecord
		if err := dec.Decode(&rec); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("restore snapshot: %w", err)
		}
		t, ok := s.reg.tables[rec.Table]
		if !ok {
			// A table from a newer version: skipping it keeps this node working
			// until it is upgraded too.
			continue
		}
		obj := t.newFn()
		if err := json.Unmarshal(rec.Row, obj); err != nil {
			return fmt.Errorf("restore snapshot table %s: %w", rec.Table, err)
		}
		if err := txn.Insert(rec.Table, obj); err != nil {
			return fmt.Errorf("restore snapshot table %s: %w", rec.Table, err)
		}
	}
	txn.Commit()

	s.mu.Lock()
	s.db = db
	abandoned := s.abandonCh
	s.abandonCh = make(chan struct{})
	s.mu.Unlock()
	close(abandoned)
	s.appliedMu.Lock()
	s.applied.Store(header.Index)
	close(s.appliedCh)
	s.appliedCh = make(chan struct{})
	s.appliedMu.Unlock()
	return nil
}

// First returns the first row of table matching the index, or nil: the one
// typed lookup every domain's handlers and services use.
func First[T any](txn *memdb.Txn, table, index string, args ...any) *T {
	raw, err := txn.First(table, index, args...)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*T)
}

// All returns copies of every row of table matching the index, collected
// before the caller changes any of them (deleting while iterating a
// memdb iterator is not allowed).
func All[T any](txn *memdb.Txn, table, index string, args ...any) []T {
	it, err := txn.Get(table, index, args...)
	if err != nil { // an unknown table or index: a bug, never "nothing"
		panic(fmt.Sprintf("consensus: All(%s, %s): %v", table, index, err))
	}
	var out []T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, *raw.(*T))
	}
	return out
}
