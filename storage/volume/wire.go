package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"syscall"
)

// The replica protocol. After the HTTP Upgrade the client sends requests
// and the server answers each with one reply, in any order, matched by
// handle. Every integer is big-endian, as in NBD.
//
//	request: magic u32 | op u16 | flags u16 | handle u64 | epoch u64 |
//	         gen u64 | offset u64 | length u64 | payload (writes only)
//	reply:   magic u32 | code u32 | handle u64 | length u32 | payload
//
// offset carries the extent index of ReadExtent and WriteExtent and the new
// size of Resize. Presence travels as big-endian uint64 words (bit i%64 of
// word i/64 for block i): after the bytes in a ReadLayer reply, one word
// per 64 blocks; before the bytes of an extent (wireExtentPresence, the
// extent's blocksPerExtent bits) in a WriteExtent request and a ReadExtent
// reply when the request has reqPresence, its length then counting them.
// Without the flag an extent travels bare, as before layered replicas.
// No request's offset (nor Zero's length) exceeds
// maxReplicaSize, so a Resize cannot make the server allocate beyond the
// largest volume. A header that breaks the framing (bad magic, unknown op
// or flag, a payload over the bounds) closes the connection: the stream
// cannot be trusted to be in step after it.
const (
	reqMagic       = 0x43565251 // "CVRQ"
	repMagic       = 0x43565250 // "CVRP"
	reqHeaderSize  = 48
	repHeaderSize  = 20
	wireUpgrade    = "cairn-volume"
	wireMaxPayload = 32 << 20       // a write or read on the wire
	wireMaxMessage = 4 << 10        // an error's text
	wireMaxVolume  = maxReplicaSize // bounds Extents, offsets and sizes
	wireExtentInfo = 16
	// wireExtentPresence is an extent's presence on the wire.
	wireExtentPresence = blocksPerExtent / 8
)

// Operations.
const (
	opFence uint16 = iota + 1
	opWrite
	opZero
	opRead
	opFlush
	opExtents
	opReadExtent
	opWriteExtent
	opResize
	opReadLayer
)

// Request flags.
const (
	reqFUA      uint16 = 1 << 0 // opWrite
	reqPunch    uint16 = 1 << 0 // opZero
	reqPresence uint16 = 1 << 1 // opReadExtent, opWriteExtent: with presence
)

// Reply codes.
const (
	repOK uint32 = iota
	repFenced
	repNoReplica
	repCorrupt // payload: off u64 | len u64
	repErrno   // payload: errno u32 | message
	repOther   // payload: message
)

// ErrConnLost is returned by a remote Target's calls once its connection
// has failed or been closed; the caller dials again.
var ErrConnLost = errors.New("volume: replica connection lost")

// errWireProtocol marks a frame that breaks the protocol.
var errWireProtocol = errors.New("volume: replica protocol error")

// wireRequest is one request header; its payload travels apart.
type wireRequest struct {
	op, flags  uint16
	handle     uint64
	epoch, gen uint64
	offset     uint64
	length     uint64
}

func (r *wireRequest) encode(b *[reqHeaderSize]byte) {
	binary.BigEndian.PutUint32(b[0:], reqMagic)
	binary.BigEndian.PutUint16(b[4:], r.op)
	binary.BigEndian.PutUint16(b[6:], r.flags)
	binary.BigEndian.PutUint64(b[8:], r.handle)
	binary.BigEndian.PutUint64(b[16:], r.epoch)
	binary.BigEndian.PutUint64(b[24:], r.gen)
	binary.BigEndian.PutUint64(b[32:], r.offset)
	binary.BigEndian.PutUint64(b[40:], r.length)
}

// decodeRequest parses and bounds one request header. Only what the
// framing and the server's memory depend on is checked here; ranges are
// the Target's to refuse (with EINVAL, on a stream still in step).
func decodeRequest(b []byte) (wireRequest, error) {
	if len(b) != reqHeaderSize {
		return wireRequest{}, fmt.Errorf("%w: request header of %d bytes", errWireProtocol, len(b))
	}
	if m := binary.BigEndian.Uint32(b[0:]); m != reqMagic {
		return wireRequest{}, fmt.Errorf("%w: bad request magic %#x", errWireProtocol, m)
	}
	r := wireRequest{
		op:     binary.BigEndian.Uint16(b[4:]),
		flags:  binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		epoch:  binary.BigEndian.Uint64(b[16:]),
		gen:    binary.BigEndian.Uint64(b[24:]),
		offset: binary.BigEndian.Uint64(b[32:]),
		length: binary.BigEndian.Uint64(b[40:]),
	}
	var allowed uint16
	var maxLen uint64 // 0: the request carries no length
	switch r.op {
	case opFence, opFlush, opExtents, opResize:
	case opReadExtent:
		allowed = reqPresence
	case opWrite:
		allowed, maxLen = reqFUA, wireMaxPayload
	case opZero:
		allowed, maxLen = reqPunch, wireMaxVolume
	case opRead, opReadLayer:
		maxLen = wireMaxPayload
	case opWriteExtent:
		allowed, maxLen = reqPresence, ExtentSize
		if r.flags&reqPresence != 0 {
			maxLen += wireExtentPresence
		}
	default:
		return wireRequest{}, fmt.Errorf("%w: unknown op %d", errWireProtocol, r.op)
	}
	if r.flags&^allowed != 0 {
		return wireRequest{}, fmt.Errorf("%w: op %d with flags %#x", errWireProtocol, r.op, r.flags)
	}
	if r.length > maxLen {
		return wireRequest{}, fmt.Errorf("%w: op %d with length %d", errWireProtocol, r.op, r.length)
	}
	if r.offset > wireMaxVolume {
		return wireRequest{}, fmt.Errorf("%w: op %d with offset %d", errWireProtocol, r.op, r.offset)
	}
	return r, nil
}

// payloadLen is how many bytes follow the request's header.
func (r *wireRequest) payloadLen() int {
	if r.op == opWrite || r.op == opWriteExtent {
		return int(r.length)
	}
	return 0
}

// presenceLen is the bytes of presence for n bytes of blocks on the wire.
func presenceLen(n int64) int { return int((n/BlockSize + 63) / 64 * 8) }

// putPresence writes len(b)/8 words of p (zero past its end) into b.
func putPresence(b []byte, p Presence) {
	for i := 0; i < len(b)/8; i++ {
		var w uint64
		if i < len(p) {
			w = p[i]
		}
		binary.BigEndian.PutUint64(b[i*8:], w)
	}
}

// getPresence reads the words of b into p, cleared first.
func getPresence(p Presence, b []byte) {
	clear(p)
	for i := 0; i < len(b)/8 && i < len(p); i++ {
		p[i] = binary.BigEndian.Uint64(b[i*8:])
	}
}

// wireReply is one reply header.
type wireReply struct {
	code   uint32
	handle uint64
	length uint32
}

func (r *wireReply) encode(b *[repHeaderSize]byte) {
	binary.BigEndian.PutUint32(b[0:], repMagic)
	binary.BigEndian.PutUint32(b[4:], r.code)
	binary.BigEndian.PutUint64(b[8:], r.handle)
	binary.BigEndian.PutUint32(b[16:], r.length)
}

func decodeReply(b []byte) (wireReply, error) {
	if m := binary.BigEndian.Uint32(b[0:]); m != repMagic {
		return wireReply{}, fmt.Errorf("%w: bad reply magic %#x", errWireProtocol, m)
	}
	r := wireReply{
		code:   binary.BigEndian.Uint32(b[4:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		length: binary.BigEndian.Uint32(b[16:]),
	}
	if r.code > repOther {
		return wireReply{}, fmt.Errorf("%w: unknown reply code %d", errWireProtocol, r.code)
	}
	return r, nil
}

// wireError is an error in a form both the binary protocol and the JSON
// control calls carry: the sentinel, errno or corrupt range survives the
// trip, the rest is text.
type wireError struct {
	Code    uint32 `json:"code"`
	Errno   uint32 `json:"errno,omitempty"`
	Off     int64  `json:"off,omitempty"`
	Len     int64  `json:"len,omitempty"`
	Message string `json:"message"`
}

func wireErrorOf(err error) wireError {
	msg := err.Error()
	if len(msg) > wireMaxMessage-4 {
		msg = msg[:wireMaxMessage-4]
	}
	var ce *CorruptError
	var errno syscall.Errno
	switch {
	case errors.Is(err, ErrFenced):
		return wireError{Code: repFenced, Message: msg}
	case errors.Is(err, ErrNoReplica):
		return wireError{Code: repNoReplica, Message: msg}
	case errors.As(err, &ce):
		return wireError{Code: repCorrupt, Off: ce.Off, Len: ce.Len, Message: msg}
	case errors.As(err, &errno):
		return wireError{Code: repErrno, Errno: uint32(errno), Message: msg}
	}
	return wireError{Code: repOther, Message: msg}
}

// err rebuilds the error on the calling side.
func (e wireError) err() error {
	switch e.Code {
	case repFenced:
		return &replicaError{e.Message, ErrFenced}
	case repNoReplica:
		return &replicaError{e.Message, ErrNoReplica}
	case repCorrupt:
		return &CorruptError{Off: e.Off, Len: e.Len}
	case repErrno:
		return &replicaError{e.Message, syscall.Errno(e.Errno)}
	}
	return &replicaError{msg: e.Message}
}

// encode is the payload of an error reply.
func (e wireError) encode() []byte {
	switch e.Code {
	case repCorrupt:
		b := make([]byte, 16)
		binary.BigEndian.PutUint64(b[0:], uint64(e.Off))
		binary.BigEndian.PutUint64(b[8:], uint64(e.Len))
		return b
	case repErrno:
		b := make([]byte, 4, 4+len(e.Message))
		binary.BigEndian.PutUint32(b, e.Errno)
		return append(b, e.Message...)
	}
	return []byte(e.Message)
}

func decodeErrorInfo(code uint32, p []byte) (wireError, error) {
	e := wireError{Code: code}
	switch code {
	case repCorrupt:
		if len(p) != 16 {
			return e, fmt.Errorf("%w: corrupt reply of %d bytes", errWireProtocol, len(p))
		}
		e.Off = int64(binary.BigEndian.Uint64(p[0:]))
		e.Len = int64(binary.BigEndian.Uint64(p[8:]))
		e.Message = (&CorruptError{Off: e.Off, Len: e.Len}).Error()
	case repErrno:
		if len(p) < 4 {
			return e, fmt.Errorf("%w: errno reply of %d bytes", errWireProtocol, len(p))
		}
		e.Errno = binary.BigEndian.Uint32(p)
		e.Message = string(p[4:])
	default:
		e.Message = string(p)
	}
	return e, nil
}

// replicaError is an error the replica returned: its text, and what it
// wraps so errors.Is keeps working across the wire.
type replicaError struct {
	msg string
	err error
}

func (e *replicaError) Error() string {
	if e.msg == "" && e.err != nil {
		return e.err.Error()
	}
	return e.msg
}

func (e *replicaError) Unwrap() error { return e.err }

// Payload buffers come from pools by power-of-two size, 4 KiB to 32 MiB,
// so 4 KiB writes and 1 MiB extents reuse their memory.
const (
	payloadMinShift = 12
	payloadMaxShift = 25
)

var payloadPools [payloadMaxShift - payloadMinShift + 1]sync.Pool

// getPayload returns a buffer of length n; putPayload takes it back.
func getPayload(n int) *[]byte {
	c := payloadClass(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if v := payloadPools[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+payloadMinShift))
	return &b
}

func putPayload(b *[]byte) {
	if b == nil {
		return
	}
	c := payloadClass(cap(*b))
	if c < 0 || cap(*b) != 1<<(c+payloadMinShift) {
		return
	}
	payloadPools[c].Put(b)
}

func payloadClass(n int) int {
	if n > 1<<payloadMaxShift {
		return -1
	}
	if n <= 1<<payloadMinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - payloadMinShift
}
