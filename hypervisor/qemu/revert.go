package qemu

// reverter undoes the completed steps of a multi-step host change when a
// later step fails (after incus's internal/revert): defer r.fail() right
// away, add an undo after each step, call r.success() at the end.
type reverter struct {
	undo []func()
	done bool
}

func (r *reverter) add(f func()) { r.undo = append(r.undo, f) }

func (r *reverter) success() { r.done = true }

// fail runs the undo steps, newest first, unless success was called.
func (r *reverter) fail() {
	if r.done {
		return
	}
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
}
