package agent

import (
	"context"
	"fmt"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

func heldHeap() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64()
}

// When a burst ends, the process hands back what the burst left behind.
func TestReleaseWhenIdle(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // the burst's garbage stays until released
	for range 64 {
		burstSink = append(burstSink, make([]byte, 1<<20))
	}
	burstSink = nil
	before := heldHeap()
	if before < 64<<20 {
		t.Fatalf("the burst left only %d bytes held", before)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go releaseWhenIdle(ctx, 100*time.Millisecond)
	testutil.WaitFor(t, 5*time.Second, "the burst's heap released", func() error {
		if now := heldHeap(); now > before-48<<20 {
			return fmt.Errorf("%d MiB held, %d MiB after the burst", now>>20, before>>20)
		}
		return nil
	})
}

var burstSink [][]byte
