package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeQMP is a QMP server that answers "echo" commands in reverse order of
// arrival (as an out-of-order monitor would), sends an event before each
// batch of replies, and hangs up on "hangup".
func fakeQMP(t *testing.T, batch int) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, `{"QMP": {"version": {}, "capabilities": []}}`)
		r := bufio.NewScanner(c)
		var held []map[string]any
		for r.Scan() {
			var req map[string]any
			if err := json.Unmarshal(r.Bytes(), &req); err != nil {
				return
			}
			switch req["execute"] {
			case "qmp_capabilities":
				fmt.Fprintf(c, `{"return": {}, "id": %v}`+"\n", req["id"])
			case "fail":
				fmt.Fprintf(c, `{"error": {"class": "GenericError", "desc": "no"}, "id": %v}`+"\n", req["id"])
			case "hangup":
				return
			default:
				held = append(held, req)
				if len(held) < batch {
					continue
				}
				fmt.Fprintln(c, `{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}`)
				for i := len(held) - 1; i >= 0; i-- {
					b, _ := json.Marshal(map[string]any{"return": held[i]["arguments"], "id": held[i]["id"]})
					c.Write(append(b, '\n'))
				}
				held = nil
			}
		}
	}()
	return sock
}

func TestQMPConcurrentCommands(t *testing.T) {
	const n = 8
	sock := fakeQMP(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, sock, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	// Watchers see the events too, until stopped.
	watcher, _ := q.watch()
	stopped, stop := q.watch()
	stop()
	stop()
	if _, ok := <-stopped; ok {
		t.Error("stopped watcher not closed")
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var out struct{ N int }
			if err := q.execute(ctx, "echo", map[string]int{"N": i}, &out); err != nil || out.N != i {
				t.Errorf("command %d got %d, %v", i, out.N, err)
			}
		})
	}
	wg.Wait()
	select {
	case ev := <-q.events:
		if ev.Name != "STOP" || ev.Time.Unix() != 1 {
			t.Errorf("event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no event")
	}
	select {
	case ev := <-watcher:
		if ev.Name != "STOP" {
			t.Errorf("watcher got %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no event for the watcher")
	}
	var qe *QMPError
	if err := q.execute(ctx, "fail", nil, nil); !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Errorf("error reply: %v", err)
	}
	// A command whose context ends gives up without breaking the client.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := q.execute(short, "echo", map[string]int{"N": 1}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered command: %v", err)
	}
	// The connection's end fails commands and closes the event stream.
	if err := q.execute(ctx, "hangup", nil, nil); !errors.Is(err, ErrDisconnected) {
		t.Errorf("command cut off: %v", err)
	}
	if err := q.execute(ctx, "echo", nil, nil); !errors.Is(err, ErrDisconnected) {
		t.Errorf("command after the end: %v", err)
	}
	if _, ok := <-q.events; ok {
		t.Error("events not closed")
	}
	if _, ok := <-watcher; ok {
		t.Error("watcher not closed")
	}
	late, _ := q.watch()
	if _, ok := <-late; ok {
		t.Error("watcher after the end not closed")
	}
}

func TestQMPNoGreeting(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// Like a QEMU already serving another client: accepted, never greeted.
	if _, err := dialQMP(ctx, sock, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("connected without a greeting")
	}
}
