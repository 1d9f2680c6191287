package hypervisor

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor/cloudinit"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/storage/volume"
)

// worker converges one VM. Its goroutine is the only one that touches the
// VM's QEMU, disks and taps, so operations on one VM never interleave.
type worker struct {
	n    *NodeAgent
	id   string
	log  *slog.Logger
	wake chan struct{}
	stop chan struct{}

	inst *qemu.Instance
	// guestShutdown: the guest powered itself off (QMP SHUTDOWN from the
	// guest), so its exit is a stop, not a crash.
	guestShutdown chan struct{}
	// eventsDone is closed when the instance's event stream has ended, so
	// every event QEMU sent before exiting has been seen.
	eventsDone chan struct{}
	// guestStopped is the VM version under which the guest powered itself
	// off: not started again until the owner asks for something new, even
	// if reporting the stop to the cluster failed.
	guestStopped uint64
	// fresh: QEMU was just started, so pending reboots are moot.
	fresh bool
	// crashes are the times QEMU died unasked, for the restart backoff.
	crashes []time.Time
	// failed is the VM version whose start failed: not retried until the
	// owner asks for something new.
	failed  uint64
	retryAt time.Time
	// waitingFor is why the VM last waited to start, said once.
	waitingFor string

	// Live migration (live_worker.go): migEvents has QEMU's MIGRATION
	// and MIGRATION_PASS events; out is the stream this node sends; in the migration this
	// node's QEMU waits to receive (on inAddr), heard when the source
	// last said something, switchedAt when the VM became this node's,
	// runningAt when its guest first ran here.
	migEvents  chan struct{}
	asks       chan readyAsk // a source's questions (live_rpc.go)
	out        *outgoing
	continued  string // the migration whose rest QEMU was told to send
	in, inAddr string
	heard      time.Time
	lastReport time.Time // the source's report behind heard
	// completedAt: when this target's QEMU first said the post-copy
	// stream had completed (all memory here); postCopyReport when this
	// source last said it was still sending the rest.
	completedAt, postCopyReport time.Time
	seenID                      string // the migration firstSeen timed
	seenAt                      time.Time
	switchedAt                  time.Time
	runningAt                   time.Time
}

func newWorker(n *NodeAgent, id string) *worker {
	return &worker{n: n, id: id, log: n.log.With("vm", id), wake: make(chan struct{}, 1), stop: make(chan struct{}), migEvents: make(chan struct{}, 1), asks: make(chan readyAsk)}
}

func (w *worker) kick() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) close() { close(w.stop) }

func (w *worker) run(ctx context.Context) {
	defer w.n.done(w.id)
	defer func() {
		w.abandon(ctx)
		if w.inst != nil {
			w.inst.Close() // the VM keeps running; a new agent attaches
		}
	}()
	// A reconcile at least every 30 s; usage samples between (usage.go).
	recheck := time.NewTimer(30 * time.Second)
	defer recheck.Stop()
	sample := time.NewTicker(UsageStep)
	defer sample.Stop()
	for {
		var exited <-chan struct{}
		if w.inst != nil {
			exited = w.inst.Exited()
		}
		select {
		case <-ctx.Done():
			return
		case <-w.stop:
			return
		case <-w.wake:
		case <-exited:
			w.exited(ctx)
		case <-recheck.C:
		case <-sample.C:
			w.sample(ctx)
			continue
		}
		recheck.Reset(30 * time.Second)
		vm := getVM(w.n.c.Store().ReadTxn(), w.id)
		if vm == nil || vm.Node != w.n.cfg.Name && !w.involved(vm) {
			// Purged while this node could not do it (the leader reaps VMs
			// deleted on a node that stopped reporting), or moved to
			// another node (migrate.go): whatever is still here belongs to
			// nobody. Its volumes are not here to remove.
			var nics []NIC
			if vm != nil {
				nics = vm.NICs
			}
			w.removeLocal(ctx, w.id, nics)
			return
		}
		done, err := w.reconcile(ctx, vm)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("reconcile", "err", err)
			w.retryAt = time.Now().Add(5 * time.Second)
			time.AfterFunc(5*time.Second, w.kick)
		}
		if done {
			return
		}
	}
}

// exited handles the end of the VM's QEMU process.
func (w *worker) exited(ctx context.Context) {
	// The exit and the guest's SHUTDOWN event come on different paths:
	// wait for the event stream to end before telling one from the other.
	select {
	case <-w.eventsDone:
	case <-time.After(2 * time.Second):
	}
	guest := false
	select {
	case <-w.guestShutdown:
		guest = true
	default:
	}
	_ = w.inst.Quit(ctx) // removes the run directory
	w.inst = nil
	vm := getVM(w.n.c.Store().ReadTxn(), w.id)
	if vm == nil {
		return
	}
	if w.n.fenced() && Protected(w.n.c.Store().ReadTxn(), vm) == nil {
		if guest {
			// Its guest powered itself off meanwhile: it stays off
			// (said once the node reaches the cluster again), unless the
			// cluster restarted the VM elsewhere before that.
			w.guestStopped = vm.Version
			w.log.Warn("the guest shut itself down while this node had lost contact with the cluster")
			return
		}
		// Killed for want of a lease (ha_node.go): no crash, and nothing
		// to report to a cluster this node cannot reach.
		w.log.Warn("VM killed: this node lost contact with the cluster")
		return
	}
	st := VMStatus{State: StateStopped, Accel: vm.Status.Accel}
	if guest || vm.Desired == DesiredStopped {
		if guest {
			w.guestStopped = vm.Version
		}
		w.report(ctx, vm, st, reportOpts{guestStopped: guest && vm.Desired != DesiredStopped, event: eventIf(guest, evm("guest_shutdown"))})
		return
	}
	// A crash or a kill from outside: the owner still wants it running, so
	// the next reconcile starts it again, unless it keeps crashing.
	now := time.Now()
	w.crashes = append(w.crashes, now)
	for len(w.crashes) > 0 && now.Sub(w.crashes[0]) > crashWindow {
		w.crashes = w.crashes[1:]
	}
	if len(w.crashes) >= maxCrashes {
		w.failed = vm.Version
		st.failed(consensus.Errorf("", "QEMU exited unexpectedly %d times within %s; not restarted", len(w.crashes), crashWindow))
		w.report(ctx, vm, st, reportOpts{})
		return
	}
	w.retryAt = now.Add(time.Duration(len(w.crashes)) * 2 * time.Second)
	w.report(ctx, vm, st, reportOpts{event: evm("qemu_crashed")})
}

// A VM whose QEMU dies maxCrashes times within crashWindow is left in the
// error state until its owner asks again.
const (
	maxCrashes  = 5
	crashWindow = 10 * time.Minute
)

func eventIf(cond bool, m eventMsg) eventMsg {
	if cond {
		return m
	}
	return eventMsg{}
}

type reportOpts struct {
	guestStopped bool
	event        eventMsg // a line for the history; no Key: none
	rebooted     *uint64
	varsMoved    bool
}

// report sends the observed status when it changed.
func (w *worker) report(ctx context.Context, vm *VM, st VMStatus, o reportOpts) {
	rebooted := vm.Rebooted
	if o.rebooted != nil {
		rebooted = *o.rebooted
	}
	same := vm.Status.State == st.State && vm.Status.Error == st.Error && vm.Status.Accel == st.Accel &&
		vm.Status.VCPUs == st.VCPUs && vm.Status.RAMMiB == st.RAMMiB && vm.Status.Pending == st.Pending &&
		vm.Status.PID == st.PID && rebooted == vm.Rebooted
	if same && !o.guestStopped && o.event.Key == "" && !o.varsMoved {
		return
	}
	st.UpdatedAt = time.Now().UTC()
	cmd := reportVMCmd{ID: vm.ID, Node: w.n.cfg.Name, Status: st, Rebooted: rebooted, GuestStopped: o.guestStopped, Version: vm.Version,
		VarsMoved: o.varsMoved}
	if o.event.Key != "" {
		cmd.Event, cmd.EventKey, cmd.EventArgs = o.event.text(), o.event.Key, o.event.Args
	}
	if _, err := w.n.c.Apply(ctx, MsgReportVM, cmd, nil); err != nil && ctx.Err() == nil {
		w.log.Warn("report VM status", "err", err)
	}
}

// reconcile moves the VM one step or more towards what its owner wants.
// It returns done once the VM is purged.
func (w *worker) reconcile(ctx context.Context, vm *VM) (bool, error) {
	if w.inst == nil {
		if inst, err := w.n.cfg.Driver.Attach(ctx, vm.ID); err == nil {
			w.log.Info("attached to running VM")
			w.adopt(inst)
		}
	}
	if m := vm.Migration; m != nil {
		switch w.n.cfg.Name {
		case m.Source:
			return false, w.migrateOut(ctx)
		case m.Target:
			return false, w.migrateIn(ctx)
		}
	}
	if vm.Node != w.n.cfg.Name {
		return false, nil // a migration away from here just ended: the run loop cleans up
	}
	switch vm.Desired {
	case DesiredDeleted:
		return w.teardown(ctx, vm)
	case DesiredStopped:
		return false, w.stopVM(ctx, vm)
	}
	if w.inst == nil {
		if vm.Status.State == StateError && w.failed == vm.Version {
			w.syncVolumes(ctx, vm) // detaches asked while it ran
			return false, nil
		}
		if w.guestStopped == vm.Version {
			// The guest powered off and the cluster has not recorded it yet
			// (no leader a moment ago): say so again instead of booting it.
			w.report(ctx, vm, VMStatus{State: StateStopped, Accel: vm.Status.Accel}, reportOpts{guestStopped: true, event: evm("guest_shutdown")})
			return false, nil
		}
		if wait := time.Until(w.retryAt); wait > 0 {
			time.AfterFunc(wait, w.kick)
			return false, nil
		}
		if err := w.n.fencedStart(vm); err != nil {
			return false, nil // started once the lease is renewed (kickAll)
		}
		if err := w.start(ctx, vm); err != nil {
			var nr notReady
			if errors.As(err, &nr) {
				if why := err.Error(); why != w.waitingFor {
					w.log.Info("VM waits to start", "why", why)
					w.waitingFor = why
				}
				st := VMStatus{State: StateBuilding, Accel: w.n.cfg.Accel}
				st.waiting(err)
				w.report(ctx, vm, st, reportOpts{})
				// Soon: a volume is served a moment after its writer
				// epoch is taken, and a restart elsewhere waits on it.
				w.retryAt = time.Now().Add(notReadyRetry)
				time.AfterFunc(notReadyRetry, w.kick)
				return false, nil
			}
			w.waitingFor = ""
			w.log.Warn("VM did not start", "err", err)
			st := VMStatus{Accel: w.n.cfg.Accel}
			st.failed(err)
			w.report(ctx, vm, st, reportOpts{})
			var t transient
			if errors.As(err, &t) {
				return false, err // the network or the image store may be back soon: retry
			}
			w.failed = vm.Version // QEMU refused: wait for the owner's next request
			return false, nil
		}
		w.fresh = true
	}
	return false, w.converge(ctx, vm)
}

// notReadyRetry is how soon a start that waits (a volume being opened)
// is tried again.
const notReadyRetry = 250 * time.Millisecond

// transient marks a start failure worth retrying without a new request.
type transient struct{ error }

func (t transient) Unwrap() error { return t.error }

// adopt takes over a QEMU instance and watches its events.
func (w *worker) adopt(inst *qemu.Instance) {
	w.inst = inst
	gs, done := make(chan struct{}), make(chan struct{})
	w.guestShutdown, w.eventsDone = gs, done
	go func() {
		defer close(done)
		var once bool
		for ev := range inst.Events() {
			if ev.Name == "MIGRATION" || ev.Name == "MIGRATION_PASS" {
				select {
				case w.migEvents <- struct{}{}:
				default:
				}
				continue
			}
			if ev.Name != "SHUTDOWN" || once {
				continue
			}
			var d struct {
				Guest bool `json:"guest"`
			}
			if json.Unmarshal(ev.Data, &d) == nil && d.Guest {
				once = true
				close(gs)
			}
		}
	}()
}

// start prepares disks, seed and taps, then launches QEMU.
func (w *worker) start(ctx context.Context, vm *VM) error {
	st := VMStatus{State: StateBuilding, Accel: w.n.cfg.Accel}
	if vm.Status.State == StateBuilding {
		st.Pending, st.PendingSaid = vm.Status.Pending, vm.Status.PendingSaid // what it waits for, until it starts
	}
	w.report(ctx, vm, st, reportOpts{})
	vols, err := w.volumeDisks(vm)
	if err != nil {
		return err
	}
	vars, err := w.varsVolume(ctx, vm, st)
	if err != nil {
		return err
	}
	m, err := w.prepare(ctx, vm, vols, vars)
	if err != nil {
		return err
	}
	inst, err := w.n.cfg.Driver.Start(ctx, m)
	if err != nil {
		return err
	}
	w.adopt(inst)
	w.failed = 0
	return nil
}

// prepare makes what the VM's QEMU needs on this node (local disks, the
// cloud-init seed, taps) and returns the machine to start, with vols (the
// VM's volumes as QEMU reaches them here, the boot volume first) as its
// disks.
func (w *worker) prepare(ctx context.Context, vm *VM, vols []Disk, vars string) (qemu.Machine, error) {
	var err error
	if v := volume.Lookup(w.n.c.Store().ReadTxn(), vm.Spec.BootVolume); v != nil && v.Source != nil && v.Source.VMDisk == vm.ID && v.Source.Filled {
		// Converted: the volume holds what the local disk held.
		if err := os.Remove(filepath.Join(w.n.cfg.Volumes.Dir(vm.ID), "root.qcow2")); err != nil && !os.IsNotExist(err) {
			w.log.Warn("remove the converted local disk", "err", err)
		}
	}
	img := consensus.First[Image](w.n.c.Store().ReadTxn(), tImages, "id", vm.Spec.Image)
	if img == nil && vm.Spec.BootVolume != "" {
		img = &Image{ID: vm.Spec.Image, DiskFormat: FormatQCOW2} // deleted: the volume holds its bytes
	}
	if img == nil {
		img = w.cachedImage(vm)
		if img == nil {
			return qemu.Machine{}, fmt.Errorf("image %s was deleted before this VM's disk was made", vm.Spec.Image)
		}
	}
	var base string
	if vm.Spec.BootVolume == "" || img.DiskFormat == FormatISO {
		// A boot volume was filled from the image already; an installer
		// ISO is a local CD either way.
		if base, err = w.n.cfg.Cache.Path(ctx, img); err != nil {
			return qemu.Machine{}, transient{err}
		}
	}
	disks, err := w.n.cfg.Volumes.Prepare(ctx, vm, img, base)
	if err != nil {
		return qemu.Machine{}, fmt.Errorf("prepare disks: %w", err)
	}
	// The boot volume first, then the local disks. Data volumes are
	// hot-plugged once QEMU runs (converge): on the spare hot-plug ports,
	// a running guest can be asked to let them go again, which a disk on
	// the root bus cannot. (A VM coming by live migration has them on
	// the ports they were plugged into: vols says which.)
	if vm.Spec.BootVolume != "" {
		disks = append(vols[:1:1], disks...)
		for _, d := range vols[1:] {
			if d.Port != "" {
				disks = append(disks, d)
			}
		}
	}
	seedPath := filepath.Join(w.n.cfg.Volumes.Dir(vm.ID), "seed.iso")
	seed := cloudinit.Seed{InstanceID: vm.ID, Hostname: vm.Spec.Hostname, SSHKeys: vm.Spec.SSHKeys, UserData: []byte(vm.Spec.UserData),
		NetworkConfig: networkConfig(vm.NICs)}
	if err := seed.WriteISO(seedPath); err != nil {
		return qemu.Machine{}, fmt.Errorf("write cloud-init seed: %w", err)
	}
	disks = append(disks, Disk{ID: "seed", Path: seedPath, Format: FormatRaw, Media: "disk", ReadOnly: true})
	var nics []qemu.NIC
	for _, nic := range vm.NICs {
		tap := w.n.cfg.Net.TapName(nic.ID)
		if err := w.n.cfg.Net.EnsureTap(tap); err != nil {
			return qemu.Machine{}, transient{fmt.Errorf("network port %s: %w", nic.ID, err)}
		}
		nics = append(nics, qemu.NIC{ID: nic.ID, Tap: tap, MAC: nic.MAC, MTU: nic.MTU})
	}
	m, err := w.machine(vm, img, disks, nics, vars)
	if err != nil {
		return qemu.Machine{}, err
	}
	trimLog(m.SerialLog, maxSerialLog)
	return m, nil
}

// volumeDisks are the VM's block volumes as QEMU reaches them: over NBD
// from this node's volume server, the boot volume (if any) first. A volume
// not served yet (its writer is opening it, or filling it from its image)
// makes the start wait.
func (w *worker) volumeDisks(vm *VM) ([]Disk, error) {
	vols := volume.AttachedToVM(w.n.c.Store().ReadTxn(), vm.ID)
	if vm.Spec.BootVolume != "" && (len(vols) == 0 || vols[0].ID != vm.Spec.BootVolume) {
		return nil, fmt.Errorf("boot volume %s is not attached to this VM", vm.Spec.BootVolume)
	}
	var disks []Disk
	for _, v := range vols {
		if v.Attachment.Detaching {
			continue // let go at this start (startVolumes records it)
		}
		if v.Attachment.Firmware {
			continue // not a disk (varsVolume)
		}
		d, ok := w.volumeDisk(v)
		if !ok {
			if v.Unfilled() {
				return nil, notReady{consensus.Errorf("", "volume %s is being filled from %v", v.Name, v.Source.Phrase())}
			}
			return nil, notReady{consensus.Errorf("", "volume %s is being opened", v.Name)}
		}
		disks = append(disks, d)
	}
	return disks, nil
}

// volumeDisk is a volume as QEMU reaches it here, once this node serves it.
func (w *worker) volumeDisk(v *volume.Volume) (Disk, bool) {
	if w.n.cfg.Block == nil || v.Attachment == nil || v.Attachment.Node != w.n.cfg.Name {
		return Disk{}, false
	}
	sock, _, ok := w.n.cfg.Block.Served(v.ID)
	if !ok {
		return Disk{}, false
	}
	// The volume's ID as its serial: the guest names it
	// /dev/disk/by-id/virtio-vol-..., whatever order it was plugged in.
	return Disk{ID: volumeDiskID(v), Source: "nbd+unix:///" + v.ID + "?socket=" + sock, Format: FormatRaw, Media: "disk", Serial: v.ID}, true
}

// volumeDiskID is the device ID of a volume in its VM: root for the boot
// volume, the volume's ID for the others.
func volumeDiskID(v *volume.Volume) string {
	if v.Attachment != nil && v.Attachment.Boot {
		return "root"
	}
	return v.ID
}

// notReady: the VM waits for something on its way (a volume being
// filled); the start is tried again soon, and the VM shows as building.
type notReady struct{ error }

func (e notReady) Unwrap() error { return e.error }

// networkConfig is the seed's network-config (version 2): DHCP on every
// NIC, matched by MAC, so the guest's own naming of interfaces is moot.
func networkConfig(nics []NIC) []byte {
	var b strings.Builder
	b.WriteString("version: 2\nethernets:\n")
	for i, n := range nics {
		fmt.Fprintf(&b, "  nic%d:\n    match:\n      macaddress: %q\n    set-name: eth%d\n    dhcp4: true\n", i, n.MAC, i)
	}
	return []byte(b.String())
}

// maxSerialLog bounds a VM's serial log left from earlier boots: it is cut
// back to its newest half at each start. While the VM runs, the qemu
// Driver rotates it at its own SerialLogMax (the same 8 MiB by default).
const maxSerialLog = 8 << 20

// trimLog keeps the newest half of a log longer than max.
func trimLog(path string, max int64) {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= max {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	tail := make([]byte, max/2)
	if _, err := f.ReadAt(tail, st.Size()-max/2); err != nil {
		return
	}
	_ = os.WriteFile(path+".tmp", tail, 0o600)
	_ = os.Rename(path+".tmp", path)
}

// cachedImage rebuilds enough of a deleted image's record to boot a VM
// whose disks already exist on this node (the overlay's base is cached).
func (w *worker) cachedImage(vm *VM) *Image {
	for _, f := range []string{FormatQCOW2, FormatISO} {
		img := &Image{ID: vm.Spec.Image, DiskFormat: f}
		if fileExists(w.n.cfg.Cache.File(img)) && fileExists(filepath.Join(w.n.cfg.Volumes.Dir(vm.ID), "root.qcow2")) {
			return img
		}
	}
	return nil
}

// machine turns a VM into QEMU's terms; vars is the NBD URL of its UEFI
// variables' volume, if it has one.
func (w *worker) machine(vm *VM, img *Image, disks []Disk, nics []qemu.NIC, vars string) (qemu.Machine, error) {
	sum := sha256.Sum256([]byte(vm.ID))
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	m := qemu.Machine{Name: vm.ID, UUID: uuid, VCPUs: int(vm.Spec.VCPUs), MemoryMiB: int(vm.Spec.RAMMiB),
		// Room for online resize: twice the boot size, as far as the host goes.
		MaxVCPUs: int(min(2*vm.Spec.VCPUs, 64)), MaxMemoryMiB: int(2 * vm.Spec.RAMMiB),
		Accel: w.n.cfg.Accel, NICs: nics,
		// The serial log lives with the disks, so it outlives stops.
		SerialLog: filepath.Join(w.n.cfg.Volumes.Dir(vm.ID), "serial.log")}
	switch {
	case vm.Spec.Firmware != "uefi":
	case vm.Spec.VarsVolume != "":
		size, err := w.varsSize()
		if err != nil {
			return qemu.Machine{}, err
		}
		m.Firmware = qemu.Firmware{Type: "uefi", Code: w.n.cfg.OVMFCode, VarsSource: vars, VarsSize: size}
	default:
		m.Firmware = qemu.Firmware{Type: "uefi", Code: w.n.cfg.OVMFCode, VarsTemplate: w.n.cfg.OVMFVars,
			Vars: w.varsFile(vm)}
	}
	boot := 1
	if img.DiskFormat == FormatISO {
		boot = 2 // the installer CD first, the disk after
	}
	for _, d := range disks {
		qd := qemu.Disk{ID: d.ID, Path: d.Path, Source: d.Source, Format: d.Format, ReadOnly: d.ReadOnly, Media: d.Media,
			Backing: d.Backing, Cache: w.n.cfg.Volumes.cacheMode(), Serial: d.Serial, Port: d.Port}
		switch d.ID {
		case "root":
			qd.BootIndex = boot
		case "install":
			qd.BootIndex = 1
		}
		m.Disks = append(m.Disks, qd)
	}
	return m, nil
}

// converge handles a running QEMU: pause, resume, reboot, resize.
func (w *worker) converge(ctx context.Context, vm *VM) error {
	qs, err := w.inst.Status(ctx)
	if err != nil {
		return err
	}
	st := vm.Status
	st.Accel, st.PID, st.Error, st.ErrorSaid = w.n.cfg.Accel, qs.PID, "", nil
	var o reportOpts
	if w.fresh {
		// Just booted with the spec's size; reboots asked before are done.
		w.fresh = false
		st.VCPUs, st.RAMMiB, st.StartedAt = vm.Spec.VCPUs, vm.Spec.RAMMiB, time.Now().UTC()
		r := vm.Reboots
		o.rebooted = &r
	}
	if st.VCPUs == 0 { // attached to a QEMU started by an earlier agent
		st.VCPUs, st.RAMMiB = vm.Spec.VCPUs, vm.Spec.RAMMiB
	}
	if qs.State == "postmigrate" || qs.State == "finish-migrate" {
		// Left stopped by a migration away that ended before its
		// switchover, and which this agent did not finish with (a
		// failed resume, or a restart in between): takeBack resumes it,
		// or boots it afresh if its memory did go.
		w.kick() // (and then reports what it is)
		return w.takeBack(ctx)
	}
	switch {
	case vm.Desired == DesiredPaused && qs.Running:
		if err := w.inst.Pause(ctx); err != nil {
			return err
		}
		qs.Running = false
	case vm.Desired == DesiredRunning && !qs.Running && qs.State == "paused":
		if err := w.inst.Resume(ctx); err != nil {
			return err
		}
		qs.Running = true
	}
	if o.rebooted == nil && vm.Reboots > vm.Rebooted && vm.Desired == DesiredRunning {
		if err := w.inst.Reset(ctx); err != nil {
			return err
		}
		r := vm.Reboots
		o.rebooted, o.event = &r, evm("rebooted")
	}
	switch {
	case qs.Running:
		st.State = StateRunning
	case qs.State == "paused":
		st.State = StatePaused
	default:
		// QEMU stopped the guest itself: io-error (a full or failing
		// disk), guest-panicked, internal-error. Say so; a stop and start
		// is the way out.
		st.failed(consensus.Errorf("", "QEMU stopped the VM: %s", qs.State))
	}
	w.resize(ctx, vm, &st)
	if vp := w.syncVolumes(ctx, vm); len(vp) > 0 {
		st.Pending, st.PendingSaid = strings.TrimSpace(st.Pending+" "+strings.Join(vp, "; ")), nil
	}
	w.report(ctx, vm, st, o)
	return nil
}

// syncVolumes brings the running QEMU's disks in line with the VM's
// volumes: a data volume attached since is hot-plugged once this node
// serves it, one being detached is unplugged (the guest has to let go)
// and then detached, and QEMU is told of a volume grown online. Without a
// QEMU it only finishes detaches. It returns what still waits.
func (w *worker) syncVolumes(ctx context.Context, vm *VM) []string {
	var have map[string]int64
	if w.inst != nil {
		sizes, err := w.inst.DiskSizes(ctx)
		if err != nil {
			return []string{fmt.Sprintf("volumes (%v)", err)}
		}
		have = sizes
	}
	var pending []string
	for _, v := range volume.AttachedToVM(w.n.c.Store().ReadTxn(), vm.ID) {
		if v.Attachment.Firmware {
			continue // QEMU's flash, not a disk
		}
		id := volumeDiskID(v)
		cur, plugged := have[id]
		switch {
		case v.Attachment.Detaching:
			refused := ""
			if plugged {
				dctx, cancel := context.WithTimeout(ctx, unplugTimeout)
				if err := w.inst.DetachDisk(dctx, id); err != nil {
					refused = err.Error()
				}
				cancel()
			}
			cmd := detachVolumeCmd{Volume: v.ID, Node: w.n.cfg.Name, Refused: refused, At: time.Now().UTC()}
			if _, err := w.n.c.Apply(ctx, MsgDetachVolume, cmd, nil); err != nil && ctx.Err() == nil {
				w.log.Warn("record a volume's detach", "volume", v.ID, "err", err)
			}
		case w.inst == nil:
		case !plugged:
			d, ok := w.volumeDisk(v)
			if !ok {
				pending = append(pending, "volume "+v.Name+" (being opened)")
				continue
			}
			if err := w.inst.AttachDisk(ctx, qemu.Disk{ID: d.ID, Source: d.Source, Format: d.Format, Media: d.Media, Serial: d.Serial}); err != nil {
				pending = append(pending, fmt.Sprintf("volume %s (%v)", v.Name, err))
				continue
			}
			w.log.Info("volume hot-plugged", "volume", v.ID)
		default:
			if _, size, ok := w.n.cfg.Block.Served(v.ID); ok && size > cur {
				if err := w.inst.ResizeDisk(ctx, id, size); err != nil {
					pending = append(pending, fmt.Sprintf("volume %s at %d GiB (%v)", v.Name, size>>30, err))
					continue
				}
				w.log.Info("volume grown online", "volume", v.ID, "bytes", size)
			}
		}
	}
	return pending
}

// unplugTimeout bounds the wait for a guest to let go of a disk.
const unplugTimeout = 30 * time.Second

// resize applies a new flavor to the running QEMU where it can: vCPUs and
// memory grow online up to the ceilings set at boot; anything else (a
// decrease, a larger disk) waits for the next stop and start.
func (w *worker) resize(ctx context.Context, vm *VM, st *VMStatus) {
	st.Pending, st.PendingSaid = "", nil
	var pending []string
	if vm.Spec.VCPUs != st.VCPUs {
		if err := w.inst.SetVCPUs(ctx, int(vm.Spec.VCPUs)); err != nil {
			pending = append(pending, fmt.Sprintf("%d vCPUs (%v)", vm.Spec.VCPUs, err))
		} else {
			st.VCPUs = vm.Spec.VCPUs
		}
	}
	if vm.Spec.RAMMiB > st.RAMMiB {
		if _, err := w.inst.SetMemory(ctx, int(vm.Spec.RAMMiB)); err != nil {
			pending = append(pending, fmt.Sprintf("%d MiB (%v)", vm.Spec.RAMMiB, err))
		} else {
			st.RAMMiB = vm.Spec.RAMMiB
		}
	} else if vm.Spec.RAMMiB < st.RAMMiB {
		pending = append(pending, fmt.Sprintf("%d MiB at the next start", vm.Spec.RAMMiB))
	}
	if len(pending) > 0 {
		st.Pending, st.PendingSaid = fmt.Sprint(pending), nil
	}
}

// stopVM shuts the VM down: the ACPI button first, then the plug.
func (w *worker) stopVM(ctx context.Context, vm *VM) error {
	if w.inst == nil && w.n.cfg.Driver.Running(vm.ID) {
		// QEMU lives but reconcile could not attach to it (its monitor
		// hangs, or another client holds it): it is not stopped, and
		// must not be said to be (a stopped VM may move to another node).
		// The plug is the only way left, and only a force-stop pulls it.
		if vm.StopMode != StopForce {
			st := VMStatus{Accel: vm.Status.Accel}
			st.failed(consensus.Errorf("", "QEMU still runs but its monitor does not answer, so the guest cannot be asked to shut down: force-stop ends it"))
			w.report(ctx, vm, st, reportOpts{})
			return fmt.Errorf("stop %s: QEMU runs but its monitor does not answer", vm.ID)
		}
		if err := w.n.cfg.Driver.Cleanup(ctx, func(name string) bool { return name != vm.ID }); err != nil {
			return err
		}
		if w.n.cfg.Driver.Running(vm.ID) {
			return fmt.Errorf("force-stop %s: QEMU still runs", vm.ID)
		}
	}
	if w.inst == nil {
		w.syncVolumes(ctx, vm) // detaches asked while it ran
		st := VMStatus{State: StateStopped, Accel: vm.Status.Accel}
		if vm.Status.State == StateError && vm.Status.Error != "" && w.failed == vm.Version {
			st = vm.Status // a failed start stays visible until the next request
		}
		w.report(ctx, vm, st, reportOpts{})
		return nil
	}
	st := vm.Status
	st.State = StateStopping
	w.report(ctx, vm, st, reportOpts{})
	var forced eventMsg
	if vm.StopMode != StopForce {
		if err := w.inst.Powerdown(ctx); err == nil {
			timeout := time.After(w.n.cfg.StopTimeout)
		wait:
			for {
				select {
				case <-w.inst.Exited():
					break wait
				case <-timeout:
					w.log.Info("guest ignored the ACPI power button; forcing it off", "timeout", w.n.cfg.StopTimeout)
					forced = evm("forced_off", w.n.cfg.StopTimeout)
					break wait
				case <-w.wake:
					// A force-stop or delete while we wait need not wait.
					if now := getVM(w.n.c.Store().ReadTxn(), w.id); now == nil || now.StopMode == StopForce || now.Desired == DesiredDeleted {
						break wait
					}
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
	if err := w.inst.Quit(ctx); err != nil {
		return err
	}
	w.inst = nil
	w.report(ctx, vm, VMStatus{State: StateStopped, Accel: vm.Status.Accel}, reportOpts{event: forced})
	return nil
}

// removeLocal stops the VM's QEMU if it runs and removes its taps and disks.
// Without the NICs (the record is gone) taps wait for the next start-up's
// clean-up, which removes every tap no VM owns.
func (w *worker) removeLocal(ctx context.Context, id string, nics []NIC) error {
	var errs []error
	// A QEMU whose guest went elsewhere is killed: a graceful quit could
	// resume a guest paused for a migration, and waits on disks this node
	// no longer serves.
	stop := (*qemu.Instance).Quit
	if vm := getVM(w.n.c.Store().ReadTxn(), id); vm != nil && vm.Node != w.n.cfg.Name {
		stop = (*qemu.Instance).Kill
	}
	if w.inst != nil {
		errs = append(errs, stop(w.inst, ctx))
		w.inst = nil
	} else if inst, err := w.n.cfg.Driver.Attach(ctx, id); err == nil {
		errs = append(errs, stop(inst, ctx))
	} else {
		// Not reachable over QMP (hung, or another client holds the
		// monitor): the driver kills it by its pid file, if it is ours.
		errs = append(errs, w.n.cfg.Driver.Cleanup(ctx, func(name string) bool { return name != id }))
	}
	for _, nic := range nics {
		errs = append(errs, w.n.cfg.Net.RemoveTap(w.n.cfg.Net.TapName(nic.ID)))
	}
	errs = append(errs, w.n.cfg.Volumes.Remove(ctx, id))
	return errors.Join(errs...)
}

// teardown removes everything the VM had on this node, then its record.
func (w *worker) teardown(ctx context.Context, vm *VM) (bool, error) {
	if vm.Status.State != StateDeleting {
		w.report(ctx, vm, VMStatus{State: StateDeleting}, reportOpts{})
	}
	if err := w.removeLocal(ctx, vm.ID, vm.NICs); err != nil {
		return false, err
	}
	if _, err := w.n.c.Apply(ctx, MsgPurgeVM, purgeVMCmd{ID: vm.ID, Node: w.n.cfg.Name}, nil); err != nil {
		return false, err
	}
	w.log.Info("VM deleted")
	return true, nil
}
