package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"syscall"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"
)

// WriteAt implements Target. Inside the write the generations change
// first, then the data, then the checksums. That is the order of the
// pwrites, so it holds in the page cache and across the death of this
// process: a write cut short there leaves a newer generation or a checksum
// mismatch, never different bytes that look the same as another
// replica's. Nothing is synced between the three, so it does not hold
// across a power loss or kernel crash before the write's FUA or the next
// Flush returned: then any subset of the three (and of the pages within
// each) may be on the disk. Such a write was not acknowledged as durable;
// each of its blocks reads as old or new bytes matching their checksum, or
// fails its checksum (CorruptError), and unless all three reached the
// disk the extent's (generation, digest) differs from that of a replica
// that applied the whole write, so reconcile and catch-up replace the
// copy from an in-sync replica. A lone replica keeps the mismatching
// blocks, reported as corrupt, until they are rewritten.
func (r *DiskReplica) WriteAt(ctx context.Context, epoch, gen uint64, p []byte, off int64, fua bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.acquire("write"); err != nil {
		return err
	}
	defer r.release()
	if r.testHookWriteAt != nil {
		r.testHookWriteAt()
	}
	if err := r.checkRange("write", off, int64(len(p))); err != nil {
		return err
	}
	if len(p) == 0 {
		return r.checkEpoch("write", epoch)
	}
	first, n := off/BlockSize, int64(len(p))/BlockSize
	r.lockBlocks(first, n, true)
	err := r.write(epoch, gen, p, off)
	r.unlockBlocks(first, n, true)
	if err == nil && fua {
		err = r.sync()
	}
	return err
}

func (r *DiskReplica) write(epoch, gen uint64, p []byte, off int64) error {
	if err := r.checkEpoch("write", epoch); err != nil {
		return err
	}
	if r.testHookWrite != nil {
		r.testHookWrite()
	}
	buf := r.getBuf()
	defer r.putBuf(buf)
	if err := r.raiseGens(off, int64(len(p)), gen, buf); err != nil {
		return err
	}
	if _, err := r.data.WriteAt(p, off); err != nil {
		return fmt.Errorf("write replica %s at %d+%d: %w", r.dir, off, len(p), err)
	}
	first := off / BlockSize
	nb := len(p) / BlockSize
	for i := 0; i < nb; {
		c := min(nb-i, sumsPerChunk)
		s := buf[:c*4]
		for j := range c {
			b := (i + j) * BlockSize
			binary.LittleEndian.PutUint32(s[j*4:], blockSum(p[b:b+BlockSize]))
		}
		if _, err := r.sums.WriteAt(s, (first+int64(i))*4); err != nil {
			return fmt.Errorf("write replica %s checksums at %d+%d: %w", r.dir, off, len(p), err)
		}
		i += c
	}
	return nil
}

// raiseGens raises the generation of every extent [off, off+n) touches to
// gen; concurrent writes to one extent may arrive out of order, and the
// extent keeps the highest.
func (r *DiskReplica) raiseGens(off, n int64, gen uint64, buf *[chunkBytes]byte) error {
	first := off / ExtentSize
	last := (off + n - 1) / ExtentSize
	return r.setGens(first, last-first+1, gen, false, buf)
}

// setGens sets the generations of extents [first, first+n) to gen (with
// force) or raises them to it, and writes the changed entries. The stripes
// are held across the pwrite so the file gets the value the memory has.
func (r *DiskReplica) setGens(first, n int64, gen uint64, force bool, buf *[chunkBytes]byte) error {
	gens := *r.gens.Load()
	for n > 0 {
		c := min(n, gensPerChunk)
		a0, a1, b0, b1 := stripeSpans(first, c, genStripes)
		for _, span := range [2][2]int{{a0, a1}, {b0, b1}} {
			for i := span[0]; i < span[1]; i++ {
				r.genLocks[i].Lock()
			}
		}
		lo, hi := int64(-1), int64(-1)
		for i := first; i < first+c; i++ {
			if g := gens[i].Load(); g < gen || (force && g != gen) {
				gens[i].Store(gen)
				if lo < 0 {
					lo = i
				}
				hi = i + 1
			}
		}
		var err error
		if lo >= 0 {
			b := buf[:(hi-lo)*8]
			for i := lo; i < hi; i++ {
				binary.LittleEndian.PutUint64(b[(i-lo)*8:], gens[i].Load())
			}
			_, err = r.gensF.WriteAt(b, lo*8)
		}
		for _, span := range [2][2]int{{a0, a1}, {b0, b1}} {
			for i := span[0]; i < span[1]; i++ {
				r.genLocks[i].Unlock()
			}
		}
		if err != nil {
			return fmt.Errorf("write replica %s generations: %w", r.dir, err)
		}
		first += c
		n -= c
	}
	return nil
}

// Zero implements Target. With punch the blocks become holes with
// checksum 0 (unwritten), or in a layered replica the checksum of a zero
// block (present); without, an allocated range of zeroes with the
// checksum of a zero block.
func (r *DiskReplica) Zero(ctx context.Context, epoch, gen uint64, off, length int64, punch bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.acquire("zero"); err != nil {
		return err
	}
	defer r.release()
	if err := r.checkRange("zero", off, length); err != nil {
		return err
	}
	if length == 0 {
		return r.checkEpoch("zero", epoch)
	}
	first, n := off/BlockSize, length/BlockSize
	r.lockBlocks(first, n, true)
	defer r.unlockBlocks(first, n, true)
	if err := r.checkEpoch("zero", epoch); err != nil {
		return err
	}
	buf := r.getBuf()
	defer r.putBuf(buf)
	if err := r.raiseGens(off, length, gen, buf); err != nil {
		return err
	}
	if punch {
		if err := punchHole(r.data, off, length); err != nil {
			return fmt.Errorf("zero replica %s at %d+%d: %w", r.dir, off, length, err)
		}
		// A layered replica's hole is present (it hides the parent's
		// bytes): only a block never written here has checksum 0.
		sum := uint32(0)
		if r.layered {
			sum = zeroSum
		}
		if err := r.fillSums(first, n, sum, buf); err != nil {
			return fmt.Errorf("zero replica %s at %d+%d: %w", r.dir, off, length, err)
		}
		return nil
	}
	err := unix.Fallocate(int(r.data.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = writeZeroes(r.data, off, length)
	}
	if err == nil {
		err = r.fillSums(first, n, zeroSum, buf)
	}
	if err != nil {
		return fmt.Errorf("zero replica %s at %d+%d: %w", r.dir, off, length, err)
	}
	return nil
}

// punchHole deallocates [off, off+length) of f, or writes zeroes where the
// file system cannot punch.
func punchHole(f *os.File, off, length int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return writeZeroes(f, off, length)
	}
	if err != nil {
		return fmt.Errorf("punch %s at %d+%d: %w", f.Name(), off, length, err)
	}
	return nil
}

func writeZeroes(f *os.File, off, length int64) error {
	zero := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, int64(len(zero)))
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// fillSums sets the checksums of blocks [first, first+n) to sum. Runs of
// zeroes that cover whole pages of the sums file are punched instead.
func (r *DiskReplica) fillSums(first, n int64, sum uint32, buf *[chunkBytes]byte) error {
	lo, hi := first*4, (first+n)*4
	if sum == 0 && n >= 2*sumsPageBlocks {
		plo, phi := (lo+4095)&^4095, hi&^4095
		err := unix.Fallocate(int(r.sums.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, plo, phi-plo)
		if err == nil {
			if err := r.writeSumRun(lo, plo, sum, buf); err != nil {
				return err
			}
			return r.writeSumRun(phi, hi, sum, buf)
		}
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("punch %s: %w", r.sums.Name(), err)
		}
	}
	return r.writeSumRun(lo, hi, sum, buf)
}

// writeSumRun writes sum into every entry of the sums file's bytes [lo, hi).
func (r *DiskReplica) writeSumRun(lo, hi int64, sum uint32, buf *[chunkBytes]byte) error {
	if hi <= lo {
		return nil
	}
	s := buf[:]
	if hi-lo > chunkBytes {
		s = make([]byte, min(hi-lo, maxFillBuffer))
	}
	s = s[:min(int64(len(s)), hi-lo)]
	for i := 0; i < len(s); i += 4 {
		binary.LittleEndian.PutUint32(s[i:], sum)
	}
	for lo < hi {
		c := min(hi-lo, int64(len(s)))
		if _, err := r.sums.WriteAt(s[:c], lo); err != nil {
			return fmt.Errorf("write %s: %w", r.sums.Name(), err)
		}
		lo += c
	}
	return nil
}

// ReadAt implements Target: every block is checked against its checksum
// (0 also admits a block of zeroes, an unwritten one).
func (r *DiskReplica) ReadAt(ctx context.Context, p []byte, off int64) error {
	return r.readAt(ctx, p, off, nil)
}

// ReadLayer implements Target: a block is present when its checksum is
// not 0, or always when the replica is not layered.
func (r *DiskReplica) ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error {
	nb := int64(len(p)) / BlockSize
	if int64(len(have))*64 < nb {
		return fmt.Errorf("read replica %s at %d+%d: presence of %d bits: %w", r.dir, off, len(p), len(have)*64, syscall.EINVAL)
	}
	have.clear()
	if !r.layered {
		if err := r.readAt(ctx, p, off, nil); err != nil {
			return err
		}
		have.fill(nb)
		return nil
	}
	return r.readAt(ctx, p, off, have)
}

func (r *DiskReplica) readAt(ctx context.Context, p []byte, off int64, have Presence) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.acquire("read"); err != nil {
		return err
	}
	defer r.release()
	if err := r.checkRange("read", off, int64(len(p))); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	first, n := off/BlockSize, int64(len(p))/BlockSize
	r.lockBlocks(first, n, false)
	err := r.read(p, off, have)
	r.unlockBlocks(first, n, false)
	return err
}

// read reads and checks p at off; a non-nil have gets the blocks whose
// checksum is not 0.
func (r *DiskReplica) read(p []byte, off int64, have Presence) error {
	if err := readFull(r.data, p, off); err != nil {
		return fmt.Errorf("read replica %s at %d+%d: %w", r.dir, off, len(p), err)
	}
	buf := r.getBuf()
	defer r.putBuf(buf)
	first := off / BlockSize
	nb := int64(len(p)) / BlockSize
	bad := int64(-1) // first block of the bad run
	for i := int64(0); i < nb; {
		c := min(nb-i, sumsPerChunk)
		s := buf[:c*4]
		if err := readFull(r.sums, s, (first+i)*4); err != nil {
			return fmt.Errorf("read replica %s checksums at %d+%d: %w", r.dir, off, len(p), err)
		}
		for j := range c {
			b := p[(i+j)*BlockSize : (i+j+1)*BlockSize]
			sum := binary.LittleEndian.Uint32(s[j*4:])
			// Absent: never written, a hole, checksum 0. A written block
			// of zeroes keeps the checksum of zeroes; a written block
			// whose CRC-32C happens to be 0 is not zeroes.
			if have != nil && (sum != 0 || !bytes.Equal(b, zeroBlock[:])) {
				have.Set(i + j)
			}
			ok := blockOK(b, sum)
			if !ok && bad < 0 {
				bad = i + j
			} else if ok && bad >= 0 {
				return &CorruptError{Off: off + bad*BlockSize, Len: (i + j - bad) * BlockSize}
			}
		}
		i += c
	}
	if bad >= 0 {
		return &CorruptError{Off: off + bad*BlockSize, Len: (nb - bad) * BlockSize}
	}
	return nil
}

func blockOK(b []byte, sum uint32) bool {
	if blockSum(b) == sum {
		return true
	}
	// Checksum 0: never written, a hole; or, in a replica written before
	// sums of 0 were stored as sumOfZeroCRC, a block whose CRC-32C is 0.
	return sum == 0 && (bytes.Equal(b, zeroBlock[:]) || crc32.Checksum(b, castagnoli) == 0)
}

// sumOfZeroCRC is stored for a block whose CRC-32C is 0, as checksum 0
// means a block never written: its presence, and the extent's digest, then
// tell such a block from an absent one. It stands for two CRCs, 0 and
// itself, which weakens detection of a corrupt block by one in 2^32.
const sumOfZeroCRC = 0xFFFFFFFF

// blockSum is the checksum stored for block b.
func blockSum(b []byte) uint32 {
	if s := crc32.Checksum(b, castagnoli); s != 0 {
		return s
	}
	return sumOfZeroCRC
}

// extentRange returns the byte range of extent idx.
func (r *DiskReplica) extentRange(op string, idx int64) (off, n int64, err error) {
	size := r.size.Load()
	if idx < 0 || idx >= (size+ExtentSize-1)/ExtentSize {
		return 0, 0, fmt.Errorf("%s replica %s: extent %d beyond its %d bytes: %w", op, r.dir, idx, size, syscall.EINVAL)
	}
	off = idx * ExtentSize
	return off, min(ExtentSize, size-off), nil
}

// ReadExtent implements Target.
func (r *DiskReplica) ReadExtent(ctx context.Context, idx int64, p []byte, have Presence) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := r.acquire("read extent"); err != nil {
		return 0, err
	}
	defer r.release()
	off, n, err := r.extentRange("read extent", idx)
	if err != nil {
		return 0, err
	}
	if int64(len(p)) < n {
		return 0, fmt.Errorf("read extent %d of replica %s: buffer of %d bytes, need %d: %w", idx, r.dir, len(p), n, syscall.EINVAL)
	}
	if have != nil {
		err = r.ReadLayer(ctx, p[:n], off, have)
	} else {
		err = r.ReadAt(ctx, p[:n], off)
	}
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// WriteExtent implements Target. p must be exactly the extent's length
// (ExtentSize, or less for the last extent). Every block of zeroes
// becomes a hole: with checksum 0 when absent (or in a replica that is
// not layered), with a zero block's when present in a layered one.
func (r *DiskReplica) WriteExtent(ctx context.Context, epoch uint64, idx int64, gen uint64, p []byte, have Presence) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.acquire("write extent"); err != nil {
		return err
	}
	defer r.release()
	off, n, err := r.extentRange("write extent", idx)
	if err != nil {
		return err
	}
	if int64(len(p)) != n {
		return fmt.Errorf("write extent %d of replica %s: %d bytes, the extent has %d: %w", idx, r.dir, len(p), n, syscall.EINVAL)
	}
	first, nb := off/BlockSize, n/BlockSize
	if have != nil && int64(len(have))*64 < nb {
		return fmt.Errorf("write extent %d of replica %s: presence of %d bits: %w", idx, r.dir, len(have)*64, syscall.EINVAL)
	}
	if !r.layered {
		have = nil
	}
	r.lockBlocks(first, nb, true)
	defer r.unlockBlocks(first, nb, true)
	if err := r.checkEpoch("write extent", epoch); err != nil {
		return err
	}
	buf := r.getBuf()
	defer r.putBuf(buf)
	if err := r.setGens(idx, 1, gen, true, buf); err != nil {
		return err
	}
	var zero [blocksPerExtent]bool
	s := buf[:nb*4]
	for i := range nb {
		b := p[i*BlockSize : (i+1)*BlockSize]
		var sum uint32
		switch {
		case have != nil && !have.Has(i):
			zero[i] = true // absent: the parent's, whatever p holds
		case bytes.Equal(b, zeroBlock[:]):
			zero[i] = true
			if r.layered {
				sum = zeroSum
			}
		default:
			sum = blockSum(b)
		}
		binary.LittleEndian.PutUint32(s[i*4:], sum)
	}
	for i := int64(0); i < nb; {
		j := i + 1
		for j < nb && zero[j] == zero[i] {
			j++
		}
		roff, rlen := off+i*BlockSize, (j-i)*BlockSize
		if zero[i] {
			err = punchHole(r.data, roff, rlen)
		} else {
			_, err = r.data.WriteAt(p[i*BlockSize:j*BlockSize], roff)
		}
		if err != nil {
			return fmt.Errorf("write extent %d of replica %s: %w", idx, r.dir, err)
		}
		i = j
	}
	if _, err := r.sums.WriteAt(s, first*4); err != nil {
		return fmt.Errorf("write extent %d of replica %s checksums: %w", idx, r.dir, err)
	}
	return nil
}

// Extents implements Target. The digest hashes the extent's checksums with
// a zero block's checksum counted as 0, so an extent copied by WriteExtent
// (which stores zero blocks as holes) digests like its source; in a
// layered replica a zeroed block (present) and a never-written one
// (absent) differ, so there it counts as itself. Holes in the sums file
// (never written) are skipped without reading.
func (r *DiskReplica) Extents(ctx context.Context) ([]ExtentInfo, error) {
	if err := r.acquire("extents"); err != nil {
		return nil, err
	}
	defer r.release()
	size := r.size.Load()
	gens := *r.gens.Load() // published before size: long enough
	n := (size + ExtentSize - 1) / ExtentSize
	out := make([]ExtentInfo, n)
	for i := range out {
		out[i].Gen = gens[i].Load()
	}
	const perRead = 64
	const extSums = blocksPerExtent * 4
	buf := make([]byte, perRead*extSums)
	sumsEnd := sumsLen(size)
	fd := int(r.sums.Fd())
	for e := int64(0); e < n; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pos := e * extSums
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			data = sumsEnd
		case err != nil:
			data = pos // cannot tell: read it all
		}
		if skip := (data - pos) / extSums; skip > 0 {
			e += skip
			continue
		}
		c := min(n-e, perRead)
		s := buf[:min(c*extSums, sumsEnd-pos)]
		if err := readFull(r.sums, s, pos); err != nil {
			return nil, fmt.Errorf("extents of replica %s: %w", r.dir, err)
		}
		for i := range c {
			out[e+i].Digest = digest(s[i*extSums:min((i+1)*extSums, int64(len(s)))], r.layered)
		}
		e += c
	}
	return out, nil
}

// digest hashes an extent's checksums, 0 when all of its blocks read as
// zeroes (or, layered, when none is present). It rewrites s.
func digest(s []byte, layered bool) uint64 {
	written := false
	for i := 0; i < len(s); i += 4 {
		switch binary.LittleEndian.Uint32(s[i:]) {
		case 0:
		case zeroSum:
			if layered {
				written = true
				continue
			}
			binary.LittleEndian.PutUint32(s[i:], 0)
		default:
			written = true
		}
	}
	if !written {
		return 0
	}
	return xxhash.Sum64(s)
}
