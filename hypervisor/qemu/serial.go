package qemu

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// QEMU appends the serial console to the log for as long as the VM runs, and
// a guest can print without end (a crash loop, a chatty service): the log is
// rotated while the VM runs, copy-then-truncate like logrotate's
// copytruncate. QEMU keeps its descriptor, opened O_APPEND, so after the
// truncation it writes at the new end; renaming the file instead would have
// it write on into the rotated one. At most the log plus one rotated file
// (serial.log.1) is on disk. Bytes QEMU writes between the copy and the
// truncation are lost: rotation is for runaway output, not an audit trail.

// serialCheckEvery is how often the log's size is checked: output between
// two checks is what the log may exceed its cap by.
const serialCheckEvery = 250 * time.Millisecond

// rotatedSuffix names the one rotated copy of the serial log.
const rotatedSuffix = ".1"

// rotateLog moves path's content to path.1 and empties path when it is
// larger than max. It reports whether it rotated.
func rotateLog(path string, max int64) (bool, error) {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= max {
		return false, nil
	}
	src, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	defer src.Close()
	tmp := path + rotatedSuffix + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	// Copy what is there now (QEMU may be appending as we read).
	_, err = io.Copy(dst, io.LimitReader(src, st.Size()))
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
	if err := os.Truncate(path, 0); err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	return true, nil
}

// watchSerial rotates the instance's serial log whenever it grows past max,
// until QEMU exits or the Instance is closed (an attaching agent takes over).
func (i *Instance) watchSerial(ctx context.Context, max int64) {
	t := time.NewTicker(serialCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-i.exited:
			return
		case <-t.C:
		}
		if rotated, err := rotateLog(i.serialLog, max); err != nil {
			i.log.Warn("serial log", "err", err)
		} else if rotated {
			i.log.Debug("serial log rotated", "path", i.serialLog, "max", max)
		}
	}
}
