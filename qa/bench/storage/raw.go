package main

import (
	"context"
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

// settle is how long a write measurement waits after memory was freed
// (a dropped page cache, deleted files). This VM hands free memory back to
// its host (free page reporting, in 8 MiB blocks, over the seconds after it
// is freed), and the host faults it in again, slowly, when the guest next
// uses it. Through the page cache, 512 MiB written into memory freed just
// before go at 1.3–1.9 GiB/s here, 2–3 s after at 400–800 MiB/s, and 10 s
// after at 180–260 MiB/s, most of it the vCPU stalled in the host. A PUT
// phase writes gigabytes, so it mostly gets returned memory: the raw write
// and every PUT phase wait this long first, so that they write into memory
// in the same state.
const settle = 10 * time.Second

// rawDisk is the sequential speed of the filesystem holding the disks: the
// median of several rounds, because on a VM the host moves single runs by a
// factor of two.
type rawDisk struct {
	write, read   float64   // MiB/s, medians
	writes, reads []float64 // MiB/s, every round
	writeCPU      []float64 // CPU seconds per GiB written (write and fsync), every round
	fsyncs        []float64 // the share of each write round spent in fsync
	direct        float64   // MiB/s of O_DIRECT writes, median
	directs       []float64 // every round
	readCPU       float64   // CPU seconds per GiB read, median
	dropped       bool      // page cache dropped before every read
	device, dir   string
	size          int64
	files         []string
	gate          *quietGate
	writesAtStart int // rounds before the S3 load; the rest are between PUT phases
}

// measureDisk measures rounds of diskRound in dir. Each round writes a file
// of its own, and all stay until remove: a file written where the previous
// one was just deleted reuses the memory its pages were in (see settle).
func measureDisk(ctx context.Context, dir string, size int64, rounds int, gate *quietGate) (*rawDisk, error) {
	d := &rawDisk{device: device(dir), dropped: true, dir: dir, size: size, gate: gate}
	var cpus []float64
	for range rounds {
		path, err := d.writeRound(ctx)
		if err != nil {
			return d, err
		}
		gate.wait(ctx)
		r, cpu, dropped, err := readRound(path, size)
		if err != nil {
			return d, err
		}
		d.reads, cpus = append(d.reads, r), append(cpus, cpu)
		d.dropped = d.dropped && dropped
	}
	d.writesAtStart = len(d.writes)
	for i := range rounds {
		gate.wait(ctx)
		mibs, err := directRound(filepath.Join(dir, fmt.Sprintf("raw-direct-test-%d", i)), size)
		if err != nil {
			return d, fmt.Errorf("O_DIRECT write: %w", err)
		}
		d.directs = append(d.directs, mibs)
	}
	d.read, d.readCPU, d.direct = benchrun.Median(d.reads), benchrun.Median(cpus), benchrun.Median(d.directs)
	return d, nil
}

// writeRound waits for settle, then writes size bytes to a new file in 4 MiB
// writes followed by fsync, and adds the round to the medians. It returns
// the file's path.
func (d *rawDisk) writeRound(ctx context.Context) (string, error) {
	path := filepath.Join(d.dir, fmt.Sprintf("raw-disk-test-%d", len(d.files)))
	d.files = append(d.files, path)
	pause(ctx, settle)
	d.gate.wait(ctx)
	buf := make([]byte, 4<<20)
	_, _ = rand.Read(buf)
	f, err := os.Create(path)
	if err != nil {
		return path, err
	}
	defer f.Close()
	start, cpu0 := time.Now(), benchrun.SelfCPU()
	for n := int64(0); n < d.size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return path, err
		}
	}
	synced := time.Now()
	if err := f.Sync(); err != nil { // fsync; on Linux no slower than fdatasync for a new file
		return path, err
	}
	took := time.Since(start)
	_, cpu := cpuUse{client: benchrun.SelfCPU() - cpu0}.perGiB(d.size)
	d.writes, d.writeCPU = append(d.writes, mibps(d.size, took)), append(d.writeCPU, cpu)
	d.fsyncs = append(d.fsyncs, time.Since(synced).Seconds()/took.Seconds())
	d.write = benchrun.Median(d.writes)
	return path, nil
}

// remove deletes every file the rounds wrote.
func (d *rawDisk) remove() {
	for _, f := range d.files {
		_ = os.Remove(f)
	}
}

// readRound drops the page cache and reads the file at path back. It returns
// MiB/s and the CPU seconds per GiB of the read.
func readRound(path string, size int64) (read, readCPU float64, dropped bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, false, err
	}
	defer f.Close()
	dropped = dropCaches() == nil
	buf := make([]byte, 4<<20)
	start, cpu0 := time.Now(), benchrun.SelfCPU()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
	if err != nil {
		return 0, 0, false, err
	}
	if n != size {
		return 0, 0, false, fmt.Errorf("read %d bytes, want %d", n, size)
	}
	read = mibps(size, time.Since(start))
	_, readCPU = cpuUse{client: benchrun.SelfCPU() - cpu0}.perGiB(size)
	return read, readCPU, dropped, nil
}

// directRound writes size bytes to a new file at path with O_DIRECT, past
// the page cache, in 4 MiB writes, then fsyncs and removes it: what the
// device takes, whatever the state of the VM's memory.
func directRound(path string, size int64) (float64, error) {
	buf, err := syscall.Mmap(-1, 0, 4<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE) // page-aligned, as O_DIRECT wants
	if err != nil {
		return 0, err
	}
	defer syscall.Munmap(buf)
	_, _ = rand.Read(buf)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_DIRECT, 0o644)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return mibps(size, time.Since(start)), nil
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
