package volume

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/cairnhq/cairn/storage/nbd"
)

// A live migration's new node serves each volume of the VM before it is
// the volume's writer: the QEMU that receives the VM opens its disks when
// it starts, long before the switchover. The standby socket answers the
// NBD handshake with the volume's size, and holds every request until the
// switchover makes this node the writer (HandOver), then passes them to
// the new writer. Nothing reaches a replica before that writer has fenced
// them all, and the source node cannot write after it has.

// standby is a volume served here ahead of its writer.
type standby struct {
	gate *gate
	srv  *nbd.Server
	ln   net.Listener
}

// gate is the Backend of a standby socket: it waits for the writer.
type gate struct {
	size int64
	// early: reads before the writer answer zeroes instead of waiting. A
	// UEFI variable store's (Attachment.Firmware): QEMU reads its flash
	// whole as it starts, before the stream that brings its contents and
	// writes them back here once the guest runs on this node.
	early bool
	ready chan struct{}
	once  sync.Once
	w     *Writer // set before ready closes; nil: closed without one
}

func newGate(size int64) *gate { return &gate{size: size, ready: make(chan struct{})} }

// open lets requests through to w (nil: fails them).
func (g *gate) open(w *Writer) {
	g.once.Do(func() {
		g.w = w
		close(g.ready)
	})
}

var errNoWriter = errors.New("volume: the migration ended before this node became the writer")

func (g *gate) writer(ctx context.Context) (*Writer, error) {
	select {
	case <-g.ready:
		if g.w == nil {
			return nil, errNoWriter
		}
		return g.w, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Size is the volume's size when the standby was made; once the writer
// is there, the writer's (a volume grown online after the move is served
// at its new size to new connections).
func (g *gate) Size() int64 {
	select {
	case <-g.ready:
		if g.w != nil {
			return g.w.Size()
		}
	default:
	}
	return g.size
}

func (g *gate) ReadAt(ctx context.Context, p []byte, off int64) error {
	if g.early {
		select {
		case <-g.ready:
		default:
			clear(p)
			return nil
		}
	}
	w, err := g.writer(ctx)
	if err != nil {
		return err
	}
	return w.ReadAt(ctx, p, off)
}

func (g *gate) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	w, err := g.writer(ctx)
	if err != nil {
		return err
	}
	return w.WriteAt(ctx, p, off, fua)
}

// Flush before the handover has no write before it to make durable (a
// write waits too): it returns at once, so that a QEMU let go before the
// switchover (its migration given up) closes without waiting.
func (g *gate) Flush(ctx context.Context) error {
	select {
	case <-g.ready:
		if g.w == nil {
			return errNoWriter
		}
		return g.w.Flush(ctx)
	default:
		return nil
	}
}

func (g *gate) Trim(ctx context.Context, off, length int64) error {
	w, err := g.writer(ctx)
	if err != nil {
		return err
	}
	return w.Trim(ctx, off, length)
}

func (g *gate) WriteZeroes(ctx context.Context, off, length int64, noHole bool) error {
	w, err := g.writer(ctx)
	if err != nil {
		return err
	}
	return w.WriteZeroes(ctx, off, length, noHole)
}

// Holds tells whether this node still has a writer of the volume, open
// or being opened (a close runs under the lock, so one under way is over
// when this answers): a live migration's source waits until it has let
// go before its guest may run elsewhere.
func (n *NodeServer) Holds(volumeID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.served[volumeID] != nil || n.opening[volumeID]
}

// Standby is the NBD socket a volume coming here by live migration is
// served on ahead of its writer, once it is.
func (n *NodeServer) Standby(volumeID string) (socket string, size int64, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	sb := n.standby[volumeID]
	if sb == nil {
		return "", 0, false
	}
	return n.SocketPath(volumeID), sb.gate.size, true
}

// convergeIncoming serves the volumes coming here on standby sockets and
// closes those whose migration ended without coming here. Called with
// n.mu held.
func (n *NodeServer) convergeIncoming(want, incoming map[string]*Volume) {
	for id, sb := range n.standby {
		if incoming[id] == nil && want[id] == nil {
			n.closeStandby(id, sb)
		}
	}
	for id, v := range incoming {
		if n.standby[id] != nil || n.served[id] != nil {
			continue
		}
		g := newGate(v.SizeBytes)
		g.early = v.Attachment != nil && v.Attachment.Firmware
		ln, srv, err := n.serveBackend(id, g, n.SocketPath(id))
		if err != nil {
			n.log.Error("serve an incoming volume", "volume", id, "err", err)
			continue
		}
		go func() { _ = srv.Serve(ln) }()
		n.standby[id] = &standby{gate: g, srv: srv, ln: ln}
		n.log.Info("serving incoming volume until it is handed over", "volume", id, "from", v.Attachment.Node)
	}
}

func (n *NodeServer) closeStandby(id string, sb *standby) {
	delete(n.standby, id)
	sb.gate.open(nil)
	sb.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = sb.srv.Shutdown(ctx)
	_ = os.Remove(n.SocketPath(id))
	n.log.Info("incoming volume no longer served", "volume", id)
}
