package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Writes whose outcome is unknown.
//
// A write stores its shards, then commits a command that references them
// (PutObject, PutPart). When the commit fails, the shards are garbage only
// if the command did not and never will commit. A rejection from the state
// machine says so; anything else (the caller's context ended, the leader
// changed, a forwarded batch was cut off in flight) leaves the outcome
// unknown, and a forwarded command may still be applied after any read
// that showed it missing. So the writer settles the question with a second
// command, applied in the same log: SettleData either finds the data
// referenced (the write committed: it succeeded) or records the data ID as
// abandoned, after which no command may reference it (it never will). Only
// then are the shards deleted. If settling fails too, the shards stay, and
// the garbage collector deletes them once the state shows them unreferenced.

// Settle commands.
const (
	MsgSettleData     consensus.MessageType = 143
	MsgPruneAbandoned consensus.MessageType = 144
)

// abandoned is a data ID whose write was given up: commands that reference
// it are refused. Rows are pruned after abandonedRetention.
type abandoned struct {
	ID string    `json:"id"` // the data ID
	At time.Time `json:"at"`
}

const tAbandoned = "abandoned"

// abandonedRetention is how long an abandoned data ID is remembered: far
// longer than any command can stay in flight (forwarding and Raft time out
// within seconds).
const abandonedRetention = 24 * time.Hour

type settleCmd struct {
	DataID string    `json:"data_id"`
	At     time.Time `json:"at"`
}

type settleResult struct {
	Committed bool `json:"committed"`
}

type pruneAbandonedCmd struct {
	Before time.Time `json:"before"`
}

func registerSettle(reg *consensus.Registry) {
	consensus.RegisterTable[abandoned](reg, &memdb.TableSchema{Name: tAbandoned, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.Handle(reg, MsgSettleData, "SettleData", func(tx *consensus.Tx, c *settleCmd) (any, error) {
		if dataReferenced(tx.Txn, c.DataID) {
			return settleResult{Committed: true}, nil
		}
		return settleResult{}, tx.Insert(tAbandoned, &abandoned{ID: c.DataID, At: c.At})
	})
	consensus.Handle(reg, MsgPruneAbandoned, "PruneAbandoned", func(tx *consensus.Tx, c *pruneAbandonedCmd) (any, error) {
		it, err := tx.Get(tAbandoned, "id")
		if err != nil {
			return nil, err
		}
		var old []*abandoned
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if a := obj.(*abandoned); a.At.Before(c.Before) {
				old = append(old, a)
			}
		}
		for _, a := range old {
			if err := tx.Delete(tAbandoned, a); err != nil {
				return nil, err
			}
		}
		return len(old), nil
	})
}

// dataReferenced reports whether any object, older version or part
// references a data ID.
func dataReferenced(txn *memdb.Txn, dataID string) bool {
	for _, table := range []string{tObjects, tVersions, tParts} {
		if obj, err := txn.First(table, "data", dataID); err != nil {
			panic(err) // the index is registered with the table: a bug
		} else if obj != nil {
			return true
		}
	}
	return false
}

// checkNotAbandoned refuses a command that references abandoned data.
func checkNotAbandoned(tx *consensus.Tx, segs []Segment) error {
	for _, seg := range segs {
		if seg.DataID == "" {
			continue
		}
		if consensus.First[abandoned](tx.Txn, tAbandoned, "id", seg.DataID) != nil {
			return consensus.Errorf(consensus.CodeConflict, "data %s was abandoned by its writer", seg.DataID)
		}
	}
	return nil
}

// rejected reports whether err is a definite refusal: the command was not
// and will never be applied. Anything else leaves its outcome unknown.
func rejected(err error) bool {
	code := consensus.ErrorCode(err)
	return code != "" && code != consensus.CodeUnavailable
}

// settle decides the outcome of a write of dataID whose commit returned
// err: it reports whether the write committed after all. The shards are
// deleted (by drop) only when it certainly did not and never will.
func (o *Objects) settle(ctx context.Context, err error, dataID string, drop func()) bool {
	if rejected(err) {
		drop()
		return false
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var res settleResult
	if _, serr := o.c.Apply(sctx, MsgSettleData, settleCmd{DataID: dataID, At: time.Now().UTC()}, &res); serr != nil {
		o.log.Warn("write outcome unknown; its shards are left to garbage collection", "data", dataID, "err", err, "settle_err", serr)
		return false
	}
	if res.Committed {
		o.log.Info("write committed although its commit reported an error", "data", dataID, "err", err)
		return true
	}
	drop()
	return false
}

// PruneAbandoned forgets abandoned data IDs older than abandonedRetention;
// the leader runs it with the garbage collection.
func (o *Objects) PruneAbandoned(ctx context.Context, now time.Time) (int, error) {
	var n int
	if _, err := o.c.Apply(ctx, MsgPruneAbandoned, pruneAbandonedCmd{Before: now.Add(-abandonedRetention)}, &n); err != nil {
		return 0, fmt.Errorf("prune abandoned writes: %w", err)
	}
	return n, nil
}

// dataIndex indexes rows (objects, parts) by the data IDs of their
// segments, so SettleData finds whether a write committed.
type dataIndex struct {
	segments func(row any) []Segment
}

func (x dataIndex) FromObject(row any) (bool, [][]byte, error) {
	var vals [][]byte
	for _, seg := range x.segments(row) {
		if seg.DataID != "" {
			vals = append(vals, []byte(seg.DataID+"\x00"))
		}
	}
	return len(vals) > 0, vals, nil
}

func (dataIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("data index: one argument, got %d", len(args))
	}
	id, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("data index: argument must be a string, got %T", args[0])
	}
	return []byte(id + "\x00"), nil
}
