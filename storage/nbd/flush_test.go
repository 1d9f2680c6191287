package nbd

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// durableBackend is a memory disk with a volatile cache: a write is
// "completed" when WriteAt returns and "durable" only after a Flush that
// started after it completed, or at once with FUA. Each write carries its
// ID in its first 8 bytes.
type durableBackend struct {
	size int64

	mu        sync.Mutex
	data      []byte
	completed map[uint64]bool
	durable   map[uint64]bool

	gate                  chan struct{} // if set, writes wait for it to close
	inFlight, maxInFlight atomic.Int32
	flushes               atomic.Int32
}

func newDurableBackend(size int64) *durableBackend {
	return &durableBackend{size: size, data: make([]byte, size), completed: map[uint64]bool{}, durable: map[uint64]bool{}}
}

func (b *durableBackend) enter() func() {
	n := b.inFlight.Add(1)
	for {
		m := b.maxInFlight.Load()
		if n <= m || b.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	return func() { b.inFlight.Add(-1) }
}

func jitter() { time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond) }

func (b *durableBackend) Size() int64 { return b.size }

func (b *durableBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	defer b.enter()()
	jitter()
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(p, b.data[off:])
	return nil
}

func (b *durableBackend) WriteAt(_ context.Context, p []byte, off int64, fua bool) error {
	defer b.enter()()
	if b.gate != nil {
		<-b.gate
	}
	jitter()
	id := binary.BigEndian.Uint64(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(b.data[off:], p)
	b.completed[id] = true
	if fua {
		b.durable[id] = true
	}
	return nil
}

func (b *durableBackend) Flush(context.Context) error {
	defer b.enter()()
	b.flushes.Add(1)
	b.mu.Lock()
	snap := make([]uint64, 0, len(b.completed))
	for id := range b.completed {
		snap = append(snap, id)
	}
	b.mu.Unlock()
	time.Sleep(time.Millisecond) // writes completing now are not covered by this flush
	jitter()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range snap {
		b.durable[id] = true
	}
	return nil
}

func (b *durableBackend) Trim(context.Context, int64, int64) error { return nil }

func (b *durableBackend) WriteZeroes(_ context.Context, off, n int64, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.data[off : off+n])
	return nil
}

func (b *durableBackend) isDurable(id uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.durable[id]
}

// TestFlushCoversAcknowledgedWrites pipelines thousands of writes with
// FLUSHes (and some FUA writes) among them, on several connections, and
// checks proto.md's rule: when a FLUSH is answered, every write whose
// reply the client had before sending the FLUSH is durable; a FUA write
// is durable when answered.
func TestFlushCoversAcknowledgedWrites(t *testing.T) {
	be := newDurableBackend(1 << 20)
	cfg := DefaultConfig()
	cfg.MaxInFlight = 8
	ts := startServer(t, cfg, &Export{Name: "mem", Backend: be, MultiConn: true})

	var (
		mu    sync.Mutex
		acked = map[uint64]bool{} // writes answered, on any connection
	)
	const conns, perConn = 3, 1500
	var wg sync.WaitGroup
	for ci := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialTest(t, "unix", ts.sock, "mem", nil)
			type sent struct {
				flush bool
				fua   bool
				id    uint64
				must  []uint64 // for a flush: writes acknowledged before it was sent
			}
			var smu sync.Mutex
			pending := map[uint64]sent{}
			done := make(chan error, 1)
			go func() {
				for range perConn {
					cookie, errno, _, err := c.reply(nil)
					if err != nil {
						done <- err
						return
					}
					smu.Lock()
					s := pending[cookie]
					delete(pending, cookie)
					smu.Unlock()
					if errno != 0 {
						t.Errorf("cookie %d: errno %d", cookie, errno)
					}
					switch {
					case s.flush:
						for _, id := range s.must {
							if !be.isDurable(id) {
								t.Errorf("flush %d answered, but write %d acknowledged before it is not durable", cookie, id)
							}
						}
					default:
						if s.fua && !be.isDurable(s.id) {
							t.Errorf("FUA write %d answered but not durable", s.id)
						}
						mu.Lock()
						acked[s.id] = true
						mu.Unlock()
					}
				}
				done <- nil
			}()
			for i := range perConn {
				cookie := uint64(i)
				id := uint64(ci)<<32 | uint64(i)
				var s sent
				var req request
				var payload []byte
				if i%10 == 9 {
					s.flush = true
					mu.Lock()
					for a := range acked {
						s.must = append(s.must, a)
					}
					mu.Unlock()
					req = request{typ: cmdFlush, cookie: cookie}
				} else {
					s.id, s.fua = id, i%7 == 3
					payload = make([]byte, 512)
					binary.BigEndian.PutUint64(payload, id)
					req = request{typ: cmdWrite, cookie: cookie, offset: uint64(rand.IntN(2040)) * 512, length: 512}
					if s.fua {
						req.flags = cmdFlagFUA
					}
				}
				smu.Lock()
				pending[cookie] = s
				smu.Unlock()
				if err := c.send(req, payload); err != nil {
					t.Error(err)
					return
				}
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if m := be.maxInFlight.Load(); m < 2 || m > conns*int32(cfg.MaxInFlight) {
		t.Errorf("at most %d backend calls at once; want concurrency within the bound", m)
	}
	if be.flushes.Load() < conns*perConn/10 {
		t.Errorf("%d flushes reached the backend", be.flushes.Load())
	}
	t.Logf("max %d backend calls at once", be.maxInFlight.Load())
}

// TestInFlightBound checks that one connection never runs more than
// MaxInFlight requests at once, however many it has been sent.
func TestInFlightBound(t *testing.T) {
	be := newDurableBackend(1 << 20)
	cfg := DefaultConfig()
	cfg.MaxInFlight = 4
	ts := startServer(t, cfg, &Export{Name: "mem", Backend: be})
	c := dialTest(t, "unix", ts.sock, "mem", nil)
	const n = 200
	go func() {
		for i := range n {
			c.send(request{typ: cmdRead, cookie: uint64(i), offset: uint64(i) * 512, length: 512}, nil)
		}
	}()
	for range n {
		if _, errno, _, err := c.reply(func(uint64) int { return 512 }); err != nil || errno != 0 {
			t.Fatalf("reply: errno %d, %v", errno, err)
		}
	}
	if m := be.maxInFlight.Load(); m != 4 {
		t.Errorf("max %d backend calls at once, want 4", m)
	}
}
