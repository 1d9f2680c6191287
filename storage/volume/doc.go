// Package volume is Cairn's block volumes: disks kept apart from VMs,
// replicated across boxes, served to QEMU over NBD by the node that runs
// the VM (package storage/nbd).
//
// Layout. A volume of N bytes has up to three replicas, each on a disk of
// a different node (a single-node cluster keeps one). A replica is a
// directory on a pool disk, DISK/volumes/REPLICA/, holding the volume's
// bytes in a sparse file, a CRC-32C per 4 KiB block, and a generation per
// 1 MiB extent (the volume-wide sequence number of the last write that
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
// Snapshots and clones. A snapshot is a read-only record with replicas of
// its own: the volume's replicas as they were at that instant. The volume
// goes on with new, empty, layered replicas on the same disks, and reads
// what they never wrote from the snapshot (WriterConfig.Base), which may be
// layered on an older one in turn. A clone is a volume layered on a
// snapshot. Every request is block-aligned, so a layered replica records
// presence per block and nothing is ever copied up. An attached volume's
// snapshot is taken by its writer under a barrier (Writer.Snapshot): every
// write acknowledged before is in the snapshot, none after.
package volume
