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

// decodeCommand splits a log entry into its type and payload.
func decodeCommand(data []byte) (MessageType, []byte, error) {
	if len(data) < 2 {
		return 0, nil, fmt.Errorf("command of %d bytes is too short", len(data))
	}
	return MessageType(binary.BigEndian.Uint16(data)), data[2:], nil
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

var _ raft.FSM = (*fsm)(nil)

// Apply is one switch over registered message types. An entry that cannot be
// decoded, or of a type this binary does not know and may not skip, means the
// log and the code disagree: continuing would diverge replicas, so it panics.
func (f *fsm) Apply(l *raft.Log) any {
	defer f.store.setApplied(l.Index)
	if l.Type != raft.LogCommand {
		return nil
	}
	t, payload, err := decodeCommand(l.Data)
	if err != nil {
		panic(fmt.Sprintf("consensus: log %d: %v", l.Index, err))
	}
	h, ok := f.store.reg.handlers[t&^IgnoreUnknownTypeFlag]
	if !ok {
		if t&IgnoreUnknownTypeFlag != 0 {
			f.log.Warn("skipping unknown command", "type", t, "index", l.Index)
			return nil
		}
		panic(fmt.Sprintf("consensus: log %d: unknown message type %d", l.Index, t))
	}
	v, err := f.store.apply(l.Index, h.fn, payload)
	return &applyResult{Value: v, Err: err}
}

// Snapshot runs on the FSM goroutine between applies, so the read transaction
// and the applied index describe the same point in the log.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{store: f.store, txn: f.store.ReadTxn(), index: f.store.AppliedIndex()}, nil
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
