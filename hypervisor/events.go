package hypervisor

import (
	"fmt"
	"sort"

	"github.com/cairnhq/cairn/consensus"
)

// A VM's history speaks the reader's language: each event names its
// message by a stable key (Event.Key) with its parameters (Event.Args),
// and the UI says it from its catalogues (vmevent.msg.<key>). Message is
// the same in English, for the API, the CLI and events written before
// keys. Parameters that are words of their own (a state, an operation)
// are passed as the word's own key, which the UI translates too.
var eventTexts = map[string]string{
	"created":             "created with %s vCPU, %s MiB, %s GiB; address %s",
	"not_placed":          "not placed: %s",
	"placed":              "placed on %s",
	"requested":           "requested %s", // an operation (OpStart…) or a desired state
	"state":               "%s",           // a VM state (StateRunning…)
	"state_error":         "%s: %s",       // a VM state and the error
	"renamed":             "renamed from %s to %s",
	"resized":             "resized to %s: %s vCPU, %s MiB, %s GiB",
	"ha":                  "high availability %s, restart priority %s", // on or off
	"drain_restart":       "started again: the drain that stopped it to move it ended",
	"moved_stopped":       "moved from %s to %s while stopped",
	"migration_started":   "live migration from %s to %s started",
	"migration_postcopy":  "live migration from %s to %s started, allowed to go post-copy",
	"switched_over":       "switched over from %s to %s",
	"moved_live":          "moved live from %s to %s in %s",
	"moved_live_paused":   "moved live from %s to %s in %s: %s MiB of memory sent, the guest paused for %s ms",
	"moved_live_pc":       "moved live from %s to %s in %s; it went post-copy %s after the start",
	"moved_live_all":      "moved live from %s to %s in %s: %s MiB of memory sent, the guest paused for %s ms; it went post-copy %s after the start",
	"moved_error":         "moved from %s to %s: %s",
	"migration_cancel":    "live migration to %s cancelled: %s",
	"migration_failed":    "live migration to %s failed, the VM keeps running on %s: %s",
	"volume_attached":     "volume %s attached",
	"volume_kept":         "volume %s stays attached: %s",
	"volume_detached":     "volume %s unplugged and detached",
	"volume_detached_off": "volume %s detached",
	"volume_detaching":    "detach of volume %s requested: the guest is asked to let it go",
	"convert_boot":        "the boot disk moves onto a replicated volume at the next start",
	"convert_vars":        "the UEFI settings move onto a replicated volume at the next start",
	"guest_shutdown":      "the guest shut itself down",
	"qemu_crashed":        "QEMU exited unexpectedly; starting it again",
	"rebooted":            "rebooted",
	"forced_off":          "the guest did not shut down within %s of the power button; forced off",
	"vars_moved":          "its UEFI settings moved from a file on %s onto volume %s",
	"vars_fresh":          "it had no file of UEFI settings on %s: volume %s starts with the firmware's defaults",
}

// EventKeys lists the keys of event messages, for the UI's catalogue test.
func EventKeys() []string {
	keys := make([]string, 0, len(eventTexts))
	for k := range eventTexts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// EventText is the English text of an event message, with %s for each
// of its parameters.
func EventText(key string) (string, bool) {
	t, ok := eventTexts[key]
	return t, ok
}

// eventMsg is an event's message: its key and parameters.
type eventMsg struct {
	Key   string
	Args  []string
	Inner []*consensus.Error // reasons made from a format, at their parameter's index
}

// evm names a message; its parameters are printed with %v. A parameter
// that is a reason made from a format (said) keeps it, for pages in
// another language.
func evm(key string, args ...any) eventMsg {
	if _, ok := eventTexts[key]; !ok {
		panic("hypervisor: no event text " + key)
	}
	m := eventMsg{Key: key}
	for i, a := range args {
		m.Args = append(m.Args, fmt.Sprint(a))
		if err, ok := a.(error); ok && err != nil {
			if e := said(err); e != nil {
				if m.Inner == nil {
					m.Inner = make([]*consensus.Error, len(args))
				}
				m.Inner[i] = e
			}
		}
	}
	return m
}

// text is the message in English.
func (m eventMsg) text() string {
	args := make([]any, len(m.Args))
	for i, a := range m.Args {
		args[i] = a
	}
	return fmt.Sprintf(eventTexts[m.Key], args...)
}
