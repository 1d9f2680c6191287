package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// RPCPrefix is where Host.Handler is mounted on the cluster port
// (consensus.Node.HandleRPC).
const RPCPrefix = "/storage/v1/volumes/"

// volumesDir holds the replicas on a pool disk: DISK/volumes/REPLICA/.
const hostVolumesDir = "volumes"

// sweepGrace spares replicas younger than this from Sweep: a volume being
// created has its replicas made before its record says so everywhere.
const sweepGrace = 10 * time.Minute

// replicaFiles is the replica store (replica.go) as the Host uses it, so the
// Host can be tested apart from it.
type replicaFiles struct {
	create func(dir string, size int64, layered bool) error
	open   func(dir string) (Target, error)
	remove func(dir string) error
}

// Host holds this node's replicas, DISK/volumes/ID on its pool disks, and
// serves them to writers on other nodes (Handler).
type Host struct {
	disks func() map[string]string
	log   *slog.Logger
	files replicaFiles
	now   func() time.Time

	// mu serializes create, open and remove, so a replica being removed
	// is never opened again, and holds the open replicas.
	mu   sync.Mutex
	open map[string]Target
	// streams are the connections serving each replica: a removed
	// replica's writers see their connection end, not a closed file.
	streams map[string]map[*hostStream]struct{}
}

// hostStream is one connection serving a replica.
type hostStream struct {
	conn io.Closer
	// stopped tells its session to drop the requests it has read but not
	// started; set before conn is closed.
	stopped atomic.Bool
	// done is closed once the session has returned: every request of
	// the connection has finished or been dropped.
	done chan struct{}
}

// stop ends the stream: no request of it starts from now on, and its
// session returns once those running have finished (wait).
func (st *hostStream) stop() {
	st.stopped.Store(true)
	st.conn.Close()
}

func (st *hostStream) wait() { <-st.done }

// NewHost returns the Host of the replicas on disks, which lists the
// node's local active disks (disk ID -> root directory).
func NewHost(disks func() map[string]string, log *slog.Logger) *Host {
	return newHost(disks, log, defaultReplicaFiles())
}

func newHost(disks func() map[string]string, log *slog.Logger, files replicaFiles) *Host {
	return &Host{
		disks: disks,
		log:   log,
		files: files,
		now:   time.Now,
		open:  make(map[string]Target),

		streams: make(map[string]map[*hostStream]struct{}),
	}
}

// validReplicaID admits the IDs the service generates (letters, digits, '-', '_'),
// so an ID is always one path element.
func validReplicaID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// find returns the disk and directory holding replicaID.
func (h *Host) find(replicaID string) (disk, dir string, ok bool) {
	disks := h.disks()
	ids := make([]string, 0, len(disks))
	for id := range disks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		d := filepath.Join(disks[id], hostVolumesDir, replicaID)
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return id, d, true
		}
	}
	return "", "", false
}

// Create makes replica replicaID of size bytes on disk diskID, layered
// over a snapshot or not. It is idempotent: a replica of that size and
// kind already there is success.
func (h *Host) Create(diskID, replicaID string, size int64, layered bool) error {
	if !validReplicaID(replicaID) {
		return fmt.Errorf("create replica %q: invalid id: %w", replicaID, syscall.EINVAL)
	}
	if size <= 0 || size%BlockSize != 0 || size > maxReplicaSize {
		return fmt.Errorf("create replica %s: size %d is not a positive multiple of %d up to %d: %w", replicaID, size, BlockSize, int64(maxReplicaSize), syscall.EINVAL)
	}
	root, ok := h.disks()[diskID]
	if !ok {
		return fmt.Errorf("create replica %s: disk %s is not an active local disk", replicaID, diskID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if other, _, ok := h.find(replicaID); ok && other != diskID {
		return fmt.Errorf("create replica %s: it exists on disk %s: %w", replicaID, other, syscall.EEXIST)
	}
	if err := ensureDirDurably(root, hostVolumesDir); err != nil {
		return fmt.Errorf("create replica %s: %w", replicaID, err)
	}
	if err := h.files.create(filepath.Join(root, hostVolumesDir, replicaID), size, layered); err != nil {
		return fmt.Errorf("create replica %s: %w", replicaID, err)
	}
	h.log.Info("replica created", "replica", replicaID, "disk", diskID, "size", size, "layered", layered)
	return nil
}

// ensureDirDurably makes root/name durably when it is missing.
func ensureDirDurably(root, name string) error {
	err := os.Mkdir(filepath.Join(root, name), 0o700)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	d, err := os.Open(root)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Remove deletes replicaID from whichever local disk holds it, closing it
// first if it is open; a replica not here is success. Its streams are ended
// and the requests they run finished before the replica is closed, and the
// replica's Close waits for the local writer's calls under way.
func (h *Host) Remove(replicaID string) error {
	if !validReplicaID(replicaID) {
		return fmt.Errorf("remove replica %q: invalid id: %w", replicaID, syscall.EINVAL)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endStreamsLocked(replicaID)
	if t, ok := h.open[replicaID]; ok {
		delete(h.open, replicaID)
		if err := t.Close(); err != nil {
			h.log.Warn("close replica", "replica", replicaID, "err", err)
		}
	}
	disk, dir, ok := h.find(replicaID)
	if !ok {
		return nil
	}
	if err := h.files.remove(dir); err != nil {
		return fmt.Errorf("remove replica %s: %w", replicaID, err)
	}
	h.log.Info("replica removed", "replica", replicaID, "disk", disk)
	return nil
}

// endStreamsLocked stops every stream of replicaID and waits until their
// sessions have returned. A session never takes h.mu before its done is
// closed, so waiting under it is safe.
func (h *Host) endStreamsLocked(replicaID string) {
	sts := h.streams[replicaID]
	delete(h.streams, replicaID)
	for st := range sts {
		st.stop()
	}
	for st := range sts {
		st.wait()
	}
}

// Local returns replicaID, opened once and shared by every caller (its
// Close does nothing: the Host closes it on Remove or Close). A replica not
// here is ErrNoReplica.
func (h *Host) Local(replicaID string) (Target, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.localLocked(replicaID)
}

// attach lends replicaID to a new stream whose connection is c, until the
// returned detach (which the stream calls once its session has returned);
// Remove and Close end the stream by stopping it.
//
// attach is the barrier between a replica's connections: it stops every
// older stream of the replica and waits until their sessions have
// returned (each request they had read is finished or dropped) before it
// returns, so the new stream serves nothing while a request of an older
// connection can still change the replica. A writer that gave up on a
// call and reconnects (to fence and catch the replica up) cannot have that
// call land after it. A writer keeps one stream per replica.
//
// A reader's stream (readOnly: the snapshot a volume reads through to)
// changes nothing, so it stops no other stream and serves reads alone; a
// writer's stream stops it like any older one.
func (h *Host) attach(replicaID string, c io.Closer, readOnly bool) (Target, *hostStream, func(), error) {
	h.mu.Lock()
	t, err := h.localLocked(replicaID)
	if err != nil {
		h.mu.Unlock()
		return nil, nil, nil, err
	}
	st := &hostStream{conn: c, done: make(chan struct{})}
	older := h.streams[replicaID]
	if readOnly {
		if older == nil {
			h.streams[replicaID] = map[*hostStream]struct{}{}
		}
		h.streams[replicaID][st] = struct{}{}
		older = nil
		t = readOnlyTarget{t}
	} else {
		h.streams[replicaID] = map[*hostStream]struct{}{st: {}}
	}
	for o := range older {
		o.stop()
	}
	h.mu.Unlock()
	for o := range older {
		o.wait()
	}
	return t, st, func() {
		close(st.done)
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.streams[replicaID], st)
		if len(h.streams[replicaID]) == 0 {
			delete(h.streams, replicaID)
		}
	}, nil
}

func (h *Host) localLocked(replicaID string) (Target, error) {
	if !validReplicaID(replicaID) {
		return nil, fmt.Errorf("replica %q: %w", replicaID, ErrNoReplica)
	}
	if t, ok := h.open[replicaID]; ok {
		return sharedTarget{t}, nil
	}
	_, dir, ok := h.find(replicaID)
	if !ok {
		return nil, fmt.Errorf("replica %s: %w", replicaID, ErrNoReplica)
	}
	t, err := h.files.open(dir)
	if err != nil {
		return nil, fmt.Errorf("open replica %s: %w", replicaID, err)
	}
	h.open[replicaID] = t
	return sharedTarget{t}, nil
}

// readOnlyTarget serves a reader's stream: every call that would change
// the replica is refused.
type readOnlyTarget struct{ Target }

var errReadOnly = fmt.Errorf("volume: a reader's stream changes nothing: %w", syscall.EROFS)

func (readOnlyTarget) Fence(context.Context, uint64) (ReplicaState, error) {
	return ReplicaState{}, errReadOnly
}
func (readOnlyTarget) WriteAt(context.Context, uint64, uint64, []byte, int64, bool) error {
	return errReadOnly
}
func (readOnlyTarget) Zero(context.Context, uint64, uint64, int64, int64, bool) error {
	return errReadOnly
}
func (readOnlyTarget) WriteExtent(context.Context, uint64, int64, uint64, []byte, Presence) error {
	return errReadOnly
}
func (readOnlyTarget) Resize(context.Context, uint64, int64) error { return errReadOnly }
func (readOnlyTarget) Flush(context.Context, uint64) error         { return errReadOnly }

// sharedTarget is an open replica lent out by the Host.
type sharedTarget struct{ Target }

func (sharedTarget) Close() error { return nil }

// Size is the replica's size when it tells it (a DiskReplica), else 0.
func (s sharedTarget) Size() int64 {
	if z, ok := s.Target.(interface{ Size() int64 }); ok {
		return z.Size()
	}
	return 0
}

// List returns every replica on the local disks: replica ID -> disk ID.
func (h *Host) List() (map[string]string, error) {
	out := make(map[string]string)
	var errs []error
	for disk, root := range h.disks() {
		ents, err := os.ReadDir(filepath.Join(root, hostVolumesDir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list replicas on disk %s: %w", disk, err))
			continue
		}
		for _, e := range ents {
			if e.IsDir() && validReplicaID(e.Name()) {
				out[e.Name()] = disk
			}
		}
	}
	return out, errors.Join(errs...)
}

// Sweep removes the local replicas keep does not want (the caller decides
// from a linearizable read) unless their directory changed in the last ten
// minutes: a replica is made before every node sees its volume.
func (h *Host) Sweep(ctx context.Context, keep func(replicaID string) bool) error {
	reps, err := h.List()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for id, disk := range reps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if keep(id) {
			continue
		}
		root, ok := h.disks()[disk]
		if !ok {
			continue // the disk left meanwhile
		}
		fi, err := os.Stat(filepath.Join(root, hostVolumesDir, id))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("sweep replica %s: %w", id, err))
			}
			continue
		}
		if h.now().Sub(fi.ModTime()) < sweepGrace {
			continue
		}
		if err := h.Remove(id); err != nil {
			errs = append(errs, fmt.Errorf("sweep: %w", err))
			continue
		}
		h.log.Info("swept replica", "replica", id, "disk", disk)
	}
	return errors.Join(errs...)
}

// Close ends every stream, waits for the requests they run, and closes
// every open replica.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.streams {
		h.endStreamsLocked(id)
	}
	var errs []error
	for id, t := range h.open {
		delete(h.open, id)
		if err := t.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close replica %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
