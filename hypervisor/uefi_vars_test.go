package hypervisor

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/nbd"
	"github.com/cairnhq/cairn/storage/volume"
)

// A UEFI VM made with a volume for its settings takes it in the create's
// transaction, as firmware: not a disk, not detachable, moved with the VM
// and deleted with it. Only the gated command carries it. A VM converted
// after it ran cannot leave its node until its node has moved the file
// in (VarsFrom).
func TestUEFIVarsVolumeFollowsTheVM(t *testing.T) {
	e := newComputeEnv(t)
	ctx := context.Background()
	ward := e.image.ProjectID
	e.volumeRecord(t, "vol-boot", ward, nil)
	e.volumeRecord(t, "vol-vars", ward, nil)
	before := e.usage(t)
	vm := VM{ID: "vm-1", Name: "efi", ProjectID: ward, Desired: DesiredStopped, CreatedAt: time.Now().UTC(),
		Spec: VMSpec{VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-boot", VarsVolume: "vol-vars", Firmware: "uefi"}}

	// The old command drops it, as older nodes do.
	old1 := vm
	old1.ID, old1.Name, old1.Spec.BootVolume = "vm-0", "old1", ""
	if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: old1}, nil); err != nil {
		t.Fatal(err)
	}
	if got := getVM(e.node.Store().ReadTxn(), "vm-0"); got.Spec.VarsVolume != "" || e.vol("vol-vars").Attachment != nil {
		t.Fatalf("the old create took the vars volume: %+v", got.Spec)
	}
	if _, err := e.node.Apply(ctx, MsgSetDesired, setDesiredCmd{ID: "vm-0", Desired: DesiredDeleted}, nil); err != nil {
		t.Fatal(err)
	}
	before = e.usage(t)
	bios := vm
	bios.Spec.Firmware = "bios"
	_, err := e.node.Apply(ctx, MsgCreateVMWithVars, createVMCmd{VM: bios, BootVolumeOwned: true}, nil)
	wantCode(t, "a BIOS VM with a vars volume", err, consensus.CodeInvalid)
	if u := e.usage(t); u != before || e.vol("vol-boot").Attachment != nil || e.vol("vol-vars").Attachment != nil {
		t.Fatalf("refused creates changed something: %+v → %+v", before, u)
	}
	if _, err := e.node.Apply(ctx, MsgCreateVMWithVars, createVMCmd{VM: vm, BootVolumeOwned: true}, nil); err != nil {
		t.Fatal(err)
	}
	if v := e.vol("vol-vars"); v.State != volume.StateInUse || v.Attachment == nil || !v.Attachment.Firmware || v.Attachment.Boot ||
		!v.Attachment.DeleteWithVM || v.Attachment.VM != "vm-1" {
		t.Fatalf("vars volume after create: %+v", v.Attachment)
	}
	if vols := volume.AttachedToVM(e.node.Store().ReadTxn(), "vm-1"); len(vols) != 2 || vols[0].ID != "vol-boot" {
		t.Fatalf("attached: %d, boot first: %v", len(vols), vols[0].ID)
	}
	_, err = e.node.Apply(ctx, MsgDetachVolume, detachVolumeCmd{Volume: "vol-vars"}, nil)
	wantCode(t, "detach the vars volume", err, consensus.CodeConflict)
	_, err = e.node.Apply(ctx, volume.MsgDetachVolume, map[string]any{"id": "vol-vars"}, nil)
	wantCode(t, "detach the vars volume through volumes' command", err, consensus.CodeConflict)

	// Placed, both volumes follow it; stopped, it may move, and they
	// move with it, with no writer left on the old node.
	e.host(t, "node1", 2, 4096)
	e.host(t, "node2", 2, 4096)
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		if v := e.vol("vol-vars"); v.Attachment.Node == "" {
			return fmt.Errorf("vars volume not placed")
		}
		return nil
	})
	cur, _ := e.svc.VM(e.admin, "efi")
	if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-1", Node: cur.Node, Status: VMStatus{State: StateStopped, UpdatedAt: time.Now()}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := Protected(e.node.Store().ReadTxn(), getVM(e.node.Store().ReadTxn(), "vm-1")); err != nil {
		t.Fatalf("a UEFI VM with its settings on a volume is not HA: %v", err)
	}
	other := map[string]string{"node1": "node2", "node2": "node1"}[cur.Node]
	moved, err := e.svc.Migrate(ctx, e.admin, "efi", other, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v := e.vol("vol-vars"); v.Attachment.Node != moved.Node || v.Writer != "" {
		t.Fatalf("vars volume after the move to %s: %+v writer %q", moved.Node, v.Attachment, v.Writer)
	}

	// Deleted, it takes its vars volume with it.
	if _, err := e.node.Apply(ctx, MsgSetDesired, setDesiredCmd{ID: "vm-1", Desired: DesiredDeleted}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(ctx, MsgPurgeVM, purgeVMCmd{ID: "vm-1", Node: moved.Node}, nil); err != nil {
		t.Fatal(err)
	}
	if v := e.vol("vol-vars"); v != nil {
		t.Fatalf("vars volume outlived its VM: %+v", v)
	}

	// A UEFI VM that ran with its settings in a file: converted while
	// stopped, it stays on its node until that node has moved them.
	e.volumeRecord(t, "vol-boot2", ward, nil)
	e.volumeRecord(t, "vol-vars2", ward, nil)
	old := VM{ID: "vm-2", Name: "old", ProjectID: ward, Desired: DesiredRunning, CreatedAt: time.Now().UTC(),
		Spec: VMSpec{VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Image: e.image.ID, BootVolume: "vol-boot2", Firmware: "uefi"}}
	if _, err := e.node.Apply(ctx, MsgCreateVM, createVMCmd{VM: old, BootVolumeOwned: true}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "placement", func() error {
		if getVM(e.node.Store().ReadTxn(), "vm-2").Node == "" {
			return fmt.Errorf("not placed")
		}
		return nil
	})
	home := getVM(e.node.Store().ReadTxn(), "vm-2").Node
	away := other
	if home == other {
		away = moved.Node
	}
	report := func(node, state string, varsMoved bool) {
		t.Helper()
		if _, err := e.node.Apply(ctx, MsgReportVM, reportVMCmd{ID: "vm-2", Node: node, VarsMoved: varsMoved, Status: VMStatus{State: state, UpdatedAt: time.Now()}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	report(home, StateRunning, false)
	if err := Protected(e.node.Store().ReadTxn(), getVM(e.node.Store().ReadTxn(), "vm-2")); err == nil || !strings.Contains(err.Error(), "UEFI") {
		t.Fatalf("a VM with its UEFI settings in a file is HA: %v", err)
	}
	attach := attachVarsCmd{VM: "vm-2", Volume: "vol-vars2", At: time.Now().UTC()}
	_, err = e.node.Apply(ctx, MsgAttachVars, attach, nil)
	wantCode(t, "convert the settings of a running VM", err, consensus.CodeConflict)
	if _, err := e.svc.Do(ctx, e.user, "old", OpStop, 0); err != nil {
		t.Fatal(err)
	}
	report(home, StateStopped, false)
	if _, err := e.node.Apply(ctx, MsgAttachVars, attach, nil); err != nil {
		t.Fatal(err)
	}
	_, err = e.node.Apply(ctx, MsgAttachVars, attachVarsCmd{VM: "vm-2", Volume: "vol-vars", At: time.Now().UTC()}, nil)
	wantCode(t, "convert twice", err, consensus.CodeConflict)
	got := getVM(e.node.Store().ReadTxn(), "vm-2")
	if got.Spec.VarsVolume != "vol-vars2" || got.Spec.VarsFrom != home || !e.vol("vol-vars2").Attachment.Firmware {
		t.Fatalf("converted: %+v", got.Spec)
	}
	_, err = e.svc.Migrate(ctx, e.admin, "old", away, false, 0)
	wantCode(t, "move before the file is moved in", err, consensus.CodeConflict)
	if !strings.Contains(err.Error(), "start it there once") {
		t.Fatalf("refused for another reason: %v", err)
	}
	report(away, StateStopped, true) // not its node: changes nothing
	if getVM(e.node.Store().ReadTxn(), "vm-2").Spec.VarsFrom != home {
		t.Fatalf("another node's word cleared VarsFrom")
	}
	report(home, StateStopped, true)
	if got := getVM(e.node.Store().ReadTxn(), "vm-2"); got.Spec.VarsFrom != "" || got.Spec.HAOnAt == 0 {
		t.Fatalf("moved in: VarsFrom %q, HA on at %d", got.Spec.VarsFrom, got.Spec.HAOnAt)
	}
	if _, err := e.svc.Migrate(ctx, e.admin, "old", away, false, 0); err != nil {
		t.Fatalf("move once the file is in: %v", err)
	}
}

// A blank vars volume is filled before QEMU starts: from OVMF's template,
// or from the file a converted VM kept on this node (which then goes);
// a volume written before is left as it is.
func TestFillVars(t *testing.T) {
	dir := t.TempDir()
	template := filepath.Join(dir, "OVMF_VARS.fd")
	tmpl := bytes.Repeat([]byte("T"), 3*4096)
	if err := os.WriteFile(template, tmpl, 0o644); err != nil {
		t.Fatal(err)
	}
	n := NewNodeAgent(nil, NodeConfig{Name: "node1", OVMFVars: template, Volumes: NewLocalVolumes(dir, nil),
		Logger: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil))})
	w := &worker{n: n, id: "vm-1", log: n.log}
	vm := &VM{ID: "vm-1", Spec: VMSpec{Firmware: "uefi", VarsVolume: "vol-vars"}}
	backend := func(t *testing.T) (*nbd.FileBackend, string) {
		path := filepath.Join(t.TempDir(), "vol")
		if err := os.WriteFile(path, make([]byte, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := nbd.OpenFile(path, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b, path
	}
	ctx := context.Background()
	head := func(t *testing.T, path string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, len(got)-len(want))) {
			t.Fatalf("volume holds %q..., want %q... then zeroes (%v)", got[:8], want[:8], err)
		}
	}

	b, path := backend(t)
	if what, err := w.fillVars(ctx, vm, b, false); err != nil || what != "the firmware's template" {
		t.Fatalf("fill a blank volume: %q %v", what, err)
	}
	head(t, path, tmpl)
	// Written before (the guest changed it): left alone.
	if err := b.WriteAt(ctx, []byte("guest"), 8192, false); err != nil {
		t.Fatal(err)
	}
	if what, err := w.fillVars(ctx, vm, b, false); err != nil || what != "" {
		t.Fatalf("fill a written volume: %q %v", what, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got[8192:8197], []byte("guest")) {
		t.Fatalf("a second fill overwrote the guest's settings")
	}

	// Converted: the file on this node, which then goes.
	file := filepath.Join(dir, "vm-1", "OVMF_VARS.fd")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	own := bytes.Repeat([]byte("F"), 3*4096)
	if err := os.WriteFile(file, own, 0o600); err != nil {
		t.Fatal(err)
	}
	b, path = backend(t)
	if what, err := w.fillVars(ctx, vm, b, true); err != nil || what != "its file on node1" {
		t.Fatalf("fill from the VM's file: %q %v", what, err)
	}
	head(t, path, own)
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the moved file stayed: %v", err)
	}

	// A fill cut short (the tail written, the first block not): done
	// again in full.
	b, path = backend(t)
	if err := b.WriteAt(ctx, bytes.Repeat([]byte("x"), 4096), 4096, false); err != nil {
		t.Fatal(err)
	}
	if what, err := w.fillVars(ctx, vm, b, false); err != nil || what != fromTemplate {
		t.Fatalf("fill after a fill cut short: %q %v", what, err)
	}
	head(t, path, tmpl)

	// Converted, but it had no file on its node (it never ran with
	// UEFI there): the template, and it says so.
	b, path = backend(t)
	if what, err := w.fillVars(ctx, vm, b, true); err != nil || what != fromTemplate {
		t.Fatalf("fill from a file that is not there: %q %v", what, err)
	}
	head(t, path, tmpl)
	// A file it cannot tell is there: not the template in its place.
	if err := os.WriteFile(filepath.Join(dir, "vm-2"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b, path = backend(t)
	if _, err := w.fillVars(ctx, &VM{ID: "vm-2", Spec: vm.Spec}, b, true); err == nil {
		t.Fatalf("filled although its file could not be looked at")
	}
	head(t, path, nil)

	// A store made for a firmware of another size: refused, kept.
	b, path = backend(t)
	other := make([]byte, 4096)
	copy(other[40:], "_FVH")
	binary.LittleEndian.PutUint64(other[32:], 2*4096)
	if err := b.WriteAt(ctx, other, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := w.fillVars(ctx, vm, b, false); err == nil || !strings.Contains(err.Error(), "store of 8192 bytes") {
		t.Fatalf("a store of another size: %v", err)
	}
	head(t, path, other)

	// A file of another size than the firmware takes: refused, the
	// volume left blank.
	if err := os.WriteFile(file, own[:4096], 0o600); err != nil {
		t.Fatal(err)
	}
	b, path = backend(t)
	if _, err := w.fillVars(ctx, vm, b, true); err == nil || !strings.Contains(err.Error(), "the firmware takes") {
		t.Fatalf("fill from a short file: %v", err)
	}
	head(t, path, nil)
}

// writesOnly is a volume server that only counts writes: all varsChanged
// asks of it.
type writesOnly map[string]volume.WriteCount

func (writesOnly) Served(string) (string, int64, bool)          { return "", 0, false }
func (writesOnly) Backend(string) (nbd.Backend, bool)           { return nil, false }
func (writesOnly) Standby(string) (string, int64, bool)         { return "", 0, false }
func (writesOnly) Holds(string) bool                            { return false }
func (b writesOnly) Writes(id string) (volume.WriteCount, bool) { n, ok := b[id]; return n, ok }

// A UEFI VM whose firmware wrote its settings while its memory was being
// sent does not switch over: QEMU would not send the written flash again.
func TestVarsChangedCallsOffTheSwitch(t *testing.T) {
	first, again := &volume.Writer{}, &volume.Writer{}
	block := writesOnly{"vol-vars": {Writer: first, N: 3}}
	w := &worker{n: NewNodeAgent(nil, NodeConfig{Name: "node1", Block: block}), out: &outgoing{varsWrites: volume.WriteCount{Writer: first, N: 3}}}
	vm := &VM{Spec: VMSpec{Firmware: "uefi", VarsVolume: "vol-vars"}}
	if why := w.varsChanged(vm); why != nil {
		t.Fatalf("no write since the stream started: %v", why)
	}
	if why := w.varsChanged(&VM{Spec: VMSpec{Firmware: "bios"}}); why != nil {
		t.Fatalf("a BIOS VM: %v", why)
	}
	block["vol-vars"] = volume.WriteCount{Writer: first, N: 4}
	if why := w.varsChanged(vm); why == nil || !strings.Contains(why.Error(), "changed its UEFI settings") {
		t.Fatalf("a write since the stream started: %v", why)
	}
	// Opened again since (a repair): as many writes, but another count.
	block["vol-vars"] = volume.WriteCount{Writer: again, N: 3}
	if why := w.varsChanged(vm); why == nil || !strings.Contains(why.Error(), "changed its UEFI settings") {
		t.Fatalf("another writer's count passed: %v", why)
	}
	delete(block, "vol-vars") // (its writer went: it cannot tell)
	if why := w.varsChanged(vm); why == nil {
		t.Fatalf("a volume no longer served here passed")
	}
}
