package storage

import (
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// diskIndex indexes rows (objects, versions, parts) by every disk that holds
// one of their shards: what a disk still holds, for draining and removing it.
type diskIndex struct {
	segments func(row any) []Segment
}

func (x diskIndex) FromObject(row any) (bool, [][]byte, error) {
	var vals [][]byte
	seen := map[string]bool{}
	for _, seg := range x.segments(row) {
		for _, loc := range seg.Shards {
			if loc.Disk != "" && !seen[loc.Disk] {
				seen[loc.Disk] = true
				vals = append(vals, []byte(loc.Disk+"\x00"))
			}
		}
	}
	return len(vals) > 0, vals, nil
}

func (diskIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("disk index: one argument, got %d", len(args))
	}
	id, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("disk index: argument must be a string, got %T", args[0])
	}
	return []byte(id + "\x00"), nil
}

// storedTables are the tables whose rows place data on disks: objects'
// shards, and (through HoldsDisks) block volumes' replicas.
var (
	storedMu     sync.Mutex
	storedTables = []string{tObjects, tVersions, tParts}
)

// HoldsDisks names another table whose rows keep data on disks, with a
// "disk" index by disk ID: a disk is removed only once no row of it
// names the disk. Called when the table is registered.
func HoldsDisks(table string) {
	storedMu.Lock()
	defer storedMu.Unlock()
	if !slices.Contains(storedTables, table) {
		storedTables = append(storedTables, table)
	}
}

// ObjectsOn counts the object versions and multipart parts with a shard on
// a disk of node: what runs on fewer shards while that node is away.
func ObjectsOn(txn *memdb.Txn, node string) int {
	disks, err := txn.Get(tDisks, "node", node)
	if err != nil {
		return 0 // a registry without storage's tables (a test's)
	}
	seen := map[any]bool{}
	for d := disks.Next(); d != nil; d = disks.Next() {
		for _, table := range []string{tObjects, tVersions, tParts} {
			it, err := txn.Get(table, "disk", d.(*Disk).ID)
			if err != nil {
				panic(err) // the index is registered with the table: a bug
			}
			for o := it.Next(); o != nil; o = it.Next() {
				seen[o] = true
			}
		}
	}
	return len(seen)
}

// diskHolds counts the objects, versions and multipart parts with a shard
// on disk id.
func diskHolds(tx *memdb.Txn, id string) int {
	n := 0
	storedMu.Lock()
	tables := slices.Clone(storedTables)
	storedMu.Unlock()
	for i, table := range tables {
		it, err := tx.Get(table, "disk", id)
		if err != nil && i >= 3 {
			continue // a holder this node's registry lacks (a test's)
		}
		if err != nil {
			panic(err) // the index is registered with the table: a bug
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			n++
		}
	}
	return n
}

// eachVersion calls fn for every object version the state holds, current
// and older, delete markers aside.
func eachVersion(txn *memdb.Txn, fn func(*Object)) {
	for _, table := range []string{tObjects, tVersions} {
		it, err := txn.Get(table, "id")
		if err != nil {
			panic(err)
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if o := obj.(*Object); !o.Delete {
				fn(o)
			}
		}
	}
}
