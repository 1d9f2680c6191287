package storage

import (
	"testing"

	"github.com/cairnhq/cairn/storage/erasure"
)

// Small objects are stored as whole copies with the pool's parity; the
// quorum of copies is two whenever there are three or more, so an
// acknowledged small write never rests on one disk.
func TestSmallObjectLayoutAndQuorum(t *testing.T) {
	l42 := erasure.Layout{Data: 4, Parity: 2, StripeSize: erasure.DefaultStripeSize}
	l11 := erasure.Layout{Data: 1, Parity: 1, StripeSize: erasure.DefaultStripeSize}
	l21 := erasure.Layout{Data: 2, Parity: 1, StripeSize: erasure.DefaultStripeSize}
	for _, tc := range []struct {
		pool erasure.Layout
		size int64
		want string
	}{
		{l42, 0, "1+2"},
		{l42, 4 << 10, "1+2"},
		{l42, ReplicateMax, "1+2"},
		{l42, ReplicateMax + 1, "4+2"},
		{l42, 64 << 20, "4+2"},
		{l21, 4 << 10, "2+1"}, // parity 1: 1+1 would need both copies
		{erasure.Layout{Data: 8, Parity: 4, StripeSize: erasure.DefaultStripeSize}, 4 << 10, "1+4"},
		{l11, 4 << 10, "1+1"},
	} {
		got := smallLayout(tc.pool, tc.size)
		if got.String() != tc.want || got.StripeSize != tc.pool.StripeSize || got.Validate() != nil {
			t.Errorf("%s pool, %d bytes: layout %s (stripe %d), want %s", tc.pool, tc.size, got, got.StripeSize, tc.want)
		}
	}
	for l, want := range map[erasure.Layout]int{
		{Data: 1, Parity: 0}: 1,
		{Data: 1, Parity: 1}: 2,
		{Data: 1, Parity: 2}: 2,
		{Data: 1, Parity: 3}: 2,
		{Data: 2, Parity: 1}: 2,
		{Data: 2, Parity: 2}: 3,
		{Data: 4, Parity: 2}: 4,
	} {
		if got := writeQuorum(l); got != want {
			t.Errorf("write quorum of %s: %d, want %d", l, got, want)
		}
	}
}
