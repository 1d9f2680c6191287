package consensus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Only nodes in a Raft configuration, or the bootstrapper, admit others. A
// node that merely holds a certificate ("waiting") must not: the peers it
// admitted would never be counted by the bootstrapper, and the first cluster
// would never form (seen under load before the waiting phase existed).
func TestLowestSigner(t *testing.T) {
	m := func(name, phase string) member { return member{Name: name, Meta: gossipMeta{Phase: phase}} }
	cases := []struct {
		alive []member
		want  string
	}{
		{[]member{m("node1", phaseBootstrapping), m("node3", phaseWaiting)}, "node1"},
		{[]member{m("node3", phaseWaiting), m("node4", phaseJoining)}, ""},
		{[]member{m("node1", phaseBootstrapping), m("node5", phaseMember)}, "node5"},
		{[]member{m("node4", phaseMember), m("node3", phaseMember)}, "node3"},
		{[]member{m("node2", phaseBootstrapping), m("node1", phaseBootstrapping)}, "node1"},
		{[]member{m("self", phaseMember)}, ""},
	}
	for i, c := range cases {
		got := ""
		if s := lowestSigner(c.alive, "self"); s != nil {
			got = s.Name
		}
		if got != c.want {
			t.Errorf("case %d: signer %q, want %q", i, got, c.want)
		}
	}
}

// A generated cluster key is shown on the console by the agent, never in the
// structured log, which is shipped to people who should not hold it.
func TestGeneratedJoinTokenIsNotLogged(t *testing.T) {
	var logs bytes.Buffer
	cfg := newTestConfig(t, 1, 1, "")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n := &Node{cfg: cfg, log: cfg.Logger}
	if err := n.loadToken(); err != nil {
		t.Fatal(err)
	}
	if n.cfg.JoinToken == "" || strings.Contains(logs.String(), n.cfg.JoinToken) {
		t.Fatalf("the generated join token %q is in the log:\n%s", n.cfg.JoinToken, logs.String())
	}
}
