package volume

import (
	"context"
	"sync"
	"testing"
)

// BenchmarkRemoteWrite4K is the volume's hot path: 4 KiB random writes at
// queue depth 32 on one connection over TLS.
func BenchmarkRemoteWrite4K(b *testing.B) {
	benchQD(b, func(r Target, p []byte, off int64) error {
		return r.WriteAt(context.Background(), 0, 1, p, off, false)
	})
}

// BenchmarkRemoteRead4K is the same for reads.
func BenchmarkRemoteRead4K(b *testing.B) {
	benchQD(b, func(r Target, p []byte, off int64) error {
		return r.ReadAt(context.Background(), p, off)
	})
}

// BenchmarkRemoteWrite4KQD1 is one writer waiting for each reply: the
// latency of a round trip.
func BenchmarkRemoteWrite4KQD1(b *testing.B) {
	benchQDn(b, 1, func(r Target, p []byte, off int64) error {
		return r.WriteAt(context.Background(), 0, 1, p, off, false)
	})
}

func benchQD(b *testing.B, op func(Target, []byte, int64) error) { benchQDn(b, 32, op) }

func benchQDn(b *testing.B, qd int, op func(Target, []byte, int64) error) {
	n := newNode(b)
	const size = 64 << 20
	n.replica(b, "r1", size)
	r := n.dial(b, "r1")
	b.SetBytes(BlockSize)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/qd + 1
	for w := range qd {
		wg.Go(func() {
			p := make([]byte, BlockSize)
			off := int64(w) * BlockSize
			for range per {
				if err := op(r, p, off); err != nil {
					b.Error(err)
					return
				}
				off = (off*31 + 7*BlockSize) % size
			}
		})
	}
	wg.Wait()
}
