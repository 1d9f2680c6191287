//go:build linux

package main

import (
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// memcheckMiB is the size its user-data asks the memory check for,
//
//	#cairn-guest memcheck 32
//
// or 0.
func memcheckMiB(userData []byte) int {
	for _, line := range strings.Split(string(userData), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if len(f) == 3 && f[0] == "cairn-guest" && f[1] == "memcheck" {
			if n, err := strconv.Atoi(f[2]); err == nil && n > 0 && n <= 1024 {
				return n
			}
		}
	}
	return 0
}

// memcheck writes every page of mib MiB of memory ten times a second (a
// value made of the page's number and the round, at both ends of the
// page), checking first that each holds what it wrote the round before.
// It prints
//
//	cairn-guest: memcheck round N       (every 50th round)
//	cairn-guest: memcheck BAD page P round N: GOT, want WANT
//
// the second for a page whose last write was lost: what a live
// migration that misses a dirty page does to a guest. Tests move a guest
// that runs it and look for BAD lines (and oopses) on the target.
func memcheck(con *console, mib int) {
	mem, err := unix.Mmap(-1, 0, mib<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		con.Printf("memcheck: %v", err)
		return
	}
	const page = 4096
	first := func(i int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[i*page])) }
	last := func(i int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[i*page+page-8])) }
	pages, bad := len(mem)/page, 0
	con.Printf("memcheck %d MiB", mib)
	for round := uint64(1); ; round++ {
		for i := range pages {
			want := uint64(i)<<32 | (round - 1)
			if round > 1 && (*first(i) != want || *last(i) != ^want) && bad < 20 {
				bad++
				con.Printf("memcheck BAD page %d round %d: %x %x, want %x", i, round, *first(i), *last(i), want)
			}
			*first(i), *last(i) = uint64(i)<<32|round, ^(uint64(i)<<32 | round)
		}
		if round%50 == 0 {
			con.Printf("memcheck round %d", round)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
