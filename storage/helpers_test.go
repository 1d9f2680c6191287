package storage_test

import (
	"context"
	"os"
	"testing"

	"github.com/cairnhq/cairn/storage"
)

// runAgent runs a disk agent until the test ends and waits for it to stop,
// so it never recreates a directory the test's clean-up is removing.
func runAgent(t *testing.T, a *storage.DiskAgent) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		a.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// diskDir makes a directory for a test disk under base, a t.TempDir taken
// before any agent started: its removal runs after the agents have stopped.
func diskDir(t *testing.T, base string) string {
	d, err := os.MkdirTemp(base, "disk-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}
