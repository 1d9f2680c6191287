package consensus

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A batch with a failing entry in the middle must leave exactly the state of
// applying the entries one by one: the failed entry's partial write gone,
// everything before and after it applied, later entries seeing earlier ones.
func TestApplyBatchIsolatesFailedEntry(t *testing.T) {
	const msgPutThenFail MessageType = 9001
	reg := testRegistry()
	Handle(reg, msgPutThenFail, "TestPutThenFail", func(tx *Tx, c *putCmd) (any, error) {
		if err := tx.Insert("kv", &kv{Key: c.Key, Value: c.Value, Version: tx.Index}); err != nil {
			return nil, err
		}
		return nil, Errorf(CodeConflict, "fails after writing %s", c.Key)
	})
	store, err := newStore(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fsm{store: store, log: slog.Default()}

	entry := func(idx uint64, typ MessageType, c putCmd) *raft.Log {
		data, err := encodeCommand(typ, c)
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
	}
	logs := []*raft.Log{
		entry(1, msgTestPut, putCmd{Key: "a", Value: "1"}),
		entry(2, msgPutThenFail, putCmd{Key: "b", Value: "half"}),
		entry(3, msgTestPut, putCmd{Key: "c", Value: "3", IfMatch: 0}),
		{Index: 4, Type: raft.LogNoop},
		entry(5, msgTestPut, putCmd{Key: "a", Value: "5", IfMatch: 1}),  // sees entry 1
		entry(6, msgTestPut, putCmd{Key: "c", Value: "6", IfMatch: 99}), // fails cleanly
		entry(7, msgTestPut, putCmd{Key: "d", Value: "7"}),
	}
	out := f.ApplyBatch(logs)

	if len(out) != len(logs) {
		t.Fatalf("%d results for %d entries", len(out), len(logs))
	}
	wantErr := map[int]string{1: CodeConflict, 5: CodePreconditionFailed}
	for i, res := range out {
		if i == 3 {
			if res != nil {
				t.Errorf("no-op entry: result %v, want nil", res)
			}
			continue
		}
		r, ok := res.(*applyResult)
		if !ok {
			t.Fatalf("entry %d: result %T", i+1, res)
		}
		if code := ErrorCode(r.Err); code != wantErr[i] {
			t.Errorf("entry %d: error %v, want code %q", i+1, r.Err, wantErr[i])
		}
	}
	txn := store.ReadTxn()
	for key, want := range map[string]string{"a": "5", "b": "", "c": "3", "d": "7"} {
		raw, _ := txn.First("kv", "id", key)
		got := ""
		if raw != nil {
			got = raw.(*kv).Value
		}
		if got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if got := store.AppliedIndex(); got != 7 {
		t.Errorf("applied index %d, want 7", got)
	}
}

// A read waits for the writes its node acknowledged: it returns as soon as
// the store applies them, and when they do not come (a node cut off from the
// leader right after a write) it gives up after a bound, once, not on every
// later read.
func TestReadsWaitForAcknowledgedWrites(t *testing.T) {
	store, err := newStore(testRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := &fsm{store: store, log: slog.Default()}
	data, err := encodeCommand(msgTestPut, putCmd{Key: "k", Value: "v"})
	if err != nil {
		t.Fatal(err)
	}
	store.ackWrite(3)
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.ApplyBatch([]*raft.Log{{Index: 3, Type: raft.LogCommand, Data: data}})
	}()
	start := time.Now()
	raw, _ := store.ReadTxn().First("kv", "id", "k")
	if raw == nil || time.Since(start) < 90*time.Millisecond {
		t.Fatalf("read did not wait for the acknowledged write: %v after %s", raw, time.Since(start))
	}

	store.ackWrite(9) // never applied here
	start = time.Now()
	store.ReadTxn()
	if d := time.Since(start); d < readYourWritesWait || d > readYourWritesWait+time.Second {
		t.Fatalf("read waited %s for a write that never came, want %s", d, readYourWritesWait)
	}
	start = time.Now()
	store.ReadTxn()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("a later read waited %s again", d)
	}
}
