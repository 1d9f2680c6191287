package consensus

import (
	"context"
	"sync"
	"time"
)

// Linearizable reads come in crowds (every S3 GET is one), and each needs
// the leader to confirm it still leads (a heartbeat round trip to a quorum)
// and, on a follower, a round trip to the leader. One confirmation serves
// every read that arrived before it started: a read index taken after a
// read arrived covers every write acknowledged before it, which is all
// linearizability asks. So reads wait in a batch, one round is in flight at
// a time, and each round answers everyone who was waiting when it began.
// (etcd batches its ReadIndex requests the same way.)

// readBatch coalesces read-index requests into rounds of fetch.
type readBatch struct {
	fetch func(ctx context.Context) (uint64, error)

	mu      sync.Mutex
	waiting []chan readResult
	running bool
}

type readResult struct {
	index uint64
	err   error
}

// readRoundTimeout bounds one round; a caller with a shorter deadline stops
// waiting sooner.
const readRoundTimeout = 5 * time.Second

// index returns a read index taken after the call began.
func (b *readBatch) index(ctx context.Context) (uint64, error) {
	ch := make(chan readResult, 1)
	b.mu.Lock()
	b.waiting = append(b.waiting, ch)
	if !b.running {
		b.running = true
		go b.rounds()
	}
	b.mu.Unlock()
	select {
	case r := <-ch:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// rounds runs rounds while anyone waits.
func (b *readBatch) rounds() {
	for {
		b.mu.Lock()
		batch := b.waiting
		b.waiting = nil
		if len(batch) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), readRoundTimeout)
		idx, err := b.fetch(ctx)
		cancel()
		for _, ch := range batch {
			ch <- readResult{idx, err}
		}
	}
}
