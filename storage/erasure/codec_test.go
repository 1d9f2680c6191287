package erasure

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func encode(t *testing.T, l Layout, data []byte) [][]byte {
	t.Helper()
	out, err := encodeShards(l, data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// encodeShards encodes data into in-memory shards, in odd-sized writes that
// cross stripe boundaries at every alignment.
func encodeShards(l Layout, data []byte) ([][]byte, error) {
	bufs := make([]*bytes.Buffer, l.Shards())
	ws := make([]io.Writer, l.Shards())
	for i := range bufs {
		bufs[i] = new(bytes.Buffer)
		ws[i] = bufs[i]
	}
	e, err := NewEncoder(l, int64(len(data)), ws)
	if err != nil {
		return nil, err
	}
	for p := data; len(p) > 0; {
		c := min(len(p), 1+mrand.IntN(3*l.StripeSize))
		if _, err := e.Write(p[:c]); err != nil {
			return nil, err
		}
		p = p[c:]
	}
	if err := e.Close(); err != nil {
		return nil, err
	}
	out := make([][]byte, len(bufs))
	for i, b := range bufs {
		out[i] = b.Bytes()
		if int64(len(out[i])) != l.ShardSize(int64(len(data))) {
			return nil, fmt.Errorf("shard %d is %d bytes, ShardSize says %d", i, len(out[i]), l.ShardSize(int64(len(data))))
		}
	}
	return out, nil
}

func readers(shards [][]byte) []io.ReaderAt {
	rs := make([]io.ReaderAt, len(shards))
	for i, s := range shards {
		if s != nil {
			rs[i] = bytes.NewReader(s)
		}
	}
	return rs
}

func decode(l Layout, size int64, shards [][]byte, off, n int64) ([]byte, []int, error) {
	var out bytes.Buffer
	bad, err := Decode(&out, l, size, readers(shards), nil, off, n)
	return out.Bytes(), bad, err
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestRoundTripSizesAndLayouts(t *testing.T) {
	for _, l := range []Layout{{4, 2, 1024}, {1, 1, 1000}, {2, 1, 777}, {3, 0, 999}, {4, 2, DefaultStripeSize}} {
		s := l.StripeSize
		for _, size := range []int{0, 1, s - 1, s, s + 1, 3*s + 7} {
			t.Run(fmt.Sprintf("%s/%d/%d", l, l.StripeSize, size), func(t *testing.T) {
				data := random(size)
				shards := encode(t, l, data)
				got, bad, err := decode(l, int64(size), shards, 0, int64(size))
				if err != nil || len(bad) != 0 || !bytes.Equal(got, data) {
					t.Fatalf("round trip: err=%v bad=%v equal=%v", err, bad, bytes.Equal(got, data))
				}
				// Ranged reads, including ones inside a block and across stripes.
				for range 20 {
					if size == 0 {
						break
					}
					off := mrand.Int64N(int64(size))
					n := mrand.Int64N(int64(size) - off + 1)
					got, _, err := decode(l, int64(size), shards, off, n)
					if err != nil || !bytes.Equal(got, data[off:off+n]) {
						t.Fatalf("range %d+%d: err=%v", off, n, err)
					}
				}
			})
		}
	}
}

func TestMissingAndCorruptShards(t *testing.T) {
	l := Layout{Data: 4, Parity: 2, StripeSize: 4096}
	data := random(5*4096 + 123)
	shards := encode(t, l, data)
	size := int64(len(data))

	// Any m shards may be lost.
	for a := 0; a < l.Shards(); a++ {
		for b := a + 1; b < l.Shards(); b++ {
			s := append([][]byte(nil), shards...)
			s[a], s[b] = nil, nil
			got, bad, err := decode(l, size, s, 0, size)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("shards %d,%d missing: %v", a, b, err)
			}
			if len(bad) != 2 {
				t.Fatalf("shards %d,%d missing: bad=%v", a, b, bad)
			}
		}
	}
	// A flipped byte in a block is detected, reported and repaired on the fly.
	s := append([][]byte(nil), shards...)
	s[1] = append([]byte(nil), shards[1]...)
	s[1][headerSize+checksumSize+2*(checksumSize+l.BlockSize())+10] ^= 0x40
	got, bad, err := decode(l, size, s, 0, size)
	if err != nil || !bytes.Equal(got, data) || fmt.Sprint(bad) != "[1]" {
		t.Fatalf("corrupt shard 1: err=%v bad=%v equal=%v", err, bad, bytes.Equal(got, data))
	}
	// A shard from another position or object is refused by its header.
	s = append([][]byte(nil), shards...)
	s[0], s[3] = shards[3], shards[0]
	if got, bad, err = decode(l, size, s, 0, size); err != nil || !bytes.Equal(got, data) || len(bad) != 2 {
		t.Fatalf("swapped shards: err=%v bad=%v", err, bad)
	}
	// m+1 bad shards: a clear error and no bytes, never wrong bytes.
	s = append([][]byte(nil), shards...)
	s[0], s[2] = nil, nil
	s[5] = append([]byte(nil), shards[5]...)
	s[5][headerSize+checksumSize] ^= 1
	s[1] = append([]byte(nil), shards[1]...)
	s[1][headerSize+checksumSize] ^= 1
	got, _, err = decode(l, size, s, 0, size)
	if !errors.Is(err, ErrTooFewShards) || len(got) != 0 {
		t.Fatalf("too many bad shards: err=%v, %d bytes returned", err, len(got))
	}
}

func TestEncoderChecksDeclaredSize(t *testing.T) {
	l := Layout{2, 1, 100}
	ws := []io.Writer{io.Discard, io.Discard, io.Discard}
	e, _ := NewEncoder(l, 10, ws)
	if _, err := e.Write(make([]byte, 11)); err == nil {
		t.Fatal("writing past the declared size succeeded")
	}
	e, _ = NewEncoder(l, 10, ws)
	_, _ = e.Write(make([]byte, 9))
	if err := e.Close(); err == nil {
		t.Fatal("closing short of the declared size succeeded")
	}
	if _, err := NewEncoder(Layout{0, 1, 100}, 1, ws[:1]); err == nil {
		t.Fatal("a layout without data shards was accepted")
	}
}

// Memory per stream is one stripe, whatever the object size.
func TestEncodeDecodeMemoryIsBounded(t *testing.T) {
	l := Layout{Data: 4, Parity: 2, StripeSize: DefaultStripeSize}
	const size = 64 << 20
	ws := make([]io.Writer, l.Shards())
	for i := range ws {
		ws[i] = io.Discard
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	e, err := NewEncoder(l, size, ws)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for written := 0; written < size; written += len(chunk) {
		if _, err := e.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("encoding 64 MiB allocated %d MiB; memory must not grow with the object", alloc>>20)
	}
}

func BenchmarkEncode4plus2(b *testing.B) {
	l := Layout{Data: 4, Parity: 2, StripeSize: DefaultStripeSize}
	data := random(DefaultStripeSize)
	ws := make([]io.Writer, l.Shards())
	for i := range ws {
		ws[i] = io.Discard
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		e, _ := NewEncoder(l, int64(len(data)), ws)
		_, _ = e.Write(data)
		_ = e.Close()
	}
}

func TestVerifyAndRebuild(t *testing.T) {
	l := Layout{Data: 4, Parity: 2, StripeSize: 4096}
	data := random(3*4096 + 99)
	shards := encode(t, l, data)
	size := int64(len(data))
	for i, s := range shards {
		if err := VerifyShard(bytes.NewReader(s), l, size, i); err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
	}
	bad := append([]byte(nil), shards[4]...)
	bad[len(bad)-1] ^= 1
	if err := VerifyShard(bytes.NewReader(bad), l, size, 4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt last block: %v", err)
	}
	if err := VerifyShard(bytes.NewReader(shards[4][:len(shards[4])-1]), l, size, 4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated shard: %v", err)
	}
	if err := VerifyShard(bytes.NewReader(shards[3]), l, size, 4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("shard under the wrong index: %v", err)
	}
	// Rebuild shards 1 and 4 from the other four: byte-identical to the originals.
	src := readers(shards)
	src[1], src[4] = nil, nil
	var b1, b4 bytes.Buffer
	dst := make([]io.Writer, l.Shards())
	dst[1], dst[4] = &b1, &b4
	if err := Rebuild(l, size, src, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), shards[1]) || !bytes.Equal(b4.Bytes(), shards[4]) {
		t.Fatal("rebuilt shards differ from the originals")
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// A decode reads near shards (on this node) before far ones, even parity
// over data, and still returns the object's bytes; far data shards come
// before far parity.
func TestDecodePrefersNearShards(t *testing.T) {
	l := Layout{Data: 4, Parity: 2, StripeSize: 4096}
	data := random(7*4096 + 77)
	shards := encode(t, l, data)
	size := int64(len(data))
	for _, tc := range []struct {
		near     []bool
		wantRead []int
	}{
		{[]bool{false, false, false, false, true, true}, []int{0, 1, 4, 5}},
		{[]bool{false, false, true, true, false, false}, []int{0, 1, 2, 3}},
		{[]bool{false, true, false, false, false, true}, []int{0, 1, 2, 5}},
		{nil, []int{0, 1, 2, 3}},
	} {
		for _, rg := range [][2]int64{{0, size}, {5000, 9000}} {
			src := make([]io.ReaderAt, len(shards))
			counts := make([]*countingReader, len(shards))
			for i, s := range shards {
				counts[i] = &countingReader{r: bytes.NewReader(s)}
				src[i] = counts[i]
			}
			var out bytes.Buffer
			bad, err := Decode(&out, l, size, src, tc.near, rg[0], rg[1])
			if err != nil || len(bad) != 0 || !bytes.Equal(out.Bytes(), data[rg[0]:rg[0]+rg[1]]) {
				t.Fatalf("near %v range %v: err=%v bad=%v equal=%v", tc.near, rg, err, bad, bytes.Equal(out.Bytes(), data[rg[0]:rg[0]+rg[1]]))
			}
			var read []int
			for i, c := range counts {
				if c.n.Load() > 0 {
					read = append(read, i)
				}
			}
			if fmt.Sprint(read) != fmt.Sprint(tc.wantRead) {
				t.Errorf("near %v range %v: read shards %v, want %v", tc.near, rg, read, tc.wantRead)
			}
		}
	}
}

// One reedsolomon encoder per layout serves every goroutine (coders): many
// encodes and reconstructing decodes at once, under the race detector in
// make test, all give back their bytes.
func TestConcurrentCodersShareOneEncoder(t *testing.T) {
	l := Layout{Data: 4, Parity: 2, StripeSize: 64 << 10}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				data := random(1 + mrand.IntN(5*l.StripeSize))
				shards, err := encodeShards(l, data)
				if err != nil {
					t.Error(err)
					return
				}
				shards[g%l.Shards()], shards[(g+i+1)%l.Shards()] = nil, nil // two lost: reconstruct
				got, _, err := decode(l, int64(len(data)), shards, 0, int64(len(data)))
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, data) {
					t.Errorf("goroutine %d, object %d: decoded bytes differ", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
}
