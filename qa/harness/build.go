package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// cairnBuild builds the cairn binary at most once per process: every test of a
// package shares it, and the go build cache makes later processes fast.
var cairnBuild struct {
	once sync.Once
	path string
	err  error
}

// BuildCairn builds github.com/cairnhq/cairn/appliance/cmd/cairn into
// qa/.bin/cairn under the module root (a stable path, so logged command lines
// can be rerun by hand) and returns the binary's path.
func BuildCairn(t T) string {
	t.Helper()
	cairnBuild.once.Do(func() {
		cairnBuild.path, cairnBuild.err = buildCairn()
	})
	if cairnBuild.err != nil {
		t.Fatalf("harness: %v", cairnBuild.err)
	}
	return cairnBuild.path
}

func buildCairn() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("build cairn: %w", err)
	}
	out := filepath.Join(root, "qa", ".bin", "cairn")
	// Built beside and renamed into place: make test runs two test
	// processes at once, and one must never run (or exec) the other's
	// half-written binary.
	tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "./appliance/cmd/cairn")
	cmd.Dir = root
	cmd.Env = os.Environ()
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build cairn: go build -o %s ./appliance/cmd/cairn (in %s): %w: %s", out, root, err, strings.TrimSpace(string(b)))
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build cairn: %w", err)
	}
	return out, nil
}

var guestBuild struct {
	once sync.Once
	path string
	err  error
}

// GuestImage returns the test guest (image-build/out/guest.qcow2), building
// it with image-build/guest.sh when it is missing.
func GuestImage(t T) string {
	t.Helper()
	guestBuild.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			guestBuild.err = err
			return
		}
		guestBuild.path = filepath.Join(root, "image-build", "out", "guest.qcow2")
		if _, err := os.Stat(guestBuild.path); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(root, "image-build", "guest.sh"), "go")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			guestBuild.err = fmt.Errorf("build the test guest: image-build/guest.sh: %w: %s", err, strings.TrimSpace(string(b)))
		}
	})
	if guestBuild.err != nil {
		t.Fatalf("harness: %v", guestBuild.err)
	}
	return guestBuild.path
}
