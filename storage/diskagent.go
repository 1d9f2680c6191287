package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/disk"
	"github.com/hashicorp/go-memdb"
	"golang.org/x/sys/unix"
)

// DiskAgent runs on every node. It reconciles the disks the replicated state
// assigns to this node: opens them, and reports their health and capacity
// back as one batched status command per round.
type DiskAgent struct {
	c        Cluster
	svc      *Service
	log      *slog.Logger
	interval time.Duration
	reserve  Reserve // set before the node serves; read-only after

	mu     sync.Mutex
	open   map[string]*disk.Store // by disk ID
	last   map[string]diskReport  // what the state was last told
	sent   time.Time
	opened chan struct{} // closed after the first round tried every disk
}

// NewDiskAgent returns the node's disk reconciler. interval bounds how stale
// a capacity report may get.
func NewDiskAgent(c Cluster, svc *Service, log *slog.Logger, interval time.Duration) *DiskAgent {
	return &DiskAgent{c: c, svc: svc, log: log, interval: interval, open: map[string]*disk.Store{}, last: map[string]diskReport{},
		opened: make(chan struct{})}
}

// SetReserve makes shard writes to a disk on the data dir's filesystem stop
// at the control plane's floor. Call it before the node serves.
func (a *DiskAgent) SetReserve(r Reserve) { a.reserve = r }

// Opened is closed once the agent has tried to open every disk the state
// gave this node: before it, "not open" says nothing about a disk.
func (a *DiskAgent) Opened() <-chan struct{} { return a.opened }

// systemPrincipal is a node acting on its own: offering its disks, expiring
// abandoned uploads. The audit log names it "system:NODE".
func systemPrincipal(node string) *identity.Principal {
	return &identity.Principal{User: identity.User{Name: "system:" + node, ClusterAdmin: true}}
}

// EnsureDisks adds this node's --disk directories to the pool unless they are
// already there.
func (a *DiskAgent) EnsureDisks(ctx context.Context, paths []string) error {
	for _, p := range paths {
		if getDisk(a.c.Store().ReadTxn(), DiskID(a.c.Name(), p)) != nil {
			continue
		}
		if _, err := a.svc.AddDisk(ctx, systemPrincipal(a.c.Name()), a.c.Name(), p); err != nil && consensus.ErrorCode(err) != consensus.CodeAlreadyExists {
			return err
		}
	}
	return nil
}

// Disk returns the open store of one of this node's disks, or nil.
func (a *DiskAgent) Disk(id string) *disk.Store {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.open[id]
}

// Roots returns the directories of this node's open disks, by disk ID:
// where block volume replicas live beside the shards.
func (a *DiskAgent) Roots() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string, len(a.open))
	for id, s := range a.open {
		out[id] = s.Root()
	}
	return out
}

// Run reconciles on every change to the disks table, and at least every
// interval, until ctx ends.
func (a *DiskAgent) Run(ctx context.Context) {
	for {
		ws := memdb.NewWatchSet()
		txn := a.c.Store().ReadTxn()
		if it, err := txn.Get(tDisks, "node", a.c.Name()); err == nil {
			ws.Add(it.WatchCh())
		}
		if err := a.reconcile(ctx, listDisks(txn, a.c.Name())); err != nil && ctx.Err() == nil {
			a.log.Warn("disk report failed", "err", err)
		}
		select {
		case <-a.opened:
		default:
			close(a.opened)
		}
		wctx, cancel := context.WithTimeout(ctx, a.interval)
		_ = a.c.Store().Watch(wctx, ws)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

func (a *DiskAgent) reconcile(ctx context.Context, desired []Disk) error {
	a.mu.Lock()
	want := map[string]bool{}
	var reports []diskReport
	for _, d := range desired {
		want[d.ID] = true
		r := diskReport{ID: d.ID, Health: HealthOK, Marker: d.Marker}
		st := a.open[d.ID]
		if st != nil {
			if err := st.CheckIdentity(); err != nil {
				// Unmounted (or replaced) under us: its shards are not
				// missing, they are elsewhere. Close it until it is back.
				a.log.Warn("disk lost its identity marker; closed", "disk", d.ID, "path", d.Path, "err", err)
				delete(a.open, d.ID)
				st = nil
			}
		}
		if st == nil {
			id, err := a.identity(d)
			if err == nil {
				st, err = disk.Open(d.Path, id)
			}
			if err != nil {
				r.Health, r.Error = HealthFailed, err.Error()
			} else {
				r.Marker = id.Token
				a.open[d.ID] = st
				a.log.Info("disk opened", "disk", d.ID, "path", d.Path)
			}
		}
		if st != nil {
			if u, err := st.Usage(); err != nil {
				r.Health, r.Error = HealthFailed, err.Error()
				delete(a.open, d.ID) // reopen next round: the disk may come back
			} else {
				r.Total, r.Free = u.Total, u.Free
				r.Device = deviceOf(d.Path)
			}
		}
		reports = append(reports, r)
	}
	for id := range a.open {
		if !want[id] {
			delete(a.open, id)
			delete(a.last, id)
		}
	}
	changed := time.Since(a.sent) >= a.interval
	for _, r := range reports {
		prev, ok := a.last[r.ID]
		if !ok || prev.Marker != r.Marker || prev.Health != r.Health || prev.Error != r.Error || prev.Total != r.Total || prev.Device != r.Device || absDiff(prev.Free, r.Free) > r.Total/100 {
			changed = true
		}
	}
	a.mu.Unlock()
	if !changed || len(reports) == 0 {
		return nil
	}
	if _, err := a.c.Apply(ctx, MsgReportDisks, reportDisksCmd{Node: a.c.Name(), At: time.Now().UTC(), Reports: reports}, nil); err != nil {
		return err
	}
	a.mu.Lock()
	for _, r := range reports {
		a.last[r.ID] = r
	}
	a.sent = time.Now()
	a.mu.Unlock()
	return nil
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// identity returns the marker disk d must carry. A disk the pool never
// marked gets one now (or adopts the one it was given before a crash kept
// the report from the state); a marked disk must carry its own marker.
func (a *DiskAgent) identity(d Disk) (disk.Identity, error) {
	got, err := disk.ReadIdentity(d.Path)
	if d.Marker != "" {
		want := disk.Identity{Disk: d.ID, Token: d.Marker}
		if err != nil {
			return want, err
		}
		if got != want {
			return want, fmt.Errorf("%s holds disk %s of another pool or an earlier addition, not disk %s", d.Path, got.Disk, d.ID)
		}
		return want, nil
	}
	switch {
	case err == nil && got.Disk == d.ID:
		return got, nil
	case err == nil:
		return got, fmt.Errorf("%s holds disk %s, not disk %s", d.Path, got.Disk, d.ID)
	case !errors.Is(err, disk.ErrNoMarker):
		return got, err
	}
	// A disk from before markers: mark it only if it holds what the pool
	// placed on it. If the state places shards there and the directory has
	// none, its filesystem is not mounted: an empty mount point must not
	// become the disk.
	if held := diskHolds(a.c.Store().ReadTxn(), d.ID); held > 0 && !hasShards(d.Path) {
		return disk.Identity{}, fmt.Errorf("%s holds no shards, but the pool placed shards of %d objects there: is the disk mounted?", d.Path, held)
	}
	// A disk new to the pool may be a directory still to make (--dev, a
	// --disk path); a marked one never is: its directory is only missing
	// when its filesystem is.
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return disk.Identity{}, fmt.Errorf("create disk directory: %w", err)
	}
	id := disk.Identity{Disk: d.ID, Token: newDataID()}
	if err := disk.WriteIdentity(d.Path, id); err != nil {
		return id, err
	}
	a.log.Info("disk marked as a pool disk", "disk", d.ID, "path", d.Path)
	return id, nil
}

// hasShards reports whether a disk directory holds any shard file.
func hasShards(dir string) bool {
	found := false
	_ = filepath.WalkDir(filepath.Join(dir, "shards"), func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found
}

// deviceOf names the filesystem path is on ("major:minor" of its device),
// or "" if it cannot be read.
func deviceOf(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
}
