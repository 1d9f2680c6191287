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

func benchQD(b *testing.B, op func(Target, []byte, int64) error) {
	n := newNode(b)
	const size = 64 << 20
	n.replica(b, "r1", size)
	r := n.dial(b, "r1")
	const qd = 32
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
