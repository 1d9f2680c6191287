package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// syncBuffer is a bytes.Buffer the agent's goroutines may write while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestSetupCodeOnlyOnConsole starts a fresh one-node cluster and checks that
// its one-time setup code reaches the console and never the structured log,
// which is shipped and read by people who must not be able to claim the
// cluster.
func TestSetupCodeOnlyOnConsole(t *testing.T) {
	// Not t.TempDir: the agent's background work may still touch the
	// directory for a moment after Run returns, which that cleanup reports.
	dir, err := os.MkdirTemp("", "cairn-setupcode-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cfg, err := ParseFlags([]string{"--dev", "--name", "setup-test", "--data-dir", dir, "--vms=false",
		"--api-port", freePort(t), "--s3-port", freePort(t), "--rpc-port", freePort(t), "--gossip-port", freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	var logs, console syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg, log, &console)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Log("the agent did not stop within 30s") // not what this test is about
		}
	}()
	code := ""
	testutil.WaitFor(t, time.Minute, "the setup code on the console", func() error {
		if !strings.Contains(console.String(), "setup code") {
			return errors.New("not yet")
		}
		code = a.identity.SetupCode()
		return nil
	})
	if !strings.Contains(console.String(), code) {
		t.Fatalf("console does not show the setup code %s:\n%s", code, console.String())
	}
	if strings.Contains(logs.String(), code) {
		t.Fatalf("the log contains the setup code %s:\n%s", code, logs.String())
	}
}
