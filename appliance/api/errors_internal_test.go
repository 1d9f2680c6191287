package api

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// A write refused for lack of room (the control plane's floor, a full
// pool) is 507 with a stable code, not a 500 or a retry-me 503.
func TestInsufficientStorageIs507(t *testing.T) {
	e := toAPIError(fmt.Errorf("upload image: %w", consensus.Errorf(storage.CodeInsufficientStorage, "no room")))
	if e.Status != http.StatusInsufficientStorage || e.Code != "insufficient_storage" || e.Message != "no room" {
		t.Fatalf("got %+v", e)
	}
}
