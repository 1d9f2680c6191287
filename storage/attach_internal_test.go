package storage

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// An inline object's bytes come beside its command (putInline): the
// record holds them, and the pool's inline bytes count them. Bytes that do
// not fit the object they come with (one stored as shards, a size that
// differs, bytes in the command as well) are refused and change nothing.
func TestInlineBytesAttached(t *testing.T) {
	f := newStateFixture(t, identity.ProjectSpec{Name: "imaging"})
	n, id, admin, pr := f.n, f.id, f.admin, f.pr
	ctx := context.Background()
	testutil.WaitFor(t, 10*time.Second, "the attached form allowed", func() error {
		return n.Gate(MsgPutObject | consensus.AttachedFlag)
	})
	if _, err := n.Apply(ctx, MsgCreateBucket, Bucket{ID: "scans", ProjectID: pr.ID}, nil); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("\x00\xffpixel\""), 512)
	// As putInline does: in the audited envelope.
	put := func(key string, obj Object, attached []byte) error {
		obj.ID, obj.Bucket, obj.Key = "scans/"+key, "scans", key
		cmd := putObjectCmd{Object: obj}
		return id.Mutate(ctx, admin, "object.put", obj.ID, pr.ID, MsgPutObject, consensus.Attached{Cmd: cmd, Bytes: attached, Plain: func() (any, error) {
			t.Error("the plain form asked for")
			return nil, nil
		}}, nil)
	}
	stored := func(key string) *Object {
		return consensus.First[Object](n.Store().ReadTxn(), tObjects, "id", "scans/"+key)
	}
	inline := func() int64 { return pool(n.Store().ReadTxn()).InlineBytes }

	if err := put("ct-1", Object{Size: int64(len(data))}, data); err != nil {
		t.Fatal(err)
	}
	if o := stored("ct-1"); o == nil || !bytes.Equal(o.Inline, data) {
		t.Fatalf("stored %+v", o)
	}
	if got := inline(); got != int64(len(data)) {
		t.Fatalf("inline bytes %d, want %d", got, len(data))
	}
	for name, bad := range map[string]Object{
		"shards":  {Size: int64(len(data)), DataID: "d-1"},
		"size":    {Size: int64(len(data)) + 1},
		"twice":   {Size: int64(len(data)), Inline: data},
		"deleted": {Size: int64(len(data)), Delete: true},
	} {
		err := put("bad-"+name, bad, data)
		if consensus.ErrorCode(err) != consensus.CodeInvalid {
			t.Fatalf("%s: %v, want refused as invalid", name, err)
		}
		if stored("bad-"+name) != nil {
			t.Fatalf("%s: stored", name)
		}
	}
	if got := inline(); got != int64(len(data)) {
		t.Fatalf("inline bytes %d after the refusals, want %d", got, len(data))
	}
}
