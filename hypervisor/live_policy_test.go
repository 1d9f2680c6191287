package hypervisor

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
)

// look is what QEMU says of a stream at one look: its pass (dirty-sync
// count) and what is left to send.
func look(pass, remaining int64) qemu.MigrationInfo {
	var info qemu.MigrationInfo
	info.Status = "active"
	info.RAM.DirtySyncCount, info.RAM.Remaining = pass, remaining
	return info
}

// The migration policy, as issue 18 sets it: start with a small downtime
// limit; at each iteration boundary a pass that did not leave noticeably
// less is a stall, and each stall doubles the limit up to its ceiling;
// repeated stalls start auto-converge; a migration gives up on its
// memory's budget, or when nothing more gets sent for the progress
// timeout (a shorter one while the guest is paused for its copy).
func TestMigrationPolicy(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	fresh := func() *outgoing {
		return &outgoing{started: t0, limitMS: downtimeStartMS, best: math.MaxInt64, bestAt: t0}
	}

	t.Run("passes that shrink raise nothing", func(t *testing.T) {
		o := fresh()
		for i, left := range []int64{900, 500, 200, 80} {
			d := o.judge(t0.Add(time.Duration(i)*time.Second), look(int64(i+1), left<<20), 1024, "node2")
			if d.raiseLimit || d.converge || d.fail != nil || o.stalls != 0 || o.limitMS != downtimeStartMS {
				t.Fatalf("pass %d: %+v, stalls %d, limit %d ms", i+1, d, o.stalls, o.limitMS)
			}
		}
	})

	t.Run("stalls double the limit, then auto-converge", func(t *testing.T) {
		o := fresh()
		o.judge(t0, look(1, 900<<20), 1024, "node2")
		// Looks within one pass decide nothing, however little they show.
		if d := o.judge(t0.Add(time.Second), look(1, 950<<20), 1024, "node2"); d.raiseLimit || o.stalls != 0 {
			t.Fatalf("a look within a pass was judged: %+v", d)
		}
		limits := []int64{60, 120, 240, 480, 500, 500}
		for i, want := range limits {
			// Each pass leaves 95% of what the one before left: a stall.
			left := int64(float64(900<<20) * math.Pow(0.95, float64(i+1)))
			d := o.judge(t0.Add(time.Duration(i+2)*time.Second), look(int64(i+2), left), 1024, "node2")
			if o.stalls != i+1 || o.limitMS != want {
				t.Fatalf("stall %d: stalls %d, limit %d ms, want %d", i+1, o.stalls, o.limitMS, want)
			}
			if d.raiseLimit != (i < 5) {
				t.Fatalf("stall %d: raise %v with the limit at %d ms", i+1, d.raiseLimit, o.limitMS)
			}
			if d.converge != (i+1 == stallsToConverge) {
				t.Fatalf("stall %d: converge %v (asked once, at stall %d)", i+1, d.converge, stallsToConverge)
			}
			if d.fail != nil {
				t.Fatalf("stall %d gave up: %s", i+1, d.fail)
			}
		}
	})

	t.Run("a pass that leaves 89% is progress, 90% a stall", func(t *testing.T) {
		o := fresh()
		o.judge(t0, look(1, 1000), 1024, "node2")
		if o.judge(t0, look(2, 890), 1024, "node2"); o.stalls != 0 {
			t.Fatalf("89%% counted as a stall")
		}
		if o.judge(t0, look(3, 801), 1024, "node2"); o.stalls != 1 {
			t.Fatalf("90%% not counted as a stall")
		}
	})

	t.Run("no progress for the timeout gives up", func(t *testing.T) {
		o := fresh()
		o.judge(t0, look(1, 500<<20), 1024, "node2")
		if d := o.judge(t0.Add(progressTimeout), look(3, 600<<20), 1024, "node2"); d.fail != nil {
			t.Fatalf("gave up at the timeout itself: %v", d.fail)
		}
		d := o.judge(t0.Add(progressTimeout+time.Second), look(4, 600<<20), 1024, "node2")
		if !strings.Contains(failText(d), "no progress for 2m30s") {
			t.Fatalf("after the timeout with nothing sent: %q", d.fail)
		}
		// A new least left to send starts the clock again.
		o = fresh()
		o.judge(t0, look(1, 500<<20), 1024, "node2")
		o.judge(t0.Add(100*time.Second), look(2, 499<<20), 1024, "node2")
		if d := o.judge(t0.Add(progressTimeout+time.Second), look(3, 499<<20), 1024, "node2"); d.fail != nil {
			t.Fatalf("gave up though progress was made 51 s ago: %s", d.fail)
		}
	})

	t.Run("a guest paused for its copy has a shorter timeout", func(t *testing.T) {
		o := fresh()
		o.guestPausedAt = t0
		o.judge(t0, look(1, 500<<20), 1024, "node2")
		d := o.judge(t0.Add(pausedProgressTimeout+time.Second), look(1, 500<<20), 1024, "node2")
		if !strings.Contains(failText(d), "paused for its copy") || !strings.Contains(failText(d), "node2") {
			t.Fatalf("paused, nothing sent for %s: %q", pausedProgressTimeout+time.Second, d.fail)
		}
	})

	t.Run("the budget grows with the memory", func(t *testing.T) {
		// 4 GiB: 4 × 800 s. Progress all along, so only the budget ends it.
		o := fresh()
		budget := 4 * budgetPerGiB
		var d policy
		for at := time.Duration(0); at <= budget; at += time.Minute {
			d = o.judge(t0.Add(at), look(int64(at/time.Minute)+1, int64(budget-at)+1), 4096, "node2")
			if d.fail != nil {
				t.Fatalf("gave up at %s of a %s budget: %s", at, budget, d.fail)
			}
		}
		d = o.judge(t0.Add(budget+time.Second), look(1000, 1), 4096, "node2")
		if !strings.Contains(failText(d), "not done within 53m20s") {
			t.Fatalf("past the budget: %q", d.fail)
		}
		// A small VM still gets the least budget.
		o = fresh()
		if d := o.judge(t0.Add(minBudget-time.Second), look(1, 1), 128, "node2"); d.fail != nil {
			t.Fatalf("a 128 MiB VM gave up within the least budget: %s", d.fail)
		}
		if d := o.judge(t0.Add(minBudget+time.Second), look(2, 1), 128, "node2"); !strings.Contains(failText(d), "not done within 2m0s") {
			t.Fatalf("a 128 MiB VM past the least budget: %q", d.fail)
		}
	})
}

// failText is why d gives up, or "".
func failText(d policy) string {
	if d.fail == nil {
		return ""
	}
	return d.fail.Error()
}
