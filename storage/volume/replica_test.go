package volume

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// newReplica creates and opens a replica of size bytes in a fresh
// directory, closed at the end of the test.
func newReplica(t *testing.T, size int64) (*DiskReplica, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "volumes", "r1")
	if err := CreateReplica(dir, size, false); err != nil {
		t.Fatal(err)
	}
	r := openReplica(t, dir)
	return r, dir
}

func openReplica(t *testing.T, dir string) *DiskReplica {
	t.Helper()
	r, err := OpenReplica(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// pattern returns n bytes of a block pattern that differs per seed.
func pattern(seed, n int) []byte {
	p := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func mustWrite(t *testing.T, r Target, epoch, gen uint64, p []byte, off int64) {
	t.Helper()
	if err := r.WriteAt(context.Background(), epoch, gen, p, off, false); err != nil {
		t.Fatalf("write at %d+%d: %v", off, len(p), err)
	}
}

func mustRead(t *testing.T, r Target, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := r.ReadAt(context.Background(), p, off); err != nil {
		t.Fatalf("read at %d+%d: %v", off, n, err)
	}
	return p
}

func mustExtents(t *testing.T, r Target) []ExtentInfo {
	t.Helper()
	e, err := r.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// flipByte changes one byte of a file in the replica directory behind its
// back.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCreateOpenRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "volumes", "r1")
	const size = 3*ExtentSize + 5*BlockSize
	if err := CreateReplica(dir, size, false); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{dataFile: size, sumsFile: size / BlockSize * 4, gensFile: 4 * 8, epochFile: 8} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != want {
			t.Errorf("%s is %d bytes, want %d", name, st.Size(), want)
		}
	}
	if err := CreateReplica(dir, size, false); err != nil {
		t.Errorf("second create with the same size: %v", err)
	}
	if err := CreateReplica(dir, size+BlockSize, false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("create with another size: %v, want ErrExist", err)
	}
	for _, bad := range []int64{0, -BlockSize, BlockSize + 1} {
		if err := CreateReplica(filepath.Join(t.TempDir(), "x"), bad, false); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("create with size %d: %v, want EINVAL", bad, err)
		}
	}

	r := openReplica(t, dir)
	if r.Size() != size {
		t.Errorf("size %d, want %d", r.Size(), size)
	}
	if _, err := OpenReplica(dir); err == nil {
		t.Error("a second open of an open replica succeeded")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := RemoveReplica(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("directory still there after remove: %v", err)
	}
	if err := RemoveReplica(dir); err != nil {
		t.Errorf("second remove: %v", err)
	}
	_, err := OpenReplica(dir)
	if !errors.Is(err, ErrNoReplica) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("open of a removed replica: %v, want ErrNoReplica", err)
	}
}

// TestCreateCompletesInterrupted: a directory left by a create that died
// before its files is completed by the next create, and a replica missing
// a file does not open.
func TestCreateCompletesInterrupted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, sumsFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReplica(dir); err == nil {
		t.Fatal("a half-created replica opened")
	}
	if err := CreateReplica(dir, ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	r := openReplica(t, dir)
	p := pattern(1, BlockSize)
	mustWrite(t, r, 0, 1, p, ExtentSize-BlockSize)
	if got := mustRead(t, r, ExtentSize-BlockSize, BlockSize); !bytes.Equal(got, p) {
		t.Error("read back differs")
	}
}

func TestWriteReadPersists(t *testing.T) {
	const size = 4 * ExtentSize
	r, dir := newReplica(t, size)
	ctx := context.Background()
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		n := (1 + rng.IntN(64)) * BlockSize
		off := int64(rng.IntN(size/BlockSize-n/BlockSize+1)) * BlockSize
		p := pattern(i, n)
		mustWrite(t, r, 0, uint64(i+1), p, off)
		copy(model[off:], p)
	}
	if got := mustRead(t, r, 0, size); !bytes.Equal(got, model) {
		t.Fatal("bytes read differ from those written")
	}
	before := mustExtents(t, r)
	if err := r.Flush(ctx, 0); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2 := openReplica(t, dir)
	if got := mustRead(t, r2, 0, size); !bytes.Equal(got, model) {
		t.Fatal("bytes differ after reopen")
	}
	if after := mustExtents(t, r2); !slices.Equal(before, after) {
		t.Errorf("extents after reopen %v, before %v", after, before)
	}
}

func TestFencing(t *testing.T) {
	r, dir := newReplica(t, 2*ExtentSize)
	ctx := context.Background()
	p := pattern(1, BlockSize)
	mustWrite(t, r, 0, 9, p, ExtentSize)
	st, err := r.Fence(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ReplicaState{Size: 2 * ExtentSize, Epoch: 5, MaxGen: 9}); st != want {
		t.Errorf("fence: %+v, want %+v", st, want)
	}
	if _, err := r.Fence(ctx, 5); err != nil {
		t.Errorf("fence again at the same epoch: %v", err)
	}
	if _, err := r.Fence(ctx, 4); !errors.Is(err, ErrFenced) {
		t.Errorf("fence to an older epoch: %v, want ErrFenced", err)
	}
	checkFenced := func(r *DiskReplica) {
		t.Helper()
		bytesBefore, extBefore := mustRead(t, r, 0, 2*ExtentSize), mustExtents(t, r)
		old := []struct {
			op string
			fn func() error
		}{
			{"write", func() error { return r.WriteAt(ctx, 4, 100, p, 0, false) }},
			{"zero", func() error { return r.Zero(ctx, 4, 100, ExtentSize, BlockSize, true) }},
			{"write extent", func() error { return r.WriteExtent(ctx, 4, 1, 100, make([]byte, ExtentSize), nil) }},
			{"resize", func() error { return r.Resize(ctx, 4, 3*ExtentSize) }},
			{"flush", func() error { return r.Flush(ctx, 4) }},
		}
		for _, o := range old {
			if err := o.fn(); !errors.Is(err, ErrFenced) {
				t.Errorf("%s with an older epoch: %v, want ErrFenced", o.op, err)
			}
		}
		if !bytes.Equal(mustRead(t, r, 0, 2*ExtentSize), bytesBefore) || r.Size() != 2*ExtentSize {
			t.Error("a fenced request changed the data")
		}
		if e := mustExtents(t, r); !slices.Equal(e, extBefore) {
			t.Errorf("a fenced request changed the extents: %v, was %v", e, extBefore)
		}
		mustWrite(t, r, 5, 11, p, 0)
	}
	checkFenced(r)
	r.Close()

	r2 := openReplica(t, dir)
	if r2.Epoch() != 5 {
		t.Errorf("epoch after reopen %d, want 5", r2.Epoch())
	}
	if err := r2.Zero(ctx, 5, 12, 0, BlockSize, true); err != nil {
		t.Fatal(err)
	}
	checkFenced(r2)
	if st, err := r2.Fence(ctx, 6); err != nil || st.Epoch != 6 || st.MaxGen != 12 {
		t.Errorf("fence to 6 after reopen: %+v, %v", st, err)
	}
}

func TestCorruptionDetected(t *testing.T) {
	r, dir := newReplica(t, 2*ExtentSize)
	ctx := context.Background()
	p := pattern(1, 16*BlockSize)
	mustWrite(t, r, 0, 1, p, 0)
	data := filepath.Join(dir, dataFile)

	flipByte(t, data, 3*BlockSize+100)
	check := func(off int64, n int, want CorruptError) {
		t.Helper()
		var ce *CorruptError
		err := r.ReadAt(ctx, make([]byte, n), off)
		if !errors.As(err, &ce) {
			t.Fatalf("read at %d+%d: %v, want a CorruptError", off, n, err)
		}
		if *ce != want {
			t.Errorf("read at %d+%d: corrupt %+v, want %+v", off, n, *ce, want)
		}
	}
	check(0, 16*BlockSize, CorruptError{Off: 3 * BlockSize, Len: BlockSize})
	check(3*BlockSize, BlockSize, CorruptError{Off: 3 * BlockSize, Len: BlockSize})
	if got := mustRead(t, r, 4*BlockSize, 12*BlockSize); !bytes.Equal(got, p[4*BlockSize:]) {
		t.Error("good blocks after the bad one read wrong")
	}

	flipByte(t, data, 6*BlockSize)
	flipByte(t, data, 8*BlockSize-1)
	flipByte(t, data, 9*BlockSize+7)
	check(0, 16*BlockSize, CorruptError{Off: 3 * BlockSize, Len: BlockSize})
	check(4*BlockSize, 12*BlockSize, CorruptError{Off: 6 * BlockSize, Len: 2 * BlockSize})
	check(7*BlockSize, 4*BlockSize, CorruptError{Off: 7 * BlockSize, Len: BlockSize})

	var ce *CorruptError
	if _, err := r.ReadExtent(ctx, 0, make([]byte, ExtentSize), nil); !errors.As(err, &ce) || ce.Off != 3*BlockSize {
		t.Errorf("read extent 0: %v, want corrupt at %d", err, 3*BlockSize)
	}

	// An unwritten block (checksum 0) must read as zeroes.
	flipByte(t, data, ExtentSize+BlockSize+1)
	check(ExtentSize, 4*BlockSize, CorruptError{Off: ExtentSize + BlockSize, Len: BlockSize})

	// A stale checksum: the data is intact, its sum is not.
	flipByte(t, filepath.Join(dir, sumsFile), 12*4)
	check(10*BlockSize, 6*BlockSize, CorruptError{Off: 12 * BlockSize, Len: BlockSize})

	// A corrupt run across the end of a 1 MiB verification chunk is one
	// range.
	mustWrite(t, r, 0, 2, pattern(2, ExtentSize), ExtentSize)
	mustWrite(t, r, 0, 3, p, 0) // rewriting heals the first blocks
	mustRead(t, r, 0, 2*ExtentSize)
	flipByte(t, data, ExtentSize-BlockSize) // unwritten: sum 0
	flipByte(t, data, ExtentSize+5)
	check(0, 2*ExtentSize, CorruptError{Off: ExtentSize - BlockSize, Len: 2 * BlockSize})
	check(ExtentSize, ExtentSize, CorruptError{Off: ExtentSize, Len: BlockSize})
}

func TestExtentsCompare(t *testing.T) {
	const size = 3*ExtentSize + 8*BlockSize // a short last extent
	a, _ := newReplica(t, size)
	b, _ := newReplica(t, size)
	ctx := context.Background()
	for _, r := range []*DiskReplica{a, b} {
		if e := mustExtents(t, r); len(e) != 4 || slices.ContainsFunc(e, func(x ExtentInfo) bool { return x != ExtentInfo{} }) {
			t.Fatalf("fresh replica extents %v, want 4 zero ones", e)
		}
		mustWrite(t, r, 0, 1, pattern(1, 3*BlockSize), BlockSize)
		mustWrite(t, r, 0, 2, pattern(2, 2*BlockSize), 3*ExtentSize)
		mustWrite(t, r, 0, 3, pattern(3, 2*BlockSize), ExtentSize-BlockSize) // spans two
		if err := r.Zero(ctx, 0, 4, 2*BlockSize, BlockSize, true); err != nil {
			t.Fatal(err)
		}
	}
	ea, eb := mustExtents(t, a), mustExtents(t, b)
	if !slices.Equal(ea, eb) {
		t.Fatalf("same writes, different extents:\n%v\n%v", ea, eb)
	}
	wantGens := []uint64{4, 3, 0, 2}
	for i, e := range ea {
		if e.Gen != wantGens[i] {
			t.Errorf("extent %d gen %d, want %d", i, e.Gen, wantGens[i])
		}
		if (e.Digest == 0) != (e.Gen == 0) {
			t.Errorf("extent %d: %+v", i, e)
		}
	}

	// The same generation with different bytes must show in the digest.
	mustWrite(t, a, 0, 5, pattern(5, BlockSize), 3*ExtentSize+7*BlockSize)
	mustWrite(t, b, 0, 5, pattern(6, BlockSize), 3*ExtentSize+7*BlockSize)
	ea, eb = mustExtents(t, a), mustExtents(t, b)
	if !slices.Equal(ea[:3], eb[:3]) {
		t.Error("untouched extents differ")
	}
	if ea[3].Gen != 5 || eb[3].Gen != 5 || ea[3].Digest == eb[3].Digest {
		t.Errorf("different writes, extent 3: %+v and %+v", ea[3], eb[3])
	}
}

func TestWriteExtentCopies(t *testing.T) {
	const size = 3*ExtentSize + 16*BlockSize
	src, _ := newReplica(t, size)
	dst, dstDir := newReplica(t, size)
	ctx := context.Background()
	mustWrite(t, src, 0, 1, pattern(1, 40*BlockSize), 0)
	mustWrite(t, src, 0, 2, make([]byte, 8*BlockSize), 4*BlockSize) // zeroes, written
	if err := src.Zero(ctx, 0, 3, 20*BlockSize, 4*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := src.Zero(ctx, 0, 4, 30*BlockSize, 2*BlockSize, true); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, src, 0, 5, pattern(5, 16*BlockSize), 3*ExtentSize)
	mustWrite(t, src, 0, 6, make([]byte, ExtentSize), ExtentSize) // all zero but written
	// dst has other bytes that the copy must replace, holes included.
	mustWrite(t, dst, 0, 7, pattern(7, size), 0)

	buf := make([]byte, ExtentSize)
	for i := range int64(4) {
		n, err := src.ReadExtent(ctx, i, buf, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(ExtentSize, size-i*ExtentSize); int64(n) != want {
			t.Errorf("extent %d: %d bytes, want %d", i, n, want)
		}
		gen := mustExtents(t, src)[i].Gen
		if err := dst.WriteExtent(ctx, 0, i, gen, buf[:n], nil); err != nil {
			t.Fatal(err)
		}
	}
	es, ed := mustExtents(t, src), mustExtents(t, dst)
	if !slices.Equal(es, ed) {
		t.Errorf("extents differ after the copy:\n%v\n%v", es, ed)
	}
	if ed[1].Digest != 0 || ed[2] != (ExtentInfo{}) || ed[1].Gen != 6 {
		t.Errorf("zero extents after the copy: %v", ed)
	}
	if !bytes.Equal(mustRead(t, src, 0, size), mustRead(t, dst, 0, size)) {
		t.Error("bytes differ after the copy")
	}
	// Zero blocks are holes in the copy: extent 1 and 2 take no space.
	st, err := os.Stat(filepath.Join(dstDir, dataFile))
	if err != nil {
		t.Fatal(err)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > ExtentSize+32*BlockSize {
		t.Errorf("the copy uses %d bytes; zero blocks were not punched", used)
	}
	if err := dst.WriteExtent(ctx, 0, 3, 1, buf, nil); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write extent with a full buffer for the short extent: %v, want EINVAL", err)
	}
	if err := dst.WriteExtent(ctx, 0, 4, 1, buf, nil); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write extent beyond the end: %v, want EINVAL", err)
	}
}

func TestResize(t *testing.T) {
	r, dir := newReplica(t, ExtentSize+BlockSize)
	ctx := context.Background()
	p := pattern(1, BlockSize)
	mustWrite(t, r, 0, 1, p, ExtentSize)
	if err := r.WriteAt(ctx, 0, 2, p, ExtentSize+BlockSize, false); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("write beyond the end: %v, want EINVAL", err)
	}
	const size = 3*ExtentSize + 4*BlockSize
	if err := r.Resize(ctx, 0, size); err != nil {
		t.Fatal(err)
	}
	if r.Size() != size {
		t.Errorf("size %d, want %d", r.Size(), size)
	}
	if err := r.Resize(ctx, 0, size); err != nil {
		t.Errorf("resize to the same size: %v", err)
	}
	if got := mustRead(t, r, ExtentSize+BlockSize, 2*ExtentSize); !bytes.Equal(got, make([]byte, 2*ExtentSize)) {
		t.Error("the grown part does not read as zeroes")
	}
	mustWrite(t, r, 0, 3, p, size-BlockSize)
	mustWrite(t, r, 0, 4, p, ExtentSize+BlockSize)
	e := mustExtents(t, r)
	if len(e) != 4 || e[1].Gen != 4 || e[3].Gen != 3 || e[2] != (ExtentInfo{}) {
		t.Errorf("extents after resize: %v", e)
	}
	for _, bad := range []int64{size + 1, 0} {
		if err := r.Resize(ctx, 0, bad); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("resize to %d: %v, want EINVAL", bad, err)
		}
	}
	// A replica never shrinks: a smaller size leaves it as it is.
	if err := r.Resize(ctx, 0, ExtentSize); err != nil || r.Size() != size {
		t.Errorf("resize to %d: %v, size %d, want %d", ExtentSize, err, r.Size(), size)
	}
	r.Close()
	r2 := openReplica(t, dir)
	if r2.Size() != size {
		t.Errorf("size after reopen %d, want %d", r2.Size(), size)
	}
	if got := mustRead(t, r2, size-BlockSize, BlockSize); !bytes.Equal(got, p) {
		t.Error("the write in the grown part is lost after reopen")
	}
	if !slices.Equal(e, mustExtents(t, r2)) {
		t.Error("extents differ after reopen")
	}
}

func TestZero(t *testing.T) {
	const size = 12 * ExtentSize
	r, dir := newReplica(t, size)
	ctx := context.Background()
	full := pattern(1, size)
	mustWrite(t, r, 0, 1, full, 0)
	used := func() int64 {
		st, err := os.Stat(filepath.Join(dir, dataFile))
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Blocks * 512
	}
	before := used()

	// Punch an unaligned-to-extents range large enough to punch pages of
	// the sums file too.
	off, n := int64(3*BlockSize), int64(9*ExtentSize)
	if err := r.Zero(ctx, 0, 2, off, n, true); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(full)
	clear(want[off : off+n])
	if got := mustRead(t, r, 0, size); !bytes.Equal(got, want) {
		t.Fatal("punched range does not read as zeroes, or its edges changed")
	}
	if after := used(); before-after < n-ExtentSize {
		t.Errorf("punch freed %d bytes, want about %d", before-after, n)
	}
	e := mustExtents(t, r)
	for i := 1; i < 9; i++ {
		if e[i] != (ExtentInfo{Gen: 2}) {
			t.Errorf("punched extent %d: %+v, want gen 2 and no digest", i, e[i])
		}
	}
	if e[0].Digest == 0 || e[9].Digest == 0 || e[10].Gen != 1 {
		t.Errorf("edge extents: %v", e)
	}

	// Zero without punching: allocated, reads zeroes.
	if err := r.Zero(ctx, 0, 3, 10*ExtentSize+BlockSize, 2*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	clear(want[10*ExtentSize+BlockSize : 10*ExtentSize+3*BlockSize])
	if got := mustRead(t, r, 0, size); !bytes.Equal(got, want) {
		t.Fatal("zeroed range does not read as zeroes")
	}
	if e := mustExtents(t, r); e[10].Gen != 3 || e[10].Digest == 0 {
		t.Errorf("extent 10 after zero: %+v", e[10])
	}
	if err := r.Zero(ctx, 0, 4, 11*ExtentSize, ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	if e := mustExtents(t, r); e[11] != (ExtentInfo{Gen: 4}) {
		t.Errorf("an extent zeroed whole reads as zeroes, want no digest: %+v", e[11])
	}
}

func TestBadRequests(t *testing.T) {
	const size = 2 * ExtentSize
	r, _ := newReplica(t, size)
	ctx := context.Background()
	for _, c := range []struct {
		off int64
		n   int
	}{
		{1, BlockSize}, {BlockSize, BlockSize - 1}, {-BlockSize, BlockSize},
		{size, BlockSize}, {size - BlockSize, 2 * BlockSize}, {1 << 62, BlockSize},
	} {
		if err := r.WriteAt(ctx, 0, 1, make([]byte, c.n), c.off, false); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("write at %d+%d: %v, want EINVAL", c.off, c.n, err)
		}
		if err := r.ReadAt(ctx, make([]byte, c.n), c.off); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("read at %d+%d: %v, want EINVAL", c.off, c.n, err)
		}
		if err := r.Zero(ctx, 0, 1, c.off, int64(c.n), true); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("zero at %d+%d: %v, want EINVAL", c.off, c.n, err)
		}
	}
	if e := mustExtents(t, r); e[0] != (ExtentInfo{}) || e[1] != (ExtentInfo{}) {
		t.Errorf("refused requests changed extents: %v", e)
	}
	for _, idx := range []int64{-1, 2} {
		if _, err := r.ReadExtent(ctx, idx, make([]byte, ExtentSize), nil); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("read extent %d: %v, want EINVAL", idx, err)
		}
	}
	if _, err := r.ReadExtent(ctx, 0, make([]byte, BlockSize), nil); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("read extent into a short buffer: %v, want EINVAL", err)
	}
	if err := r.WriteExtent(ctx, 0, 0, 1, make([]byte, BlockSize), nil); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write extent of a block: %v, want EINVAL", err)
	}
	// The last block is in range.
	mustWrite(t, r, 0, 1, pattern(1, BlockSize), size-BlockSize)
}

// TestGenerationKeepsHighest: writes to one extent arriving out of order
// leave the extent at the highest generation; WriteExtent sets it.
func TestGenerationKeepsHighest(t *testing.T) {
	r, dir := newReplica(t, 2*ExtentSize)
	ctx := context.Background()
	mustWrite(t, r, 0, 10, pattern(1, BlockSize), 0)
	mustWrite(t, r, 0, 5, pattern(2, BlockSize), BlockSize)
	if err := r.Zero(ctx, 0, 7, 2*BlockSize, BlockSize, true); err != nil {
		t.Fatal(err)
	}
	if e := mustExtents(t, r); e[0].Gen != 10 {
		t.Errorf("extent 0 gen %d after writes 10, 5, 7; want 10", e[0].Gen)
	}
	if err := r.WriteExtent(ctx, 0, 0, 3, pattern(3, ExtentSize), nil); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2 := openReplica(t, dir)
	if e := mustExtents(t, r2); e[0].Gen != 3 {
		t.Errorf("extent 0 gen %d after a copy with gen 3, reopened", e[0].Gen)
	}
}

// TestNoSpace: a full file system's ENOSPC reaches the caller as itself.
// It needs root to mount a small tmpfs.
func TestNoSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	dir := filepath.Join(mnt, "volumes", "r")
	if err := CreateReplica(dir, 8*ExtentSize, false); err != nil {
		t.Fatal(err)
	}
	r := openReplica(t, dir)
	ctx := context.Background()
	// tmpfs cannot zero a range: the fallback writes zeroes.
	mustWrite(t, r, 0, 1, pattern(2, 2*BlockSize), 0)
	if err := r.Zero(ctx, 0, 2, 0, 2*BlockSize, false); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, r, 0, 2*BlockSize); !bytes.Equal(got, make([]byte, 2*BlockSize)) {
		t.Error("zeroed range reads nonzero")
	}
	p := pattern(1, ExtentSize)
	var err error
	for i := range int64(8) {
		if err = r.WriteAt(ctx, 0, 3, p, i*ExtentSize, false); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 8 MiB into 1 MiB: %v, want ENOSPC", err)
	}
}

// TestResyncByExtents: a replica that missed some writes differs from the
// source in exactly the extents those writes touched, and copying those
// makes the two equal in extents and bytes.
func TestResyncByExtents(t *testing.T) {
	const size = 8*ExtentSize + 4*BlockSize
	src, _ := newReplica(t, size)
	dst, _ := newReplica(t, size)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	missed := map[int64]bool{}
	for i := range 300 {
		gen := uint64(i + 1)
		nb := 1 + rng.IntN(40)
		off := rng.Int64N(size/BlockSize-int64(nb)+1) * BlockSize
		n := int64(nb) * BlockSize
		outage := i >= 150 && i < 200
		var op func(Target) error
		switch rng.IntN(4) {
		case 0:
			punch := rng.IntN(2) == 0
			op = func(r Target) error { return r.Zero(ctx, 0, gen, off, n, punch) }
		case 1:
			op = func(r Target) error { return r.WriteAt(ctx, 0, gen, make([]byte, n), off, false) }
		default:
			p := pattern(i, int(n))
			op = func(r Target) error { return r.WriteAt(ctx, 0, gen, p, off, false) }
		}
		if err := op(src); err != nil {
			t.Fatal(err)
		}
		if outage {
			for e := off / ExtentSize; e <= (off+n-1)/ExtentSize; e++ {
				missed[e] = true
			}
			continue
		}
		if err := op(dst); err != nil {
			t.Fatal(err)
		}
	}
	es, ed := mustExtents(t, src), mustExtents(t, dst)
	buf := make([]byte, ExtentSize)
	copied := 0
	for i := range es {
		if es[i] == ed[i] {
			continue
		}
		// Later writes may have covered what the copy missed, never
		// the other way round.
		if !missed[int64(i)] {
			t.Errorf("extent %d differs without missed writes: source %+v, copy %+v", i, es[i], ed[i])
		}
		copied++
		n, err := src.ReadExtent(ctx, int64(i), buf, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.WriteExtent(ctx, 0, int64(i), es[i].Gen, buf[:n], nil); err != nil {
			t.Fatal(err)
		}
	}
	if copied == 0 {
		t.Fatal("the outage left no extent different")
	}
	if ed := mustExtents(t, dst); !slices.Equal(es, ed) {
		t.Errorf("extents differ after the resync:\n%v\n%v", es, ed)
	}
	if !bytes.Equal(mustRead(t, src, 0, size), mustRead(t, dst, 0, size)) {
		t.Error("bytes differ after the resync")
	}
}
