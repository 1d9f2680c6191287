package benchrun

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStop, returned by an operation, ends its worker without counting the
// operation: a load with a budget uses it once the budget is spent.
var ErrStop = errors.New("benchrun: stop")

// Closed is a closed-loop load: Workers workers, each starting its next
// operation as soon as its last one ended, for Round.
type Closed struct {
	Workers int
	Round   time.Duration
}

// Run calls op from every worker until the round is over and returns what it
// measured. op gets the worker's number and a fresh operation number (0, 1,
// ... across all workers, so it can name a fresh key). op's context is ctx,
// not bounded by the round: an operation in flight at the end finishes and
// counts, and the round lasts until the last one is in.
func (l Closed) Run(ctx context.Context, op func(ctx context.Context, worker, seq int) error) Sample {
	var next atomic.Int64
	results := make([]Sample, l.Workers)
	start := time.Now()
	end := start.Add(l.Round)
	var wg sync.WaitGroup
	for w := range l.Workers {
		wg.Go(func() {
			r := &results[w]
			for ctx.Err() == nil && time.Now().Before(end) {
				t0 := time.Now()
				err := op(ctx, w, int(next.Add(1))-1)
				lat := time.Since(t0)
				switch {
				case errors.Is(err, ErrStop):
					return
				case err != nil:
					r.Errors++
					if r.FirstErr == nil {
						r.FirstErr = err
					}
				default:
					r.Lat = append(r.Lat, lat)
				}
			}
		})
	}
	wg.Wait()
	s := Sample{Elapsed: time.Since(start)}
	for i := range results {
		s.Add(&results[i])
	}
	return s
}

// Once has every worker call op once, all at the same time, whatever the
// round: a warm-up after which every worker has opened its connection.
func (l Closed) Once(ctx context.Context, op func(ctx context.Context, worker, seq int) error) Sample {
	results := make([]Sample, l.Workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range l.Workers {
		wg.Go(func() {
			t0 := time.Now()
			if err := op(ctx, w, w); err != nil {
				results[w].Errors, results[w].FirstErr = 1, err
				return
			}
			results[w].Lat = []time.Duration{time.Since(t0)}
		})
	}
	wg.Wait()
	s := Sample{Elapsed: time.Since(start)}
	for i := range results {
		s.Add(&results[i])
	}
	return s
}

// Sample is what a closed-loop load measured, over one round or several.
type Sample struct {
	Elapsed  time.Duration   // summed over rounds
	Lat      []time.Duration // of the successful operations
	Errors   int
	FirstErr error
	sorted   bool
}

// Ops is the number of successful operations.
func (s *Sample) Ops() int { return len(s.Lat) }

// Rate is successful operations per second.
func (s *Sample) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(len(s.Lat)) / s.Elapsed.Seconds()
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of the
// latencies, or 0 without any.
func (s *Sample) Percentile(p float64) time.Duration {
	if len(s.Lat) == 0 {
		return 0
	}
	if !s.sorted {
		slices.Sort(s.Lat)
		s.sorted = true
	}
	rank := int(p/100*float64(len(s.Lat))+0.999999) - 1
	return s.Lat[min(max(rank, 0), len(s.Lat)-1)]
}

// Add merges o's operations and errors into s; Elapsed adds up too, as
// rounds follow each other.
func (s *Sample) Add(o *Sample) {
	s.Elapsed += o.Elapsed
	s.Lat = append(s.Lat, o.Lat...)
	s.Errors += o.Errors
	if s.FirstErr == nil {
		s.FirstErr = o.FirstErr
	}
	s.sorted = false
}
