package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// A client of qemu-guest-agent (QGA), which speaks QMP's JSON to the host
// over the virtio-serial port guestAgentArgs gives every VM. Unlike QMP it
// has no greeting: a guest may run no agent at all, and a new connection
// may find the replies of an earlier client still in the pipe. So every
// connection starts with guest-sync-delimited (qga/qapi-schema.json): a
// 0xFF byte resets the agent's parser, and the reply to a random id comes
// after a 0xFF of the agent's; anything before it is stale. One command is
// in flight per connection, and every read and write has a deadline: the
// guest is untrusted and may answer nothing, garbage or without end.

// guestAgentPort is the virtio-serial port name qemu-ga opens in the guest.
const guestAgentPort = "org.qemu.guest_agent.0"

// GuestAgentSyncTimeout bounds the handshake: an agent answers it at once,
// so a guest that has not answered in this long runs none.
const GuestAgentSyncTimeout = 3 * time.Second

// maxGuestAgentReply bounds one reply line read from the guest.
const maxGuestAgentReply = 64 << 10

// ErrNoGuestAgent is returned when nothing answered the handshake in time:
// the guest runs no agent (or it is not up yet, or is wedged).
var ErrNoGuestAgent = errors.New("no guest agent answered")

// GuestAgentError is an error the guest agent returned for a command.
type GuestAgentError struct {
	Command string
	Class   string // e.g. GenericError, CommandNotFound
	Desc    string
}

func (e *GuestAgentError) Error() string {
	return fmt.Sprintf("guest agent %s: %s: %s", e.Command, e.Class, e.Desc)
}

// guestAgent is one connection to a guest agent, synced.
type guestAgent struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialGuestAgent connects to the host end of a guest agent's channel and
// syncs with the agent, within GuestAgentSyncTimeout (or ctx, if sooner).
func dialGuestAgent(ctx context.Context, path string) (*guestAgent, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("guest agent connect: %w", err)
	}
	g := &guestAgent{conn: conn, r: bufio.NewReaderSize(conn, maxGuestAgentReply)}
	sctx, cancel := context.WithTimeout(ctx, GuestAgentSyncTimeout)
	defer cancel()
	if err := g.sync(sctx); err != nil {
		conn.Close()
		if errors.Is(err, context.DeadlineExceeded) && !expired(ctx) {
			err = fmt.Errorf("%w in %s", ErrNoGuestAgent, GuestAgentSyncTimeout)
		}
		return nil, fmt.Errorf("guest agent sync: %w", err)
	}
	return g, nil
}

func (g *guestAgent) close() error { return g.conn.Close() }

// ioErr is err from the connection, which said "i/o timeout" because ctx
// ended (the deadline is ctx's): it then says so.
func ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", err, ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && expired(ctx) {
		return fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
	}
	return err
}

// expired reports whether ctx's deadline has passed (its Err may lag).
func expired(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && !time.Now().Before(dl)
}

// bound makes the connection's reads and writes fail once ctx ends; the
// returned function must be called when the exchange is over.
func (g *guestAgent) bound(ctx context.Context) func() {
	if dl, ok := ctx.Deadline(); ok {
		g.conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { g.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		g.conn.SetDeadline(time.Time{})
	}
}

// sync does the guest-sync-delimited handshake.
func (g *guestAgent) sync(ctx context.Context) error {
	defer g.bound(ctx)()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	// A positive id that survives a trip through a JSON number anywhere.
	id := int64(binary.LittleEndian.Uint64(b[:]) >> 11)
	req, err := json.Marshal(map[string]any{"execute": "guest-sync-delimited", "arguments": map[string]any{"id": id}})
	if err != nil {
		return err
	}
	if _, err := g.conn.Write(append([]byte{0xFF}, append(req, '\n')...)); err != nil {
		return ioErr(ctx, err)
	}
	for {
		// Everything up to the agent's delimiter is stale, or garbage.
		if err := g.skipToDelimiter(); err != nil {
			return ioErr(ctx, err)
		}
		line, err := g.readLine()
		if err != nil {
			return ioErr(ctx, err)
		}
		// A delimiter within the line restarts it.
		if i := bytes.LastIndexByte(line, 0xFF); i >= 0 {
			line = line[i+1:]
		}
		var reply struct {
			Return *int64 `json:"return"`
		}
		// A reply to an earlier client's sync, or one cut short: look
		// for the next delimiter.
		if json.Unmarshal(line, &reply) == nil && reply.Return != nil && *reply.Return == id {
			return nil
		}
	}
}

// skipToDelimiter discards what comes before the agent's next 0xFF,
// keeping none of it: a guest may send garbage until the deadline.
func (g *guestAgent) skipToDelimiter() error {
	for {
		c, err := g.r.ReadByte()
		if err != nil || c == 0xFF {
			return err
		}
	}
}

// readLine reads one reply line of at most maxGuestAgentReply bytes.
func (g *guestAgent) readLine() ([]byte, error) {
	line, err := g.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("reply longer than %d bytes", maxGuestAgentReply)
	}
	return bytes.Clone(line), err
}

// call runs one command and decodes its return value into out (if not
// nil). A reply that is neither a return nor an error fails the call.
func (g *guestAgent) call(ctx context.Context, cmd string, out any) error {
	defer g.bound(ctx)()
	req, err := json.Marshal(map[string]any{"execute": cmd})
	if err != nil {
		return err
	}
	if _, err := g.conn.Write(append(req, '\n')); err != nil {
		return fmt.Errorf("guest agent %s: %w", cmd, ioErr(ctx, err))
	}
	for {
		line, err := g.readLine()
		if err != nil {
			return fmt.Errorf("guest agent %s: %w", cmd, ioErr(ctx, err))
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var reply struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &reply); err != nil {
			return fmt.Errorf("guest agent %s: bad reply: %w", cmd, err)
		}
		switch {
		case reply.Error != nil:
			return &GuestAgentError{Command: cmd, Class: reply.Error.Class, Desc: reply.Error.Desc}
		case reply.Return == nil:
			return fmt.Errorf("guest agent %s: reply with neither return nor error", cmd)
		case out != nil:
			if err := json.Unmarshal(reply.Return, out); err != nil {
				return fmt.Errorf("guest agent %s: bad return value: %w", cmd, err)
			}
		}
		return nil
	}
}

// guestAgentCall connects to the agent at path, syncs and runs cmd,
// returning its integer result (what the fsfreeze commands return).
func guestAgentCall(ctx context.Context, path, cmd string) (int, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	g, err := dialGuestAgent(ctx, path)
	if err != nil {
		return 0, err
	}
	defer g.close()
	var n int
	if err := g.call(ctx, cmd, &n); err != nil {
		return 0, err
	}
	return n, nil
}

// GuestAgentSocket is the host end of the guest agent channel of the VM
// called name.
func (d *Driver) GuestAgentSocket(name string) string { return filepath.Join(d.Dir(name), qgaSocket) }

// FreezeFS asks the guest agent of the VM called name to flush and freeze
// the guest's file systems (guest-fsfreeze-freeze) and returns how many it
// froze. It fails within GuestAgentSyncTimeout (ErrNoGuestAgent) when the
// guest runs no agent. A caller that got an error other than
// ErrNoGuestAgent or a GuestAgentError cannot know whether the freeze
// happened, and should thaw. QEMU serves one client on the channel at a
// time: callers serialise their calls for one VM.
func (d *Driver) FreezeFS(ctx context.Context, name string) (frozen int, err error) {
	n, err := guestAgentCall(ctx, d.GuestAgentSocket(name), "guest-fsfreeze-freeze")
	if err != nil {
		return 0, fmt.Errorf("freeze file systems of vm %s: %w", name, err)
	}
	return n, nil
}

// ThawFS undoes FreezeFS (guest-fsfreeze-thaw) and returns how many file
// systems were thawed; thawing a guest that is not frozen thaws none.
func (d *Driver) ThawFS(ctx context.Context, name string) (thawed int, err error) {
	n, err := guestAgentCall(ctx, d.GuestAgentSocket(name), "guest-fsfreeze-thaw")
	if err != nil {
		return 0, fmt.Errorf("thaw file systems of vm %s: %w", name, err)
	}
	return n, nil
}

// FreezeFS is Driver.FreezeFS for this instance's VM.
func (i *Instance) FreezeFS(ctx context.Context) (frozen int, err error) {
	n, err := guestAgentCall(ctx, filepath.Join(i.dir, qgaSocket), "guest-fsfreeze-freeze")
	if err != nil {
		return 0, fmt.Errorf("freeze file systems of vm %s: %w", i.name, err)
	}
	return n, nil
}

// ThawFS is Driver.ThawFS for this instance's VM.
func (i *Instance) ThawFS(ctx context.Context) (thawed int, err error) {
	n, err := guestAgentCall(ctx, filepath.Join(i.dir, qgaSocket), "guest-fsfreeze-thaw")
	if err != nil {
		return 0, fmt.Errorf("thaw file systems of vm %s: %w", i.name, err)
	}
	return n, nil
}
