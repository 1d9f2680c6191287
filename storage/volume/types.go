package volume

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Geometry shared by the writer and the replicas.
const (
	// BlockSize is the unit of checksums and of I/O: the NBD export
	// advertises it as its minimum block size, so every request is
	// aligned to it.
	BlockSize = 4096
	// ExtentSize is the unit of generations and of resync.
	ExtentSize = 1 << 20
)

// ErrFenced is returned by a replica for a request whose epoch is older
// than the replica's: a newer writer owns the volume.
var ErrFenced = errors.New("volume: fenced by a newer writer")

// ErrNoReplica is returned for a replica this node does not hold.
var ErrNoReplica = errors.New("volume: no such replica here")

// CorruptError reports blocks whose bytes do not match their checksum.
// The range is block-aligned, within the request.
type CorruptError struct {
	Off, Len int64
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("volume: checksum mismatch in [%d, %d)", e.Off, e.Off+e.Len)
}

// ExtentInfo describes one extent of a replica. Two replicas hold the same
// bytes in an extent when both fields are equal.
type ExtentInfo struct {
	// Gen is the sequence number of the last write to the extent, 0 if
	// never written.
	Gen uint64
	// Digest is a 64-bit hash of the extent's block checksums (0 when every
	// block is unwritten), so extents compare without reading their bytes.
	Digest uint64
}

// ReplicaState is what Fence reports.
type ReplicaState struct {
	Size   int64  // bytes
	Epoch  uint64 // the replica's epoch after the call
	MaxGen uint64 // highest extent generation
}

// Presence has one bit per block, bit i%64 of word i/64 for the i-th
// block of a request or extent: set when the replica holds the block
// (written or zeroed there), clear when it never did.
type Presence []uint64

// NewPresence returns a Presence of blocks bits, all clear.
func NewPresence(blocks int64) Presence { return make(Presence, (blocks+63)/64) }

// Has tells whether block i is present.
func (p Presence) Has(i int64) bool { return p[i/64]&(1<<(i%64)) != 0 }

// Set marks block i present.
func (p Presence) Set(i int64) { p[i/64] |= 1 << (i % 64) }

// clear marks every block absent.
func (p Presence) clear() { clear(p) }

func equalPresence(a, b Presence) bool { return slices.Equal(a, b) }

// fill marks the first n blocks present.
func (p Presence) fill(n int64) {
	for i := int64(0); i < n/64; i++ {
		p[i] = ^uint64(0)
	}
	if n%64 != 0 {
		p[n/64] |= 1<<(n%64) - 1
	}
}

// Target is one replica as the writer reaches it: a local *Replica or a
// remote one over the replica protocol. Every call is safe for concurrent
// use. Calls that change data take the writer's epoch and return
// ErrFenced when it is older than the replica's.
type Target interface {
	// Fence raises the replica's epoch to epoch, durably before it
	// returns; an older epoch gets ErrFenced.
	Fence(ctx context.Context, epoch uint64) (ReplicaState, error)
	// WriteAt writes block-aligned p at off and sets the generation of
	// every extent it touches to gen. With fua the write (data, checksums,
	// generations) is on stable storage when it returns.
	WriteAt(ctx context.Context, epoch, gen uint64, p []byte, off int64, fua bool) error
	// Zero makes [off, off+length) read as zeroes (block-aligned); punch
	// deallocates the space.
	Zero(ctx context.Context, epoch, gen uint64, off, length int64, punch bool) error
	// ReadAt reads block-aligned p at off, verifying checksums; a
	// mismatch is a *CorruptError (p's contents are then undefined).
	ReadAt(ctx context.Context, p []byte, off int64) error
	// ReadLayer is ReadAt that also reports, in have (at least
	// len(p)/BlockSize bits, cleared first), the blocks the replica holds:
	// a layered replica's absent blocks read as zeroes and belong to its
	// parent; a replica that is not layered holds every block.
	ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error
	// Flush returns once every write that returned before it is on stable
	// storage.
	Flush(ctx context.Context, epoch uint64) error
	// Extents lists every extent's generation and digest.
	Extents(ctx context.Context) ([]ExtentInfo, error)
	// ReadExtent reads extent idx whole (shorter at the end of the volume),
	// verifying checksums, into p (len ExtentSize), and returns its length.
	// A non-nil have (at least blocksPerExtent bits) gets the blocks the
	// replica holds, as ReadLayer reports them.
	ReadExtent(ctx context.Context, idx int64, p []byte, have Presence) (int, error)
	// WriteExtent replaces extent idx with p and sets its generation to
	// gen (resync and repair: the generation is the source's, not new).
	// Blocks of p that are all zero are stored as holes. In a layered
	// replica have says which blocks it holds from now on (nil: all of
	// them), so a copy is present exactly where its source is; a replica
	// that is not layered holds every block and ignores have.
	WriteExtent(ctx context.Context, epoch uint64, idx int64, gen uint64, p []byte, have Presence) error
	// Resize grows the replica to size bytes (a multiple of BlockSize);
	// shrinking is refused.
	Resize(ctx context.Context, epoch uint64, size int64) error
	// Close releases the connection or file handles.
	Close() error
}
