package consensus

import "testing"

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
