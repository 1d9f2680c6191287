package consensus

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// encodeCommand frames a command as a 2-byte big-endian type and a JSON payload.
func encodeCommand(t MessageType, cmd any) ([]byte, error) {
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command %d: %w", t, err)
	}
	buf := make([]byte, 2+len(payload))
	binary.BigEndian.PutUint16(buf, uint16(t))
	copy(buf[2:], payload)
	return buf, nil
}

// decodeCommand splits a log entry into its type, its JSON payload and
// the bytes attached to it (attach.go), if any.
func decodeCommand(data []byte) (t MessageType, payload, attached []byte, err error) {
	if len(data) < 2 {
		return 0, nil, nil, fmt.Errorf("command of %d bytes is too short", len(data))
	}
	t, payload = MessageType(binary.BigEndian.Uint16(data)), data[2:]
	if t&AttachedFlag != 0 {
		if payload, attached, err = splitAttached(payload); err != nil {
			return 0, nil, nil, err
		}
	}
	return t, payload, attached, nil
}

// applyResult is what the FSM hands back through raft's ApplyFuture.
type applyResult struct {
	Value any
	Err   error
}

type fsm struct {
	store *Store
	log   *slog.Logger
}

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.BatchingFSM = (*fsm)(nil)
)

// Apply applies one entry; raft calls ApplyBatch instead.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies a run of committed entries in one memdb transaction, so
// the radix tree is copied and watchers are woken once per batch rather than
// once per entry. An entry whose handler fails must leave no trace, and memdb
// has no savepoints: the batch then starts over from the last good point —
// the entries before the failed one in a fresh transaction, the failed one
// alone (aborted), and the rest as a new batch. Handlers are deterministic,
// so that gives exactly the state of applying the entries one by one.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	results := make([]any, len(logs))
	out := results
	for len(logs) > 0 {
		txn := f.store.writeTxn()
		bad, err := f.applyRun(txn, logs, out)
		if bad == len(logs) {
			txn.Commit()
			f.store.setApplied(logs[bad-1].Index)
			break
		}
		txn.Abort()
		if bad > 0 {
			redo := f.store.writeTxn()
			if i, err := f.applyRun(redo, logs[:bad], out); i != bad {
				panic(fmt.Sprintf("consensus: log %d: replaying a batch failed where it had succeeded: %v", logs[i].Index, err))
			}
			redo.Commit()
		}
		out[bad] = &applyResult{Err: err}
		f.store.setApplied(logs[bad].Index)
		logs, out = logs[bad+1:], out[bad+1:]
	}
	return results
}

// applyRun applies logs in txn until one fails, filling out with results. It
// returns the position of the failed entry and its error, or len(logs).
func (f *fsm) applyRun(txn *memdb.Txn, logs []*raft.Log, out []any) (int, error) {
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		h, payload, attached := f.handler(l)
		if h == nil {
			continue
		}
		v, err := h(&Tx{Txn: txn, Index: l.Index, reg: f.store.reg, attached: attached}, payload)
		if err != nil {
			return i, err
		}
		out[i] = &applyResult{Value: v}
	}
	return len(logs), nil
}

// handler finds an entry's handler. An entry that cannot be decoded, or of a
// type this binary does not know and may not skip, means the log and the code
// disagree: continuing would diverge replicas, so it panics.
func (f *fsm) handler(l *raft.Log) (Handler, []byte, []byte) {
	t, payload, attached, err := decodeCommand(l.Data)
	if err != nil {
		panic(fmt.Sprintf("consensus: log %d: %v", l.Index, err))
	}
	h, ok := f.store.reg.handlers[t.base()]
	if !ok {
		if t&IgnoreUnknownTypeFlag != 0 {
			f.log.Warn("skipping unknown command", "type", t, "index", l.Index)
			return nil, nil, nil
		}
		panic(fmt.Sprintf("consensus: log %d: unknown message type %d", l.Index, t))
	}
	return h.fn, payload, attached
}

// Snapshot runs on the FSM goroutine between applies, so the read transaction
// and the applied index describe the same point in the log.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{store: f.store, txn: f.store.txn(), index: f.store.AppliedIndex()}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.store.restore(rc)
}

type fsmSnapshot struct {
	store *Store
	txn   *memdb.Txn
	index uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.store.persist(s.txn, s.index, sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
