//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cairnhq/cairn/qa/scribble"
)

// scribblers are the disk scribblers running, and the guest's freeze: a
// record is written and flushed with mu held, so once freeze holds it no
// write is in flight, and none starts until thaw.
type scribblers struct {
	mu     sync.Mutex
	thawed *sync.Cond
	frozen bool
	last   map[string]uint64 // disk → last record flushed
}

func newScribblers() *scribblers {
	s := &scribblers{last: map[string]uint64{}}
	s.thawed = sync.NewCond(&s.mu)
	return s
}

// maybeScribble starts scribbling on disk dev (vdb, ...) if its first
// block holds scribble.Magic; see package qa/scribble for the layout. It
// carries on after the last valid record already there (the guest
// rebooted, or the disk came from a snapshot).
func (s *scribblers) maybeScribble(con *console, dev string) {
	path := filepath.Join("/dev", dev)
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return // read-only or gone: not one to scribble on
	}
	// O_DIRECT wants an aligned buffer: an anonymous mapping is a page.
	buf, err := unix.Mmap(-1, 0, scribble.BlockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		f.Close()
		con.Printf("scribble %s: %v", dev, err)
		return
	}
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.HasPrefix(buf, scribble.Magic()) {
		unix.Munmap(buf)
		f.Close()
		return
	}
	serial := readSerial(dev)
	var size int64
	if sectors, err := os.ReadFile(filepath.Join("/sys/block", dev, "size")); err == nil {
		fmt.Sscan(strings.TrimSpace(string(sectors)), &size)
		size *= 512
	}
	go func() {
		defer f.Close()
		defer unix.Munmap(buf)
		s.scribble(con, dev, f, buf, serial, size)
	}()
}

func (s *scribblers) scribble(con *console, dev string, f *os.File, buf []byte, serial string, size int64) {
	seq := uint64(1)
	for ; seq <= scribble.MaxRecords && int64(seq+1)*scribble.BlockSize <= size; seq++ {
		if _, err := f.ReadAt(buf, int64(seq)*scribble.BlockSize); err != nil {
			break
		}
		if n, _, ok := scribble.ParseRecord(buf); !ok || n != seq {
			break
		}
	}
	con.Printf("scribble %s serial=%s from seq=%d", dev, serial, seq)
	for ; seq <= scribble.MaxRecords && int64(seq+1)*scribble.BlockSize <= size; seq++ {
		copy(buf, scribble.Record(seq, serial))
		if err := s.write(dev, f, buf, seq); err != nil {
			con.Printf("scribble %s seq=%d: %v", dev, seq, err)
			return
		}
		if seq%100 == 0 {
			con.Printf("scribble %s seq=%d", dev, seq)
		}
	}
	con.Printf("scribble done %s seq=%d", dev, seq-1)
}

// write writes and flushes record seq, unless the guest is frozen, when
// it waits for the thaw first.
func (s *scribblers) write(dev string, f *os.File, buf []byte, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.frozen {
		s.thawed.Wait()
	}
	if _, err := f.WriteAt(buf, int64(seq)*scribble.BlockSize); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return err
	}
	s.last[dev] = seq
	return nil
}

// freeze stops the scribblers between records and syncs; it returns how
// many disks it stopped, and false if the guest was frozen already.
func (s *scribblers) freeze(con *console) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen {
		return 0, false
	}
	s.frozen = true
	unix.Sync()
	devs := make([]string, 0, len(s.last))
	for d := range s.last {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	first := uint64(0)
	var each strings.Builder
	for i, d := range devs {
		if i == 0 {
			first = s.last[d]
		}
		fmt.Fprintf(&each, " %s=%d", d, s.last[d])
	}
	con.Printf("frozen scribble=%d%s", first, each.String())
	return len(devs), true
}

// thaw lets the scribblers go on; it returns how many disks were frozen.
func (s *scribblers) thaw(con *console) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.frozen {
		return 0
	}
	s.frozen = false
	s.thawed.Broadcast()
	con.Printf("thawed")
	return len(s.last)
}

func (s *scribblers) isFrozen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frozen
}

func readSerial(dev string) string {
	b, _ := os.ReadFile(filepath.Join("/sys/block", dev, "serial"))
	return string(bytes.TrimSpace(b))
}
