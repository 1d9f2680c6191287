package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/coder/websocket"
)

// onePeer is a cluster of one node for the console relay: the VM is local.
type onePeer string

func (p onePeer) Name() string                      { return string(p) }
func (onePeer) RPCClient() *http.Client             { return nil }
func (onePeer) PeerAddr(name string) (string, bool) { return "", false }

// Every console session is audited when it opens and when it closes: who,
// from where, which VM.
func TestConsoleSessionsAreAudited(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	placedVM(t, e, ctx, "c1")
	if err := EnsureConsoleKey(ctx, e.node); err != nil {
		t.Fatal(err)
	}
	// The VM's serial console: a unix socket that echoes.
	sock := filepath.Join(t.TempDir(), "serial.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	cons := NewConsoles(e.svc, onePeer("node1"), func(string, string) (string, bool) { return sock, true }, slog.Default())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/vms/{vm}/{kind}", func(w http.ResponseWriter, r *http.Request) {
		cons.ServeWebSocket(w, r, r.PathValue("vm"), r.PathValue("kind"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tk, err := e.svc.ConsoleTicket(ctx, e.user, "c1")
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+tk.SerialPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("ls\n")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "ls\n" {
		t.Fatalf("echo: %q, %v", b, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")

	testutil.WaitFor(t, 10*time.Second, "the console session's open and close in the audit log", func() error {
		es, err := e.id.ListAudit(e.admin, identity.AuditFilter{Action: "vm.console."})
		if err != nil {
			return err
		}
		var got []string
		for _, en := range es {
			if en.UserName != "nurse" || !strings.HasPrefix(en.RemoteAddr, "127.0.0.1:") || en.Resource != "c1" || en.ProjectID == "" {
				return fmt.Errorf("entry lacks who, where or what: %+v", en)
			}
			got = append(got, en.Action)
			// The detail keeps its format and parameters, for the audit
			// page in another language.
			if en.Action == "vm.console.open" && (en.Message != "serial console" || en.Format != "serial console") ||
				en.Action == "vm.console.close" && (en.Format != "serial console, open for %s" || len(en.Args) != 1 || en.Message != "serial console, open for "+en.Args[0]) {
				return fmt.Errorf("entry's detail: %+v", en)
			}
		}
		if strings.Join(got, ",") != "vm.console.close,vm.console.open" {
			return errors.New("entries: " + strings.Join(got, ","))
		}
		return nil
	})

	// Disabling the user ends their open console within a few seconds and
	// refuses a ticket they were given before.
	tk, err = e.svc.ConsoleTicket(ctx, e.user, "c1")
	if err != nil {
		t.Fatal(err)
	}
	spare, err := e.svc.ConsoleTicket(ctx, e.user, "c1")
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err = websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+tk.SerialPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	yes := true
	if _, err := e.id.UpdateUser(ctx, e.admin, "nurse", identity.UserUpdate{Disabled: &yes}, 0); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 3*consoleUserCheck)
	defer cancel()
	for {
		if _, _, err := ws.Read(rctx); err != nil {
			if rctx.Err() != nil {
				t.Fatal("the disabled user's console is still open")
			}
			break
		}
	}
	if _, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+spare.SerialPath, nil); err == nil || res == nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a ticket of the disabled user: %v", err)
	}
}

// A read of a VM's serial log that returns any of it is audited, with how
// much it returned; a read by someone who may not open the console is
// refused, and the refusal is audited too.
func TestSerialLogReadsAreAudited(t *testing.T) {
	e := newComputeEnv(t)
	ctx := identity.WithRemoteAddr(context.Background(), "127.0.0.1:4711")
	placedVM(t, e, ctx, "c1")
	log := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(log, []byte("cloud-init: password=ward-9\r\nlogin: "), 0o600); err != nil {
		t.Fatal(err)
	}
	cons := NewConsoles(e.svc, onePeer("node1"), func(_, kind string) (string, bool) { return log, kind == "log" }, slog.Default())

	b, err := cons.SerialLog(ctx, e.user, "c1", 1<<10)
	if err != nil || !strings.Contains(string(b), "login: ") {
		t.Fatalf("the member's read: %q, %v", b, err)
	}
	if _, err := e.id.CreateUser(ctx, e.admin, identity.UserSpec{Name: "viewer", Password: "day-shift-3141"}); err != nil {
		t.Fatal(err)
	}
	if err := e.id.SetMember(ctx, e.admin, "ward", "viewer", identity.RoleReader); err != nil {
		t.Fatal(err)
	}
	if b, err := cons.SerialLog(ctx, login(t, e.id, "viewer", "day-shift-3141"), "c1", 1<<10); err == nil || b != nil {
		t.Fatalf("a reader read the serial log: %q, %v", b, err)
	}
	es, err := e.id.ListAudit(e.admin, identity.AuditFilter{Action: "vm.console.log"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range es {
		if en.Resource != "c1" || en.RemoteAddr != "127.0.0.1:4711" || en.ProjectID == "" {
			t.Errorf("entry lacks what or where: %+v", en)
		}
		got = append(got, en.UserName+" "+en.Result+" "+en.Message)
	}
	want := fmt.Sprintf("viewer forbidden not allowed to read VM c1's console|nurse success %d bytes of the serial log", len(b))
	if strings.Join(got, "|") != want {
		t.Fatalf("audit: %q, want %q", strings.Join(got, "|"), want)
	}
}

// placedVM makes the user's VM name on node1, and waits until it is placed.
func placedVM(t *testing.T, e *computeEnv, ctx context.Context, name string) {
	t.Helper()
	e.host(t, "node1", 4, 4096)
	if _, err := e.svc.CreateVM(ctx, e.user, VMCreate{Name: name, Image: "guest", Flavor: "small"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the VM to be placed", func() error {
		if vm, err := e.svc.VM(e.user, name); err != nil || vm.Node == "" {
			return fmt.Errorf("not placed: %v", err)
		}
		return nil
	})
}
