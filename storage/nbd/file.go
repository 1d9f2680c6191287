package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// FileBackend serves a raw file or a local block device. Flush and FUA
// use fdatasync, which covers every write completed on the file through
// any descriptor, so one FileBackend may serve many connections.
type FileBackend struct {
	f    *os.File
	size int64
}

// OpenFile opens path for an export; readOnly opens it read-only.
func OpenFile(path string, readOnly bool) (*FileBackend, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open export %s: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of export %s: %w", path, err)
	}
	return &FileBackend{f: f, size: size}, nil
}

// Close closes the file; it does not flush.
func (b *FileBackend) Close() error { return b.f.Close() }

// Size implements Backend.
func (b *FileBackend) Size() int64 { return b.size }

// ReadAt implements Backend.
func (b *FileBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	_, err := b.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		// The file shrank under us: the bytes are gone.
		return fmt.Errorf("read at %d: short file: %w", off, unix.EIO)
	}
	return err
}

// WriteAt implements Backend.
func (b *FileBackend) WriteAt(_ context.Context, p []byte, off int64, fua bool) error {
	if _, err := b.f.WriteAt(p, off); err != nil {
		return err
	}
	if fua {
		return b.sync()
	}
	return nil
}

// Flush implements Backend.
func (b *FileBackend) Flush(context.Context) error { return b.sync() }

func (b *FileBackend) sync() error {
	if err := unix.Fdatasync(int(b.f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", b.f.Name(), err)
	}
	return nil
}

// Trim implements Backend: it punches a hole where the file system can,
// and does nothing where it cannot (a trim is only advice).
func (b *FileBackend) Trim(_ context.Context, off, length int64) error {
	err := unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	return err
}

// WriteZeroes implements Backend: a punched hole, or with noHole a zeroed
// allocated range; if the file system supports neither, zeroes are written.
func (b *FileBackend) WriteZeroes(ctx context.Context, off, length int64, noHole bool) error {
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	if noHole {
		mode = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	err := unix.Fallocate(int(b.f.Fd()), mode, off, length)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	zero := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, int64(len(zero)))
		if _, err := b.f.WriteAt(zero[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return ctx.Err()
}

// BlockStatus implements BlockStatuser with SEEK_DATA and SEEK_HOLE:
// holes read as zeroes, data is reported as allocated with unknown
// contents. Where the file system cannot tell, all of it is data.
func (b *FileBackend) BlockStatus(_ context.Context, off, length int64) ([]Extent, error) {
	fd := int(b.f.Fd())
	end := min(off+length, b.size)
	var out []Extent
	for pos := off; pos < end && len(out) < maxExtents; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = b.size // nothing but a hole up to the end
		} else if err != nil {
			return []Extent{{Length: end - pos}}, nil
		}
		if data > pos {
			l := min(data, end) - pos
			out = append(out, Extent{Length: l, Hole: true, Zero: true})
			pos += l
			continue
		}
		hole, err := unix.Seek(fd, pos, unix.SEEK_HOLE)
		if err != nil || hole <= pos {
			hole = end
		}
		l := min(hole, end) - pos
		out = append(out, Extent{Length: l})
		pos += l
	}
	return out, nil
}
