package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAgent is the guest's side of the channel, speaking qemu-ga's JSON:
// it is the peer of the client under test. handle answers one command
// (nil args for commands without); a reply of "" sends nothing.
type fakeAgent struct {
	path string
	// prefix is written before every reply to a sync: stale or garbage
	// bytes a real channel may hold.
	prefix []byte
	handle func(cmd string, args json.RawMessage) string

	mu   sync.Mutex
	cmds []string
}

func startFakeAgent(t *testing.T, a *fakeAgent) *fakeAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "qga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a.path = filepath.Join(dir, qgaSocket)
	ln, err := net.Listen("unix", a.path)
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
			go a.serve(c)
		}
	}()
	return a
}

func (a *fakeAgent) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		// 0xFF resets qemu-ga's parser: what precedes it is dropped.
		if i := bytes.LastIndexByte(line, 0xFF); i >= 0 {
			line = line[i+1:]
		}
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(line, &req); err != nil {
			fmt.Fprintf(c, `{"error":{"class":"GenericError","desc":"bad json"}}`+"\n")
			continue
		}
		a.mu.Lock()
		a.cmds = append(a.cmds, req.Execute)
		a.mu.Unlock()
		reply := a.handle(req.Execute, req.Arguments)
		if reply == "" {
			continue
		}
		if req.Execute == "guest-sync-delimited" {
			c.Write(append(append(bytes.Clone(a.prefix), 0xFF), reply+"\n"...))
			continue
		}
		fmt.Fprintln(c, reply)
	}
}

func (a *fakeAgent) commands() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.cmds...)
}

// syncReply echoes a sync's id, as qemu-ga does.
func syncReply(args json.RawMessage) string {
	var a struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal(args, &a)
	return fmt.Sprintf(`{"return": %d}`, a.ID)
}

// goodAgent freezes n file systems and thaws them.
func goodAgent(n int) func(string, json.RawMessage) string {
	return func(cmd string, args json.RawMessage) string {
		switch cmd {
		case "guest-sync-delimited":
			return syncReply(args)
		case "guest-fsfreeze-freeze", "guest-fsfreeze-thaw":
			return fmt.Sprintf(`{"return": %d}`, n)
		}
		return `{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}`
	}
}

func testDriverAt(a *fakeAgent) *Driver {
	// The driver finds the channel in RunDir/<name>/qga.sock.
	return &Driver{cfg: DriverConfig{RunDir: filepath.Dir(filepath.Dir(a.path))}}
}

func TestGuestAgentFreezeThaw(t *testing.T) {
	a := startFakeAgent(t, &fakeAgent{handle: goodAgent(2)})
	d := testDriverAt(a)
	name := filepath.Base(filepath.Dir(a.path))
	ctx := context.Background()
	n, err := d.FreezeFS(ctx, name)
	if err != nil || n != 2 {
		t.Fatalf("freeze = %d, %v; want 2", n, err)
	}
	if n, err := d.ThawFS(ctx, name); err != nil || n != 2 {
		t.Fatalf("thaw = %d, %v; want 2", n, err)
	}
	want := []string{"guest-sync-delimited", "guest-fsfreeze-freeze", "guest-sync-delimited", "guest-fsfreeze-thaw"}
	if got := a.commands(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("agent saw %v, want %v", got, want)
	}
}

// TestGuestAgentStaleData: what an earlier client left (a reply to its
// sync, half a reply, bytes that are not JSON) comes before the delimiter
// of ours, and is skipped.
func TestGuestAgentStaleData(t *testing.T) {
	stale := []byte("garbage \x00\x01 {\"return\": 1")
	stale = append(stale, 0xFF)
	stale = append(stale, "{\"return\": 42}\n{\"return\": 7}\n"...)
	stale = append(stale, 0xFF)
	stale = append(stale, "{\"ret"...)
	a := startFakeAgent(t, &fakeAgent{prefix: stale, handle: goodAgent(1)})
	inst := &Instance{name: "vm", dir: filepath.Dir(a.path)}
	n, err := inst.FreezeFS(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("freeze = %d, %v; want 1", n, err)
	}
}

// TestGuestAgentAbsent: QEMU accepts the connection whether or not the
// guest runs an agent; with none, nothing ever answers, and the call must
// fail quickly rather than hang.
func TestGuestAgentAbsent(t *testing.T) {
	a := startFakeAgent(t, &fakeAgent{handle: func(string, json.RawMessage) string { return "" }})
	inst := &Instance{name: "vm", dir: filepath.Dir(a.path)}
	start := time.Now()
	_, err := inst.FreezeFS(context.Background())
	if !errors.Is(err, ErrNoGuestAgent) {
		t.Fatalf("freeze with no agent: %v, want ErrNoGuestAgent", err)
	}
	if took := time.Since(start); took > GuestAgentSyncTimeout+2*time.Second {
		t.Errorf("took %s", took)
	}
	// A shorter deadline of the caller's wins, and is not mistaken for
	// a missing agent.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := inst.FreezeFS(ctx); err == nil || errors.Is(err, ErrNoGuestAgent) || time.Since(start) > time.Second {
		t.Errorf("freeze with a 200ms deadline: %v after %s", err, time.Since(start))
	}
}

// TestGuestAgentStalls: an agent that syncs but never answers the freeze
// is bounded by the caller's context.
func TestGuestAgentStalls(t *testing.T) {
	a := startFakeAgent(t, &fakeAgent{handle: func(cmd string, args json.RawMessage) string {
		if cmd == "guest-sync-delimited" {
			return syncReply(args)
		}
		return ""
	}})
	inst := &Instance{name: "vm", dir: filepath.Dir(a.path)}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := inst.FreezeFS(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("freeze of a stalled agent: %v", err)
	}
}

func TestGuestAgentErrors(t *testing.T) {
	a := startFakeAgent(t, &fakeAgent{handle: func(cmd string, args json.RawMessage) string {
		switch cmd {
		case "guest-sync-delimited":
			return syncReply(args)
		case "guest-fsfreeze-freeze":
			return `{"error": {"class": "GenericError", "desc": "failed to freeze /: Device or resource busy"}}`
		}
		return `{"unexpected": true}`
	}})
	inst := &Instance{name: "vm", dir: filepath.Dir(a.path)}
	_, err := inst.FreezeFS(context.Background())
	var gae *GuestAgentError
	if !errors.As(err, &gae) || gae.Class != "GenericError" || !strings.Contains(gae.Desc, "busy") {
		t.Fatalf("freeze refused: %v, want a GuestAgentError", err)
	}
	if _, err := inst.ThawFS(context.Background()); err == nil || errors.As(err, &gae) {
		t.Fatalf("thaw with a reply that is neither return nor error: %v", err)
	}
}

func TestGuestAgentNoChannel(t *testing.T) {
	inst := &Instance{name: "vm", dir: t.TempDir()}
	start := time.Now()
	if _, err := inst.FreezeFS(context.Background()); err == nil || time.Since(start) > time.Second {
		t.Fatalf("freeze without a channel: %v after %s", err, time.Since(start))
	}
}

// TestGuestAgentEndlessGarbage: a guest that sends bytes without end and
// no delimiter does not make the client hold them, and is cut off by the
// sync timeout.
func TestGuestAgentEndlessGarbage(t *testing.T) {
	dir, err := os.MkdirTemp("", "qga")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, qgaSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		junk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := c.Write(junk); err != nil {
				return
			}
		}
	}()
	inst := &Instance{name: "vm", dir: dir}
	if _, err := inst.FreezeFS(context.Background()); !errors.Is(err, ErrNoGuestAgent) {
		t.Fatalf("freeze against endless garbage: %v", err)
	}
}

// TestGuestAgentChannel starts a real, confined QEMU whose guest runs no
// agent (there is no guest at all): the channel is there, QEMU takes the
// connection, nothing answers, and the freeze fails in seconds.
func TestGuestAgentChannel(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	ctx := context.Background()
	inst, err := d.Start(ctx, testMachine("qga"))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Quit(ctx)
	if _, err := os.Stat(d.GuestAgentSocket("qga")); err != nil {
		t.Fatalf("no guest agent channel: %v", err)
	}
	start := time.Now()
	if _, err := d.FreezeFS(ctx, "qga"); !errors.Is(err, ErrNoGuestAgent) {
		t.Fatalf("freeze of a guest without an agent: %v, want ErrNoGuestAgent", err)
	}
	if took := time.Since(start); took > GuestAgentSyncTimeout+2*time.Second {
		t.Errorf("freeze took %s to fail", took)
	}
	// The VM is unharmed, and QEMU serves the channel again.
	if st, err := inst.Status(ctx); err != nil || !st.Running {
		t.Errorf("status after the freeze: %+v, %v", st, err)
	}
	if _, err := inst.ThawFS(ctx); !errors.Is(err, ErrNoGuestAgent) {
		t.Errorf("thaw of a guest without an agent: %v, want ErrNoGuestAgent", err)
	}
}
