package hypervisor

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/nbd"
	"github.com/cairnhq/cairn/storage/volume"
)

// A UEFI VM's variable store (its boot entries, Secure Boot keys) is
// OVMF's second flash chip. A VM made with a boot volume keeps it on a
// small volume of its own (VMSpec.VarsVolume, attached as Firmware), as
// Proxmox keeps an EFI disk: the store then moves with the VM's writer
// epoch, live or stopped, and an HA restart finds it on any node. A live
// move carries the flash in QEMU's stream, and the target's QEMU writes
// it back to the volume when the guest resumes there. Older VMs, and
// UEFI VMs with a local boot disk, keep it in a file beside their disks
// and cannot leave their node; convert-disk moves it onto a volume.

// varsFile is the store of a UEFI VM that keeps it on its node.
func (w *worker) varsFile(vm *VM) string {
	return filepath.Join(w.n.cfg.Volumes.Dir(vm.ID), "OVMF_VARS.fd")
}

// varsSize is how large OVMF's variable store is: its template's size,
// which the firmware's code expects of its flash.
func (w *worker) varsSize() (int64, error) {
	st, err := os.Stat(w.n.cfg.OVMFVars)
	if err != nil {
		return 0, fmt.Errorf("the UEFI variables template: %w", err)
	}
	if st.Size() <= 0 || st.Size()%4096 != 0 || st.Size() > volume.GiB {
		return 0, fmt.Errorf("the UEFI variables template %s is %d bytes: want a multiple of 4096 up to 1 GiB", w.n.cfg.OVMFVars, st.Size())
	}
	return st.Size(), nil
}

// varsVolume is the NBD URL of the VM's UEFI variables volume as this
// node serves it ("" for a VM without one). A blank volume is filled
// first: from the file the VM kept on this node before it was converted
// (VMSpec.VarsFrom), or else from OVMF's template.
func (w *worker) varsVolume(ctx context.Context, vm *VM, st VMStatus) (string, error) {
	if vm.Spec.Firmware != "uefi" || vm.Spec.VarsVolume == "" {
		return "", nil
	}
	v := volume.Lookup(w.n.c.Store().ReadTxn(), vm.Spec.VarsVolume)
	if v == nil || v.Attachment == nil || v.Attachment.VM != vm.ID || !v.Attachment.Firmware {
		return "", fmt.Errorf("the UEFI variables volume %s is not attached to this VM", vm.Spec.VarsVolume)
	}
	d, ok := w.volumeDisk(v)
	var b nbd.Backend
	if ok {
		b, ok = w.n.cfg.Block.Backend(v.ID)
	}
	if !ok {
		return "", notReady{consensus.Errorf("", "volume %s is being opened", v.Name)}
	}
	fromFile := vm.Spec.VarsFrom == w.n.cfg.Name
	what, err := w.fillVars(ctx, vm, b, fromFile)
	if err != nil {
		return "", err
	}
	if what != "" {
		w.log.Info("UEFI variables volume filled", "volume", v.ID, "from", what)
	}
	if fromFile {
		event := evm("vars_moved", w.n.cfg.Name, v.Name)
		if what == fromTemplate {
			event = evm("vars_fresh", w.n.cfg.Name, v.Name)
		}
		w.report(ctx, vm, st, reportOpts{varsMoved: true, event: event})
	}
	return d.Source, nil
}

// fromTemplate is what fillVars says when it filled a volume from OVMF's
// template.
const fromTemplate = "the firmware's template"

// fillVars writes a blank vars volume (its first block all zeroes: a
// store begins with a firmware volume header) and says from what; ""
// when it was written before. The first block goes last, each part
// made durable, so a fill cut short is done again in full.
func (w *worker) fillVars(ctx context.Context, vm *VM, b nbd.Backend, fromFile bool) (string, error) {
	size, err := w.varsSize()
	if err != nil {
		return "", err
	}
	head := make([]byte, 4096)
	if err := b.ReadAt(ctx, head, 0); err != nil {
		return "", transient{fmt.Errorf("read the UEFI variables volume: %w", err)}
	}
	if slices.ContainsFunc(head, func(c byte) bool { return c != 0 }) {
		// Written before. A store made for another firmware (a node
		// whose OVMF takes another size) would be reformatted by it:
		// refused, the settings kept.
		if string(head[40:44]) == "_FVH" {
			if n := int64(binary.LittleEndian.Uint64(head[32:40])); n != size {
				return "", fmt.Errorf("the UEFI settings volume holds a store of %d bytes, and the firmware on %s takes %d", n, w.n.cfg.Name, size)
			}
		}
		return "", nil
	}
	src, what := w.n.cfg.OVMFVars, fromTemplate
	if fromFile {
		switch _, err := os.Stat(w.varsFile(vm)); {
		case err == nil:
			src, what = w.varsFile(vm), "its file on "+w.n.cfg.Name
		case !os.IsNotExist(err):
			// Not the template in its place: its settings are there.
			return "", fmt.Errorf("UEFI variables: %w", err)
		}
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("UEFI variables: %w", err)
	}
	switch {
	case int64(len(data)) != size:
		return "", fmt.Errorf("UEFI variables: %s is %d bytes, and the firmware takes %d", src, len(data), size)
	case int64(len(data)) > b.Size():
		return "", fmt.Errorf("UEFI variables: %d bytes do not fit the %d-byte volume", len(data), b.Size())
	}
	for _, part := range []struct {
		p   []byte
		off int64
	}{{data[4096:], 4096}, {data[:4096], 0}} {
		if err := b.WriteAt(ctx, part.p, part.off, false); err != nil {
			return "", transient{fmt.Errorf("write the UEFI variables volume: %w", err)}
		}
		if err := b.Flush(ctx); err != nil {
			return "", transient{fmt.Errorf("write the UEFI variables volume: %w", err)}
		}
	}
	if src != w.n.cfg.OVMFVars {
		// The volume holds it now; nothing reads the file again.
		if err := os.Remove(src); err != nil {
			w.log.Warn("remove the moved UEFI variables file", "err", err)
		}
	}
	return what, nil
}
