package qemu

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// QEMU appends the serial console to the log for as long as the VM runs, and
// a guest can print without end (a crash loop, a chatty service): the log is
// rotated while the VM runs, copy-then-truncate like logrotate's
// copytruncate. QEMU keeps its descriptor, opened O_APPEND, so after the
// truncation it writes at the new end; renaming the file instead would have
// it write on into the rotated one. At most the log plus one rotated file
// (serial.log.1) is on disk, and for the moment of a rotation the next
// rotated copy being written (serial.log.1.tmp, at most the cap). Bytes QEMU writes between the copy and the
// truncation are lost: rotation is for runaway output, not an audit trail.

// serialCheckEvery is how often the log's size is checked when inotify
// cannot say when it grows.
const serialCheckEvery = 250 * time.Millisecond

// rotatedSuffix names the one rotated copy of the serial log.
const rotatedSuffix = ".1"

// rotateLog moves path's content (its last max bytes) to path.1 and
// empties path when it is larger than max. It reports whether it rotated.
//
// The log may sit in the VM's run directory, which the VM's user owns: an
// escaped QEMU could put a link (or a hard link) there in its place, and
// the agent runs as root. So the log is opened without following links,
// must be a regular file with one name, and is emptied through that
// descriptor, never by path.
func rotateLog(path string, max int64) (bool, error) {
	src, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false, nil // gone, or a link: nothing of ours to rotate
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil || st.Size() <= max {
		return false, nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !st.Mode().IsRegular() || !ok || sys.Nlink != 1 {
		return false, fmt.Errorf("rotate %s: not a plain file of its own (links %d): left alone", path, sys.Nlink)
	}
	tmp := path + rotatedSuffix + ".tmp"
	os.Remove(tmp) // a leftover, or something planted: never written through
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	// Copy what is there now (QEMU may be appending as we read), its last
	// max bytes only: a log that outran the watcher (a starved agent, a
	// guest flooding its console) still leaves at most max on disk here.
	from := st.Size() - max
	if from < 0 {
		from = 0
	}
	if _, err = src.Seek(from, io.SeekStart); err == nil {
		_, err = io.Copy(dst, io.LimitReader(src, st.Size()-from))
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path+rotatedSuffix)
	}
	if err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	if err := src.Truncate(0); err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	return true, nil
}

// watchSerial rotates the instance's serial log whenever it grows past max,
// until QEMU exits or the Instance is closed (an attaching agent takes over).
// inotify wakes it at each write, so the log overshoots max by no more than
// what QEMU writes while one rotation runs.
func (i *Instance) watchSerial(ctx context.Context, max int64) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-i.exited:
			cancel()
		}
	}()
	wake, stop := watchFile(i.serialLog)
	defer stop()
	if wake == nil {
		i.log.Warn("serial log: no inotify, checking its size by the clock")
		t := time.NewTicker(serialCheckEvery)
		defer t.Stop()
		wake = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		}
		if rotated, err := rotateLog(i.serialLog, max); err != nil {
			i.log.Warn("serial log", "err", err)
		} else if rotated {
			i.log.Debug("serial log rotated", "path", i.serialLog, "max", max)
		}
	}
}

// watchFile sends on the returned channel whenever path is written to; nil
// if inotify cannot watch it. stop ends the watch.
func watchFile(path string) (<-chan time.Time, func()) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, func() {}
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil, func() {}
	}
	// Non-blocking, so reads park in the runtime poller and Close wakes them.
	f := os.NewFile(uintptr(fd), "inotify:"+path)
	ch := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case ch <- time.Now():
			default: // a wake-up is pending already
			}
		}
	}()
	return ch, func() { f.Close() }
}
