package hypervisor

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/testutil"
)

// The switchover's question (live_rpc.go): the target says yes only while
// its worker receives this very migration with a live QEMU and the node
// has not fenced itself, and only to the migration's source; what it
// cannot know yet is not a final no. On the wire: yes, no, "ask again",
// and an agent that predates the question (404), which sends the source
// to the two-step switchover.
func TestMigrationReadyQuestion(t *testing.T) {
	e := newComputeEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.risOnNode1(t)
	e.host(t, "node2", 2, 4096)
	if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-1", Node: "node1", Status: VMStatus{State: StateRunning, Accel: "tcg", UpdatedAt: time.Now()}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := EnsureMigrationCA(ctx, e.node); err != nil {
		t.Fatal(err)
	}
	m, err := e.svc.Migrate(ctx, e.admin, "ris", "node2", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	id := m.Migration.ID
	for _, s := range []struct{ node, phase string }{{"node1", PhasePreparing}, {"node2", PhaseTransferring}} {
		if _, err := e.node.Apply(ctx, MsgMigrationStep, migrationCmd{VM: "vm-1", ID: id, Node: s.node, Phase: s.phase, At: time.Now()}, nil); err != nil {
			t.Fatal(err)
		}
	}

	drv := testDriver(t, "ready")
	a := NewNodeAgent(e.node, NodeConfig{Name: "node2", Driver: drv, Logger: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))})
	w := newWorker(a, "vm-1")

	// ask puts one question to the worker, serving it in its await.
	ask := func(from, migration string) error {
		drain(w)
		done := make(chan struct{})
		go func() { defer close(done); w.await(ctx, nil) }()
		defer func() { w.kick(); <-done }()
		return a.readyFor(ctx, from, "vm-1", migration)
	}
	final := func(what string, err error, want string) {
		t.Helper()
		var no targetNo
		if !errors.As(err, &no) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want a final no saying %q", what, err, want)
		}
	}
	passing := func(what string, err error) {
		t.Helper()
		var no targetNo
		if err == nil || errors.As(err, &no) {
			t.Fatalf("%s: %v, want an answer to ask again", what, err)
		}
	}

	passing("no worker yet", a.readyFor(ctx, "node1", "vm-1", id))
	a.workers["vm-1"] = w
	passing("a migration this node does not know yet", ask("node1", "mig-other"))
	final("asked by another node", ask("node3", id), "cannot ask")
	final("not receiving", ask("node1", id), "not receiving")

	inst, err := drv.Start(ctx, qemu.Machine{Name: "vm-1", VCPUs: 1, MemoryMiB: 64, Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Kill(context.Background()) })
	w.in, w.inst = id, inst
	if err := ask("node1", id); err != nil {
		t.Fatalf("receiving with a live QEMU: %v", err)
	}
	a.isFenced.Store(true)
	final("fenced", ask("node1", id), "fenced")
	a.isFenced.Store(false)

	// On the wire, through the source's side (askTarget).
	peer := &x509.Certificate{Subject: pkix.Name{CommonName: "node1"}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		r.TLS.PeerCertificates = []*x509.Certificate{peer} // the cluster port's mutual TLS
		a.MigrationRPC().ServeHTTP(rw, r)
	}))
	defer srv.Close()
	src := newWorker(NewNodeAgent(e.node, NodeConfig{Name: "node1", Peers: fakePeers{srv}}), "vm-1")
	vm := getVM(e.node.Store().ReadTxn(), "vm-1")
	drain(w)
	yes := make(chan error, 1)
	go func() { defer close(yes); w.await(ctx, nil) }()
	if err := src.targetTakesPausedCopy(ctx, vm); err != nil {
		t.Fatalf("yes over the wire, taking a guest paused for its copy: %v", err)
	}
	<-yes
	if err := inst.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	// The worker's loop goes on turning (its QEMU's exit wakes it at once).
	stop := make(chan struct{})
	turned := make(chan struct{})
	go func() {
		defer close(turned)
		for {
			select {
			case <-stop:
				return
			default:
				w.await(ctx, nil)
			}
		}
	}()
	defer func() { close(stop); <-turned }()
	final("a QEMU that exited, over the wire", src.askTarget(ctx, vm), "exited")
	old := httptest.NewTLSServer(http.NotFoundHandler()) // no such route: an older agent
	defer old.Close()
	src = newWorker(NewNodeAgent(e.node, NodeConfig{Name: "node1", Peers: fakePeers{old}}), "vm-1")
	if err := src.askTarget(ctx, vm); !errors.Is(err, errOldTarget) {
		t.Fatalf("an older agent: %v", err)
	}
	if err := src.targetTakesPausedCopy(ctx, vm); err == nil || !strings.Contains(err.Error(), "older Cairn agent") {
		t.Fatalf("an agent before the one-step switchover, asked to take a paused copy: %v", err)
	}
	// An agent with the one-step switchover that would not resume a
	// guest paused for its copy: its yes says nothing of it.
	mid := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	defer mid.Close()
	src = newWorker(NewNodeAgent(e.node, NodeConfig{Name: "node1", Peers: fakePeers{mid}}), "vm-1")
	if err := src.askTarget(ctx, vm); err != nil {
		t.Fatalf("its yes: %v", err)
	}
	if err := src.targetTakesPausedCopy(ctx, vm); err == nil || !strings.Contains(err.Error(), "older Cairn agent") {
		t.Fatalf("an agent that does not resume a paused copy: %v", err)
	}
}

// fakePeers reaches every node at one test server.
type fakePeers struct{ srv *httptest.Server }

func (p fakePeers) Name() string            { return "node1" }
func (p fakePeers) RPCClient() *http.Client { return p.srv.Client() }
func (p fakePeers) PeerAddr(string) (string, bool) {
	return strings.TrimPrefix(p.srv.URL, "https://"), true
}

// drain empties the worker's wake-up, so that its next await waits.
func drain(w *worker) {
	select {
	case <-w.wake:
	default:
	}
}
