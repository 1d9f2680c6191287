package scribble

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

const (
	// BlockSize is the size of the magic block and of every record.
	BlockSize = 4096
	// MaxRecords is how many records the guest writes at most: 1 GiB of
	// them, an hour's worth at the pace a TCG guest on a cluster test
	// writes (about 80 a second; 16384 ran out within TestHAFailover).
	MaxRecords = 1<<18 - 1
	// SerialSize is the room for the disk's serial in a record.
	SerialSize = 32
)

const (
	magic     = "CAIRN-SCRIBBLE\n"
	recMagic  = "CAIRN-REC"
	offSeq    = 16
	offSerial = 24
	offFiller = offSerial + SerialSize
	offCRC    = BlockSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Magic is what the first block of a disk to be scribbled on starts with.
func Magic() []byte { return []byte(magic) }

// Record is the block holding record seq of a disk with the given serial
// (longer serials are cut to SerialSize bytes).
func Record(seq uint64, serial string) []byte {
	b := make([]byte, BlockSize)
	copy(b, recMagic)
	binary.LittleEndian.PutUint64(b[offSeq:], seq)
	copy(b[offSerial:offSerial+SerialSize], serial)
	for i := offFiller; i < offCRC; i++ {
		b[i] = filler(seq, i)
	}
	binary.LittleEndian.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], castagnoli))
	return b
}

func filler(seq uint64, i int) byte { return byte(seq*131 + uint64(i)*7 + uint64(i>>8)) }

// ParseRecord decodes a record block: its sequence number and serial, and
// whether b is a whole, valid record at all.
func ParseRecord(b []byte) (seq uint64, serial string, ok bool) {
	if len(b) != BlockSize || !bytes.HasPrefix(b, []byte(recMagic)) {
		return 0, "", false
	}
	if binary.LittleEndian.Uint32(b[offCRC:]) != crc32.Checksum(b[:offCRC], castagnoli) {
		return 0, "", false
	}
	seq = binary.LittleEndian.Uint64(b[offSeq:])
	for i := offFiller; i < offCRC; i++ {
		if b[i] != filler(seq, i) {
			return 0, "", false
		}
	}
	return seq, strings.TrimRight(string(b[offSerial:offSerial+SerialSize]), "\x00"), true
}

// Check reads a scribbled disk (or a copy of one) of size bytes and
// returns the last record of its prefix: blocks 1..last must be records
// 1..last of one serial, and every block after them, up to MaxRecords or
// the end of the disk, zero. Anything else (a torn or foreign block, a
// record after a gap) is an error saying which block.
func Check(r io.ReaderAt, size int64) (last uint64, err error) {
	b := make([]byte, BlockSize)
	if _, err := r.ReadAt(b, 0); err != nil {
		return 0, fmt.Errorf("scribble check: block 0: %w", err)
	}
	if !bytes.HasPrefix(b, []byte(magic)) {
		return 0, errors.New("scribble check: block 0 does not start with the scribble magic")
	}
	zero := make([]byte, BlockSize)
	var serial string
	ended := false
	for blk := uint64(1); blk <= MaxRecords && int64(blk+1)*BlockSize <= size; blk++ {
		if _, err := r.ReadAt(b, int64(blk)*BlockSize); err != nil {
			return last, fmt.Errorf("scribble check: block %d: %w", blk, err)
		}
		if ended {
			if !bytes.Equal(b, zero) {
				return last, fmt.Errorf("scribble check: block %d after the last record %d is not zero (%s)", blk, last, describe(b))
			}
			continue
		}
		seq, s, ok := ParseRecord(b)
		switch {
		case ok && seq == blk && (blk == 1 || s == serial):
			serial, last = s, seq
		case ok && seq != blk:
			return last, fmt.Errorf("scribble check: block %d holds record %d", blk, seq)
		case ok:
			return last, fmt.Errorf("scribble check: block %d is a record of serial %q, earlier ones of %q", blk, s, serial)
		case bytes.Equal(b, zero):
			ended = true
		default:
			return last, fmt.Errorf("scribble check: block %d after record %d is neither a record nor zero (%s)", blk, last, describe(b))
		}
	}
	return last, nil
}

// describe says what a bad block looks like, for an error.
func describe(b []byte) string {
	if bytes.HasPrefix(b, []byte(recMagic)) {
		seq := binary.LittleEndian.Uint64(b[offSeq:])
		return fmt.Sprintf("a torn or corrupt record claiming seq %d", seq)
	}
	n := 0
	for _, c := range b {
		if c != 0 {
			n++
		}
	}
	return fmt.Sprintf("%d non-zero bytes, starting %q", n, b[:min(16, len(b))])
}
