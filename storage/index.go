package storage

import (
	"fmt"

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

// storedTables are the tables whose rows place shards on disks.
var storedTables = []string{tObjects, tVersions, tParts}

// diskHolds counts the objects, versions and multipart parts with a shard
// on disk id.
func diskHolds(tx *memdb.Txn, id string) int {
	n := 0
	for _, table := range storedTables {
		it, err := tx.Get(table, "disk", id)
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
