package ui

import (
	"fmt"
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

// A service error made from an English format is said whole in Chinese,
// its parameters in place; a state the text puts in “…” is said in Chinese,
// and a name that happens to be a state's word stays the name. English
// shows the error's own message.
func TestErrorFormatIsTranslated(t *testing.T) {
	for _, c := range []struct {
		err    error
		en, zh string
	}{
		{consensus.Errorf(consensus.CodeConflict, "volume %s is %s, not available", "scans", "in-use"),
			"Conflict: volume scans is in-use, not available", "冲突：云硬盘 scans 当前为“使用中”，不是“就绪”"},
		{consensus.Errorf(consensus.CodeConflict, "VM %s is %s: only a running VM can be rebooted", "running", "stopped"),
			"Conflict: VM running is stopped: only a running VM can be rebooted", "冲突：虚拟机 running 当前为“已停止”：只有正在运行的虚拟机才能重启"},
		{consensus.Errorf(consensus.CodeNotFound, "version %q of %q is a delete marker", "v2", "scan.dcm"),
			`Not found: version "v2" of "scan.dcm" is a delete marker`, `未找到："scan.dcm" 的版本 "v2" 是删除标记`},
		// A refusal quoted in another's words is said in the reader's too.
		{consensus.Errorf(consensus.CodeConflict, "no other node can take VM %s: %v", "web",
			consensus.Errorf(consensus.CodeConflict, "no node has %d vCPUs, %d MiB and %d GiB of disk free (%d of %d nodes cordoned)", 2, 2048, 20, 1, 3)),
			"Conflict: no other node can take VM web: no node has 2 vCPUs, 2048 MiB and 20 GiB of disk free (1 of 3 nodes cordoned)",
			"冲突：没有其他节点能接收虚拟机 web：没有节点有 2 个空闲虚拟 CPU、2048 MiB 空闲内存和 20 GiB 空闲磁盘（3 个在线节点中有 1 个已停止使用）"},
		// Wrapped on its way up, it is still said in the reader's words.
		{fmt.Errorf("attach: %w", consensus.Errorf(consensus.CodeInvalid, "a VM joins at most %d networks, not %d", 8, 9)),
			"Invalid input: a VM joins at most 8 networks, not 9", "输入无效：一台虚拟机最多加入 8 个网络，而不是 9 个"},
	} {
		for lang, want := range map[string]string{langEN: c.en, langZH: c.zh} {
			tr := &translator{lang: lang, msgs: catalogs()[lang]}
			if got := errorText(tr, c.err); got != want {
				t.Errorf("%s: got %q, want %q", lang, got, want)
			}
		}
	}
}

// The object store's errors that carry no code are said in the reader's
// words; English says the error's own text.
func TestStorageErrorsAreTranslated(t *testing.T) {
	en, zh := &translator{lang: langEN, msgs: catalogs()[langEN]}, &translator{lang: langZH, msgs: catalogs()[langZH]}
	for _, sentinel := range []error{storage.ErrNoSpace, storage.ErrUnavailable, storage.ErrIncomplete, storage.ErrBadDigest} {
		err := fmt.Errorf("put object: %w", sentinel)
		if got := errorText(en, err); !strings.HasSuffix(got, ": "+sentinel.Error()) {
			t.Errorf("en: %q does not end with %q", got, sentinel.Error())
		}
		if got := errorText(zh, err); strings.Contains(got, sentinel.Error()) || !strings.Contains(got, "：") {
			t.Errorf("zh: %q", got)
		}
	}
}
