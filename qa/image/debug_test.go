package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/testutil"
)

// With cairn.debug=1 on the kernel command line the console gets a shell
// (u-root's gosh); the test plays the terminal on the serial port, as a
// person's terminal program does, answering the line editor's cursor
// position requests. Without the flag there is none (TestBootPowerOffAndBootAgain).
func TestDebugShellOnlyWithFlag(t *testing.T) {
	files := bootFiles(t)
	disk := filepath.Join(t.TempDir(), "data.img")
	if err := os.Truncate(mustCreate(t, disk), 2<<30); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-machine", "q35", "-accel", hypervisor.Accel(), "-cpu", qemu.CPUModel(hypervisor.Accel()), "-m", "1024", "-smp", "2", "-nographic", "-no-reboot"},
		direct(files, disk, "cairn.expect=1 cairn.debug=1")...)
	args = append(args, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	t.Logf("qemu-system-x86_64 %s", shellJoin(args))
	cmd := exec.Command("qemu-system-x86_64", args...)
	keys, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	screen, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var mu sync.Mutex
	var out bytes.Buffer
	go func() {
		b := make([]byte, 4096)
		asked := 0 // cursor position requests answered
		for {
			n, err := screen.Read(b)
			if n > 0 {
				mu.Lock()
				out.Write(b[:n])
				// The terminal's answer to "where is the cursor?", once per
				// request. A request can arrive cut over two reads (the
				// kernel's console messages interleave with the shell's),
				// so they are counted in all the output, not in this read:
				// a request left unanswered stalls the line editor for good.
				now := bytes.Count(out.Bytes(), []byte("\x1b[6n"))
				mu.Unlock()
				for ; asked < now; asked++ {
					_, _ = keys.Write([]byte("\x1b[24;1R"))
				}
			}
			if err != nil {
				return
			}
		}
	}()
	seen := func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", strings.ReplaceAll(seen(), "\x1b", "^["))
		}
	}()
	// Type once the node is up and its status screen has stopped redrawing
	// under the shell, as a person at the console would. Once, typed while
	// the agent was starting, the line was taken and the shell's line editor
	// never handed it on (no output and no prompt for a minute).
	testutil.WaitFor(t, 3*time.Minute, "the debug shell's prompt and the node ready", func() error {
		if s := seen(); !strings.Contains(s, "toggle key help") || !strings.Contains(s, "Cluster:         ready") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	mark := len(seen())
	if _, err := keys.Write([]byte("ls /bbin\r")); err != nil {
		t.Fatal(err)
	}
	listed := func() error {
		if got := seen()[mark:]; !strings.Contains(got, "gosh") || !strings.Contains(got, "dmesg") {
			return fmt.Errorf("not yet")
		}
		return nil
	}
	// Under TCG the line editor has, now and then, taken the line (it
	// redrew it as entered and cleared it) and run nothing, with no
	// prompt after it. A person at the console would type the line again,
	// and so does the test; the shell must answer that one. It is logged,
	// so a run shows how often the first line was lost.
	for end := time.Now().Add(30 * time.Second); listed() != nil && time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
	}
	if listed() != nil {
		t.Logf("nothing listed 30 s after the line was entered: typing it again")
		if _, err := keys.Write([]byte("ls /bbin\r")); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, time.Minute, "the shell to list /bbin", listed)
}
