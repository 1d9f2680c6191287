package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// tailLines is how much of each node's log a failed test prints.
const tailLines = 60

// dumpLogs prints the end of every node's log and copies the logs to
// qa/artifacts/<test name>/ under the module root.
func (c *Cluster) dumpLogs() {
	for _, n := range c.all {
		b, err := os.ReadFile(n.LogPath)
		if errors.Is(err, os.ErrNotExist) {
			continue // never started
		}
		if err != nil {
			c.t.Logf("harness: %s: read log: %v", n.Name, err)
			continue
		}
		c.t.Logf("harness: %s: last %d lines of %s:\n%s", n.Name, tailLines, n.LogPath, tail(b, tailLines))
	}
	dir, err := c.saveArtifacts()
	if err != nil {
		c.t.Logf("harness: save artifacts: %v", err)
		return
	}
	c.t.Logf("harness: logs saved in %s", dir)
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *Cluster) saveArtifacts() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "qa", "artifacts", sanitize(c.t.Name()))
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var summary bytes.Buffer
	fmt.Fprintf(&summary, "test: %s\ncluster: %s\nhost ip: %s\n", c.t.Name(), c.name, c.HostIP())
	var errs []error
	for _, n := range c.all {
		n.mu.Lock()
		fmt.Fprintf(&summary, "%s: ip %s netns %q data %s\n\t%s\n", n.Name, n.IP, n.Netns, n.DataDir, n.lastCmd)
		n.mu.Unlock()
		b, err := os.ReadFile(n.LogPath)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, os.WriteFile(filepath.Join(dir, n.Name+".log"), b, 0o644))
	}
	errs = append(errs, os.WriteFile(filepath.Join(dir, "cluster.txt"), summary.Bytes(), 0o644))
	return dir, errors.Join(errs...)
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// sanitize turns a test name such as "TestX/sub case" into a directory name.
func sanitize(name string) string {
	return strings.Trim(unsafeChars.ReplaceAllString(name, "_"), "_.")
}

// moduleRoot finds the directory holding go.mod, walking up from the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory")
		}
		dir = parent
	}
}
