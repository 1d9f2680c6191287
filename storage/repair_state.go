package storage

import (
	"github.com/cairnhq/cairn/consensus"
)

// Repair commands.
const (
	MsgMarkShards consensus.MessageType = 140
	MsgSetShards  consensus.MessageType = 141
)

// markShardsCmd records that shards of one segment are missing or corrupt.
// With Disks (one per index), an index whose shard is no longer on that disk
// (the healer moved it meanwhile) is left alone.
type markShardsCmd struct {
	ObjectID string   `json:"object_id"`
	DataID   string   `json:"data_id"`
	Indexes  []int    `json:"indexes"`
	Disks    []string `json:"disks,omitempty"`
}

// setShardsCmd records rebuilt shards. It applies only to indexes that are
// still missing and only while the object still uses DataID, so a repair
// racing an overwrite or another repair changes nothing.
type setShardsCmd struct {
	ObjectID string           `json:"object_id"`
	DataID   string           `json:"data_id"`
	Locs     map[int]ShardLoc `json:"locs"`
}

func registerRepair(reg *consensus.Registry) {
	consensus.Handle(reg, MsgMarkShards, "MarkShards", func(tx *consensus.Tx, c *markShardsCmd) (any, error) {
		return nil, updateSegment(tx, c.ObjectID, c.DataID, func(seg *Segment) bool {
			changed := false
			for k, i := range c.Indexes {
				if i < 0 || i >= len(seg.Shards) || (len(c.Disks) == len(c.Indexes) && seg.Shards[i].Disk != c.Disks[k]) {
					continue
				}
				if seg.Shards[i].Disk != "" {
					seg.Shards[i] = ShardLoc{}
					changed = true
				}
			}
			return changed
		})
	})
	consensus.Handle(reg, MsgSetShards, "SetShards", func(tx *consensus.Tx, c *setShardsCmd) (any, error) {
		return nil, updateSegment(tx, c.ObjectID, c.DataID, func(seg *Segment) bool {
			changed := false
			for i, loc := range c.Locs {
				if i >= 0 && i < len(seg.Shards) && seg.Shards[i].Disk == "" {
					seg.Shards[i] = loc
					changed = true
				}
			}
			return changed
		})
	})
}

// updateSegment edits the segment of an object that holds dataID. A missing
// object or segment is not an error: it was overwritten or deleted meanwhile.
func updateSegment(tx *consensus.Tx, objectID, dataID string, fn func(*Segment) bool) error {
	table := tObjects
	cur := consensus.First[Object](tx.Txn, tObjects, "id", objectID)
	if cur == nil {
		table = tVersions
		if cur = consensus.First[Object](tx.Txn, tVersions, "id", objectID); cur == nil {
			return nil
		}
	}
	o := *cur
	if len(o.Parts) > 0 {
		o.Parts = append([]Segment(nil), o.Parts...)
		for i := range o.Parts {
			if o.Parts[i].DataID == dataID {
				seg := o.Parts[i]
				seg.Shards = append([]ShardLoc(nil), seg.Shards...)
				if fn(&seg) {
					o.Parts[i] = seg
					return tx.Insert(table, &o)
				}
				return nil
			}
		}
		return nil
	}
	if o.DataID != dataID {
		return nil
	}
	seg := Segment{Shards: append([]ShardLoc(nil), o.Shards...)}
	if fn(&seg) {
		o.Shards = seg.Shards
		return tx.Insert(table, &o)
	}
	return nil
}
