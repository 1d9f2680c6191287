package nbd

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestErrnoOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{fmt.Errorf("write shard: %w", syscall.ENOSPC), errNoSpc},
		{syscall.EDQUOT, errNoSpc},
		{syscall.EFBIG, errNoSpc},
		{syscall.EROFS, errPerm},
		{syscall.EINVAL, errInval},
		{fmt.Errorf("lease lost: %w", ESHUTDOWN), errShutdown},
		{context.Canceled, errShutdown},
		{errors.New("checksum mismatch"), errIO},
		{syscall.EIO, errIO},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// failingBackend fails every write with ENOSPC and every read with an
// error of its own.
type failingBackend struct{ memBackend }

func (b *failingBackend) ReadAt(context.Context, []byte, int64) error {
	return errors.New("shard unreadable")
}

func (b *failingBackend) WriteAt(context.Context, []byte, int64, bool) error {
	return fmt.Errorf("journal: %w", syscall.ENOSPC)
}

// TestBackendErrorsReachTheClient: a backend's errors are answered as
// NBD errors and the connection goes on.
func TestBackendErrorsReachTheClient(t *testing.T) {
	be := &failingBackend{memBackend{data: make([]byte, 1<<16)}}
	ts := startServer(t, DefaultConfig(), &Export{Name: "bad", Backend: be})
	c := dialTest(t, "unix", ts.sock, "bad", nil)
	if errno, _ := c.do(request{typ: cmdWrite, cookie: 1, length: 4}, []byte("abcd")); errno != errNoSpc {
		t.Errorf("write: errno %d, want ENOSPC", errno)
	}
	if errno, data := c.do(request{typ: cmdRead, cookie: 2, length: 4}, nil); errno != errIO || data != nil {
		t.Errorf("read: errno %d, data %q; want EIO and no data", errno, data)
	}
	if errno, _ := c.do(request{typ: cmdFlush, cookie: 3}, nil); errno != 0 {
		t.Errorf("flush: errno %d", errno)
	}
	runFail(t, "qemu-io", "-f", "raw", "-c", "read 0 4k", unixURI(ts, "bad"))
}
