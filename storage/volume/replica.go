package volume

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// The files of a replica directory.
const (
	dataFile  = "data"  // the volume's bytes, sparse
	sumsFile  = "sums"  // uint32 LE CRC-32C per block, 0 = unwritten
	gensFile  = "gens"  // uint64 LE generation per extent
	epochFile = "epoch" // uint64 LE, replaced by rename
	// layeredFile marks a layered replica (one over a snapshot): its
	// never-written blocks read through to the parent. Replicas made
	// before snapshots have none and are not layered.
	layeredFile = "layered"
)

const (
	// maxReplicaSize is the largest replica: the largest volume the API
	// makes (MaxSizeGiB, 64 TiB). Sizes beyond it are refused before any
	// file grows or any generation is allocated (64 TiB already takes
	// 512 MiB of generations in memory).
	maxReplicaSize = 64 << 40

	blocksPerExtent = ExtentSize / BlockSize
	// blockStripes locks blocks for data+checksum consistency: block b is
	// guarded by stripe b%blockStripes, so the 32 requests of a sequential
	// queue never share a lock.
	blockStripes = 512
	// genStripes serializes the read-compare-write of an extent's
	// generation; held only around one small pwrite.
	genStripes = 64
	// chunkBytes is the size of the pooled scratch buffers: the checksums
	// of 1 MiB of data, or 128 generations.
	chunkBytes     = 1024
	sumsPerChunk   = chunkBytes / 4
	gensPerChunk   = chunkBytes / 8
	maxFillBuffer  = 64 << 10 // scratch for checksum runs of Zero
	sumsPageBlocks = 4096 / 4 // blocks whose checksums fill one page of sums
)

// castagnoli is the CRC-32C table; crc32 uses the CPU's instruction for it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// zeroBlock is never written; it compares and checksums blocks of zeroes.
var zeroBlock [BlockSize]byte

// zeroSum is the checksum of a block of zeroes.
var zeroSum = blockSum(zeroBlock[:])

// Replica is one replica of a volume on a local disk: a directory holding
// the volume's bytes, their checksums and the extents' generations. It
// implements Target; all methods are safe for concurrent use.
type DiskReplica struct {
	dir               string
	data, sums, gensF *os.File
	// layered is set for a replica over a snapshot: a zeroed block keeps
	// the checksum of zeroes (present), never 0 (absent, read through).
	layered bool

	size  atomic.Int64
	epoch atomic.Uint64
	// gens mirrors the gens file; entries change under their genLocks
	// stripe (and while the writer holds the extent's block stripes), the
	// slice is replaced only by Resize with every block stripe held.
	gens atomic.Pointer[[]atomic.Uint64]

	blockLocks [blockStripes]paddedRWMutex
	genLocks   [genStripes]paddedMutex
	// fenceMu serializes Fence and Resize (which also take every block
	// stripe) so the epoch file is replaced by one caller at a time.
	fenceMu sync.Mutex

	bufs sync.Pool // *[chunkBytes]byte

	// active counts the operations using the files; Close sets closing,
	// waits for active to drain (each leaving operation that sees closing
	// wakes it through drained) and only then closes the files, so no
	// pwrite, fdatasync or fallocate ever reaches a file descriptor number
	// that was closed and perhaps reused for another file.
	active    atomic.Int64
	closing   atomic.Bool
	drained   chan struct{} // cap 1
	closeOnce sync.Once
	closeErr  error

	// testHookWrite, when set by a test, runs inside WriteAt after the
	// epoch check; testHookWriteAt at its start, before any lock.
	testHookWrite, testHookWriteAt func()
}

// paddedRWMutex keeps neighbouring stripes off one cache line.
type paddedRWMutex struct {
	sync.RWMutex
	_ [40]byte
}

type paddedMutex struct {
	sync.Mutex
	_ [56]byte
}

var _ Target = (*DiskReplica)(nil)

// CreateReplica creates a replica of size bytes (a positive multiple of
// BlockSize) in dir, durably: the directories, the files and their sizes
// are on stable storage when it returns. A layered replica (one over a
// snapshot) is marked so before its data file is sized. It is idempotent:
// a replica that already exists with that size and kind, or one whose
// creation was interrupted, is completed and kept; one of another size or
// kind is an error.
func CreateReplica(dir string, size int64, layered bool) error {
	if size <= 0 || size%BlockSize != 0 || size > maxReplicaSize {
		return fmt.Errorf("create replica %s: size %d is not a positive multiple of %d up to %d: %w", dir, size, BlockSize, int64(maxReplicaSize), syscall.EINVAL)
	}
	if err := mkdirDurable(dir); err != nil {
		return fmt.Errorf("create replica %s: %w", dir, err)
	}
	exists := false
	if st, err := os.Stat(filepath.Join(dir, dataFile)); err == nil && st.Size() != 0 {
		if st.Size() != size {
			return fmt.Errorf("create replica %s: exists with size %d, not %d: %w", dir, st.Size(), size, fs.ErrExist)
		}
		exists = true
	}
	marked, err := isLayered(dir)
	if err != nil {
		return fmt.Errorf("create replica %s: %w", dir, err)
	}
	switch {
	case marked && !layered:
		return fmt.Errorf("create replica %s: exists layered: %w", dir, fs.ErrExist)
	case !marked && layered && exists:
		return fmt.Errorf("create replica %s: exists not layered: %w", dir, fs.ErrExist)
	case !marked && layered:
		// Durable before the data file's size says the replica exists.
		if err := createFile(filepath.Join(dir, layeredFile), 0); err != nil {
			return fmt.Errorf("create replica %s: %w", dir, err)
		}
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("create replica %s: %w", dir, err)
		}
	}
	files := []struct {
		name string
		size int64
	}{
		{sumsFile, sumsLen(size)},
		{gensFile, gensLen(size)},
		{dataFile, size}, // last: its size says the replica exists
	}
	for _, f := range files {
		if err := createFile(filepath.Join(dir, f.name), f.size); err != nil {
			return fmt.Errorf("create replica %s: %w", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, epochFile)); errors.Is(err, fs.ErrNotExist) {
		if err := writeEpoch(dir, 0); err != nil {
			return fmt.Errorf("create replica %s: %w", dir, err)
		}
	} else if err != nil {
		return fmt.Errorf("create replica %s: %w", dir, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("create replica %s: %w", dir, err)
	}
	return nil
}

// mkdirDurable creates dir and any missing parents, syncing each parent
// whose entries it changed.
func mkdirDurable(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirDurable(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// createFile makes path at least size bytes long (never shorter) and
// syncs it.
func createFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < size {
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// isLayered tells whether the replica in dir carries the layered marker.
func isLayered(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, layeredFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// RemoveReplica deletes the replica in dir; a missing one is not an error.
// The replica must be closed.
func RemoveReplica(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove replica %s: %w", dir, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove replica %s: %w", dir, err)
	}
	return nil
}

// OpenReplica opens the replica in dir. A missing replica is ErrNoReplica
// (and fs.ErrNotExist). The replica is locked (flock) while open, so a
// second open of the same directory fails instead of corrupting it.
func OpenReplica(dir string) (*DiskReplica, error) {
	r := &DiskReplica{dir: dir, drained: make(chan struct{}, 1)}
	r.bufs.New = func() any { return new([chunkBytes]byte) }
	err := r.open()
	if err != nil {
		r.closeFiles()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open replica %s: %w: %w", dir, ErrNoReplica, err)
		}
		return nil, fmt.Errorf("open replica %s: %w", dir, err)
	}
	return r, nil
}

func (r *DiskReplica) open() error {
	var err error
	if r.data, err = os.OpenFile(filepath.Join(r.dir, dataFile), os.O_RDWR, 0); err != nil {
		return err
	}
	if err := unix.Flock(int(r.data.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("replica is open elsewhere: %w", err)
	}
	if r.sums, err = os.OpenFile(filepath.Join(r.dir, sumsFile), os.O_RDWR, 0); err != nil {
		return err
	}
	if r.gensF, err = os.OpenFile(filepath.Join(r.dir, gensFile), os.O_RDWR, 0); err != nil {
		return err
	}
	epoch, err := readEpoch(r.dir)
	if err != nil {
		return err
	}
	if r.layered, err = isLayered(r.dir); err != nil {
		return err
	}
	st, err := r.data.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size <= 0 || size%BlockSize != 0 || size > maxReplicaSize {
		return fmt.Errorf("data is %d bytes, not a positive multiple of %d: %w", size, BlockSize, syscall.EUCLEAN)
	}
	for _, f := range []struct {
		f    *os.File
		want int64
	}{{r.sums, sumsLen(size)}, {r.gensF, gensLen(size)}} {
		st, err := f.f.Stat()
		if err != nil {
			return err
		}
		if st.Size() < f.want {
			return fmt.Errorf("%s is %d bytes, want %d: %w", f.f.Name(), st.Size(), f.want, syscall.EUCLEAN)
		}
	}
	raw := make([]byte, gensLen(size))
	if _, err := r.gensF.ReadAt(raw, 0); err != nil {
		return fmt.Errorf("read generations: %w", err)
	}
	gens := make([]atomic.Uint64, len(raw)/8)
	for i := range gens {
		gens[i].Store(binary.LittleEndian.Uint64(raw[i*8:]))
	}
	r.gens.Store(&gens)
	r.size.Store(size)
	r.epoch.Store(epoch)
	return nil
}

func (r *DiskReplica) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{r.data, r.sums, r.gensF} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Close implements Target: it waits for the operations under way to
// finish, then closes the files (without syncing them). Operations after
// it fail with errReplicaClosed (EBADF); a second Close does nothing.
func (r *DiskReplica) Close() error {
	r.closeOnce.Do(func() {
		r.closing.Store(true)
		for r.active.Load() != 0 {
			<-r.drained
		}
		if err := r.closeFiles(); err != nil {
			r.closeErr = fmt.Errorf("close replica %s: %w", r.dir, err)
		}
	})
	return r.closeErr
}

// errReplicaClosed is what an operation on a closed replica returns.
var errReplicaClosed = fmt.Errorf("volume: replica closed: %w", syscall.EBADF)

// acquire admits an operation that uses the files, until its release;
// it fails once Close has begun.
func (r *DiskReplica) acquire(op string) error {
	r.active.Add(1)
	if r.closing.Load() {
		r.release()
		return fmt.Errorf("%s replica %s: %w", op, r.dir, errReplicaClosed)
	}
	return nil
}

func (r *DiskReplica) release() {
	if r.active.Add(-1) == 0 && r.closing.Load() {
		select {
		case r.drained <- struct{}{}:
		default:
		}
	}
}

// Size returns the replica's size in bytes.
func (r *DiskReplica) Size() int64 { return r.size.Load() }

// Layered tells whether the replica is layered over a snapshot: blocks it
// never wrote are absent and read through to the parent.
func (r *DiskReplica) Layered() bool { return r.layered }

// Epoch returns the replica's epoch.
func (r *DiskReplica) Epoch() uint64 { return r.epoch.Load() }

func readEpoch(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, epochFile))
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("epoch file is %d bytes: %w", len(b), syscall.EUCLEAN)
	}
	return binary.LittleEndian.Uint64(b), nil
}

// writeEpoch replaces the epoch file durably: a temporary file, synced,
// renamed over it, and the directory synced.
func writeEpoch(dir string, epoch uint64) error {
	tmp := filepath.Join(dir, epochFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], epoch)
	_, err = f.Write(b[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, epochFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write epoch: %w", err)
	}
	return nil
}

// Fence implements Target.
func (r *DiskReplica) Fence(ctx context.Context, epoch uint64) (ReplicaState, error) {
	if err := ctx.Err(); err != nil {
		return ReplicaState{}, err
	}
	if err := r.acquire("fence"); err != nil {
		return ReplicaState{}, err
	}
	defer r.release()
	r.fenceMu.Lock()
	defer r.fenceMu.Unlock()
	cur := r.epoch.Load()
	if epoch < cur {
		return ReplicaState{}, fmt.Errorf("fence replica %s to epoch %d (it is at %d): %w", r.dir, epoch, cur, ErrFenced)
	}
	if epoch > cur {
		// Every block stripe held: writes that passed the epoch check are
		// finished, later ones see the new epoch.
		r.lockAllBlocks()
		err := writeEpoch(r.dir, epoch)
		if err == nil {
			r.epoch.Store(epoch)
		}
		r.unlockAllBlocks()
		if err != nil {
			return ReplicaState{}, fmt.Errorf("fence replica %s to epoch %d: %w", r.dir, epoch, err)
		}
	}
	return ReplicaState{Size: r.size.Load(), Epoch: r.epoch.Load(), MaxGen: r.maxGen()}, nil
}

func (r *DiskReplica) maxGen() uint64 {
	var m uint64
	gens := *r.gens.Load()
	for i := range gens {
		m = max(m, gens[i].Load())
	}
	return m
}

// checkEpoch returns ErrFenced for an epoch older than the replica's; the
// caller holds the block stripes it will change, so Fence cannot slip in
// between the check and the write.
func (r *DiskReplica) checkEpoch(op string, epoch uint64) error {
	if cur := r.epoch.Load(); epoch < cur {
		return fmt.Errorf("%s replica %s with epoch %d (it is at %d): %w", op, r.dir, epoch, cur, ErrFenced)
	}
	return nil
}

// Resize implements Target: it grows the files, the checksums and
// generations first, so a crash leaves them long enough for the data.
//
// Its epoch is checked as a Fence's is: older than the replica's is
// ErrFenced, and a newer one is first made the replica's epoch, durably,
// as Fence(epoch) would. So a resize at epoch E is as much a claim on the
// replica as a fence at E (a writer still at an older epoch is refused
// from then on), and the service can grow a detached volume's replicas
// with the volume's epoch even where one was left behind at an older
// epoch (a stale replica). The writer fences before it resizes, so for it
// the epochs are equal. The Host cannot tell a made-up epoch from the
// volume's: a resize at one fences the volume's writer out, as a made-up
// Fence would; only cluster nodes reach the call.
func (r *DiskReplica) Resize(ctx context.Context, epoch uint64, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if size <= 0 || size%BlockSize != 0 || size > maxReplicaSize {
		return fmt.Errorf("resize replica %s to %d: not a positive multiple of %d up to %d: %w", r.dir, size, BlockSize, int64(maxReplicaSize), syscall.EINVAL)
	}
	if err := r.acquire("resize"); err != nil {
		return err
	}
	defer r.release()
	r.fenceMu.Lock()
	defer r.fenceMu.Unlock()
	r.lockAllBlocks()
	defer r.unlockAllBlocks()
	if err := r.checkEpoch("resize", epoch); err != nil {
		return err
	}
	// A replica never shrinks: one already larger stays as it is (an
	// extend whose command was refused after it grew the replicas).
	cur := r.size.Load()
	size = max(size, cur)
	if epoch > r.epoch.Load() {
		if err := writeEpoch(r.dir, epoch); err != nil {
			return fmt.Errorf("resize replica %s: raise its epoch to %d: %w", r.dir, epoch, err)
		}
		r.epoch.Store(epoch)
	}
	if size == cur {
		return nil
	}
	for _, f := range []struct {
		f    *os.File
		want int64
	}{{r.sums, sumsLen(size)}, {r.gensF, gensLen(size)}, {r.data, size}} {
		if err := growFile(f.f, f.want); err != nil {
			return fmt.Errorf("resize replica %s to %d: %w", r.dir, size, err)
		}
	}
	old := *r.gens.Load()
	gens := make([]atomic.Uint64, gensLen(size)/8)
	for i := range old {
		gens[i].Store(old[i].Load())
	}
	r.gens.Store(&gens)
	r.size.Store(size)
	return nil
}

func growFile(f *os.File, size int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < size {
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	return f.Sync()
}

// Flush implements Target.
func (r *DiskReplica) Flush(ctx context.Context, epoch uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.acquire("flush"); err != nil {
		return err
	}
	defer r.release()
	if err := r.checkEpoch("flush", epoch); err != nil {
		return err
	}
	return r.sync()
}

// sync fdatasyncs the three files; fdatasync covers every write completed
// on a file before it, whoever made it. The caller holds acquire, so the
// descriptors are open (Close waits for it).
func (r *DiskReplica) sync() error {
	for _, f := range []*os.File{r.gensF, r.data, r.sums} {
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
		}
	}
	return nil
}

func sumsLen(size int64) int64 { return size / BlockSize * 4 }

func gensLen(size int64) int64 { return (size + ExtentSize - 1) / ExtentSize * 8 }

// stripeSpans returns the stripes of units [first, first+n) out of count
// as up to two ascending, disjoint intervals [a0, a1) and [b0, b1), so
// every caller locks in the same order.
func stripeSpans(first, n int64, count int) (a0, a1, b0, b1 int) {
	if n >= int64(count) {
		return 0, count, 0, 0
	}
	s := int(first % int64(count))
	e := s + int(n)
	if e <= count {
		return s, e, 0, 0
	}
	return 0, e - count, s, count
}

func (r *DiskReplica) lockBlocks(first, n int64, write bool) {
	a0, a1, b0, b1 := stripeSpans(first, n, blockStripes)
	for _, span := range [2][2]int{{a0, a1}, {b0, b1}} {
		for i := span[0]; i < span[1]; i++ {
			if write {
				r.blockLocks[i].Lock()
			} else {
				r.blockLocks[i].RLock()
			}
		}
	}
}

func (r *DiskReplica) unlockBlocks(first, n int64, write bool) {
	a0, a1, b0, b1 := stripeSpans(first, n, blockStripes)
	for _, span := range [2][2]int{{a0, a1}, {b0, b1}} {
		for i := span[0]; i < span[1]; i++ {
			if write {
				r.blockLocks[i].Unlock()
			} else {
				r.blockLocks[i].RUnlock()
			}
		}
	}
}

func (r *DiskReplica) lockAllBlocks()   { r.lockBlocks(0, blockStripes, true) }
func (r *DiskReplica) unlockAllBlocks() { r.unlockBlocks(0, blockStripes, true) }

// checkRange validates a request of n bytes at off: block-aligned and
// within the replica.
func (r *DiskReplica) checkRange(op string, off, n int64) error {
	size := r.size.Load()
	switch {
	case off < 0 || n < 0:
		return fmt.Errorf("%s replica %s at %d+%d: negative: %w", op, r.dir, off, n, syscall.EINVAL)
	case off%BlockSize != 0 || n%BlockSize != 0:
		return fmt.Errorf("%s replica %s at %d+%d: not aligned to %d: %w", op, r.dir, off, n, BlockSize, syscall.EINVAL)
	case off > size || n > size-off:
		return fmt.Errorf("%s replica %s at %d+%d: beyond its %d bytes: %w", op, r.dir, off, n, size, syscall.EINVAL)
	}
	return nil
}

func (r *DiskReplica) getBuf() *[chunkBytes]byte  { return r.bufs.Get().(*[chunkBytes]byte) }
func (r *DiskReplica) putBuf(b *[chunkBytes]byte) { r.bufs.Put(b) }

// readFull is ReadAt that turns a short file into EIO: every file is at
// least as long as the replica's size says.
func readFull(f *os.File, p []byte, off int64) error {
	if _, err := f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s at %d: short file: %w", f.Name(), off, syscall.EIO)
		}
		return err
	}
	return nil
}
