package harness

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// T is the part of testing.TB the harness uses. testing.TB satisfies it; a
// benchmark program can supply its own.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
	Name() string
}

// Options describes the processes of a cluster.
type Options struct {
	N      int    // nodes started by New
	Binary string // program each node runs

	// Args returns a node's arguments. It is called once per node, before its
	// first start; New creates every node before starting any, so Args can
	// list peers through n.Cluster().Nodes.
	Args func(n *Node) []string

	Env []string // added to the test process's environment, "KEY=value"
}

// Cluster is a set of nodes on one bridge. Its methods are meant to be called
// from the test goroutine.
type Cluster struct {
	Nodes []*Node // current members, in index order

	t      T
	opts   Options
	dir    string
	name   string       // prefix of host objects; "" without root
	subnet netip.Prefix // valid with root
	all    []*Node      // every node ever added, for logs and clean-up
	next   int          // index of the next node
	nats   int          // NAT routers on this cluster's bridge (BehindNAT's wan legs)
}

// staleOnce makes New clean up after crashed runs once per process.
var staleOnce sync.Once

// New starts a cluster of opts.N nodes and registers its clean-up with t. As root
// each node gets its own network namespace on a fresh bridge; otherwise all
// nodes share the host's network and get addresses 127.0.0.(10+i).
func New(t T, opts Options) *Cluster {
	t.Helper()
	bin, err := filepath.Abs(opts.Binary)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		t.Fatalf("harness: binary: %v", err)
	}
	opts.Binary = bin
	// TempDir before Cleanup: clean-ups run last-in first-out, so processes are
	// killed and logs saved before the directory is removed.
	c := &Cluster{t: t, opts: opts, dir: t.TempDir(), next: 1}
	// VMs' QEMUs run as users of their own and reach their disks under
	// the nodes' data directories: the test's temp root must let them by
	// (not the system's temp directory itself, which does, and which
	// everyone must go on writing to).
	if parent := filepath.Dir(c.dir); parent != filepath.Clean(os.TempDir()) {
		if err := os.Chmod(parent, 0o711); err != nil {
			t.Fatalf("temp dir: %v", err)
		}
	}
	t.Cleanup(c.cleanup)

	if isRoot() {
		staleOnce.Do(func() {
			if err := CleanupStale(); err != nil {
				t.Logf("harness: %v", err)
			}
		})
		c.name, c.subnet, err = reserveNetwork()
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		t.Logf("harness: cluster %s: bridge %s with %s, dir %s", c.name, c.name, c.HostIP(), c.dir)
	} else {
		t.Logf("harness: not root: %d nodes share the host network on 127.0.0.x; partitions unavailable", opts.N)
	}

	for range opts.N {
		if _, err := c.addNode(); err != nil {
			t.Fatalf("harness: %v", err)
		}
	}
	for _, n := range c.Nodes {
		n.Start()
	}
	return c
}

func isRoot() bool { return os.Geteuid() == 0 }

// Name returns the prefix of everything the cluster created on the host (bridge,
// veths, namespaces), or "" when not running as root.
func (c *Cluster) Name() string { return c.name }

// HostIP returns the test process's address on the cluster bridge, or
// 127.0.0.1 when not running as root.
func (c *Cluster) HostIP() string {
	if c.name == "" {
		return "127.0.0.1"
	}
	return hostAddr(c.subnet).String()
}

// Node returns the node with the given 1-based index (node1 is Node(1)).
func (c *Cluster) Node(i int) *Node {
	c.t.Helper()
	for _, n := range c.Nodes {
		if n.Index == i {
			return n
		}
	}
	c.t.Fatalf("harness: no node %d in cluster", i)
	return nil
}

// AddNode adds one node on the same bridge, starts it and returns it.
func (c *Cluster) AddNode() *Node {
	c.t.Helper()
	n, err := c.addNode()
	if err != nil {
		c.t.Fatalf("harness: %v", err)
	}
	n.Start()
	return n
}

func (c *Cluster) addNode() (*Node, error) {
	i := c.next
	c.next++
	n := &Node{
		Index:   i,
		Name:    fmt.Sprintf("node%d", i),
		DataDir: filepath.Join(c.dir, fmt.Sprintf("node%d", i)),
		LogPath: filepath.Join(c.dir, fmt.Sprintf("node%d.log", i)),
		c:       c,
	}
	// Recorded before any host object exists, so clean-up sees the node.
	c.all = append(c.all, n)
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("add node %d: %w", i, err)
	}
	if i >= clientIndex {
		return nil, fmt.Errorf("add node %d: index out of range 1..%d", i, clientIndex-1)
	}
	if c.name == "" {
		if 10+i > 254 {
			return nil, fmt.Errorf("add node %d: index out of range 1..244", i)
		}
		n.IP = fmt.Sprintf("127.0.0.%d", 10+i)
	} else {
		addr, err := nodeAddr(c.subnet, i)
		if err != nil {
			return nil, fmt.Errorf("add node %d: %w", i, err)
		}
		n.IP, n.Netns = addr.String(), netnsName(c.name, i)
		if err := addNodeNetwork(c.name, c.subnet, i, addr); err != nil {
			return nil, err
		}
		// The test process must reach the node before its agent runs: a
		// node unreachable later is then the agent's doing, not the bridge's.
		if err := n.reachable(); err != nil {
			return nil, fmt.Errorf("add node %d: %w\n%s", i, err, n.NetReport())
		}
	}
	c.Nodes = append(c.Nodes, n)
	return n, nil
}

// RemoveNode kills n and deletes its namespace. Its log stays for artifacts.
func (c *Cluster) RemoveNode(n *Node) {
	c.t.Helper()
	i := slices.Index(c.Nodes, n)
	if i < 0 {
		c.t.Fatalf("harness: remove %s: not in cluster", n.Name)
	}
	err := n.kill()
	if err == nil && c.name != "" {
		err = removeNodeNetwork(c.name, n.Index)
	}
	if err != nil {
		c.t.Fatalf("harness: remove %s: %v", n.Name, err)
	}
	c.Nodes = slices.Delete(c.Nodes, i, i+1)
}

// cleanup kills every process the cluster started, deletes its host objects
// and, if the test failed, shows and keeps the node logs.
func (c *Cluster) cleanup() {
	var errs []error
	for _, n := range c.all {
		errs = append(errs, n.kill())
	}
	if c.name != "" {
		errs = append(errs, removeNetwork(c.name))
	}
	err := errors.Join(errs...)
	if c.t.Failed() || err != nil {
		c.dumpLogs()
	}
	if err != nil {
		c.t.Fatalf("harness: cleanup: %v", err)
	}
}
