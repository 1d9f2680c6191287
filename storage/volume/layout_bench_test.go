package volume

import (
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/reedsolomon"
)

// The layout choice for volumes, measured (docs/benchmarks.md): a 4 KiB
// random write replicated three ways against the same write into a 4+2
// erasure-coded stripe of 4 KiB units, which must read the old data unit
// and both parity units, compute the parity change and write three units
// back. Both on files of the same disk with a CRC-32C per unit, every
// file fdatasync'ed after 32 writes as a guest's flushes would. Across boxes the erasure-coded write also costs
// a second network round trip (read, then write); this measures only what
// the disks and CPUs do.
//
//	go test ./storage/volume -run '^$' -bench Layout -benchtime 20000x

const layoutSpan = 256 << 20 // bytes of volume addressed

func layoutFiles(b *testing.B, n int, size int64) []*os.File {
	dir := b.TempDir()
	var fs []*os.File
	for i := range n {
		f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		fs = append(fs, f)
	}
	return fs
}

func BenchmarkLayoutReplicated3(b *testing.B) {
	files := layoutFiles(b, 3, layoutSpan)
	sums := layoutFiles(b, 3, layoutSpan/BlockSize*4)
	buf := make([]byte, BlockSize)
	rand.Read(buf)
	tab := crc32.MakeTable(crc32.Castagnoli)
	var sum [4]byte
	b.SetBytes(BlockSize)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		blk := mrand.Int64N(layoutSpan / BlockSize)
		binary.LittleEndian.PutUint32(sum[:], crc32.Checksum(buf, tab))
		for r := range files {
			if _, err := files[r].WriteAt(buf, blk*BlockSize); err != nil {
				b.Fatal(err)
			}
			if _, err := sums[r].WriteAt(sum[:], blk*4); err != nil {
				b.Fatal(err)
			}
		}
		if i%32 == 31 {
			for r := range files {
				files[r].Sync()
				sums[r].Sync()
			}
		}
	}
}

func BenchmarkLayoutErasure4p2(b *testing.B) {
	const k, m = 4, 2
	unitsPerShard := int64(layoutSpan / k / BlockSize)
	files := layoutFiles(b, k+m, unitsPerShard*BlockSize)
	sums := layoutFiles(b, k+m, unitsPerShard*4)
	tab := crc32.MakeTable(crc32.Castagnoli)
	var sum [4]byte
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		b.Fatal(err)
	}
	newData := make([]byte, BlockSize)
	rand.Read(newData)
	shards := make([][]byte, k+m)
	for i := range shards {
		shards[i] = make([]byte, BlockSize)
	}
	b.SetBytes(BlockSize)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		blk := mrand.Int64N(layoutSpan / BlockSize)
		stripe, unit := blk/k, int(blk%k)
		off := stripe * BlockSize
		// Read the old data unit and both parity units.
		if _, err := files[unit].ReadAt(shards[unit], off); err != nil {
			b.Fatal(err)
		}
		for p := k; p < k+m; p++ {
			if _, err := files[p].ReadAt(shards[p], off); err != nil {
				b.Fatal(err)
			}
		}
		// Parity delta from the old and new unit (reedsolomon's Update).
		newShards := make([][]byte, k)
		newShards[unit] = newData
		old := make([][]byte, k+m)
		old[unit] = shards[unit]
		old[k], old[k+1] = shards[k], shards[k+1]
		if err := enc.Update(old, newShards); err != nil {
			b.Fatal(err)
		}
		old[unit] = newData
		for _, s := range []int{unit, k, k + 1} {
			if _, err := files[s].WriteAt(old[s], off); err != nil {
				b.Fatal(err)
			}
			binary.LittleEndian.PutUint32(sum[:], crc32.Checksum(old[s], tab))
			if _, err := sums[s].WriteAt(sum[:], stripe*4); err != nil {
				b.Fatal(err)
			}
		}
		if i%32 == 31 {
			for s := range files {
				files[s].Sync()
				sums[s].Sync()
			}
		}
	}
}
