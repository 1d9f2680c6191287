// Package scribble is the on-disk layout of the test guest's scribbler
// (image-build/guest/cmd/cairn-guest/scribble.go), and the checker host
// tests read a disk or a snapshot of it back with.
//
// A disk whose first block starts with Magic is scribbled on: the guest
// writes one record per BlockSize block, at blocks 1, 2, 3, ... up to
// MaxRecords (and no further than the disk's end), each written with
// O_DIRECT and made durable with fdatasync before the next is begun. So
// at any instant, and in any crash-consistent copy of the disk, blocks
// 1..k hold records 1..k and every block after them is zero (as the
// disk was created); Check verifies exactly that. A record is one block:
//
//	offset  size  content
//	0       9     "CAIRN-REC"
//	9       7     zero
//	16      8     sequence number, little-endian: the record's block number
//	24      32    the disk's serial as the guest sees it, NUL-padded
//	56      4036  filler: byte i is byte(seq*131 + i*7 + i>>8)
//	4092    4     CRC-32C (Castagnoli) of bytes 0-4091, little-endian
//
// Only the test guest and host-side tests import this package.
package scribble
