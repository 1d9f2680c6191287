package volume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hooked wraps a replica: before reaches every WriteAt/Flush and may fail
// or block it.
type hooked struct {
	Target
	beforeWrite       func(off int64) error
	beforeFlush       func() error
	beforeWriteExtent func()
}

func (h hooked) WriteExtent(ctx context.Context, e uint64, idx int64, g uint64, p []byte, have Presence) error {
	if h.beforeWriteExtent != nil {
		h.beforeWriteExtent()
	}
	return h.Target.WriteExtent(ctx, e, idx, g, p, have)
}

func (h hooked) WriteAt(ctx context.Context, e, g uint64, p []byte, off int64, fua bool) error {
	if h.beforeWrite != nil {
		if err := h.beforeWrite(off); err != nil {
			return err
		}
	}
	return h.Target.WriteAt(ctx, e, g, p, off, fua)
}
func (h hooked) Flush(ctx context.Context, e uint64) error {
	if h.beforeFlush != nil {
		if err := h.beforeFlush(); err != nil {
			return err
		}
	}
	return h.Target.Flush(ctx, e)
}
func (h hooked) Close() error { return nil }

var dialRefuse [3]atomic.Bool

func openHooked(t *testing.T, r *rig, wrap func(i int, t Target) Target) *Writer {
	r.state.mu.Lock()
	r.state.epoch++
	cfg := WriterConfig{VolumeID: "vol", Epoch: r.state.epoch, Size: r.size, MinInSync: 2, Control: r.state,
		RetryInterval: 20 * time.Millisecond}
	for i := range r.reps {
		id := fmt.Sprintf("r%d", i)
		cfg.Members = append(cfg.Members, Member{ID: id, Node: id, State: r.state.states[id], Local: i == 0})
	}
	r.state.mu.Unlock()
	cfg.Dial = func(_ context.Context, m Member) (Target, error) {
		var i int
		fmt.Sscanf(m.ID, "r%d", &i)
		if r.down[i].Load() || dialRefuse[i].Load() {
			return nil, errCut
		}
		return wrap(i, cuttable{r.reps[i], r.down[i]}), nil
	}
	w, err := OpenWriter(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	return w
}

// A write that snapshotted the local member, then waited at the gate while
// another write dropped that member, calls a nil Target (writer.go fanout
// reads m.t outside w.mu after closeMember set it to nil).
func TestWriterDropDuringGate(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	release := make(chan struct{})
	var entered sync.WaitGroup
	entered.Add(2)
	w := openHooked(t, r, func(i int, tg Target) Target {
		h := hooked{Target: tg}
		switch i {
		case 0: // local: fails the write at 0
			h.beforeWrite = func(off int64) error {
				if off == 0 {
					return errors.New("local disk error")
				}
				return nil
			}
		default: // remotes: hold the write at 1 MiB
			h.beforeWrite = func(off int64) error {
				if off == 1<<20 {
					entered.Done()
					<-release
				}
				return nil
			}
		}
		return h
	})
	ctx := context.Background()
	w2 := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				w2 <- fmt.Errorf("panic: %v", p)
			}
		}()
		w2 <- w.WriteAt(ctx, random(4096), 1<<20, false)
	}()
	entered.Wait() // W2 has its member list (with the local one) and waits at the gate
	if err := w.WriteAt(ctx, random(4096), 0, false); err != nil {
		t.Fatalf("W1: %v", err)
	}
	if got := w.Replicas()["r0"]; got == ReplicaInSync {
		close(release)
		t.Fatalf("local is %q after its write failed", got)
	}
	close(release)
	if err := <-w2; err != nil {
		t.Fatalf("W2: %v", err)
	}
}

// A write that fails on a replica while it is being rebuilt (and is
// acknowledged without it) keeps that replica out of sync: the catch-up
// must not record it in sync, and the floor of two copies still holds.
func TestWriterCatchUpMissedWrite(t *testing.T) {
	r := newRig(t, 3, 4<<20)
	var arm, failWrites atomic.Bool
	copyHeld := make(chan struct{})
	copyGo := make(chan struct{})
	var once sync.Once
	r.down[2].Store(true)
	w := openHooked(t, r, func(i int, tg Target) Target {
		h := hooked{Target: tg}
		if i == 2 {
			h.beforeWriteExtent = func() {
				if arm.Load() {
					once.Do(func() { close(copyHeld); <-copyGo })
				}
			}
			h.beforeWrite = func(off int64) error {
				if failWrites.Load() {
					return errors.New("r2 write timed out")
				}
				return nil
			}
		}
		return h
	})
	ctx := context.Background()
	if got := r.state.state("r2"); got != ReplicaStale {
		t.Fatalf("r2 is %q", got)
	}
	// Something for the catch-up to copy: extent 2, written while r2 is away.
	if err := w.WriteAt(ctx, random(4096), 2<<20, false); err != nil {
		t.Fatal(err)
	}
	arm.Store(true)
	r.down[2].Store(false)
	<-copyHeld // the catch-up is copying extent 2 into r2
	failWrites.Store(true)
	data := random(4096)
	if err := w.WriteAt(ctx, data, 8192, false); err != nil {
		t.Fatalf("write: %v", err) // acknowledged on r0, r1
	}
	dialRefuse[2].Store(true) // r2 cannot be dialled again: no later retry fixes it up
	defer dialRefuse[2].Store(false)
	close(copyGo)
	for range 20 { // ten catch-up rounds
		time.Sleep(20 * time.Millisecond)
		if st := r.state.state("r2"); st == ReplicaInSync {
			t.Fatalf("r2 recorded in sync though it lacks an acknowledged write (writer: %q)", w.Replicas()["r2"])
		}
	}
	r.down[1].Store(true)
	if err := w.WriteAt(ctx, random(4096), 16384, false); err == nil {
		t.Errorf("write acknowledged with a single copy (r0); state: r0=%s r1=%s r2=%s",
			r.state.state("r0"), r.state.state("r1"), r.state.state("r2"))
	}
}
