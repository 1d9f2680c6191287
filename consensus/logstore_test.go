package consensus

import (
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A follower whose log ran ahead of a new leader drops its suffix and
// appends the leader's entries in its place. Both log stores must reopen
// such a log whole (raft-wal before v0.4.1 sealed the truncated segment
// without its index and could not open it again: hashicorp/raft-wal#31).
func TestLogSurvivesTailTruncationAndReopen(t *testing.T) {
	for _, kind := range []string{LogStoreWAL, LogStoreBoltDB} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			d := openTestDisk(t, dir, kind)
			store := func(from, to uint64, term uint64) {
				t.Helper()
				var logs []*raft.Log
				for i := from; i <= to; i++ {
					logs = append(logs, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "%d@%d", i, term)})
				}
				if err := d.logs.StoreLogs(logs); err != nil {
					t.Fatal(err)
				}
			}
			store(1, 10, 1)
			if err := d.logs.DeleteRange(8, 10); err != nil { // what raft does on a conflicting AppendEntries
				t.Fatal(err)
			}
			store(8, 12, 2)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			d = openTestDisk(t, dir, "")
			defer d.Close()
			if d.kind != kind {
				t.Fatalf("reopened as %s, created as %s", d.kind, kind)
			}
			if last, err := d.logs.LastIndex(); err != nil || last != 12 {
				t.Fatalf("last index %d (%v), want 12", last, err)
			}
			for i := uint64(1); i <= 12; i++ {
				term := uint64(1)
				if i >= 8 {
					term = 2
				}
				var l raft.Log
				if err := d.logs.GetLog(i, &l); err != nil {
					t.Fatalf("entry %d after reopening: %v", i, err)
				}
				if want := fmt.Sprintf("%d@%d", i, term); l.Term != term || string(l.Data) != want {
					t.Fatalf("entry %d: term %d data %q, want %q", i, l.Term, l.Data, want)
				}
			}
		})
	}
}

func openTestDisk(t *testing.T, dir, kind string) *raftDisk {
	t.Helper()
	d, err := openRaftDisk(dir, kind, DefaultConfig().WALSegmentSize, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// BenchmarkLogStoreAppend is one Raft append of one entry with its fsync,
// in each log store (go test -run - -bench LogStoreAppend ./consensus): the
// floor a write pays twice in series, on the leader and then on a follower.
func BenchmarkLogStoreAppend(b *testing.B) {
	for _, kind := range []string{LogStoreWAL, LogStoreBoltDB} {
		b.Run(kind, func(b *testing.B) {
			d, err := openRaftDisk(b.TempDir(), kind, DefaultConfig().WALSegmentSize, hclog.NewNullLogger())
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			data := make([]byte, 1024) // about one audited API write
			b.SetBytes(int64(len(data)))
			i := uint64(0)
			for b.Loop() {
				i++
				if err := d.logs.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
