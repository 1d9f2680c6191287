package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A small QMP client of our own rather than go-qemu's: QMP is line-delimited
// JSON, and owning the reader lets every command take a context, lets
// commands run concurrently (replies are matched by "id"), never blocks the
// reader on a slow event consumer, and reports the connection's end, which
// is half of how a VM's exit is noticed.

// Event is an asynchronous QMP event (SHUTDOWN, POWERDOWN, STOP, RESUME,
// RESET, ...). Data is the event's "data" member, undecoded.
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// QMPError is an error QEMU returned for a command.
type QMPError struct {
	Command string
	Class   string // e.g. GenericError, CommandNotFound, DeviceNotActive
	Desc    string
}

func (e *QMPError) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// ErrDisconnected is returned by commands once the QMP connection is gone
// (the VM exited, or Close was called).
var ErrDisconnected = errors.New("qmp: disconnected")

// eventBuffer bounds the events held for a slow reader; older ones are not
// dropped, new ones are (and logged), so the reader never stalls replies.
const eventBuffer = 256

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	ID        *uint64         `json:"id"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type qmpClient struct {
	conn   net.Conn
	log    *slog.Logger
	events chan Event
	done   chan struct{} // closed when the reader stops

	wmu sync.Mutex // one writer at a time: lines must not interleave

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan qmpMessage
	// watchers get a copy of every event besides the events channel, so
	// a command that waits for an event (device_del's DEVICE_DELETED)
	// need not compete with the one consumer of Events.
	watchers map[chan Event]struct{}
	err      error // why the reader stopped
}

// dialQMP connects to a QMP socket and leaves capabilities negotiation
// done. QEMU serves one QMP client per socket: a second one is accepted by
// the kernel but never greeted, so the greeting wait is bounded by ctx.
func dialQMP(ctx context.Context, path string, log *slog.Logger) (*qmpClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp connect %s: %w", path, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r := bufio.NewReaderSize(conn, 64<<10)
	var greeting qmpMessage
	if err := readMessage(r, &greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		if err == nil {
			err = errors.New("no QMP greeting")
		}
		return nil, fmt.Errorf("qmp connect %s: %w", path, errors.Join(err, ctx.Err()))
	}
	q := &qmpClient{
		conn:     conn,
		log:      log,
		events:   make(chan Event, eventBuffer),
		done:     make(chan struct{}),
		pending:  map[uint64]chan qmpMessage{},
		watchers: map[chan Event]struct{}{},
	}
	go q.read(r)
	if err := q.execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.close()
		return nil, fmt.Errorf("qmp connect %s: %w", path, err)
	}
	return q, nil
}

func readMessage(r *bufio.Reader, m *qmpMessage) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, m)
}

// read routes replies to their waiting command and events to the events
// channel until the connection ends.
func (q *qmpClient) read(r *bufio.Reader) {
	var err error
	for {
		var line []byte
		if line, err = r.ReadBytes('\n'); err != nil {
			break
		}
		var m qmpMessage
		if jerr := json.Unmarshal(line, &m); jerr != nil {
			q.log.Warn("qmp: unreadable message", "err", jerr)
			continue
		}
		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data,
				Time: time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)}
			select {
			case q.events <- ev:
			default:
				q.log.Warn("qmp: event dropped, nobody reads events", "event", m.Event)
			}
			q.mu.Lock()
			for w := range q.watchers {
				select {
				case w <- ev:
				default: // a watcher also polls for what it waits for
				}
			}
			q.mu.Unlock()
		case m.ID != nil:
			q.mu.Lock()
			ch := q.pending[*m.ID]
			delete(q.pending, *m.ID)
			q.mu.Unlock()
			if ch != nil {
				ch <- m // buffered: the waiter may have given up
			}
		default:
			q.log.Warn("qmp: reply without id", "error", m.Error)
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = ErrDisconnected
	}
	q.mu.Lock()
	q.err = err
	for id, ch := range q.pending {
		close(ch)
		delete(q.pending, id)
	}
	for w := range q.watchers {
		close(w)
		delete(q.watchers, w)
	}
	q.mu.Unlock()
	close(q.events)
	close(q.done)
}

// execute runs one command; args is marshalled as "arguments" and the
// "return" member is unmarshalled into out when out is not nil.
func (q *qmpClient) execute(ctx context.Context, cmd string, args, out any) error {
	return q.executeFile(ctx, cmd, args, out, nil)
}

// executeFile is execute with f's descriptor passed along (SCM_RIGHTS),
// for the commands that take one (add-fd, getfd); f nil passes none.
func (q *qmpClient) executeFile(ctx context.Context, cmd string, args, out any, f *os.File) error {
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	q.nextID++
	id := q.nextID
	ch := make(chan qmpMessage, 1)
	q.pending[id] = ch
	q.mu.Unlock()

	req := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	line, err := json.Marshal(req)
	if err != nil {
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	q.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		q.conn.SetWriteDeadline(dl)
	}
	if uc, ok := q.conn.(*net.UnixConn); ok && f != nil {
		// The descriptor travels with the command's first byte, so the
		// line goes in one message.
		_, _, err = uc.WriteMsgUnix(append(line, '\n'), unix.UnixRights(int(f.Fd())), nil)
	} else if f != nil {
		err = errors.New("descriptors pass only over a unix socket")
	} else {
		_, err = q.conn.Write(append(line, '\n'))
	}
	q.conn.SetWriteDeadline(time.Time{})
	q.wmu.Unlock()
	if err != nil {
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}

	select {
	case m, ok := <-ch:
		if !ok {
			return fmt.Errorf("qmp %s: %w", cmd, q.readErr())
		}
		if m.Error != nil {
			return &QMPError{Command: cmd, Class: m.Error.Class, Desc: m.Error.Desc}
		}
		if out != nil && len(m.Return) > 0 {
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

// watch returns a channel that gets a copy of the events from now on (the
// ones it has no room for are dropped) and is closed when the connection
// ends, and the function that stops the copies.
func (q *qmpClient) watch() (<-chan Event, func()) {
	ch := make(chan Event, eventBuffer)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		close(ch)
		return ch, func() {}
	}
	q.watchers[ch] = struct{}{}
	return ch, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if _, ok := q.watchers[ch]; ok {
			delete(q.watchers, ch)
			close(ch)
		}
	}
}

func (q *qmpClient) forget(id uint64) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

func (q *qmpClient) readErr() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		return ErrDisconnected
	}
	return q.err
}

// close ends the connection; the reader then fails pending commands.
func (q *qmpClient) close() {
	q.conn.Close()
	<-q.done
}
