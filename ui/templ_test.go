package ui

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestGeneratedTemplFilesAreCurrent fails when a .templ file was edited
// without running `go tool templ generate` (or a *_templ.go was edited by
// hand): the generated files are committed so `go build` needs no generator.
// -check compares without writing anything.
func TestGeneratedTemplFilesAreCurrent(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command on PATH: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, gobin, "tool", "templ", "generate", "-check", "-path", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("generated templ files are stale; run `go tool templ generate -path ui`: %v\n%s", err, out)
	}
}
