package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// A standby socket's reads wait for the writer, but a UEFI variable
// store's (early) answer zeroes until it comes: QEMU reads its flash whole
// as it starts, before the stream that brings its contents. Writes wait
// either way, and a gate closed without a writer fails them.
func TestGateEarlyReads(t *testing.T) {
	ctx := context.Background()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 50*time.Millisecond) }
	p := bytes.Repeat([]byte{0xAA}, 4096)

	disk := newGate(1 << 20)
	c, cancel := short()
	if err := disk.ReadAt(c, p, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a disk's read before its writer: %v", err)
	}
	cancel()

	flash := newGate(1 << 20)
	flash.early = true
	if err := flash.ReadAt(ctx, p, 0); err != nil || !bytes.Equal(p, make([]byte, len(p))) {
		t.Fatalf("a flash's read before its writer: %v, zeroes %v", err, bytes.Equal(p, make([]byte, len(p))))
	}
	c, cancel = short()
	if err := flash.WriteAt(c, p, 0, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a flash's write before its writer: %v", err)
	}
	cancel()
	flash.open(nil)
	if err := flash.ReadAt(ctx, p, 0); !errors.Is(err, errNoWriter) {
		t.Fatalf("a flash's read once closed without a writer: %v", err)
	}
}
