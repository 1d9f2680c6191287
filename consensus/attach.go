package consensus

import (
	"encoding/binary"
	"fmt"
)

// Bytes beside a command. A command is JSON, and bytes inside JSON are
// base64: a small object's bytes, kept in its record (storage/inline.go),
// were encoded once by the writer and, on every node, scanned by each
// envelope that carried them and decoded again. That was about half of the
// state machine's CPU for an inline PUT (docs/benchmarks.md, session 37).
//
// An entry with AttachedFlag set in its type carries the bytes after the
// JSON instead: [type][JSON length, 4 bytes][JSON][bytes]. The handler
// finds them with Tx.Attached; a wrapper that dispatches an inner command
// (an audited one) passes them on unseen, as the inner command runs in
// the same Tx. Nothing else changes: forwarding to the leader carries the
// entry's body as it is, and snapshots hold the state, not the commands.
//
// A node older than attachProtocol would stop at such an entry, so Apply
// sends the command's plain form (Attached.Plain) until every server of the
// configuration runs attachProtocol or later.

// AttachedFlag marks an entry whose bytes follow its JSON. Only Apply sets
// it, for a command given as Attached.
const AttachedFlag MessageType = 0x4000

// attachProtocol is the protocol that knows AttachedFlag (protocol.go).
const attachProtocol = 9

// Attached is a command whose Bytes travel beside its JSON in the log
// entry, for its handler to find with Tx.Attached. Plain returns the same
// command with the bytes inside it: what a cluster that does not know the
// attached form yet is sent, and what the command marshals to as JSON, so
// a wrapper that does not know of Attached still replicates the whole
// command.
type Attached struct {
	Cmd   any
	Bytes []byte
	Plain func() (any, error)
}

// MarshalJSON is the plain form's JSON.
func (a Attached) MarshalJSON() ([]byte, error) {
	if a.Plain == nil {
		return nil, fmt.Errorf("an attached command without its plain form")
	}
	c, err := a.Plain()
	if err != nil {
		return nil, err
	}
	return Marshal(c)
}

// Attached returns the bytes attached to the command being applied, or
// nil. They belong to the log entry: a handler that keeps them copies
// them.
func (tx *Tx) Attached() []byte { return tx.attached }

// base is a message type without its flags: the type its handler is
// registered under.
func (t MessageType) base() MessageType { return t &^ (IgnoreUnknownTypeFlag | AttachedFlag) }

// encode turns a command into the type and body of its log entry: the
// attached form for an Attached that every server knows, its plain form
// otherwise. A command an older node may skip goes plain: such a node
// would take an attached one for a type it does not know, skip it, and
// diverge, where it stops at a type it does not know otherwise.
func (n *Node) encode(t MessageType, cmd any) (MessageType, []byte, error) {
	a, ok := cmd.(Attached)
	if !ok {
		b, err := Marshal(cmd)
		return t, b, err
	}
	if a.Plain == nil {
		return t, nil, fmt.Errorf("an attached command without its plain form")
	}
	if t&IgnoreUnknownTypeFlag != 0 || (n.Gate(t|AttachedFlag) != nil && !n.attachAnyway.Load()) {
		b, err := Marshal(a) // the plain form
		return t, b, err
	}
	js, err := Marshal(a.Cmd)
	if err != nil {
		return t, nil, err
	}
	return t | AttachedFlag, joinAttached(js, a.Bytes), nil
}

// joinAttached is the body of an attached entry.
func joinAttached(js, b []byte) []byte {
	body := make([]byte, 4+len(js)+len(b))
	binary.BigEndian.PutUint32(body, uint32(len(js)))
	copy(body[4:], js)
	copy(body[4+len(js):], b)
	return body
}

// splitAttached takes the body of an attached entry apart.
func splitAttached(body []byte) (js, b []byte, err error) {
	if len(body) < 4 {
		return nil, nil, fmt.Errorf("attached command of %d bytes is too short", len(body))
	}
	n := binary.BigEndian.Uint32(body)
	if uint64(n) > uint64(len(body)-4) {
		return nil, nil, fmt.Errorf("attached command says %d bytes of JSON and has %d", n, len(body)-4)
	}
	return body[4 : 4+n], body[4+n:], nil
}
