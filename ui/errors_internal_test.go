package ui

import (
	"strings"
	"testing"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// A write refused for lack of room (the control plane's floor) reads as
// such in both languages, not as a bare "Error".
func TestInsufficientStorageIsTranslated(t *testing.T) {
	err := consensus.Errorf(storage.CodeInsufficientStorage, "this node has 0 MiB free for images")
	for lang, want := range map[string]string{langEN: "Not enough room on this node", langZH: "此节点存储空间不足"} {
		tr := &translator{lang: lang, msgs: catalogs()[lang]}
		if got := errorText(tr, err); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q", lang, got)
		}
	}
}
