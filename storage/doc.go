// Package storage pools every node's disks into an erasure-coded object store
// with an S3 API (issue 3), and later block volumes. The building blocks live
// in subpackages: erasure (the k+m codec with checksums), disk (shards on one
// local disk) and placement (layouts and shard placement). See README.md for
// the design, including why object metadata lives in Raft. It registers its
// tables and commands with consensus (message types 128-255).
package storage
