package storage_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// lossy is a node whose next write can be made to fail after it reached the
// state machine (its answer lost: the leader changed, the caller's context
// ended, a forwarded batch was cut off) or before (never sent), as real
// nodes fail. Everything else is the real node.
type lossy struct {
	*consensus.Node
	mu      sync.Mutex
	mode    string // "", "after" (applied, answer lost) or "before" (not applied)
	types   map[consensus.MessageType]bool
	dropped []dropped // commands failed in "before" mode, to send late
	// hook, if set, runs once before the next command of one of the armed
	// types is sent: what another client does meanwhile.
	hook func()
}

type dropped struct {
	t   consensus.MessageType
	cmd any
}

var errLost = &consensus.Error{Code: consensus.CodeUnavailable, Message: "apply: leadership lost while committing log"}

func (l *lossy) arm(mode string, types ...consensus.MessageType) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode, l.types = mode, map[consensus.MessageType]bool{}
	for _, t := range types {
		l.types[t] = true
	}
}

func (l *lossy) Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error) {
	l.mu.Lock()
	mode, hook := "", func() {}
	if l.types[t] {
		mode = l.mode
		l.mode = "" // one failure per arming
		if l.hook != nil {
			hook, l.hook = l.hook, nil
		}
	}
	l.mu.Unlock()
	hook()
	switch mode {
	case "after":
		idx, err := l.Node.Apply(ctx, t, cmd, out)
		if err != nil {
			return idx, err
		}
		return 0, errLost
	case "before":
		l.mu.Lock()
		l.dropped = append(l.dropped, dropped{t, cmd})
		l.mu.Unlock()
		return 0, errLost
	}
	return l.Node.Apply(ctx, t, cmd, out)
}

// A write whose commit reports an error of unknown outcome keeps its shards
// until it is known whether the commit happened: a PUT (and an overwrite),
// an UploadPart and a system-bucket write that did commit are readable and
// reported as done; one that did not is cleaned up, and the command can
// never land afterwards.
func TestUnknownOutcomeNeverLosesACommittedWrite(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, err := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "wards"})
	if err != nil {
		t.Fatal(err)
	}
	n := ns[1] // a follower or the leader: either forwards or applies
	lc := &lossy{Node: n.node}
	objs := storage.NewObjects(lc, identity.NewService(lc, identity.DefaultConfig()), n.shards, slog.Default())
	if _, err := objs.CreateBucket(ctx, admin, pr.ID, "charts"); err != nil {
		t.Fatal(err)
	}
	read := func(key string) []byte {
		t.Helper()
		var out bytes.Buffer
		if _, err := ns[2].objects.Get(ctx, admin, "charts", key, 0, -1, &out); err != nil {
			t.Fatalf("read %s: %v", key, err)
		}
		return out.Bytes()
	}

	// The commit landed, its answer was lost: the PUT succeeded.
	v1, v2 := randBytes(3<<20+5), randBytes(2<<20+9)
	lc.arm("after", identity.MsgAudited)
	if _, err := objs.Put(ctx, admin, "charts", "ecg", int64(len(v1)), bytes.NewReader(v1), storage.PutOptions{}); err != nil {
		t.Fatalf("a PUT that committed reported %v", err)
	}
	if got := read("ecg"); !bytes.Equal(got, v1) {
		t.Fatal("the committed object does not read back")
	}
	// An overwrite likewise: the new version reads back (the old one is
	// replaced, as any overwrite).
	lc.arm("after", identity.MsgAudited)
	if _, err := objs.Put(ctx, admin, "charts", "ecg", int64(len(v2)), bytes.NewReader(v2), storage.PutOptions{}); err != nil {
		t.Fatalf("an overwrite that committed reported %v", err)
	}
	if got := read("ecg"); !bytes.Equal(got, v2) {
		t.Fatal("the committed overwrite does not read back")
	}

	// A part whose commit landed.
	u, err := objs.CreateUpload(ctx, admin, "charts", "mri", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := randBytes(1<<20 + 3)
	lc.arm("after", storage.MsgPutPart)
	etag, err := objs.UploadPart(ctx, admin, "charts", "mri", u.ID, 1, int64(len(part)), bytes.NewReader(part), storage.PartOptions{})
	if err != nil {
		t.Fatalf("a part that committed reported %v", err)
	}
	if _, err := objs.CompleteUpload(ctx, admin, "charts", "mri", u.ID, []storage.CompletePart{{Number: 1, ETag: etag}}, storage.CompleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := read("mri"); !bytes.Equal(got, part) {
		t.Fatal("the completed upload does not read back")
	}

	// A system-bucket write (VM images) whose commit landed.
	if err := objs.EnsureSystemBucket(ctx, ".images"); err != nil {
		t.Fatal(err)
	}
	img := randBytes(1<<20 + 1)
	lc.arm("after", storage.MsgPutObject)
	if _, err := objs.PutSystem(ctx, ".images", "guest", int64(len(img)), bytes.NewReader(img)); err != nil {
		t.Fatalf("a system write that committed reported %v", err)
	}
	obj, err := ns[2].objects.HeadSystem(ctx, ".images", "guest")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := ns[2].objects.Read(ctx, obj, 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), img) {
		t.Fatalf("the committed system object does not read back: %v", err)
	}

	// The commit never reached the leader: the PUT fails, its shards go,
	// and the command arriving late (a forwarded batch in flight) is
	// refused, so no object can ever point at the deleted shards.
	lc.arm("before", identity.MsgAudited)
	if _, err := objs.Put(ctx, admin, "charts", "lost", int64(len(v1)), bytes.NewReader(v1), storage.PutOptions{}); consensus.ErrorCode(err) != consensus.CodeUnavailable {
		t.Fatalf("a PUT that never committed: %v", err)
	}
	if len(lc.dropped) != 1 {
		t.Fatalf("%d commands dropped", len(lc.dropped))
	}
	late := lc.dropped[0]
	if _, err := n.node.Apply(ctx, late.t, late.cmd, nil); err == nil {
		t.Fatal("a PUT settled as abandoned committed when its command arrived late")
	}
	if _, err := ns[0].objects.Head(ctx, admin, "charts", "lost"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("the abandoned object is visible: %v", err)
	}
}
