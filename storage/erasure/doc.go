// Package erasure encodes an object stream into k data and m parity shards,
// stripe by stripe, with klauspost/reedsolomon, and decodes it back, verifying
// every shard block's checksum and reconstructing missing or corrupt shards on
// the fly. Memory per encoder or decoder is one stripe, whatever the object size.
//
// A shard is a byte stream: a 32-byte header, then one block per stripe, each
// an 8-byte xxhash64 of its payload followed by the payload (the stripe's
// share of this shard). All blocks but the last have BlockSize bytes of
// payload. The format is what shard files on disk and shard streams between
// nodes carry; it knows nothing about where shards live.
package erasure
