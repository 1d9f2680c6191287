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

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

func syncFS() { syscall.Sync() }

// rawDisk is the sequential speed of the filesystem holding the disks: the
// median of several rounds, because on a VM the host's caches move single
// runs by a factor of two.
type rawDisk struct {
	write, read   float64   // MiB/s, medians
	writes, reads []float64 // MiB/s, every round
	readCPU       float64   // CPU seconds per GiB read, median
	dropped       bool      // page cache dropped before every read
	device        string
}

// measureDisk measures rounds of diskRound in dir. Each round writes a file
// of its own, and all stay until the end: a file written where the previous
// one was just deleted reuses its blocks, and this VM's disk overwrites
// recently freed blocks at three times the speed it writes fresh ones.
func measureDisk(dir string, size int64, rounds int) (rawDisk, error) {
	d := rawDisk{device: device(dir), dropped: true}
	var cpus []float64
	for i := range rounds {
		path := filepath.Join(dir, fmt.Sprintf("raw-disk-test-%d", i))
		defer os.Remove(path)
		w, r, cpu, dropped, err := diskRound(path, size)
		if err != nil {
			return d, err
		}
		d.writes, d.reads, cpus = append(d.writes, w), append(d.reads, r), append(cpus, cpu)
		d.dropped = d.dropped && dropped
	}
	d.write, d.read, d.readCPU = benchrun.Median(d.writes), benchrun.Median(d.reads), benchrun.Median(cpus)
	return d, nil
}

// diskRound writes size bytes to a new file at path in 4 MiB writes
// followed by fsync, drops the page cache and reads the file back. It
// returns both speeds in MiB/s and the CPU seconds per GiB of the read.
func diskRound(path string, size int64) (write, read, readCPU float64, dropped bool, err error) {
	buf := make([]byte, 4<<20)
	_, _ = rand.Read(buf)
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, 0, false, err
	}
	defer f.Close()
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, 0, 0, false, err
		}
	}
	if err := f.Sync(); err != nil { // fsync; on Linux no slower than fdatasync for a new file
		return 0, 0, 0, false, err
	}
	write = mibps(size, time.Since(start))

	dropped = dropCaches() == nil
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, 0, 0, false, err
	}
	start, cpu0 := time.Now(), selfCPU()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
	if err != nil {
		return 0, 0, 0, false, err
	}
	if n != size {
		return 0, 0, 0, false, fmt.Errorf("read %d bytes, want %d", n, size)
	}
	read = mibps(size, time.Since(start))
	_, readCPU = cpuUse{client: selfCPU() - cpu0}.perGiB(size)
	return write, read, readCPU, dropped, nil
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
