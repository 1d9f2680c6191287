package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/reedsolomon"
)

func syncFS() { syscall.Sync() }

// rawDisk is the sequential speed of the filesystem holding the disks.
type rawDisk struct {
	write, read float64 // MiB/s
	dropped     bool    // page cache dropped before the read
	device      string
}

// measureDisk writes size bytes to a file in dir in 4 MiB writes followed by
// fdatasync, drops the page cache and reads the file back.
func measureDisk(dir string, size int64) (rawDisk, error) {
	var d rawDisk
	buf := make([]byte, 4<<20)
	_, _ = rand.Read(buf)
	path := filepath.Join(dir, "raw-disk-test")
	defer os.Remove(path)
	f, err := os.Create(path)
	if err != nil {
		return d, err
	}
	defer f.Close()
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return d, err
		}
	}
	if err := f.Sync(); err != nil { // fsync; on Linux no slower than fdatasync for a new file
		return d, err
	}
	d.write = mibps(size, time.Since(start))

	d.dropped = dropCaches() == nil
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return d, err
	}
	start = time.Now()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
	if err != nil {
		return d, err
	}
	if n != size {
		return d, fmt.Errorf("read %d bytes, want %d", n, size)
	}
	d.read = mibps(size, time.Since(start))
	d.device = device(dir)
	return d, nil
}

// device names the filesystem dir is on, as df does; best effort.
func device(dir string) string {
	out, err := exec.Command("df", "--output=source,fstype,target", dir).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) < 2 {
		return "?"
	}
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 3 {
		return "?"
	}
	return fmt.Sprintf("%s (%s on %s)", f[0], f[1], f[2])
}

// measureEncode encodes 1 MiB stripes 4+2 on one goroutine for about d and
// returns MiB/s of input.
func measureEncode(d time.Duration) (float64, error) {
	enc, err := reedsolomon.New(4, 2)
	if err != nil {
		return 0, err
	}
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	shards, err := enc.Split(data)
	if err != nil {
		return 0, err
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if err := enc.Encode(shards); err != nil {
			return 0, err
		}
		n++
	}
	return mibps(int64(n)<<20, time.Since(start)), nil
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }
