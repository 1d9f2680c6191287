// Package volume is Cairn's block volumes: disks kept apart from VMs,
// replicated across boxes, served to QEMU over NBD by the node that runs
// the VM (package storage/nbd).
//
// Layout. A volume of N bytes has up to three replicas, each on a disk of
// a different node (a single-node cluster keeps one). A replica is a
// directory on a pool disk, DISK/volumes/REPLICA/, holding the volume's
// bytes in a sparse file, a CRC-32C per 4 KiB block (0 is a block never
// written; a block whose CRC is 0 is stored as 0xFFFFFFFF), and a
// generation per 1 MiB extent (the volume-wide sequence number of the last write that
// touched it). Replication, not erasure coding, because a 4 KiB random
// write to a 4+2 stripe is a read-modify-write of six shards; Ceph RBD and
// Longhorn replicate for the same reason (docs/benchmarks.md has the
// measurement).
//
// One writer. Each volume has exactly one writer node, recorded in Raft
// with an epoch. The writer raises every replica's epoch (Fence) before
// its first write, and every write carries the epoch: a replica refuses
// anything older, durably. A writer cut off from the cluster therefore
// cannot change a copy once a new writer has fenced it; the replicas it
// can still reach are marked stale in Raft by the new writer.
//
// Writes. The writer sends a write to every in-sync replica and
// acknowledges it once all have applied it (the local replica only after
// a remote one accepted the epoch). A replica that fails is marked stale
// in Raft (a command conditional on the epoch) before the write is
// acknowledged without it, and only while at least two in-sync replicas
// remain (one on a single-node cluster). So every acknowledged write is on
// every in-sync replica, any of them may serve reads, and FLUSH returns
// once every in-sync replica has fdatasync'ed.
//
// Resync. Replicas compare extents by (generation, digest of the block
// checksums); only extents that differ are copied. A replica that returns
// after an outage catches up with exactly the extents written meanwhile,
// while new writes are mirrored to it.
//
// Snapshots and clones. A volume may be layered on a read-only snapshot,
// itself a volume with replicas. Its replicas (marked layered on disk)
// then hold only the blocks written or zeroed since; a block with checksum
// 0 was never written there and reads through to the parent (Base). As
// every request is block-aligned, presence is per block and nothing is
// copied up. A snapshot is taken behind a barrier on the writer
// (Writer.Snapshot): the volume's replicas become the snapshot's as they
// are, and the writer goes on with new, empty, layered ones. Resync copies
// an extent's presence with its bytes, so copies of a layered replica
// digest alike.
package volume
