package agent

import (
	"errors"
	"testing"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
)

// The host record reports a refusal of the VM network once it has stood
// for three reconciles in a row, and drops it at the first reconcile that
// is not refused: a success, or another error (from a step after the check
// passed, or a hiccup); other errors alone never report.
func TestNetworkRefusalsReportedOnceTheyStand(t *testing.T) {
	refusal := consensus.Reasonf(consensus.CodeConflict, netfabric.ReasonShadowing, "the VM network %s holds %s on %s, this node's own network: choose another range (--vm-network for the default network, before the cluster creates it)", "10.0.0.0/16", "10.0.3.11/24", "eth0")
	tap := errors.New("reconcile network default: attach tap cv1: no such device")
	type step struct {
		err    error
		report error // what the host record says after it
	}
	for name, steps := range map[string][]step{
		"a refusal that stands":        {{refusal, nil}, {refusal, nil}, {refusal, refusal}, {refusal, refusal}, {nil, nil}},
		"other errors never":           {{tap, nil}, {tap, nil}, {tap, nil}, {tap, nil}},
		"other errors clear it":        {{refusal, nil}, {refusal, nil}, {refusal, refusal}, {tap, nil}, {refusal, nil}, {refusal, nil}, {refusal, refusal}},
		"a success restarts the count": {{refusal, nil}, {refusal, nil}, {nil, nil}, {refusal, nil}, {refusal, nil}, {refusal, refusal}},
	} {
		var r refusals
		for i, s := range steps {
			if got := r.observe(s.err); got != s.report {
				t.Errorf("%s, step %d (%v): the host record says %v, want %v", name, i+1, s.err, got, s.report)
			}
		}
	}
}
