package initd

import (
	"slices"
	"strings"
	"testing"
)

func TestReadBoot(t *testing.T) {
	b := ReadBoot("BOOT_IMAGE=/vmlinuz console=ttyS0 cairn.ip=10.0.0.5/24 cairn.gw=10.0.0.1 cairn.dns=10.0.0.1,10.0.0.2 cairn.expect=5 cairn.name=ward-a cairn.debug cairn.agent=--log-level,debug")
	if b.IP != "10.0.0.5/24" || b.Gateway != "10.0.0.1" || !slices.Equal(b.DNS, []string{"10.0.0.1", "10.0.0.2"}) ||
		b.Expect != 5 || b.Name != "ward-a" || !b.Debug || !slices.Equal(b.Extra, []string{"--log-level", "debug"}) {
		t.Fatalf("parsed %+v", b)
	}
	if d := ReadBoot("quiet"); d.IP != "dhcp" || d.Expect != 3 || d.Debug {
		t.Fatalf("defaults: %+v", d)
	}
	// Bad values are ignored and reported; the box still boots with defaults.
	line := "cairn.ip=10.0.0.5 cairn.expect=zero cairn.colour=blue"
	if b := ReadBoot(line); b.IP != "dhcp" || b.Expect != 3 {
		t.Fatalf("bad values applied: %+v", b)
	}
	if p := Problems(line); len(p) != 3 || !strings.Contains(strings.Join(p, "\n"), "cairn.colour") {
		t.Fatalf("problems: %q", p)
	}
}

func TestBootMergeAndAgentArgs(t *testing.T) {
	b := ReadBoot("cairn.expect=3 cairn.token=abc cairn.enrol=id.secret").Merge(Boot{Expect: 1, Join: []string{"10.0.0.7"}})
	got := b.AgentArgs("/var/lib/cairn", "10.0.0.5")
	want := []string{"--data-dir", "/var/lib/cairn", "--disk", "/var/lib/cairn/disk0", "--expect", "1", "--bind", "10.0.0.5", "--join", "10.0.0.7", "--join-token", "abc", "--enrol-token", "id.secret"}
	if !slices.Equal(got, want) {
		t.Fatalf("agent args\n got %q\nwant %q", got, want)
	}
}

// A box whose boot modules gave it a watchdog runs the agent with it; a
// boot config can still run the agent without: its flags come last, and the
// last of a flag wins.
func TestAgentArgsWatchdog(t *testing.T) {
	b := Boot{Expect: 1, Watchdog: "/dev/watchdog"}
	got := b.AgentArgs("/data", "")
	want := []string{"--data-dir", "/data", "--disk", "/data/disk0", "--expect", "1", "--watchdog", "/dev/watchdog"}
	if !slices.Equal(got, want) {
		t.Fatalf("agent args with a watchdog\n got %q\nwant %q", got, want)
	}
	if got := (Boot{Expect: 1}).AgentArgs("/data", ""); slices.Contains(got, "--watchdog") {
		t.Fatalf("agent args without a watchdog name one: %q", got)
	}
	got = b.Merge(ReadBootOnly("cairn.agent=--watchdog=")).AgentArgs("/data", "")
	if want := append(want, "--watchdog="); !slices.Equal(got, want) {
		t.Fatalf("agent args with a watchdog switched off by the boot config\n got %q\nwant %q", got, want)
	}
}
