package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentWrites hammers overlapping blocks from many goroutines,
// each write filling every block with one byte value. Readers never see a
// checksum mismatch, every block ends whole, and each extent's generation
// is the highest written to it, in memory and on disk.
func TestConcurrentWrites(t *testing.T) {
	const size = 4 * ExtentSize
	r, dir := newReplica(t, size)
	ctx := context.Background()
	const writers, perWriter = 16, 1000
	var gen atomic.Uint64
	maxGen := make([]atomic.Uint64, size/ExtentSize)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, writers+4)
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			p := make([]byte, 8*BlockSize)
			for range perWriter {
				nb := 1 + rng.IntN(4)
				// Few hot blocks around an extent boundary, so writes collide.
				off := int64(ExtentSize + (rng.IntN(8)-4)*BlockSize)
				for b := range nb {
					v := byte(1 + rng.IntN(255))
					for i := range BlockSize {
						p[b*BlockSize+i] = v
					}
				}
				g := gen.Add(1)
				if err := r.WriteAt(ctx, 0, g, p[:nb*BlockSize], off, rng.IntN(20) == 0); err != nil {
					errs <- err
					return
				}
				for e := off / ExtentSize; e <= (off+int64(nb*BlockSize)-1)/ExtentSize; e++ {
					for {
						cur := maxGen[e].Load()
						if g <= cur || maxGen[e].CompareAndSwap(cur, g) {
							break
						}
					}
				}
			}
		})
	}
	var rg sync.WaitGroup
	for range 4 {
		rg.Go(func() {
			p := make([]byte, 32*BlockSize)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := r.ReadAt(ctx, p, ExtentSize-16*BlockSize); err != nil {
					errs <- err
					return
				}
				if err := r.ReadAt(ctx, p[:BlockSize], ExtentSize); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p := mustRead(t, r, ExtentSize-16*BlockSize, 32*BlockSize)
	for b := range 32 {
		blk := p[b*BlockSize : (b+1)*BlockSize]
		if bytes.Count(blk, blk[:1]) != BlockSize {
			t.Fatalf("block %d is torn", b)
		}
	}
	e := mustExtents(t, r)
	r.Close()
	raw, err := os.ReadFile(filepath.Join(dir, gensFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxGen {
		want := maxGen[i].Load()
		if e[i].Gen != want {
			t.Errorf("extent %d gen %d, want the highest written, %d", i, e[i].Gen, want)
		}
		if g := binary.LittleEndian.Uint64(raw[i*8:]); g != want {
			t.Errorf("extent %d gen on disk %d, want %d", i, g, want)
		}
	}
}

// TestFenceConcurrentWrites: once Fence returns, no write with the old
// epoch that starts later succeeds, whatever is in flight.
func TestFenceConcurrentWrites(t *testing.T) {
	r, _ := newReplica(t, ExtentSize)
	ctx := context.Background()
	var fenced atomic.Bool
	var accepted, refused atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			p := pattern(w, BlockSize)
			for i := range 300 {
				after := fenced.Load()
				err := r.WriteAt(ctx, 1, uint64(i+1), p, int64((w*7+i)%256)*BlockSize, false)
				switch {
				case err == nil && after:
					t.Error("a write with the old epoch succeeded after Fence returned")
					return
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrFenced):
					refused.Add(1)
				default:
					t.Error(err)
					return
				}
			}
		})
	}
	for accepted.Load() < 100 && !t.Failed() {
		// let some writes through before fencing
		if _, err := r.Fence(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Fence(ctx, 2); err != nil {
		t.Fatal(err)
	}
	fenced.Store(true)
	wg.Wait()
	if refused.Load() == 0 {
		t.Error("no write was refused after the fence")
	}
}

// TestFenceWaitsForWrites: a write that passed the epoch check before
// Fence is finished before Fence returns, so nothing with the old epoch
// lands after it.
func TestFenceWaitsForWrites(t *testing.T) {
	r, _ := newReplica(t, ExtentSize)
	ctx := context.Background()
	in, release := make(chan struct{}), make(chan struct{})
	r.testHookWrite = func() {
		close(in)
		<-release
	}
	wrote := make(chan error, 1)
	go func() { wrote <- r.WriteAt(ctx, 1, 1, pattern(1, BlockSize), 0, false) }()
	<-in
	fenced := make(chan error, 1)
	go func() {
		_, err := r.Fence(ctx, 2)
		fenced <- err
	}()
	select {
	case err := <-fenced:
		t.Errorf("Fence returned (%v) while a write with the old epoch was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-wrote; err != nil {
		t.Errorf("the write admitted before the fence: %v", err)
	}
	if err := <-fenced; err != nil {
		t.Fatal(err)
	}
}

// TestHotPathAllocations keeps the 4 KiB write and read free of
// per-request allocations (the scratch buffers are pooled).
func TestHotPathAllocations(t *testing.T) {
	r, _ := newReplica(t, 8*ExtentSize)
	ctx := context.Background()
	p := pattern(1, BlockSize)
	var i int64
	if n := testing.AllocsPerRun(200, func() {
		i++
		if err := r.WriteAt(ctx, 0, uint64(i), p, (i*37%2048)*BlockSize, false); err != nil {
			t.Fatal(err)
		}
	}); n > 0 {
		t.Errorf("4 KiB write: %.1f allocations", n)
	}
	if n := testing.AllocsPerRun(200, func() {
		i++
		if err := r.ReadAt(ctx, p, (i*37%2048)*BlockSize); err != nil {
			t.Fatal(err)
		}
	}); n > 0 {
		t.Errorf("4 KiB read: %.1f allocations", n)
	}
}

func BenchmarkWriteAt4K(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "r")
	const size = 1 << 30
	if err := CreateReplica(dir, size, false); err != nil {
		b.Fatal(err)
	}
	r, err := OpenReplica(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	var gen atomic.Uint64
	b.SetBytes(BlockSize)
	b.ReportAllocs()
	b.SetParallelism(16) // about queue depth 32 on two CPUs
	b.RunParallel(func(pb *testing.PB) {
		p := pattern(int(gen.Add(1)), BlockSize)
		rng := rand.New(rand.NewPCG(gen.Add(1), 1))
		for pb.Next() {
			off := rng.Int64N(size/BlockSize) * BlockSize
			if err := r.WriteAt(ctx, 0, gen.Add(1), p, off, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkReadAt4K(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "r")
	const size = 64 << 20
	if err := CreateReplica(dir, size, false); err != nil {
		b.Fatal(err)
	}
	r, err := OpenReplica(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if err := r.WriteAt(ctx, 0, 1, pattern(1, size), 0, false); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(BlockSize)
	b.ReportAllocs()
	b.SetParallelism(16)
	var seed atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, BlockSize)
		rng := rand.New(rand.NewPCG(seed.Add(1), 1))
		for pb.Next() {
			if err := r.ReadAt(ctx, p, rng.Int64N(size/BlockSize)*BlockSize); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
