package volume

// PLACEHOLDER for branch h2 only: the replica store is part H1 and this
// file is replaced by its replica.go at merge. Nothing here is called by
// h2's tests.

import "context"

// Replica is one replica's files (placeholder).
type Replica struct{}

const placeholder = "replica store: merged from h1"

// CreateReplica is a placeholder for H1's.
func CreateReplica(dir string, size int64) error { panic(placeholder) }

// OpenReplica is a placeholder for H1's.
func OpenReplica(dir string) (*Replica, error) { panic(placeholder) }

// RemoveReplica is a placeholder for H1's.
func RemoveReplica(dir string) error { panic(placeholder) }

// Size is a placeholder for H1's.
func (r *Replica) Size() int64 { panic(placeholder) }

func (r *Replica) Fence(ctx context.Context, epoch uint64) (ReplicaState, error) {
	panic(placeholder)
}

func (r *Replica) WriteAt(ctx context.Context, epoch, gen uint64, p []byte, off int64, fua bool) error {
	panic(placeholder)
}

func (r *Replica) Zero(ctx context.Context, epoch, gen uint64, off, length int64, punch bool) error {
	panic(placeholder)
}

func (r *Replica) ReadAt(ctx context.Context, p []byte, off int64) error { panic(placeholder) }

func (r *Replica) Flush(ctx context.Context, epoch uint64) error { panic(placeholder) }

func (r *Replica) Extents(ctx context.Context) ([]ExtentInfo, error) { panic(placeholder) }

func (r *Replica) ReadExtent(ctx context.Context, idx int64, p []byte) (int, error) {
	panic(placeholder)
}

func (r *Replica) WriteExtent(ctx context.Context, epoch uint64, idx int64, gen uint64, p []byte) error {
	panic(placeholder)
}

func (r *Replica) Resize(ctx context.Context, epoch uint64, size int64) error { panic(placeholder) }

func (r *Replica) Close() error { panic(placeholder) }
