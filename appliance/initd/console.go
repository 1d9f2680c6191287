//go:build linux

package initd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/agent"
)

// statusScreen shows the box's state on its console, like ESXi's or Proxmox's
// console screen: name, address, cluster state, and the one-time setup code
// until setup is done. It redraws when something changes. Without a debug
// shell it clears the screen first.
func statusScreen(ctx context.Context, console io.Writer, a *agent.Agent, debug bool) {
	last := ""
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		screen := renderStatus(a.ConsoleStatus())
		if screen != last {
			if !debug {
				_, _ = io.WriteString(console, "\033[2J\033[H")
			}
			_, _ = io.WriteString(console, screen)
			last = screen
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renderStatus is the console screen's text.
func renderStatus(s agent.ConsoleStatus) string {
	var b strings.Builder
	line := strings.Repeat("=", 64)
	fmt.Fprintf(&b, "\n%s\n  Cairn appliance    node %s\n%s\n", line, s.Name, line)
	fmt.Fprintf(&b, "  Web UI and API:  %s\n", s.URL)
	switch {
	case s.Ready:
		fmt.Fprintf(&b, "  Cluster:         ready, leader %s, %d voters, %d nodes seen\n", s.Leader, s.Voters, s.Nodes)
	case s.Phase == "":
		fmt.Fprintf(&b, "  Cluster:         starting\n")
	default:
		fmt.Fprintf(&b, "  Cluster:         %s (%d nodes seen)\n", s.Phase, s.Nodes)
	}
	if s.Fingerprint != "" {
		fmt.Fprintf(&b, "  To add this box to a formed cluster, approve it there:\n    cairn node approve %s --fingerprint %s\n", s.Name, s.Fingerprint)
	}
	if s.SetupCode != "" {
		fmt.Fprintf(&b, "  First-time setup: open the web UI and enter the code  %s\n", s.SetupCode)
	}
	fmt.Fprintf(&b, "%s\n", line)
	return b.String()
}

// consoleInfo are the agent's info messages that the console shows beside
// its warnings and errors: whether the box's hardware watchdog guards it,
// which staff at the console want to know and which the rest of the
// agent's info messages would drown.
var consoleInfo = map[string]bool{"watchdog armed": true, "watchdog disarmed": true}

// consoleHandler is the agent's log on the console: warnings, errors and
// the info messages of consoleInfo.
type consoleHandler struct{ slog.Handler }

func (h consoleHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && !consoleInfo[r.Message] {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h consoleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return consoleHandler{h.Handler.WithAttrs(attrs)}
}

func (h consoleHandler) WithGroup(name string) slog.Handler {
	return consoleHandler{h.Handler.WithGroup(name)}
}
