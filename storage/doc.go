// Package storage will own local disks and shard servers, erasure coding
// (klauspost/reedsolomon), placement, the object layer and S3 gateway, block
// volumes with their NBD export, and scrub and heal (issue 3). It registers its
// tables and commands with consensus (message types 128-255) and keeps
// metadata, placement maps and leases there. Nothing is implemented yet.
package storage
