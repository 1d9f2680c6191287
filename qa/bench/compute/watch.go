package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The test guest's lines: its init starts, it has read its seed, and it
// has its seed and a DHCP lease.
const (
	initMarker  = "cairn-guest: starting"
	seedMarker  = "cairn-guest: seed:"
	helloMarker = "cairn-guest: hostname="
)

// pollEvery is how often a boot's files are looked at: the resolution of
// every boot figure, the same for Cairn and bare QEMU.
const pollEvery = 2 * time.Millisecond

// milestones are the moments of one boot, as offsets from its start (the
// API call, or the exec of QEMU); zero means not seen.
type milestones struct {
	posted  time.Duration // the create call answered (Cairn)
	dir     time.Duration // the VM's directory exists on the node (Cairn)
	disk    time.Duration // root.qcow2 exists: the overlay is made (Cairn)
	seed    time.Duration // seed.iso exists (Cairn)
	launch  time.Duration // QEMU's foreground process exited: the VM is set up (bare)
	log     time.Duration // serial.log exists: QEMU opened its serial chardev
	first   time.Duration // the first newline in serial.log
	init    time.Duration // the guest's init printed its first line
	seedOK  time.Duration // the guest's init read the seed
	hello   time.Duration // the guest's hostname line
	line    string        // the first line that is not blank
	running time.Duration // the API said running (Cairn; from its event time)
}

// watch polls a VM's directory until the guest's hostname line appears or
// ctx ends. dir finds the directory; it returns "" until it exists.
func watch(ctx context.Context, t0 time.Time, dir func() string) milestones {
	var (
		m   milestones
		d   string
		f   *os.File
		buf []byte
		// scanned is how much of buf has been searched for markers.
		scanned int
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	seen := func(p *time.Duration, path string) {
		if *p == 0 {
			if _, err := os.Stat(path); err == nil {
				*p = time.Since(t0)
			}
		}
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	chunk := make([]byte, 64<<10)
	for {
		if d == "" {
			if d = dir(); d != "" {
				m.dir = time.Since(t0)
			}
		}
		if d != "" {
			seen(&m.disk, filepath.Join(d, "root.qcow2"))
			seen(&m.seed, filepath.Join(d, "seed.iso"))
			if f == nil {
				if g, err := os.Open(filepath.Join(d, "serial.log")); err == nil {
					f, m.log = g, time.Since(t0)
				}
			}
			if f != nil {
				for {
					n, err := f.Read(chunk)
					buf = append(buf, chunk[:n]...)
					if n == 0 || err == io.EOF || err != nil {
						break
					}
				}
				now := time.Since(t0)
				if m.first == 0 && bytes.IndexByte(buf, '\n') >= 0 {
					m.first = now
				}
				if m.line == "" {
					for l := range strings.Lines(string(buf)) {
						if t := strings.TrimSpace(l); t != "" && strings.HasSuffix(l, "\n") {
							m.line = t
							break
						}
					}
				}
				// Only what is new, and a marker's length before it.
				from := max(0, scanned-len(helloMarker))
				for _, mk := range []struct {
					at     *time.Duration
					marker string
				}{{&m.init, initMarker}, {&m.seedOK, seedMarker}, {&m.hello, helloMarker}} {
					if *mk.at == 0 && bytes.Contains(buf[from:], []byte(mk.marker)) {
						*mk.at = now
					}
				}
				scanned = len(buf)
				if m.hello != 0 {
					return m
				}
			}
		}
		select {
		case <-ctx.Done():
			return m
		case <-tick.C:
		}
	}
}

// newEntry returns a dir func for watch: the first entry of parent that is
// not in before.
func newEntry(parent string, before map[string]bool) func() string {
	return func() string {
		es, _ := os.ReadDir(parent)
		for _, e := range es {
			if e.IsDir() && !before[e.Name()] {
				return filepath.Join(parent, e.Name())
			}
		}
		return ""
	}
}

func entries(dir string) map[string]bool {
	es, _ := os.ReadDir(dir)
	m := map[string]bool{}
	for _, e := range es {
		m[e.Name()] = true
	}
	return m
}
