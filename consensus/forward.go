package consensus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A follower forwards writes to the leader in batches: while a few batches
// are in flight, the commands that arrive queue up and travel together in
// the next one, so many concurrent writers cost one RPC per round trip
// rather than one each. The leader hands every command of a batch to Raft
// before waiting for any, so they also share log appends and fsyncs.
const (
	rpcApplyBatch    = "/cluster/v1/apply-batch"
	forwardInFlight  = 4       // batches in flight to the leader
	forwardMaxBatch  = 256     // commands per batch
	forwardMaxBytes  = 4 << 20 // payload bytes per batch (a single larger command still goes alone)
	forwardQueueSize = 1024
)

// forwardedCmd is one command waiting to be forwarded, and where its answer goes.
type forwardedCmd struct {
	ctx     context.Context
	addr    string
	t       MessageType
	payload []byte
	done    chan forwardedResult // buffered: the sender never blocks
}

type forwardedResult struct {
	result json.RawMessage
	index  uint64
	err    error
}

// forward sends one command to the leader at addr through the batcher and
// waits for its outcome.
func (n *Node) forward(ctx context.Context, addr string, t MessageType, payload []byte) (json.RawMessage, uint64, error) {
	c := &forwardedCmd{ctx: ctx, addr: addr, t: t, payload: payload, done: make(chan forwardedResult, 1)}
	select {
	case n.forwardCh <- c:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-n.ctx.Done():
		return nil, 0, errShuttingDown
	}
	select {
	case r := <-c.done:
		return r.result, r.index, r.err
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-n.ctx.Done():
		return nil, 0, errShuttingDown
	}
}

// forwardLoop forms batches: it takes a slot, then everything queued (up to
// the limits), and sends that while it forms the next.
func (n *Node) forwardLoop(ctx context.Context) {
	slots := make(chan struct{}, forwardInFlight)
	for {
		var first *forwardedCmd
		select {
		case first = <-n.forwardCh:
		case <-ctx.Done():
			return
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		batches := map[string][]*forwardedCmd{}
		add := func(c *forwardedCmd) {
			if c.ctx.Err() == nil { // the caller gave up: do not apply it behind its back
				batches[c.addr] = append(batches[c.addr], c)
			}
		}
		add(first)
		size, count := len(first.payload), 1
	drain:
		for count < forwardMaxBatch && size < forwardMaxBytes {
			select {
			case c := <-n.forwardCh:
				add(c)
				size, count = size+len(c.payload), count+1
			default:
				break drain
			}
		}
		go func() {
			defer func() { <-slots }()
			for addr, cmds := range batches {
				n.sendBatch(ctx, addr, cmds)
			}
		}()
	}
}

// sendBatch sends one batch to addr and hands each command its outcome.
func (n *Node) sendBatch(ctx context.Context, addr string, cmds []*forwardedCmd) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Once every caller has given up (a leader that died mid-call), the
	// batch holds its slot no longer: the callers' next commands go to
	// the new leader.
	var left atomic.Int64
	left.Store(int64(len(cmds)))
	for _, c := range cmds {
		stop := context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	results, err := n.callApplyBatch(ctx, addr, cmds)
	for i, c := range cmds {
		if err != nil {
			c.done <- forwardedResult{err: err}
		} else {
			c.done <- results[i]
		}
	}
}

func (n *Node) callApplyBatch(ctx context.Context, addr string, cmds []*forwardedCmd) ([]forwardedResult, error) {
	var body bytes.Buffer
	for _, c := range cmds {
		writeFrame(&body, uint16(c.t), c.payload)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+rpcApplyBatch, &body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := n.rpc().Do(req)
	if err != nil {
		return nil, fmt.Errorf("rpc %s to %s: %w", rpcApplyBatch, addr, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return nil, fmt.Errorf("rpc %s to %s: %s: %s", rpcApplyBatch, addr, res.Status, msg)
	}
	// net/http buffers the body already: no bufio of our own.
	br := io.LimitReader(res.Body, maxRPCBody)
	results := make([]forwardedResult, len(cmds))
	for i := range results {
		var hdr [8]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("rpc %s to %s: result %d: %w", rpcApplyBatch, addr, i, err)
		}
		results[i].index = binary.BigEndian.Uint64(hdr[:])
		code, result, err := readFrame(br)
		if err != nil {
			return nil, fmt.Errorf("rpc %s to %s: result %d: %w", rpcApplyBatch, addr, i, err)
		}
		if code == frameError {
			var e Error
			if err := json.Unmarshal(result, &e); err != nil {
				return nil, fmt.Errorf("rpc %s to %s: result %d: %w", rpcApplyBatch, addr, i, err)
			}
			results[i].err = &e
		} else if len(result) > 0 {
			results[i].result = result
		}
	}
	var term [8]byte
	if _, err := io.ReadFull(br, term[:]); err == nil {
		n.offerCommit(addr, results, binary.BigEndian.Uint64(term[:]))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4096)) // lets the connection be reused
	return results, nil
}

// offerCommit tells the commit hinter the newest entry the leader at addr
// applied for us, in term.
func (n *Node) offerCommit(addr string, results []forwardedResult, term uint64) {
	r := n.Raft()
	if r == nil || n.hinter == nil {
		return
	}
	laddr, lid := r.LeaderWithID()
	if string(laddr) != addr {
		return
	}
	var last uint64
	for _, res := range results {
		if res.err == nil {
			last = max(last, res.index)
		}
	}
	n.hinter.offer(commitHint{index: last, term: term, leader: lid, addr: laddr})
}

// handleApplyBatch applies a follower's batch on the leader: every command
// goes to Raft first, then the handler waits for each in order.
func (n *Node) handleApplyBatch(w http.ResponseWriter, r *http.Request) {
	// The whole batch is read before any of it is applied: a request that
	// breaks off halfway applies nothing.
	type command struct {
		t       MessageType
		payload []byte
	}
	var cmds []command
	// net/http buffers both the body and the response already: no bufio
	// of our own (a fresh pair per batch was a sixth of a node's allocations).
	br := io.LimitReader(r.Body, maxRPCBody)
	for {
		t, payload, err := readFrame(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			http.Error(w, "apply batch: "+err.Error(), http.StatusBadRequest)
			return
		}
		cmds = append(cmds, command{MessageType(t), payload})
	}
	raftNode := n.Raft()
	futures := make([]raft.ApplyFuture, len(cmds))
	for i, c := range cmds {
		if err := n.Gate(c.t); err != nil { // the proposer's state may lag
			futures[i] = failedFuture{err}
			continue
		}
		futures[i] = applyAsync(raftNode, c.t, c.payload, 10*time.Second)
	}
	// Waited for together, unless the request ends first (the follower
	// gone, or this node shutting down: see waitApplied).
	all := make(chan struct{})
	go func() {
		for _, f := range futures {
			_ = f.Error()
		}
		close(all)
	}()
	select {
	case <-all:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	for _, f := range futures {
		res, idx, err := applyOutcome(f)
		var hdr [8]byte
		binary.BigEndian.PutUint64(hdr[:], idx)
		w.Write(hdr[:])
		if e := asError(err); e != nil {
			b, _ := json.Marshal(e)
			writeFrame(w, frameError, b)
		} else {
			writeFrame(w, frameResult, res)
		}
	}
	// The term the entries were committed in: the follower uses it to learn
	// of the commit without waiting for our next AppendEntries (commit.go).
	// A leader keeps its term while it leads; had it lost the lead, the
	// futures would have failed.
	var term [8]byte
	if raftNode != nil {
		binary.BigEndian.PutUint64(term[:], raftNode.CurrentTerm())
	}
	w.Write(term[:])
}

// Frames are a 2-byte tag (a message type, or a result kind) and a
// length-prefixed body.
const (
	frameResult uint16 = 0
	frameError  uint16 = 1
)

func writeFrame(w io.Writer, tag uint16, body []byte) {
	var hdr [6]byte
	binary.BigEndian.PutUint16(hdr[:2], tag)
	binary.BigEndian.PutUint32(hdr[2:], uint32(len(body)))
	w.Write(hdr[:])
	w.Write(body)
}

func readFrame(r io.Reader) (uint16, []byte, error) {
	var hdr [6]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("truncated frame: %w", err)
		}
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:])
	if size > maxRPCBody {
		return 0, nil, fmt.Errorf("frame of %d bytes is over the limit", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("truncated frame: %w", err)
	}
	return binary.BigEndian.Uint16(hdr[:2]), body, nil
}

// errShuttingDown refuses a forward this node can no longer make.
var errShuttingDown = NewError(CodeUnavailable, "node is shutting down")
