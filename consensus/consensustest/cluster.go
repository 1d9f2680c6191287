// Package consensustest starts real in-process consensus nodes for tests of
// the packages built on consensus: real Raft on disk, real gossip, real mTLS,
// each node on its own loopback address, with LAN timings shortened.
package consensustest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// next hands out loopback addresses so clusters in one test binary never collide.
var next atomic.Int32

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	Nodes []*consensus.Node
}

// Start runs n nodes with --expect n and waits for a leader with n voters.
// register adds the caller's tables and commands to each node's registry.
func Start(t testing.TB, n int, register func(*consensus.Registry)) *Cluster {
	t.Helper()
	return StartWith(t, n, register, nil)
}

// StartWith is Start with a hook that runs on each node before it starts,
// for registering controllers and cluster-port handlers.
func StartWith(t testing.TB, n int, register func(*consensus.Registry), before func(i int, nd *consensus.Node)) *Cluster {
	t.Helper()
	base := fmt.Sprintf("127.%d.%d.", 100+os.Getpid()%100, 1+os.Getpid()/100%200)
	first := next.Add(int32(n)) - int32(n)
	c := &Cluster{t: t}
	var seed string
	for i := range n {
		cfg := consensus.DefaultConfig()
		cfg.Name = fmt.Sprintf("node%d", i+1)
		cfg.DataDir = t.TempDir()
		cfg.BindAddr = base + fmt.Sprint(10+int(first)+i)
		cfg.RPCPort, cfg.GossipPort, cfg.DiscoveryPort = 17444, 17445, 0
		cfg.Expect = n
		cfg.JoinToken = "consensustest"
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		cfg.BootstrapSettle = 100 * time.Millisecond
		cfg.Logger = slog.New(slog.NewTextHandler(&logWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", cfg.Name)
		if seed == "" {
			seed = cfg.BindAddr + ":17445"
		}
		cfg.Join = []string{seed}
		reg := consensus.NewRegistry()
		if register != nil {
			register(reg)
		}
		nd, err := consensus.New(cfg, reg)
		if err != nil {
			t.Fatal(err)
		}
		if before != nil {
			before(i, nd)
		}
		if err := nd.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nd.Shutdown() })
		c.Nodes = append(c.Nodes, nd)
	}
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("a leader with %d voters", n), func() error {
		l := c.Leader()
		if l == nil {
			return errors.New("no leader")
		}
		if v := l.Status().Voters; v != n {
			return fmt.Errorf("%d voters", v)
		}
		for _, nd := range c.Nodes {
			if !nd.Ready() {
				return fmt.Errorf("%s not ready", nd.Name())
			}
			// Every command this binary knows may be proposed.
			if p := nd.ClusterProtocol(); p != consensus.Protocol {
				return fmt.Errorf("%s sees the cluster at protocol %d", nd.Name(), p)
			}
		}
		return nil
	})
	return c
}

// Leader returns the current leader, or nil.
func (c *Cluster) Leader() *consensus.Node {
	for _, n := range c.Nodes {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

// Follower returns some node that is not the leader, or nil.
func (c *Cluster) Follower() *consensus.Node {
	for _, n := range c.Nodes {
		if !n.IsLeader() {
			return n
		}
	}
	return nil
}

// logWriter sends node logs to the test log; after the test ends it drops them.
type logWriter struct{ t testing.TB }

func (w *logWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a log line after the test finished
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
