package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// TestSerialLogCapped floods the serial console with many times the log's
// cap while the VM runs: on disk there is never more than the log and one
// rotated copy, each about the cap, and both the log and the serial socket
// (what the console viewers read) go on receiving the guest's output.
func TestSerialLogCapped(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	kernel, initrd := testGuest(t)
	const cap, flood = 32 << 10, 256 << 10
	d := newTestDriver(t)
	d.cfg.SerialLogMax = cap
	logDir := vmTempDir(t)
	m := Machine{Name: "chatty", VCPUs: 1, MemoryMiB: 128, Accel: "tcg",
		Kernel: kernel, Initrd: initrd, Append: fmt.Sprintf("console=ttyS0 quiet panic=-1 cairnflood=%d", flood),
		SerialLog: filepath.Join(logDir, "serial.log")}
	inst, err := d.Start(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	size := func(p string) int64 {
		st, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return st.Size()
	}
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	// The flood's own pace is TCG's on shared cores (it took over 2 minutes
	// beside the package's hot-plug guests under the race detector), so the
	// wait is generous; the cap is what is checked.
	// The cap can be overrun by what the guest prints during one rotation:
	// under TCG flooding as fast as it can, on two cores shared with the
	// race detector's other packages, that was up to 10 KiB.
	const slack = cap / 2
	var biggest int64
	testutil.WaitFor(t, 300*time.Second, "the flood to end", func() error {
		if s := size(m.SerialLog); s > biggest {
			biggest = s
		}
		// A rotation writes the next rotated copy beside the old one before
		// renaming it over it: that copy may be seen in flight, never
		// larger than the cap.
		var names []string
		all, _ := filepath.Glob(filepath.Join(logDir, "*"))
		for _, n := range all {
			if n == m.SerialLog+rotatedSuffix+".tmp" {
				if s := size(n); s > cap {
					t.Fatalf("rotation's copy in flight has %d bytes, cap %d", s, cap)
				}
				continue
			}
			names = append(names, n)
		}
		if len(names) > 2 {
			t.Fatalf("more than the log and one rotated file: %v", all)
		}
		// The marker, or the ticks that follow it: a line written while a
		// rotation copies the log is lost with the truncation (rotation is
		// for runaway output, not an audit trail), and it can be this one.
		if logs := read(m.SerialLog) + read(m.SerialLog+rotatedSuffix); !strings.Contains(logs, floodDone) && !strings.Contains(logs, "tick ") {
			return errors.New("guest still flooding")
		}
		return nil
	})
	t.Logf("largest serial log seen: %d bytes (cap %d)", biggest, cap)
	if biggest > cap+slack {
		t.Errorf("serial log reached %d bytes, cap %d", biggest, cap)
	}
	if s := size(m.SerialLog + rotatedSuffix); s == 0 || s > cap+slack {
		t.Errorf("rotated log has %d bytes, want up to the cap %d", s, cap)
	}

	// The log still grows after rotations, and a viewer on the serial
	// socket sees the guest live.
	testutil.WaitFor(t, 30*time.Second, "ticks in the serial log", func() error {
		if !strings.Contains(read(m.SerialLog), "tick ") {
			return errors.New("no tick in serial.log")
		}
		return nil
	})
	conn, err := net.Dial("unix", inst.SerialSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "tick ") {
			return
		}
	}
	t.Errorf("no tick on the serial socket: %v", sc.Err())
}
