package consensus

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"go.etcd.io/bbolt"
)

// Raft log stores. A node keeps the one its data dir was created with.
const (
	// LogStoreWAL keeps the Raft log in hashicorp/raft-wal: append-only
	// segment files, one fdatasync per append. The default for new nodes.
	LogStoreWAL = "wal"
	// LogStoreBoltDB keeps the Raft log in raft-boltdb/v2's bbolt file, a
	// copy-on-write B+tree: two fdatasyncs per append (data pages, then the
	// meta page). Nodes created before raft-wal use it.
	LogStoreBoltDB = "boltdb"
)

// minWALSegmentSize keeps segments from being smaller than a few entries.
const minWALSegmentSize = 64 << 10

// raftDisk is a node's Raft state on disk, under DATA_DIR/raft: the term and
// vote in raft-boltdb/v2 (raft.db), the log in raft-wal (wal/) or in the same
// bbolt file, and file snapshots beside them.
//
// Both fsync every append before Raft counts it. We measured both on the
// project's machines (docs/benchmarks.md): an append of one entry costs about
// 130 µs in raft-wal and 250–290 µs in raft-boltdb, and a write waits for the
// leader's append and then a follower's, so the log store sets the floor of
// write latency. Consul moved to raft-wal for the same reason.
type raftDisk struct {
	kind   string
	stable *raftboltdb.BoltStore
	logs   raft.LogStore // stable itself, or wal
	wal    *wal.WAL      // nil with LogStoreBoltDB
}

// logStoreOf tells which log store the Raft state under dir uses. want is
// the store a new node gets ("" for the default); an existing node keeps its
// own, and asking it for another is an error: the log cannot move between
// stores in place.
func logStoreOf(dir, want string) (string, error) {
	have := ""
	if _, err := os.Stat(filepath.Join(dir, "wal")); err == nil {
		have = LogStoreWAL
	} else if _, err := os.Stat(filepath.Join(dir, "raft.db")); err == nil {
		have = LogStoreBoltDB // the WAL directory is created first, so its absence is telling
	}
	switch {
	case want != "" && want != LogStoreWAL && want != LogStoreBoltDB:
		return "", fmt.Errorf("raft log store %q: want %s or %s", want, LogStoreWAL, LogStoreBoltDB)
	case have != "" && want != "" && want != have:
		return "", fmt.Errorf("raft log store: this node's log is in %s, not %s; a node keeps the store it was created with (to change it, remove the node from the cluster and let it rejoin with an empty data dir)", have, want)
	}
	return cmp.Or(have, want, LogStoreWAL), nil
}

// openRaftDisk opens (or creates) the Raft state under dir.
func openRaftDisk(dir, want string, segmentSize int, hlog hclog.Logger) (*raftDisk, error) {
	kind, err := logStoreOf(dir, want)
	if err != nil {
		return nil, err
	}
	d := &raftDisk{kind: kind}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if d.kind == LogStoreWAL {
		if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o700); err != nil {
			return nil, err
		}
		// Compaction deletes whole segments: entries before the snapshot stay
		// readable until their segment goes, and a peer that far behind is
		// sent them rather than the snapshot.
		w, err := wal.Open(filepath.Join(dir, "wal"), wal.WithLogger(hlog.Named("wal")), wal.WithSegmentSize(segmentSize))
		if err != nil {
			return nil, fmt.Errorf("open raft log: %w", err)
		}
		d.wal, d.logs = w, w
	}
	// Like Consul, skip syncing bbolt's freelist (it is rebuilt on open) so
	// each commit writes fewer pages.
	stable, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: &bbolt.Options{
		Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType,
	}})
	if err != nil {
		if d.wal != nil {
			d.wal.Close()
		}
		return nil, fmt.Errorf("open raft state: %w", err)
	}
	d.stable = stable
	if d.logs == nil {
		d.logs = stable
	}
	return d, nil
}

func (d *raftDisk) Close() error {
	var errs []error
	if d.wal != nil {
		errs = append(errs, d.wal.Close())
	}
	return errors.Join(append(errs, d.stable.Close())...)
}
