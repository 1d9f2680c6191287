package hypervisor

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/coder/websocket"
)

// Consoles: a browser gets a short-lived ticket from the API (an ordinary
// authenticated request), then opens a WebSocket on the same origin with it,
// since browsers cannot put a bearer token on a WebSocket. The node that
// took the WebSocket connects it to the VM's QEMU socket: directly when the
// VM runs there, else through the VM's node over the cluster's mutual TLS.

// TicketTTL is how long a console ticket can be used.
const TicketTTL = time.Minute

// Console kinds.
const (
	ConsoleVNC    = "vnc"
	ConsoleSerial = "serial"
)

// ConsoleTicket lets one WebSocket reach one VM's consoles.
type ConsoleTicket struct {
	VM         string    `json:"vm"`
	Ticket     string    `json:"ticket"`
	VNCPath    string    `json:"vnc_path"`    // WebSocket, raw RFB (what noVNC speaks)
	SerialPath string    `json:"serial_path"` // WebSocket, the serial port's bytes
	Expires    time.Time `json:"expires"`
}

type ticketBody struct {
	VM    string `json:"vm"`
	User  string `json:"user"`
	Exp   int64  `json:"exp"`
	Nonce string `json:"n"`
}

// ticketKey is the cluster's console key (EnsureConsoleKey), which every
// node holds, so a ticket minted by one node is good on all.
func (s *Service) ticketKey() ([]byte, error) {
	k := consensus.First[consoleKey](s.c.Store().ReadTxn(), tKeys, "id")
	if k == nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "consoles are not ready yet: the cluster has no console key")
	}
	return k.Key, nil
}

// EnsureConsoleKey makes the cluster's console key if there is none; the
// leader runs it, and so may anyone: the first key committed stays.
func EnsureConsoleKey(ctx context.Context, c Cluster) error {
	if consensus.First[consoleKey](c.Store().ReadTxn(), tKeys, "id") != nil {
		return nil
	}
	k := consoleKey{Key: make([]byte, 32)}
	if _, err := rand.Read(k.Key); err != nil {
		return err
	}
	_, err := c.Apply(ctx, MsgConsoleKey, &k, nil)
	return err
}

// ConsoleTicket issues a ticket for a VM's consoles (project members: a
// console is control of the VM).
func (s *Service) ConsoleTicket(ctx context.Context, p *identity.Principal, ref string) (*ConsoleTicket, error) {
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, err
	}
	if !CanChangeVM(p, vm) {
		return nil, s.id.Deny(ctx, p, "vm.console", vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to open VM %s's console", vm.Name))
	}
	key, err := s.ticketKey()
	if err != nil {
		return nil, err
	}
	exp := time.Now().Add(TicketTTL)
	body, _ := json.Marshal(ticketBody{VM: vm.ID, User: p.User.ID, Exp: exp.Unix(), Nonce: newID("t")})
	m := hmac.New(sha256.New, key)
	m.Write(body)
	t := base64.RawURLEncoding.EncodeToString(body) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	base := "/api/v1/vms/" + url.PathEscape(vm.ID) + "/"
	return &ConsoleTicket{VM: vm.ID, Ticket: t, Expires: exp,
		VNCPath: base + ConsoleVNC + "?ticket=" + url.QueryEscape(t), SerialPath: base + ConsoleSerial + "?ticket=" + url.QueryEscape(t)}, nil
}

// Consoles serves console WebSockets and the node-to-node console relay.
type Consoles struct {
	s     *Service
	peers Peers
	local func(vmID, kind string) (string, bool) // this node's QEMU socket of a VM
	log   *slog.Logger

	mu   sync.Mutex
	used map[string]time.Time // nonces spent on this node, until they expire
}

// Peers is what the relay needs from the consensus node.
type Peers interface {
	Name() string
	RPCClient() *http.Client
	PeerAddr(name string) (string, bool)
}

// NewConsoles returns the console server; local finds a VM's console socket
// on this node.
func NewConsoles(s *Service, peers Peers, local func(vmID, kind string) (string, bool), log *slog.Logger) *Consoles {
	return &Consoles{s: s, peers: peers, local: local, log: log, used: map[string]time.Time{}}
}

// check verifies a ticket for a VM and spends it on this node.
func (c *Consoles) check(ticket, vmID string) error {
	key, err := c.s.ticketKey()
	if err != nil {
		return err
	}
	b64, mac, ok := strings.Cut(ticket, ".")
	body, err1 := base64.RawURLEncoding.DecodeString(b64)
	sum, err2 := base64.RawURLEncoding.DecodeString(mac)
	if !ok || err1 != nil || err2 != nil {
		return errors.New("malformed console ticket")
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(sum, m.Sum(nil)) {
		return errors.New("invalid console ticket")
	}
	var t ticketBody
	if err := json.Unmarshal(body, &t); err != nil {
		return errors.New("malformed console ticket")
	}
	now := time.Now()
	if t.VM != vmID || now.Unix() > t.Exp {
		return errors.New("console ticket expired or for another VM")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, exp := range c.used {
		if now.After(exp) {
			delete(c.used, n)
		}
	}
	if _, spent := c.used[t.Nonce]; spent {
		return errors.New("console ticket already used")
	}
	c.used[t.Nonce] = time.Unix(t.Exp, 0).Add(time.Second)
	return nil
}

// ServeWebSocket serves GET /api/v1/vms/{vm}/{kind}?ticket=... .
func (c *Consoles) ServeWebSocket(w http.ResponseWriter, r *http.Request, vmID, kind string) {
	if kind != ConsoleVNC && kind != ConsoleSerial {
		http.Error(w, "unknown console", http.StatusNotFound)
		return
	}
	if err := c.check(r.URL.Query().Get("ticket"), vmID); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	user := ticketUser(r.URL.Query().Get("ticket"))
	if !c.s.id.Active(user) { // disabled or deleted since the ticket was made
		http.Error(w, "console ticket of a user who can no longer sign in", http.StatusUnauthorized)
		return
	}
	vm := getVM(c.s.c.Store().ReadTxn(), vmID)
	if vm == nil || vm.Node == "" {
		http.Error(w, "the VM is not running on any node", http.StatusConflict)
		return
	}
	backend, err := c.dial(r.Context(), vm.Node, vmID, kind)
	if err != nil {
		http.Error(w, "console: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer backend.Close()
	// Every console session is audited, opening and closing: a console is
	// control of the VM. One that cannot be audited is not opened.
	actx := identity.WithRemoteAddr(r.Context(), r.RemoteAddr)
	record := func(ctx context.Context, action, serial, vnc string, args ...any) error {
		if kind == ConsoleSerial {
			return c.s.id.Record(ctx, user, action, vm.Name, vm.ProjectID, serial, args...)
		}
		return c.s.id.Record(ctx, user, action, vm.Name, vm.ProjectID, vnc, args...)
	}
	if err := record(actx, "vm.console.open", "serial console", "VNC console"); err != nil {
		c.log.Error("console session refused: cannot audit it", "vm", vm.Name, "err", err)
		http.Error(w, "console: the session cannot be audited now", http.StatusServiceUnavailable)
		return
	}
	opened := time.Now()
	defer func() {
		cctx, cancel := context.WithTimeout(identity.WithRemoteAddr(context.Background(), r.RemoteAddr), 10*time.Second)
		defer cancel()
		open := time.Since(opened).Round(time.Second)
		if err := record(cctx, "vm.console.close", "serial console, open for %s", "VNC console, open for %s", open); err != nil {
			c.log.Error("console session close not audited", "vm", vm.Name, "err", err)
		}
	}()
	// Accept checks that the Origin is this host: no other site can open
	// a console in a logged-in user's browser.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		return
	}
	ws.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	conn := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	defer conn.Close()
	// The session ends when its user is disabled or deleted.
	go func() {
		tick := time.NewTicker(consoleUserCheck)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !c.s.id.Active(user) {
					c.log.Info("console session closed: its user can no longer sign in", "vm", vm.Name, "user", user)
					conn.Close()
					backend.Close()
					return
				}
			}
		}
	}()
	pipe(conn, backend)
}

// consoleUserCheck is how often an open console checks that its user may
// still sign in.
const consoleUserCheck = 2 * time.Second

// ticketUser returns the user a ticket (already checked) was issued to.
func ticketUser(ticket string) string {
	b64, _, _ := strings.Cut(ticket, ".")
	body, _ := base64.RawURLEncoding.DecodeString(b64)
	var t ticketBody
	_ = json.Unmarshal(body, &t)
	return t.User
}

// pipe copies both ways until either side ends.
func pipe(a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(a, b); done <- struct{}{} }()
	go func() { _, _ = io.Copy(b, a); done <- struct{}{} }()
	<-done
	a.Close()
	b.Close()
}

// dial connects to a VM's console socket on whichever node runs it.
func (c *Consoles) dial(ctx context.Context, node, vmID, kind string) (io.ReadWriteCloser, error) {
	if node == c.peers.Name() {
		path, ok := c.local(vmID, kind)
		if !ok {
			return nil, errors.New("the VM is not running")
		}
		return net.Dial("unix", path)
	}
	addr, ok := c.peers.PeerAddr(node)
	client := c.peers.RPCClient()
	if !ok || client == nil {
		return nil, fmt.Errorf("node %s is not reachable", node)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", "https://"+addr+ConsoleRPCPrefix+url.PathEscape(vmID)+"/"+kind, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "cairn-console")
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		res.Body.Close()
		return nil, fmt.Errorf("node %s: %s: %s", node, res.Status, strings.TrimSpace(string(msg)))
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		return nil, errors.New("console relay: connection cannot be upgraded")
	}
	return rwc, nil
}

// ConsoleRPCPrefix is where RPCHandler is mounted on the cluster port.
const ConsoleRPCPrefix = "/hypervisor/v1/console/"

// RPCHandler relays a peer's console connection to a local VM. The cluster
// port only admits nodes with a certificate of the cluster CA; the ticket
// was checked by the node the browser reached.
func (c *Consoles) RPCHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ConsoleRPCPrefix+"{vm}/log", c.serveLog)
	mux.HandleFunc("GET "+ConsoleRPCPrefix+"{vm}/{kind}", func(w http.ResponseWriter, r *http.Request) {
		path, ok := c.local(r.PathValue("vm"), r.PathValue("kind"))
		if !ok {
			http.Error(w, "the VM is not running here", http.StatusNotFound)
			return
		}
		backend, err := net.Dial("unix", path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer backend.Close()
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "cannot upgrade", http.StatusInternalServerError)
			return
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: cairn-console\r\n\r\n")
		pipe(bufConn{conn, buf.Reader}, backend)
	})
	return mux
}

// bufConn reads what the HTTP server already buffered before the socket.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// SerialLog returns the tail of a VM's serial console log (up to max bytes),
// from whichever node keeps it. The log can hold what cloud-init printed,
// passwords included: like a console session, every read that returns any
// of it is audited, and one that cannot be audited is refused.
func (c *Consoles) SerialLog(ctx context.Context, p *identity.Principal, ref string, max int64) ([]byte, error) {
	vm, err := c.s.VM(p, ref)
	if err != nil {
		return nil, err
	}
	const action = "vm.console.log"
	if !CanChangeVM(p, vm) {
		return nil, c.s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to read VM %s's console", vm.Name))
	}
	b, err := c.readLog(ctx, vm, max)
	if err != nil || len(b) == 0 {
		return nil, err
	}
	if err := c.s.id.Record(ctx, p.User.ID, action, vm.Name, vm.ProjectID, "%d bytes of the serial log", len(b)); err != nil {
		return nil, err
	}
	return b, nil
}

// readLog reads the tail of vm's serial log where it runs.
func (c *Consoles) readLog(ctx context.Context, vm *VM, max int64) ([]byte, error) {
	if vm.Node == "" {
		return nil, nil
	}
	if vm.Node == c.peers.Name() {
		return c.localLog(vm.ID, max)
	}
	addr, ok := c.peers.PeerAddr(vm.Node)
	client := c.peers.RPCClient()
	if !ok || client == nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "node %s is not reachable", vm.Node)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://%s%s%s/log?max=%d", addr, ConsoleRPCPrefix, url.PathEscape(vm.ID), max), nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "node %s: %v", vm.Node, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "node %s: %s", vm.Node, res.Status)
	}
	return io.ReadAll(io.LimitReader(res.Body, max))
}

func (c *Consoles) localLog(vmID string, max int64) ([]byte, error) {
	path, ok := c.local(vmID, "log")
	if !ok {
		return nil, nil
	}
	return tailLog(path, max)
}

// tailLog is the last max bytes of a log that the qemu driver rotates:
// what is missing from the log since its last rotation comes from the
// rotated copy (path.1).
func tailLog(path string, max int64) ([]byte, error) {
	cur, err := tailFile(path, max)
	if err != nil || int64(len(cur)) >= max {
		return cur, err
	}
	old, err := tailFile(path+".1", max-int64(len(cur)))
	if err != nil {
		return nil, err
	}
	return append(old, cur...), nil
}

// tailFile is the last max bytes of path; nothing if it does not exist.
func tailFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		if _, err := f.Seek(st.Size()-max, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// serveLog is the peer side of SerialLog.
func (c *Consoles) serveLog(w http.ResponseWriter, r *http.Request) {
	var max int64 = 1 << 20
	fmt.Sscan(r.URL.Query().Get("max"), &max)
	b, err := c.localLog(r.PathValue("vm"), max)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(b)
}

// consoleFile names a VM's console socket or log under a run and a VM dir.
func consoleFile(runDir, vmDir, kind string) (string, bool) {
	switch kind {
	case ConsoleVNC:
		return filepath.Join(runDir, "vnc.sock"), true
	case ConsoleSerial:
		return filepath.Join(runDir, "serial.sock"), true
	case "log":
		return filepath.Join(vmDir, "serial.log"), true
	}
	return "", false
}
