package storage

import "github.com/cairnhq/cairn/storage/erasure"

// Apart exposes apart to the external tests.
func (o *Objects) Apart(l erasure.Layout, locs []ShardLoc) bool { return o.apart(l, locs) }
