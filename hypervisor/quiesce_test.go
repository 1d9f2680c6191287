package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/testutil"
)

// agentPeer is a guest agent on a VM's channel socket, as the guest's
// side would answer: it counts freezes and thaws. refuse makes freezes
// fail; stall makes them never answer.
type agentPeer struct {
	mu             sync.Mutex
	freezes, thaws int
	refuse, stall  bool
}

func (p *agentPeer) listen(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
}

func (p *agentPeer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		if i := bytes.LastIndexByte(line, 0xFF); i >= 0 {
			line = line[i+1:]
		}
		var req struct {
			Execute   string `json:"execute"`
			Arguments struct {
				ID int64 `json:"id"`
			} `json:"arguments"`
		}
		if json.Unmarshal(line, &req) != nil {
			continue
		}
		p.mu.Lock()
		var reply string
		switch req.Execute {
		case "guest-sync-delimited":
			reply = fmt.Sprintf("\xff{\"return\": %d}", req.Arguments.ID)
		case "guest-fsfreeze-freeze":
			p.freezes++
			reply = `{"return": 1}`
			if p.refuse {
				reply = `{"error": {"class": "GenericError", "desc": "no"}}`
			}
			if p.stall {
				reply = ""
			}
		case "guest-fsfreeze-thaw":
			p.thaws++
			reply = `{"return": 1}`
		}
		p.mu.Unlock()
		if reply != "" {
			fmt.Fprintln(c, reply)
		}
	}
}

func (p *agentPeer) counts() (freezes, thaws int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.freezes, p.thaws
}

// quiesceEnv is a node agent with one VM placed on it and reported in
// state, whose guest agent is p.
func quiesceEnv(t *testing.T, state string, p *agentPeer) (*NodeAgent, string) {
	t.Helper()
	e := newComputeEnv(t)
	ctx := context.Background()
	e.host(t, "node1", 2, 4096)
	vm, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: "q", Image: "guest", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "placed", func() error {
		if v, _ := e.svc.VM(e.user, "q"); v.Node == "" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	v, _ := e.svc.VM(e.user, "q")
	if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: vm.ID, Node: "node1", Status: VMStatus{State: state}, Version: v.Version}, nil); err != nil {
		t.Fatal(err)
	}
	runDir, err := os.MkdirTemp("", "quiesce")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	drv := qemu.NewDriver(qemu.DriverConfig{RunDir: runDir, NoCgroups: true})
	p.listen(t, drv.GuestAgentSocket(vm.ID))
	n := NewNodeAgent(e.node, NodeConfig{Name: "node1", Driver: drv, Logger: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))})
	return n, vm.ID
}

// Two snapshots of one VM's volumes at once share one freeze; the guest
// is thawed after the second is done, once.
func TestQuiesceVMShared(t *testing.T) {
	p := &agentPeer{}
	n, id := quiesceEnv(t, StateRunning, p)
	ctx := context.Background()
	thaw1, err := n.QuiesceVM(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	thaw2, err := n.QuiesceVM(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	thaw1()
	thaw1() // again: a no-op
	if f, th := p.counts(); f != 1 || th != 0 {
		t.Fatalf("after the first thaw: %d freezes, %d thaws; want 1, 0", f, th)
	}
	thaw2()
	if f, th := p.counts(); f != 1 || th != 1 {
		t.Fatalf("after both thaws: %d freezes, %d thaws; want 1, 1", f, th)
	}
	// And a later snapshot freezes again.
	thaw3, err := n.QuiesceVM(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	thaw3()
	if f, th := p.counts(); f != 2 || th != 2 {
		t.Fatalf("after a second round: %d freezes, %d thaws; want 2, 2", f, th)
	}
}

func TestQuiesceVMRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("not running", func(t *testing.T) {
		p := &agentPeer{}
		n, id := quiesceEnv(t, StatePaused, p)
		if _, err := n.QuiesceVM(ctx, id); err == nil {
			t.Fatal("quiesced a paused VM")
		}
		if f, _ := p.counts(); f != 0 {
			t.Errorf("the agent of a paused VM was asked to freeze")
		}
	})
	t.Run("agent refuses", func(t *testing.T) {
		p := &agentPeer{refuse: true}
		n, id := quiesceEnv(t, StateRunning, p)
		if _, err := n.QuiesceVM(ctx, id); err == nil {
			t.Fatal("a refused freeze succeeded")
		}
		// qemu-ga thaws by itself when a freeze fails: nothing to undo.
		if f, th := p.counts(); f != 1 || th != 0 {
			t.Errorf("%d freezes, %d thaws; want 1, 0", f, th)
		}
	})
	t.Run("freeze cut off", func(t *testing.T) {
		p := &agentPeer{stall: true}
		n, id := quiesceEnv(t, StateRunning, p)
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if _, err := n.QuiesceVM(cctx, id); err == nil {
			t.Fatal("a freeze that never answered succeeded")
		}
		// The guest may yet freeze: it is thawed to be sure.
		if f, th := p.counts(); f != 1 || th != 1 {
			t.Errorf("%d freezes, %d thaws; want 1, 1", f, th)
		}
	})
	t.Run("not here", func(t *testing.T) {
		n, _ := quiesceEnv(t, StateRunning, &agentPeer{})
		for _, id := range []string{"", "../x", "nope"} {
			if _, err := n.QuiesceVM(ctx, id); err == nil {
				t.Errorf("quiesced vm %q", id)
			}
		}
	})
}
