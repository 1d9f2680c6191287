//go:build linux

package initd

import (
	"log/slog"
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

// The console shows the agent's warnings and whether the watchdog is armed,
// not the rest of its info messages.
func TestConsoleLog(t *testing.T) {
	var out strings.Builder
	log := slog.New(consoleHandler{slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})}).With("component", "vms")
	log.Info("VM started", "vm", "web-1")
	log.Info("watchdog armed", "device", "/dev/watchdog", "timeout_s", 3)
	log.Warn("renew this node's lease", "err", "timeout")
	log.Debug("watchdog armed")
	got := out.String()
	for _, want := range []string{`msg="watchdog armed" component=vms device=/dev/watchdog timeout_s=3`, `level=WARN msg="renew this node's lease"`} {
		if !strings.Contains(got, want) {
			t.Errorf("console log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "VM started") || strings.Count(got, "watchdog armed") != 1 {
		t.Errorf("console log shows info or debug messages it should not:\n%s", got)
	}
}
