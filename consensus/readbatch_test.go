package consensus

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// A read that arrives while a round is in flight waits for the next one: a
// read index taken before a read arrived may miss a write acknowledged just
// before it. Reads that wait together share one round.
func TestReadBatchRounds(t *testing.T) {
	started := make(chan uint64)
	release := make(chan struct{})
	var round uint64
	b := &readBatch{fetch: func(context.Context) (uint64, error) {
		round++
		started <- round
		<-release
		return round, nil
	}}
	ctx := context.Background()
	got := make(chan uint64, 10)
	go func() { idx, _ := b.index(ctx); got <- idx }() // A
	if r := <-started; r != 1 {
		t.Fatalf("first round %d", r)
	}
	// B and C arrive while round 1 is in flight.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { idx, _ := b.index(ctx); got <- idx })
	}
	testutil.WaitFor(t, 5*time.Second, "B and C waiting", func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.waiting) != 2 {
			return fmt.Errorf("%d waiting", len(b.waiting))
		}
		return nil
	})
	release <- struct{}{}
	if a := <-got; a != 1 {
		t.Fatalf("A got the index of round %d, want 1", a)
	}
	if r := <-started; r != 2 {
		t.Fatalf("second round %d", r)
	}
	release <- struct{}{}
	wg.Wait()
	for range 2 {
		if x := <-got; x != 2 {
			t.Fatalf("a read that arrived during round 1 got round %d's index", x)
		}
	}
	if round != 2 {
		t.Fatalf("%d rounds for three reads, want 2", round)
	}
}
