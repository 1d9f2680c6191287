package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/testutil"
)

// takeBack, run when a migration from here ends before its switchover,
// reads QEMU's migration status: a QEMU that sent its guest away
// (completed, and stopped in postmigrate) is killed, never resumed, and
// the VM boots afresh; one that arrived here by live migration says
// "completed" of that stream for ever, and is left running. Real QEMUs,
// one migrated into the other.
func TestTakeBackTellsTheStreams(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	e.risOnNode1(t)
	drv := testDriver(t, "takeback")
	m := qemu.Machine{Name: "src", VCPUs: 1, MemoryMiB: 64, Accel: "tcg"}
	src, err := drv.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Kill(context.Background()) })
	m.Name, m.Incoming = "dst", true
	dst, err := drv.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Kill(context.Background()) })
	addr, err := dst.MigrateIncoming(ctx, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Migrate(ctx, addr); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the migration done", func() error {
		if st, err := dst.Status(ctx); err != nil || !st.Running {
			return fmt.Errorf("target %+v %v", st, err)
		}
		if info, err := src.QueryMigrate(ctx); err != nil || info.Status != "completed" {
			return fmt.Errorf("source %+v %v", info, err)
		}
		return nil
	})
	if info, err := dst.QueryMigrate(ctx); err != nil || info.Status != "completed" {
		t.Fatalf("the arrived QEMU's status: %+v %v (the case this test is about)", info, err)
	}
	n := NewNodeAgent(e.node, NodeConfig{Name: "node1", Driver: drv, Logger: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))})

	arrived := newWorker(n, "vm-1")
	arrived.adopt(dst)
	if err := arrived.takeBack(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := dst.Status(ctx); err != nil || !st.Running || arrived.inst == nil {
		t.Fatalf("a QEMU that arrived by live migration, after takeBack: %+v %v (kept: %v)", st, err, arrived.inst != nil)
	}

	sent := newWorker(n, "vm-1")
	sent.adopt(src)
	if err := sent.takeBack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("a QEMU whose guest went to another one was not ended")
	}
}
