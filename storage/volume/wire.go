package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
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
// size of Resize. A header that breaks the framing (bad magic, unknown op
// or flag, a payload over the bounds) closes the connection: the stream
// cannot be trusted to be in step after it.
const (
	reqMagic       = 0x43565251 // "CVRQ"
	repMagic       = 0x43565250 // "CVRP"
	reqHeaderSize  = 48
	repHeaderSize  = 20
	upgradeName    = "cairn-volume"
	maxPayload     = 32 << 20 // a write or read on the wire
	maxMessage     = 4 << 10  // an error's text
	maxVolumeBytes = 64 << 40 // the API's largest volume, bounding Extents
	extentInfoSize = 16
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
)

// Request flags.
const (
	flagFUA   uint16 = 1 << 0 // opWrite
	flagPunch uint16 = 1 << 0 // opZero
)

// Reply codes.
const (
	codeOK uint32 = iota
	codeFenced
	codeNoReplica
	codeCorrupt // payload: off u64 | len u64
	codeErrno   // payload: errno u32 | message
	codeOther   // payload: message
)

// ErrConnLost is returned by a remote Target's calls once its connection
// has failed or been closed; the caller dials again.
var ErrConnLost = errors.New("volume: replica connection lost")

// errProtocol marks a frame that breaks the protocol.
var errProtocol = errors.New("volume: replica protocol error")

// request is one request header; its payload travels apart.
type request struct {
	op, flags  uint16
	handle     uint64
	epoch, gen uint64
	offset     uint64
	length     uint64
}

func (r *request) encode(b *[reqHeaderSize]byte) {
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
func decodeRequest(b []byte) (request, error) {
	if len(b) != reqHeaderSize {
		return request{}, fmt.Errorf("%w: request header of %d bytes", errProtocol, len(b))
	}
	if m := binary.BigEndian.Uint32(b[0:]); m != reqMagic {
		return request{}, fmt.Errorf("%w: bad request magic %#x", errProtocol, m)
	}
	r := request{
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
	case opFence, opFlush, opExtents, opReadExtent, opResize:
	case opWrite:
		allowed, maxLen = flagFUA, maxPayload
	case opZero:
		allowed, maxLen = flagPunch, math.MaxInt64
	case opRead:
		maxLen = maxPayload
	case opWriteExtent:
		maxLen = ExtentSize
	default:
		return request{}, fmt.Errorf("%w: unknown op %d", errProtocol, r.op)
	}
	if r.flags&^allowed != 0 {
		return request{}, fmt.Errorf("%w: op %d with flags %#x", errProtocol, r.op, r.flags)
	}
	if r.length > maxLen {
		return request{}, fmt.Errorf("%w: op %d with length %d", errProtocol, r.op, r.length)
	}
	if r.offset > math.MaxInt64 {
		return request{}, fmt.Errorf("%w: op %d with offset %d", errProtocol, r.op, r.offset)
	}
	return r, nil
}

// payloadLen is how many bytes follow the request's header.
func (r *request) payloadLen() int {
	if r.op == opWrite || r.op == opWriteExtent {
		return int(r.length)
	}
	return 0
}

// reply is one reply header.
type reply struct {
	code   uint32
	handle uint64
	length uint32
}

func (r *reply) encode(b *[repHeaderSize]byte) {
	binary.BigEndian.PutUint32(b[0:], repMagic)
	binary.BigEndian.PutUint32(b[4:], r.code)
	binary.BigEndian.PutUint64(b[8:], r.handle)
	binary.BigEndian.PutUint32(b[16:], r.length)
}

func decodeReply(b []byte) (reply, error) {
	if m := binary.BigEndian.Uint32(b[0:]); m != repMagic {
		return reply{}, fmt.Errorf("%w: bad reply magic %#x", errProtocol, m)
	}
	r := reply{
		code:   binary.BigEndian.Uint32(b[4:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		length: binary.BigEndian.Uint32(b[16:]),
	}
	if r.code > codeOther {
		return reply{}, fmt.Errorf("%w: unknown reply code %d", errProtocol, r.code)
	}
	return r, nil
}

// errorInfo is an error in a form both the binary protocol and the JSON
// control calls carry: the sentinel, errno or corrupt range survives the
// trip, the rest is text.
type errorInfo struct {
	Code    uint32 `json:"code"`
	Errno   uint32 `json:"errno,omitempty"`
	Off     int64  `json:"off,omitempty"`
	Len     int64  `json:"len,omitempty"`
	Message string `json:"message"`
}

func infoOf(err error) errorInfo {
	msg := err.Error()
	if len(msg) > maxMessage-4 {
		msg = msg[:maxMessage-4]
	}
	var ce *CorruptError
	var errno syscall.Errno
	switch {
	case errors.Is(err, ErrFenced):
		return errorInfo{Code: codeFenced, Message: msg}
	case errors.Is(err, ErrNoReplica):
		return errorInfo{Code: codeNoReplica, Message: msg}
	case errors.As(err, &ce):
		return errorInfo{Code: codeCorrupt, Off: ce.Off, Len: ce.Len, Message: msg}
	case errors.As(err, &errno):
		return errorInfo{Code: codeErrno, Errno: uint32(errno), Message: msg}
	}
	return errorInfo{Code: codeOther, Message: msg}
}

// err rebuilds the error on the calling side.
func (e errorInfo) err() error {
	switch e.Code {
	case codeFenced:
		return &remoteError{e.Message, ErrFenced}
	case codeNoReplica:
		return &remoteError{e.Message, ErrNoReplica}
	case codeCorrupt:
		return &CorruptError{Off: e.Off, Len: e.Len}
	case codeErrno:
		return &remoteError{e.Message, syscall.Errno(e.Errno)}
	}
	return &remoteError{msg: e.Message}
}

// encode is the payload of an error reply.
func (e errorInfo) encode() []byte {
	switch e.Code {
	case codeCorrupt:
		b := make([]byte, 16)
		binary.BigEndian.PutUint64(b[0:], uint64(e.Off))
		binary.BigEndian.PutUint64(b[8:], uint64(e.Len))
		return b
	case codeErrno:
		b := make([]byte, 4, 4+len(e.Message))
		binary.BigEndian.PutUint32(b, e.Errno)
		return append(b, e.Message...)
	}
	return []byte(e.Message)
}

func decodeErrorInfo(code uint32, p []byte) (errorInfo, error) {
	e := errorInfo{Code: code}
	switch code {
	case codeCorrupt:
		if len(p) != 16 {
			return e, fmt.Errorf("%w: corrupt reply of %d bytes", errProtocol, len(p))
		}
		e.Off = int64(binary.BigEndian.Uint64(p[0:]))
		e.Len = int64(binary.BigEndian.Uint64(p[8:]))
		e.Message = (&CorruptError{Off: e.Off, Len: e.Len}).Error()
	case codeErrno:
		if len(p) < 4 {
			return e, fmt.Errorf("%w: errno reply of %d bytes", errProtocol, len(p))
		}
		e.Errno = binary.BigEndian.Uint32(p)
		e.Message = string(p[4:])
	default:
		e.Message = string(p)
	}
	return e, nil
}

// remoteError is an error the replica returned: its text, and what it
// wraps so errors.Is keeps working across the wire.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string {
	if e.msg == "" && e.err != nil {
		return e.err.Error()
	}
	return e.msg
}

func (e *remoteError) Unwrap() error { return e.err }

// Payload buffers come from pools by power-of-two size, 4 KiB to 32 MiB,
// so 4 KiB writes and 1 MiB extents reuse their memory.
const (
	minPoolShift = 12
	maxPoolShift = 25
)

var bufPools [maxPoolShift - minPoolShift + 1]sync.Pool

// getBuf returns a buffer of length n; putBuf takes it back.
func getBuf(n int) *[]byte {
	c := poolClass(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if v := bufPools[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+minPoolShift))
	return &b
}

func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	c := poolClass(cap(*b))
	if c < 0 || cap(*b) != 1<<(c+minPoolShift) {
		return
	}
	bufPools[c].Put(b)
}

func poolClass(n int) int {
	if n > 1<<maxPoolShift {
		return -1
	}
	if n <= 1<<minPoolShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minPoolShift
}
