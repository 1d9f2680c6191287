package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage"
)

// Small objects ride in their records until the pool's inline budget is
// spent; then they are erasure-coded like any other, and deleting inline
// ones gives the budget back. Either way every byte reads back.
func TestInlineBudget(t *testing.T) {
	ns, admin := readyPool(t)
	ctx := context.Background()
	pr, _ := ns[0].id.CreateProject(ctx, admin, identity.ProjectSpec{Name: "labels"})
	o := ns[0].objects
	if _, err := o.CreateBucket(ctx, admin, pr.ID, "tiny"); err != nil {
		t.Fatal(err)
	}
	const budget = 40 * storage.InlineMax
	if err := o.SetInlineBudget(ctx, admin, budget); err != nil {
		t.Fatal(err)
	}
	data := randBytes(storage.InlineMax)
	n := budget / storage.InlineMax
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if _, err := ns[i%3].objects.Put(ctx, admin, "tiny", fmt.Sprintf("fill/%05d", i), int64(len(data)), bytes.NewReader(data), storage.PutOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The budget is spent: the next small object is stored as shards, as
	// three whole copies (storage.ReplicateMax).
	over, err := o.Put(ctx, admin, "tiny", "over", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil || over.IsInline() || over.Layout.String() != "1+2" {
		t.Fatalf("a small object past the budget: inline %v, layout %s (%v)", over.IsInline(), over.Layout, err)
	}
	var out bytes.Buffer
	if _, err := ns[2].objects.Get(ctx, admin, "tiny", "over", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("the erasure-coded small object: %v", err)
	}
	// Deleting an inline object gives its share back.
	if err := o.Delete(ctx, admin, "tiny", "fill/00000"); err != nil {
		t.Fatal(err)
	}
	again, err := o.Put(ctx, admin, "tiny", "again", int64(len(data)), bytes.NewReader(data), storage.PutOptions{})
	if err != nil || !again.IsInline() {
		t.Fatalf("after a delete, a small object: inline %v (%v)", again.IsInline(), err)
	}
	out.Reset()
	if _, err := ns[1].objects.Get(ctx, admin, "tiny", "fill/00031", 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("an inline object: %v", err)
	}
}
