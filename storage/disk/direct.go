package disk

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Shards are written with O_DIRECT where the filesystem allows it: their
// bytes go from an aligned buffer straight to the device, not through the
// page cache. A shard is written once and read back in stripes, so caching
// it as it is written gains little, and filling the page cache with every
// upload costs a copy plus the memory to hold it; under a virtual machine
// that hands freed memory back to its host, that was about half of a large
// PUT's CPU (docs/benchmarks.md, session 15). Filesystems without O_DIRECT
// (tmpfs before Linux 6.6) are written through the page cache, in the same
// chunks. Shards smaller than a chunk (objects under about 1 MiB at 4+2) go
// through the page cache too: one write each, no padding, no cut back.

const (
	directAlign = 4096      // offsets, lengths and buffers: the largest logical block size in use
	writeChunk  = 256 << 10 // bytes gathered before each write
)

var chunkBuffers = sync.Pool{New: func() any {
	b := make([]byte, writeChunk+directAlign)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	b = b[off : off+writeChunk : off+writeChunk]
	return &b
}}

// createTemp opens a new temporary file in dir for a shard, with O_DIRECT
// if want and the filesystem takes it.
func createTemp(dir, pattern string, want bool) (f *os.File, direct bool, err error) {
	f, err = os.CreateTemp(dir, pattern)
	if err != nil || !want {
		return f, false, err
	}
	d, err := os.OpenFile(f.Name(), os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil { // EINVAL: no O_DIRECT here
		return f, false, nil
	}
	f.Close()
	return d, true, nil
}

// chunkWriter gathers a shard's bytes into an aligned buffer and writes them
// in whole chunks. With O_DIRECT the last, partial block is padded with
// zeroes and the file cut back to its length.
type chunkWriter struct {
	f      *os.File
	direct bool
	pooled bool // buf is one of chunkBuffers
	buf    *[]byte
	n      int   // bytes in buf
	size   int64 // bytes accepted
	err    error // sticky
}

var errWriterClosed = errors.New("shard writer closed")

// newChunkWriter writes to f, which is O_DIRECT if direct. A shard known to
// be smaller than a chunk gets a buffer of its own size instead of a pooled
// chunk: a 4 KiB object's six shards would otherwise hold 1.5 MiB while
// they are written.
func newChunkWriter(f *os.File, direct bool, size int64) *chunkWriter {
	if !direct && size >= 0 && size < writeChunk {
		b := make([]byte, max(size, 4096)) // never empty: a hint may be short
		return &chunkWriter{f: f, buf: &b}
	}
	return &chunkWriter{f: f, direct: direct, pooled: true, buf: chunkBuffers.Get().(*[]byte)}
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && w.err == nil {
		c := copy((*w.buf)[w.n:], p)
		w.n += c
		total += c
		p = p[c:]
		w.flushFull()
	}
	w.size += int64(total)
	return total, w.err
}

// ReadFrom reads r to its end straight into the buffer: an upload's TLS
// reads land where the disk write takes them, with no copy between.
func (w *chunkWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for w.err == nil {
		n, err := r.Read((*w.buf)[w.n:])
		w.n += n
		total += int64(n)
		w.size += int64(n)
		w.flushFull()
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, err
		}
	}
	return total, w.err
}

func (w *chunkWriter) flushFull() {
	if w.n < len(*w.buf) {
		return
	}
	if _, err := w.f.Write(*w.buf); err != nil {
		w.err = err
	}
	w.n = 0
}

// finish writes what is left in the buffer, sets the file's length and gives
// the buffer back.
func (w *chunkWriter) finish() error {
	defer w.release()
	if w.err != nil || w.n == 0 {
		return w.err
	}
	tail := w.n
	if w.direct {
		tail = (w.n + directAlign - 1) &^ (directAlign - 1)
		clear((*w.buf)[w.n:tail])
	}
	if _, err := w.f.Write((*w.buf)[:tail]); err != nil {
		return err
	}
	if tail != w.n {
		return w.f.Truncate(w.size)
	}
	return nil
}

// release gives the buffer back; the writer takes no bytes after it.
func (w *chunkWriter) release() {
	if w.buf != nil {
		if w.pooled {
			chunkBuffers.Put(w.buf)
		}
		w.buf = nil
		if w.err == nil {
			w.err = errWriterClosed
		}
	}
}
