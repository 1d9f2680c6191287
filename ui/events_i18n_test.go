package ui

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
)

// Every line a VM's history can hold is said in both languages, with the
// parameters the hypervisor gives it, and nothing but %s in the text.
func TestEveryEventKeyIsTranslated(t *testing.T) {
	verbs := regexp.MustCompile(`%[^%]`)
	cats := catalogs()
	for _, key := range hypervisor.EventKeys() {
		text, _ := hypervisor.EventText(key)
		want := strings.Count(text, "%s")
		if n := len(verbs.FindAllString(text, -1)); n != want {
			t.Errorf("hypervisor's event %s has verbs other than %%s: %q", key, text)
		}
		for lang, cat := range cats {
			msg, ok := cat["vmevent.msg."+key]
			if !ok {
				t.Errorf("%s: no text for event %s", lang, key)
				continue
			}
			if got := verbs.FindAllString(msg, -1); len(got) != want || strings.Count(msg, "%s") != want {
				t.Errorf("%s: event %s takes %d parameters, its text %q has %v", lang, key, want, msg, got)
			}
		}
	}
}

// A keyed line is said in the page's language, its words (a state, an
// operation) too; an unkeyed or unknown one as written.
// said is err's *consensus.Error.
func said(err error) *consensus.Error {
	var e *consensus.Error
	errors.As(err, &e)
	return e
}

func TestKeyedEventsInChinese(t *testing.T) {
	v := goldenView(langZH, false, "vms")
	at := time.Now()
	for _, c := range []struct {
		e    hypervisor.Event
		want string
	}{
		{hypervisor.Event{Time: at, Kind: "state", Key: "state", Args: []string{"running"}, Message: "running"}, "运行中"},
		{hypervisor.Event{Time: at, Kind: "schedule", Key: "placed", Args: []string{"node2"}, Message: "placed on node2"}, "已分配到节点 node2"},
		{hypervisor.Event{Time: at, Kind: "start", Key: "requested", Args: []string{"start"}, Message: "requested start"}, "已请求："},
		{hypervisor.Event{Time: at, Kind: "running", Key: "requested", Args: []string{"running"}, Message: "requested running"}, "已请求：" + v.T("vmop.start")},
		{hypervisor.Event{Time: at, Kind: "node", Message: "placed on node2"}, "placed on node2"},
		{hypervisor.Event{Time: at, Kind: "node", Key: "from_a_newer_node", Args: []string{"x"}, Message: "something new"}, "something new"},
		{hypervisor.Event{Time: at, Kind: "state", Key: "state", Args: []string{"a", "b"}, Message: "odd"}, "odd"},
		// A reason made from a format is said in Chinese too.
		{hypervisor.Event{Time: at, Kind: "migrate", Key: "migration_failed", Args: []string{"node2", "node1", "node2 did not take the VM over within 30s"},
			Inner:   []*consensus.Error{nil, nil, said(consensus.Errorf("", "%s did not take the VM over within %s", "node2", "30s"))},
			Message: "live migration to node2 failed, the VM keeps running on node1: node2 did not take the VM over within 30s"}, "node2 未能在 30s 内接管虚拟机"},
	} {
		if got := eventMessage(v, c.e); !strings.Contains(got, c.want) {
			t.Errorf("%+v: %q, want %q in it", c.e, got, c.want)
		}
	}
}

// Every reason a drain gives for leaving a VM is said in both languages.
func TestEveryDrainStayIsTranslated(t *testing.T) {
	for _, key := range hypervisor.StayKeys() {
		text, _ := hypervisor.StayText(key)
		for lang, cat := range catalogs() {
			msg, ok := cat["drain.stay."+key]
			if !ok || strings.Count(msg, "%s") != strings.Count(text, "%s")+1 {
				t.Errorf("%s: drain reason %s: %q for %q", lang, key, msg, text)
			}
		}
	}
}

// A quota refusal names the resource in the reader's words.
func TestQuotaRefusalInChinese(t *testing.T) {
	err := consensus.Errorm(consensus.CodeQuotaExceeded, "quota_exceeded",
		"quota exceeded for %s in project %s: limit %d, in use %d, requested %d", "vcpus", "p-1", 10, 8, 4)
	zh := goldenView(langZH, false, "vms")
	got := errorText(zh.tr, err)
	if want := "超出配额：此项目（p-1）的“" + zh.T("quota.vcpus") + "”上限为 10，已使用 8，本次申请 4。"; got != want {
		t.Fatalf("zh: %q, want %q", got, want)
	}
	en := goldenView(langEN, false, "vms")
	if got := errorText(en.tr, err); !strings.HasPrefix(got, "Quota exceeded: Virtual CPUs is limited to 10") {
		t.Fatalf("en: %q", got)
	}
}

// Every kind of thing a service says it did not find has a name in both
// catalogues, so "未找到云硬盘“x”" names it in the reader's words.
func TestEveryNotFoundKindIsNamed(t *testing.T) {
	re := regexp.MustCompile(`(?:notFound\(|ProjectHolder\{Kind: )"([^"]+)"`)
	kinds := map[string]string{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			kinds[m[1]] = path
		}
		return nil
	})
	if err != nil || len(kinds) < 10 {
		t.Fatalf("found %d kinds (%v): is the walk reading the source?", len(kinds), err)
	}
	for lang, cat := range catalogs() {
		for k, at := range kinds {
			if _, ok := cat["kind."+k]; !ok {
				t.Errorf("%s: no name for kind.%s (not found in %s)", lang, k, at)
			}
		}
	}
}

// A VM's error and pending change are said from their formats only while
// the node's text is the one the format made: a said field left from an
// earlier status does not stand for a later text.
func TestStaleSaidStatusIsNotShown(t *testing.T) {
	v := goldenView(langZH, false, "vms")
	wait := said(consensus.Errorf("", "waiting: %v", consensus.Errorf("", "volume %s is being opened", "boot")))
	vm := hypervisor.VM{Spec: hypervisor.VMSpec{RAMMiB: 1024},
		Status: hypervisor.VMStatus{State: hypervisor.StateRunning, Pending: "[1024 MiB at the next start]", PendingSaid: wait}}
	if got := pendingText(v, &vm); strings.Contains(got, "等待中") || !strings.Contains(got, "1024") {
		t.Fatalf("a stale wait stood for a later pending change: %q", got)
	}
	vm.Status.Pending = wait.Message
	if got := pendingText(v, &vm); got != "等待中：云硬盘 boot 正在打开" {
		t.Fatalf("the wait itself: %q", got)
	}
	vm.Status = hypervisor.VMStatus{State: hypervisor.StateError, Error: "QEMU exited with status 1", ErrorSaid: said(consensus.Errorf("", "QEMU stopped the VM: %s", "io-error"))}
	if got := vmStatusError(v, vm.Status); got != "QEMU exited with status 1" {
		t.Fatalf("a stale error said: %q", got)
	}
}
