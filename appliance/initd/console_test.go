//go:build linux

package initd

import (
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/agent"
)

func TestStatusScreen(t *testing.T) {
	s := renderStatus(agent.ConsoleStatus{Name: "cairn-1a2b3c", URL: "https://10.0.0.5:8443/", Phase: "member", Ready: true,
		Leader: "cairn-4d5e6f", Voters: 3, Nodes: 3, SetupCode: "ABCD-1234"})
	for _, want := range []string{"cairn-1a2b3c", "https://10.0.0.5:8443/", "ready, leader cairn-4d5e6f, 3 voters", "ABCD-1234"} {
		if !strings.Contains(s, want) {
			t.Errorf("screen lacks %q:\n%s", want, s)
		}
	}
	s = renderStatus(agent.ConsoleStatus{Name: "cairn-1a2b3c", URL: "https://10.0.0.5:8443/", Phase: "waiting", Nodes: 2})
	if !strings.Contains(s, "waiting (2 nodes seen)") || strings.Contains(s, "setup") || strings.Contains(s, "approve") {
		t.Errorf("waiting screen:\n%s", s)
	}
	s = renderStatus(agent.ConsoleStatus{Name: "cairn-1a2b3c", URL: "https://10.0.0.5:8443/", Phase: "joining", Fingerprint: "0123456789abcdef"})
	if !strings.Contains(s, "cairn node approve cairn-1a2b3c --fingerprint 0123456789abcdef") {
		t.Errorf("joining screen does not say how to approve the box:\n%s", s)
	}
}
