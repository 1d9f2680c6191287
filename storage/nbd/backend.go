package nbd

import (
	"context"
	"errors"
	"syscall"
)

// Backend stores one export's bytes. The server calls it concurrently
// (up to Config.MaxInFlight calls per connection), never with a range
// outside [0, Size()), and only with write calls on writable exports.
//
// Durability contract, which is what makes NBD_CMD_FLUSH correct:
//   - Flush returns only once every WriteAt, Trim and WriteZeroes that
//     returned before Flush was called is on stable storage. The server
//     acknowledges a write only after its call returned, and starts a
//     FLUSH only after receiving it, so a flush covers every write
//     acknowledged before it.
//   - WriteAt with fua set returns only once that write is on stable
//     storage.
//   - If one Backend value serves several connections (Export.MultiConn),
//     Flush must cover writes completed through any of them.
//
// Errors may wrap a syscall.Errno (ENOSPC, EDQUOT, EFBIG, EPERM, EROFS,
// EINVAL) or an Errno of this package; anything else is reported as EIO.
type Backend interface {
	// Size is the export's size in bytes; it must not change while served.
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	Flush(ctx context.Context) error
	// Trim may discard the range; later reads of it may return anything
	// until it is written again. It may do nothing.
	Trim(ctx context.Context, off, length int64) error
	// WriteZeroes makes the range read as zeroes. With noHole the space
	// must stay allocated (NBD_CMD_FLAG_NO_HOLE); without it the backend
	// may deallocate it.
	WriteZeroes(ctx context.Context, off, length int64, noHole bool) error
}

// Export is what a name resolves to.
type Export struct {
	Name        string
	Description string
	Backend     Backend
	// ReadOnly exports refuse every write with EPERM.
	ReadOnly bool
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: set it only when every
	// connection to this name gets the same Backend, whose Flush covers
	// writes completed through all of them.
	MultiConn bool
	// MinBlockSize and PreferredBlockSize are advertised through
	// NBD_INFO_BLOCK_SIZE; zero means 1 and 4096. Requests not aligned to
	// MinBlockSize are refused with EINVAL; Size must be a multiple of it.
	MinBlockSize       uint32
	PreferredBlockSize uint32
}

func (e *Export) minBlock() uint32 {
	if e.MinBlockSize == 0 {
		return 1
	}
	return e.MinBlockSize
}

func (e *Export) preferredBlock() uint32 {
	if e.PreferredBlockSize == 0 {
		return 4096
	}
	return e.PreferredBlockSize
}

// Errno is an NBD error value a Backend may return to choose the error
// the client sees.
type Errno uint32

// Errors a Backend may return.
const (
	EPERM     Errno = errPerm
	EIO       Errno = errIO
	EINVAL    Errno = errInval
	ENOSPC    Errno = errNoSpc
	ESHUTDOWN Errno = errShutdown
)

func (e Errno) Error() string {
	switch e {
	case errPerm:
		return "nbd: operation not permitted"
	case errIO:
		return "nbd: input/output error"
	case errNoMem:
		return "nbd: out of memory"
	case errInval:
		return "nbd: invalid argument"
	case errNoSpc:
		return "nbd: no space left on device"
	case errOverflow:
		return "nbd: value too large"
	case errNotSup:
		return "nbd: operation not supported"
	case errShutdown:
		return "nbd: server shutting down"
	}
	return "nbd: error"
}

// ErrNoExport is returned by a Lookup for a name it does not serve.
var ErrNoExport = errors.New("no such export")

// errnoOf maps a backend error to the value sent on the wire.
func errnoOf(err error) uint32 {
	var e Errno
	if errors.As(err, &e) {
		return uint32(e)
	}
	var se syscall.Errno
	if errors.As(err, &se) {
		switch se {
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
			return errNoSpc
		case syscall.EPERM, syscall.EROFS, syscall.EACCES:
			return errPerm
		case syscall.EINVAL:
			return errInval
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errShutdown
	}
	return errIO
}
