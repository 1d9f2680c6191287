package storage

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reserve is the free space kept for the control plane on the filesystem
// of the node's data dir (Raft log, snapshots, the audit archive). A node
// whose Raft log cannot be written drops out of the cluster, so tenant
// writes that land on that filesystem (shards on a pool disk sharing it,
// image uploads in the spool, VM disks) stop short of the floor. Writes to
// other filesystems are not limited by it.
type Reserve struct {
	Dir      string  // the data dir; "" keeps no reserve
	MinBytes uint64  // the floor is at least this
	Percent  float64 // and at least this share of the filesystem's size
}

// DefaultReserve is the floor unless the node is told otherwise: 1 GiB or
// 5% of the filesystem, whichever is larger (a snapshot of a busy cluster
// and a few hundred MiB of log segments fit with room to spare).
var DefaultReserve = Reserve{MinBytes: 1 << 30, Percent: 5}

// Floor is the number of bytes kept free on a filesystem of total bytes.
func (r Reserve) Floor(total uint64) uint64 {
	return max(r.MinBytes, uint64(float64(total)*r.Percent/100))
}

// Space is a filesystem's size and what a tenant may still write to it.
type Space struct {
	Total, Free, Floor uint64 // Floor is 0 off the reserved filesystem
}

// Usable is the free space above the floor.
func (s Space) Usable() uint64 {
	if s.Free < s.Floor {
		return 0
	}
	return s.Free - s.Floor
}

// Space measures path's filesystem and the floor kept on it.
func (r Reserve) Space(path string) (Space, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Space{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	s := Space{Total: st.Blocks * uint64(st.Bsize), Free: st.Bavail * uint64(st.Bsize)}
	shared, err := r.shares(path)
	if err != nil {
		return s, err
	}
	if shared {
		s.Floor = r.Floor(s.Total)
	}
	return s, nil
}

// Capacity is the size of path's filesystem less the floor kept on it.
func (r Reserve) Capacity(path string) (uint64, error) {
	s, err := r.Space(path)
	if err != nil {
		return 0, err
	}
	return s.Total - min(s.Floor, s.Total), nil
}

// Check refuses writing need more bytes under path if that would eat into
// the floor. The error is ErrNoSpace and ENOSPC, as a full disk's is.
func (r Reserve) Check(path string, need uint64) error {
	if r.Dir == "" {
		return nil
	}
	s, err := r.Space(path)
	if err != nil {
		return err
	}
	if s.Floor > 0 && need > s.Usable() {
		return &reserveError{fmt.Sprintf("%d MiB more would leave less than the %d MiB kept free for the control plane on this node's data filesystem (%d MiB free)",
			ceilMiB(need), ceilMiB(s.Floor), s.Free>>20)}
	}
	return nil
}

// shares reports whether path is on the data dir's filesystem.
func (r Reserve) shares(path string) (bool, error) {
	if r.Dir == "" {
		return false, nil
	}
	var a, b unix.Stat_t
	if err := unix.Stat(path, &a); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Stat(r.Dir, &b); err != nil {
		return false, fmt.Errorf("stat %s: %w", r.Dir, err)
	}
	return a.Dev == b.Dev, nil
}

func ceilMiB(n uint64) uint64 { return (n + 1<<20 - 1) >> 20 }

// reserveError is a write refused at the floor: callers treat it as a full
// disk (S3 answers 507 InsufficientStorage, the API insufficient_storage).
type reserveError struct{ msg string }

func (e *reserveError) Error() string { return e.msg }

func (e *reserveError) Is(target error) bool { return target == ErrNoSpace || target == syscall.ENOSPC }

// CodeInsufficientStorage is the stable code of a write refused for lack
// of room (the API answers 507 with it).
const CodeInsufficientStorage = "insufficient_storage"
