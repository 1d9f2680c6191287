// Package storagetest runs an in-process storage pool for the tests of
// storage and its gateway: real consensus nodes (Raft on disk, mutual TLS),
// real disks in temporary directories, the real object layer. Only tests
// import it.
package storagetest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

// Node is one node of a test pool.
type Node struct {
	Node    *consensus.Node
	ID      *identity.Service
	Agent   *storage.DiskAgent
	Shards  *storage.Shards
	Objects *storage.Objects
	Dirs    []string
}

// Register adds the tables and commands a pool needs.
func Register(reg *consensus.Registry) {
	identity.Register(reg)
	storage.Register(reg)
}

// Pool runs n nodes with disks disks each (3 × 2: the default layout is
// 4+2), the first admin created ("admin", AdminPassword), and waits until
// every disk is healthy. Read repair and the other background workers are
// the test's to start.
func Pool(t testing.TB, n, disks int) ([]*Node, *identity.Principal) {
	t.Helper()
	return PoolWith(t, n, disks, nil)
}

// PoolWith is Pool with more tables and commands registered (compute's and
// the network's, for a test of the whole API).
func PoolWith(t testing.TB, n, disks int, more func(*consensus.Registry)) ([]*Node, *identity.Principal) {
	t.Helper()
	return pool(t, n, disks, more, t.TempDir(), storage.Reserve{}) // the dir taken first: removed after the agents stopped
}

// PoolOn is Pool with the disks under base (a small tmpfs, say) and the
// control plane's floor kept on every node.
func PoolOn(t testing.TB, n, disks int, base string, reserve storage.Reserve) ([]*Node, *identity.Principal) {
	t.Helper()
	return pool(t, n, disks, nil, base, reserve)
}

func pool(t testing.TB, n, disks int, more func(*consensus.Registry), base string, reserve storage.Reserve) ([]*Node, *identity.Principal) {
	t.Helper()
	register := func(reg *consensus.Registry) {
		Register(reg)
		if more != nil {
			more(reg)
		}
	}
	var ns []*Node
	consensustest.StartWith(t, n, register, func(i int, nd *consensus.Node) {
		id := identity.NewService(nd, identity.DefaultConfig())
		svc := storage.NewService(nd, id)
		agent := storage.NewDiskAgent(nd, svc, slog.Default(), time.Second)
		agent.SetReserve(reserve)
		sh := storage.NewShards(nd, agent)
		nd.HandleRPC(storage.RPCPrefix, sh.Handler())
		ns = append(ns, &Node{Node: nd, ID: id, Agent: agent, Shards: sh, Objects: storage.NewObjects(nd, id, sh, slog.Default())})
	})
	ctx := context.Background()
	for _, nd := range ns {
		for range disks {
			d, err := os.MkdirTemp(base, "disk-")
			if err != nil {
				t.Fatal(err)
			}
			nd.Dirs = append(nd.Dirs, d)
		}
		// A cluster that just formed may still change leaders (on a
		// loaded machine): set-up retries what the cluster could not take.
		testutil.WaitFor(t, 30*time.Second, nd.Node.Name()+"'s disks in the pool", func() error {
			return nd.Agent.EnsureDisks(ctx, nd.Dirs)
		})
		run(t, nd.Agent)
	}
	testutil.WaitFor(t, 30*time.Second, "the first admin", func() error {
		_, err := ns[0].ID.CreateFirstAdmin(ctx, "admin", AdminPassword)
		if consensus.ErrorCode(err) == consensus.CodeUnavailable {
			return err
		}
		return nil // created, or created by an attempt whose answer was lost
	})
	admin := Principal(t, ns[0].ID, "admin", AdminPassword)
	testutil.WaitFor(t, 15*time.Second, fmt.Sprintf("%d healthy disks", n*disks), func() error {
		ds, _ := storage.NewService(ns[0].Node, ns[0].ID).ListDisks(admin)
		ok := 0
		for _, d := range ds {
			if d.Health == storage.HealthOK && d.FreeBytes > 0 {
				ok++
			}
		}
		if ok != n*disks {
			return fmt.Errorf("%d healthy disks", ok)
		}
		return nil
	})
	return ns, admin
}

// AdminPassword is the pool's first admin's password.
const AdminPassword = "cluster-root-for-tests"

// Principal logs a user in.
func Principal(t testing.TB, id *identity.Service, user, pw string) *identity.Principal {
	t.Helper()
	var tok string
	testutil.WaitFor(t, 30*time.Second, user+"'s login", func() error {
		var err error
		tok, _, err = id.Login(context.Background(), user, pw)
		if consensus.ErrorCode(err) == consensus.CodeUnavailable {
			return err // a leader change: log in again
		}
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
	p, err := id.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs a disk agent until the test ends and waits for it to stop, so it
// never recreates a directory the test's clean-up is removing.
func run(t testing.TB, a *storage.DiskAgent) {
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
