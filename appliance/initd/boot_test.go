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

// The agent's arguments are logged to the console: the cluster key and an
// enrolment token must not be.
func TestAgentArgsAreLoggedRedacted(t *testing.T) {
	b := Boot{Expect: 3, JoinToken: "cairn-secretkey", Enrol: "abcd.secretenrol", Extra: []string{"-join-token=cairn-other"}}
	got := strings.Join(redactArgs(b.AgentArgs("/data", "10.0.0.5")), " ")
	for _, secret := range []string{"secretkey", "secretenrol", "cairn-other"} {
		if strings.Contains(got, secret) {
			t.Fatalf("logged arguments show a secret: %s", got)
		}
	}
	if !strings.Contains(got, "--expect 3") || !strings.Contains(got, "--join-token REDACTED") {
		t.Fatalf("redacted too much or too little: %s", got)
	}
}
