package benchrun

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
)

// DebugPort is where nodes started with DebugArgs serve pprof.
const DebugPort = 6060

// DebugArgs are the agent flags that let Profile reach node n.
func DebugArgs(n *harness.Node) []string {
	return []string{"--debug-addr", fmt.Sprintf("%s:%d", n.IP, DebugPort)}
}

// Profile starts CPU profiles of every node lasting d and returns a function
// that waits for them; they are written to dir as PREFIXNODE.pprof. A node
// that cannot be profiled is reported, not fatal.
func Profile(ctx context.Context, nodes []*harness.Node, d time.Duration, dir, prefix string) (wait func()) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s:%d/debug/pprof/profile?seconds=%d", n.IP, DebugPort, max(1, int(d.Seconds())))
			file := filepath.Join(dir, prefix+n.Name+".pprof")
			if err := fetch(ctx, url, file); err != nil {
				Progress("profile %s: %v", n.Name, err)
				return
			}
			Progress("CPU profile of %s written to %s", n.Name, file)
		})
	}
	return wg.Wait
}

// Heap writes every node's heap profile (in use and allocated) to dir as
// PREFIXNODE.heap.pprof.
func Heap(ctx context.Context, nodes []*harness.Node, dir, prefix string) {
	for _, n := range nodes {
		url := fmt.Sprintf("http://%s:%d/debug/pprof/heap?gc=1", n.IP, DebugPort)
		file := filepath.Join(dir, prefix+n.Name+".heap.pprof")
		if err := fetch(ctx, url, file); err != nil {
			Progress("heap profile %s: %v", n.Name, err)
			continue
		}
		Progress("heap profile of %s written to %s", n.Name, file)
	}
}

func fetch(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
