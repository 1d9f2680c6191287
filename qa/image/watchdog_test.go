package image

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// watchdogTimeout is the timeout the agent sets on the box's watchdog
// (appliance/agent: HATiming's Lease - Fence - 1 s).
const watchdogTimeout = 3 * time.Second

var (
	watchdogArmed = regexp.MustCompile(`msg="watchdog armed".* device=(\S+) timeout_s=(\d+)`)
	agentStopped  = regexp.MustCompile(`agent-stopped-[0-9]+`)
	// The box's /dev/watchdog is QEMU's i6300esb, not the q35 chipset's
	// iTCO watchdog, which the image's drivers also find there.
	i6300esb = regexp.MustCompile(`msg="hardware watchdog" .*device=/dev/watchdog identity="i6300ESB timer"`)
)

// A box with a hardware watchdog, QEMU's i6300esb, loads its driver at boot
// and runs the agent with --watchdog /dev/watchdog; the agent arms it with a
// 3 s timeout once it runs VMs and keeps it from firing; a clean power-off
// disarms it; when the agent hangs, the watchdog fires within seconds.
//
// This host has no softdog, so the box runs as the appliance image in QEMU.
// It boots the kernel and initramfs directly, with the UEFI disk image as its
// disk and slot A on the command line: the agent runs VMs (and so pets the
// watchdog) only with a slot's system image, and OVMF and systemd-boot would
// add seconds that have nothing to do with the watchdog.
//
// QEMU's watchdog action is pause, not reset: the monitor then says "paused
// (watchdog)", which only the watchdog's expiry gives, where a reset (or,
// under -no-reboot, QEMU's exit) could as well come from a panic or a
// power-off; and a box whose watchdog fires while it shuts down stays
// paused instead of powering off. The hang is the box's process, which runs
// the agent, stopped with SIGSTOP from the debug shell, whose parent it is:
// the process keeps the device open and no longer pets it, as a hung agent.
func TestWatchdogResetsHungBox(t *testing.T) {
	files := bootFiles(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	copyFile(t, filepath.Join(files, "cairn.img"), disk)
	if err := os.Truncate(disk, 4<<30); err != nil {
		t.Fatal(err)
	}

	// A clean power-off disarms the watchdog (the magic close): a shutdown
	// that outlasted its timeout would otherwise be reset halfway, before
	// the data disk is synced and unmounted.
	b, _ := bootArmed(t, files, disk)
	b.powerOff()
	if !strings.Contains(b.Console(), `msg="watchdog disarmed" component=vms device=/dev/watchdog`) {
		t.Fatal("the box powered off without disarming its watchdog")
	}

	b, armedAt := bootArmed(t, files, disk)
	// Petted, the watchdog does not fire: the box runs on for two of its
	// timeouts after arming it.
	testutil.WaitFor(t, 3*time.Minute, "the debug shell's prompt and the node ready", func() error {
		if c := b.Console(); !strings.Contains(c, "toggle key help") || !strings.Contains(c, "Cluster:         ready") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	for {
		if st, err := b.status(); err != nil || st != "running" {
			t.Fatalf("the box stopped running %s after the agent armed its watchdog: %q %v", time.Since(armedAt).Round(100*time.Millisecond), st, err)
		}
		if time.Since(armedAt) >= 2*watchdogTimeout {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}

	// The agent hangs.
	if _, err := io.WriteString(b.keys, "kill -SIGSTOP $PPID && echo agent-stopped-$PPID\r"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the debug shell to stop the box's process", func() error {
		if !agentStopped.MatchString(b.Console()) {
			return fmt.Errorf("no agent-stopped-PID on the console")
		}
		return nil
	})
	stopped := time.Now()
	testutil.WaitFor(t, 5*watchdogTimeout, "the watchdog to fire on the hung agent", func() error {
		st, err := b.status()
		if err != nil {
			return err
		}
		if st != "paused (watchdog)" {
			return fmt.Errorf("the box is %s", st)
		}
		return nil
	})
	t.Logf("agent stopped to the watchdog firing: %s (timeout %s)", time.Since(stopped).Round(100*time.Millisecond), watchdogTimeout)
}

// bootArmed boots the box of TestWatchdogResetsHungBox from disk, waits
// until its agent has armed the i6300esb with the right timeout, and
// returns it with when the test saw it armed.
func bootArmed(t *testing.T, files, disk string) (*box, time.Time) {
	t.Helper()
	netdev, api := userNet(t)
	start := time.Now()
	b := boot(t, direct(files, disk, "cairn.slot=a cairn.expect=1 cairn.debug=1"), netdev, api, 0x41,
		"-device", "i6300esb", "-action", "watchdog=pause")
	var armed []string
	testutil.WaitFor(t, 4*time.Minute, "the agent to arm the watchdog", func() error {
		select {
		case <-b.exited:
			return fmt.Errorf("qemu exited before the agent armed the watchdog")
		default:
		}
		if armed = watchdogArmed.FindStringSubmatch(b.Console()); armed == nil {
			return fmt.Errorf(`no "watchdog armed" on the console`)
		}
		return nil
	})
	armedAt := time.Now()
	t.Logf("power-on to the watchdog armed: %s", armedAt.Sub(start).Round(100*time.Millisecond))
	if armed[1] != "/dev/watchdog" || armed[2] != strconv.Itoa(int(watchdogTimeout.Seconds())) {
		t.Fatalf("the agent armed %s with a %s s timeout, want /dev/watchdog with %s", armed[1], armed[2], watchdogTimeout)
	}
	if !i6300esb.MatchString(b.Console()) {
		t.Errorf("console lacks %q", i6300esb)
	}
	for _, want := range []string{"--watchdog /dev/watchdog", "system image mounted"} {
		if !strings.Contains(b.Console(), want) {
			t.Errorf("console lacks %q", want)
		}
	}
	return b, armedAt
}
