package disk

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// Shards of every length, in writes of every size, read back exactly as
// written, whether or not the filesystem took O_DIRECT: the aligned chunks,
// the padded last block and the cut back to the shard's length.
func TestShardLengthsRoundTrip(t *testing.T) {
	s, err := openNew(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 32, 4095, 4096, 4097, 100_000, writeChunk - 1, writeChunk, 262152*3 + 32, writeChunk, writeChunk + 1, 3*writeChunk - 7} {
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(rng.Uint32())
		}
		// The size is unknown, known, or hinted short (a peer's declared
		// length is checked later, by the caller).
		hint := []int64{-1, int64(size), int64(size / 3)}[rng.IntN(3)]
		w, err := s.CreateSized("len.0", hint)
		if err != nil {
			t.Fatal(err)
		}
		if (hint < 0 || hint >= writeChunk) && !w.chunks.direct {
			t.Logf("the test directory's filesystem takes no O_DIRECT: shards go through the page cache")
		}
		if size%2 == 0 { // as a local shard: the encoder's writes
			for p := want; len(p) > 0; {
				n := min(len(p), 1+rng.IntN(300_000))
				if k, err := w.Write(p[:n]); err != nil || k != n {
					t.Fatalf("size %d: write %d: %d %v", size, n, k, err)
				}
				p = p[n:]
			}
		} else { // as a peer's: io.Copy from the request body
			if n, err := io.Copy(w, &raggedReader{b: want, rng: rng}); err != nil || n != int64(size) {
				t.Fatalf("size %d: copied %d: %v", size, n, err)
			}
		}
		if err := w.Commit(); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Fatalf("size %d: a write after the commit was taken", size)
		}
		f, err := s.Open("len.0")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: read back %d bytes (%v), differ: %v", size, len(got), err, !bytes.Equal(got, want))
		}
	}
}

// On ext4 (the appliance's data filesystem, and the test machine's) shards
// bypass the page cache.
func TestShardsAreWrittenDirect(t *testing.T) {
	s, err := openNew(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.CreateSized("direct.0", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if !w.chunks.direct {
		t.Fatalf("%s takes no O_DIRECT: shards would fill the page cache", s.Root())
	}
	// A small shard goes through the page cache in one write, with a
	// buffer of its own size, not a pooled chunk.
	small, err := s.CreateSized("small.0", 1100)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Abort()
	if small.chunks.direct || small.chunks.pooled || cap(*small.chunks.buf) != 4096 {
		t.Fatalf("a 1100-byte shard: direct %v, pooled %v, buffer %d", small.chunks.direct, small.chunks.pooled, cap(*small.chunks.buf))
	}
}

// raggedReader returns its bytes in reads of random lengths, as TLS records
// arrive, and hides any WriterTo so io.Copy uses the writer's ReadFrom.
type raggedReader struct {
	b   []byte
	rng *rand.Rand
}

func (r *raggedReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1+r.rng.IntN(20_000))], r.b)
	r.b = r.b[n:]
	return n, nil
}
