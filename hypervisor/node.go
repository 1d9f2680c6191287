package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/storage/nbd"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/hashicorp/go-memdb"
)

// NetHost is the node's side of the VM network (netfabric.Host).
type NetHost interface {
	TapName(id string) string
	EnsureTap(name string) error
	RemoveTap(name string) error
	PruneTaps(keep func(name string) bool) error
}

// BlockVolumes are the block volumes this node serves (volume.NodeServer):
// a VM's volume is attached to it and served on the VM's node.
type BlockVolumes interface {
	// Served is the NBD socket a volume is served on here, and the size
	// it is served with, once it is.
	Served(volumeID string) (socket string, size int64, ok bool)
	// Backend is the volume as this node serves it, for in-process I/O.
	Backend(volumeID string) (nbd.Backend, bool)
	// Standby is the NBD socket a volume coming here by live migration
	// is served on before this node is its writer.
	Standby(volumeID string) (socket string, size int64, ok bool)
	// Holds tells whether this node still has a writer of the volume.
	Holds(volumeID string) bool
	// Writes is how many writes the volume's writer here has been asked
	// for, and which writer that is, while it is the volume's writer.
	Writes(volumeID string) (volume.WriteCount, bool)
}

// NodeConfig configures the VM agent of one node.
type NodeConfig struct {
	Name    string
	Driver  *qemu.Driver
	Volumes *LocalVolumes
	Cache   *Cache
	// Block serves the VMs' block volumes; nil: VMs with volumes do not
	// start here.
	Block BlockVolumes
	Net   NetHost
	Accel string // kvm or tcg, already probed
	// UnsafeTCGPrecopy moves VMs running under TCG live as under KVM,
	// their guest running while its memory is copied. Without it their
	// guest is paused for the copy: QEMU 7.2's TCG loses memory writes
	// of a running guest across the copy's passes (pausedCopy). Only for
	// benchmarks of the path KVM nodes take.
	UnsafeTCGPrecopy bool
	// QEMUVersion is shown on the host; QEMUError, if set, says why this
	// node cannot run VMs (no QEMU found), and the scheduler skips it.
	QEMUVersion, QEMUError string
	OVMFCode, OVMFVars     string
	StopTimeout            time.Duration // ACPI shutdown, then forced
	ReportEvery            time.Duration // host capacity heartbeat
	// VCPUs, RAMMiB and DiskGiB override the host's capacity (0: probe;
	// the disk is the filesystem of the VM disks, less the floor kept on
	// it for the control plane).
	VCPUs, RAMMiB, DiskGiB int64
	// MigrationIP is the address this node receives live migrations on
	// (its cluster address).
	MigrationIP string
	// Peers reaches other nodes' agents over the cluster port (a live
	// migration's source asks its target there, MigrationRPC); nil: this
	// node's VMs do not move live.
	Peers Peers
	// HA is the lease timing (default DefaultHATiming); Watchdog, if set,
	// is petted while this node holds its lease or has fenced itself.
	HA       HATiming
	Watchdog Watchdog
	Logger   *slog.Logger
}

// NodeAgent converges this node's QEMU processes to the VMs the replicated
// state places here, one worker goroutine per VM, and reports what it sees.
type NodeAgent struct {
	c   Cluster
	cfg NodeConfig
	log *slog.Logger

	isFenced atomic.Bool // ha_node.go

	// netErr is why this node's VM network is not set up, while that
	// stands (SetNetworkError); reportNow wakes reportHost when it changes.
	netErr    atomic.Pointer[consensus.Error]
	reportNow chan struct{}

	mu      sync.Mutex
	workers map[string]*worker
	running sync.WaitGroup       // the workers' run loops
	quiesce map[string]*quiesced // guest freezes for snapshots, by VM (quiesce.go)
	usage   usageBook            // the VMs' usage histories (usage.go)
}

// NewNodeAgent returns the VM agent of this node.
func NewNodeAgent(c Cluster, cfg NodeConfig) *NodeAgent {
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 60 * time.Second
	}
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HA == (HATiming{}) {
		cfg.HA = DefaultHATiming
	}
	return &NodeAgent{c: c, cfg: cfg, log: cfg.Logger, workers: map[string]*worker{}, reportNow: make(chan struct{}, 1)}
}

// SetNetworkError says that this node's VM network cannot be set up, and
// why (nil: it is set up again). While it stands the node reports that it
// cannot run VMs: new VMs, HA restarts and live moves are placed
// elsewhere, and the host list, the capacity view and the dashboard show
// the reason, where before it was only in the node's log. VMs already on
// the node stay there: running ones run on, a stopped one started again
// starts there, and a resize, which needs room on the node, is refused
// with the reason until the network is set up.
func (n *NodeAgent) SetNetworkError(err error) {
	var next *consensus.Error
	if err != nil {
		// Made from a format, with the reason quoted whole when it was
		// made from one too: a page in another language says both.
		next = consensus.NewError(consensus.CodeUnavailable, "the VM network is not set up on this node: %v", err)
	}
	if prev := n.netErr.Swap(next); (prev == nil) == (next == nil) && (prev == nil || prev.Message == next.Message) {
		return
	}
	select {
	case n.reportNow <- struct{}{}:
	default:
	}
}

// hostError is why this node cannot run VMs, or "", and the same made
// from a format when it was (the VM network's reason alone; QEMU's errors
// are QEMU's words).
func (n *NodeAgent) hostError() (string, *consensus.Error) {
	var reasons []string
	if n.cfg.QEMUError != "" {
		reasons = append(reasons, n.cfg.QEMUError)
	}
	e := n.netErr.Load()
	if e != nil {
		reasons = append(reasons, e.Message)
	}
	if len(reasons) != 1 || e == nil {
		e = nil
	}
	return strings.Join(reasons, "; "), e
}

// Run cleans up what a crash left, reports this host and keeps every local
// VM converged until ctx ends. Running VMs are left running when it returns:
// a restarted agent attaches to them again.
func (n *NodeAgent) Run(ctx context.Context) {
	for {
		err := n.c.ConsistentRead(ctx)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	if err := n.cleanup(ctx); err != nil {
		n.log.Error("clean up leftovers of earlier runs", "err", err)
	}
	go n.reportHost(ctx)
	go n.pruneCache(ctx)
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := n.c.Store().ReadTxn()
		it, err := txn.Get(tVMs, "node", n.cfg.Name)
		if err != nil {
			n.log.Error("list local VMs", "err", err)
			return
		}
		ws.Add(it.WatchCh())
		seen := map[string]bool{}
		for o := it.Next(); o != nil; o = it.Next() {
			seen[o.(*VM).ID] = true
		}
		// VMs moving live to or from here: one QEMU waits here before
		// the VM is ours, the other sends it the rest after it is not.
		in, err := txn.Get(tVMs, "migrating", n.cfg.Name)
		if err != nil {
			n.log.Error("list migrating VMs", "err", err)
			return
		}
		ws.Add(in.WatchCh())
		for o := in.Next(); o != nil; o = in.Next() {
			seen[o.(*VM).ID] = true
		}
		n.mu.Lock()
		for id := range seen {
			if n.workers[id] == nil {
				n.workers[id] = newWorker(n, id)
				n.running.Add(1)
				go func(w *worker) {
					defer n.running.Done()
					w.run(ctx)
				}(n.workers[id])
			}
		}
		for _, w := range n.workers {
			w.kick()
		}
		n.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_ = n.c.Store().Watch(wctx, ws)
		cancel()
	}
	n.mu.Lock()
	for _, w := range n.workers {
		w.close()
	}
	n.mu.Unlock()
	// What a worker does as the agent stops (abandon: a guest paused for
	// its copy resumed) is done before Run returns.
	n.running.Wait()
}

// SetBlock gives the node's volume server, before Run.
func (n *NodeAgent) SetBlock(b BlockVolumes) { n.cfg.Block = b }

func (n *NodeAgent) done(id string) {
	n.mu.Lock()
	delete(n.workers, id)
	n.mu.Unlock()
	n.usage.drop(id)
}

// ConsoleFile returns the path of a local VM's console socket (vnc,
// serial) or its serial log (log).
func (n *NodeAgent) ConsoleFile(vmID, kind string) (string, bool) {
	if !n.local(n.c.Store().ReadTxn(), vmID) || strings.ContainsAny(vmID, "/.") {
		return "", false
	}
	return consoleFile(n.cfg.Driver.Dir(vmID), n.cfg.Volumes.Dir(vmID), kind)
}

// local says whether a VM should exist on this node.
func (n *NodeAgent) local(txn *memdb.Txn, id string) bool {
	vm := getVM(txn, id)
	return vm != nil && vm.Node == n.cfg.Name && vm.Desired != DesiredDeleted
}

// cleanup removes QEMU processes, disks and taps that no VM of this node
// owns any more (the agent was down while they were deleted or moved), and
// cached images nothing here needs. The state is current: Run read it
// linearizably first.
func (n *NodeAgent) cleanup(ctx context.Context) error {
	txn := n.c.Store().ReadTxn()
	// A live migration's QEMUs stay for its workers to judge: a source
	// whose guest has switched over still sends it the rest, and a target
	// may be switched to by its source any moment (its agent said yes
	// before it restarted).
	migrating := func(vm *VM) bool {
		return vm != nil && vm.Migration != nil && (vm.Migration.Source == n.cfg.Name || vm.Migration.Target == n.cfg.Name)
	}
	keep := func(id string) bool { return n.local(txn, id) || migrating(getVM(txn, id)) }
	var errs []error
	if err := n.cfg.Driver.Cleanup(ctx, keep); err != nil {
		errs = append(errs, err)
	}
	ids, err := n.cfg.Volumes.List()
	errs = append(errs, err)
	for _, id := range ids {
		vm := getVM(txn, id)
		incoming := vm != nil && vm.Migration != nil && vm.Migration.Target == n.cfg.Name // its kept QEMU uses them
		if vm == nil || vm.Node != n.cfg.Name && !incoming {
			n.log.Info("removing disks of a VM that is not on this node", "vm", id)
			errs = append(errs, n.cfg.Volumes.Remove(ctx, id))
		}
	}
	taps := map[string]bool{}
	images := map[string]bool{}
	for _, index := range []string{"node", "migrating"} {
		it, err := txn.Get(tVMs, index, n.cfg.Name)
		errs = append(errs, err)
		if err != nil {
			continue
		}
		for o := it.Next(); o != nil; o = it.Next() {
			vm := o.(*VM)
			if index == "migrating" && vm.Migration.Target != n.cfg.Name {
				continue // a source keeps no taps of a VM it is not running
			}
			images[vm.Spec.Image] = true
			for _, nic := range vm.NICs {
				taps[n.cfg.Net.TapName(nic.ID)] = true
			}
		}
	}
	errs = append(errs, n.cfg.Net.PruneTaps(func(name string) bool { return taps[name] }))
	errs = append(errs, n.cfg.Cache.Prune(func(id string) bool {
		return images[id] || consensus.First[Image](txn, tImages, "id", id) != nil
	}))
	return errors.Join(errs...)
}

// pruneCache drops, every hour, cached images that were deleted and that
// no VM on this node is based on.
func (n *NodeAgent) pruneCache(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		txn := n.c.Store().ReadTxn()
		used := map[string]bool{}
		if it, err := txn.Get(tVMs, "node", n.cfg.Name); err == nil {
			for o := it.Next(); o != nil; o = it.Next() {
				used[o.(*VM).Spec.Image] = true
			}
		}
		if err := n.cfg.Cache.Prune(func(id string) bool {
			return used[id] || consensus.First[Image](txn, tImages, "id", id) != nil
		}); err != nil {
			n.log.Warn("prune the image cache", "err", err)
		}
	}
}

// reportHost tells the scheduler this node's capacity, now and then: the
// report doubles as the node's liveness for placement.
func (n *NodeAgent) reportHost(ctx context.Context) {
	vcpus, ram := n.cfg.VCPUs, n.cfg.RAMMiB
	if vcpus == 0 {
		vcpus = int64(runtime.NumCPU())
	}
	if ram == 0 {
		ram = memTotalMiB()
	}
	t := time.NewTicker(n.cfg.ReportEvery)
	defer t.Stop()
	for {
		h := Host{Name: n.cfg.Name, VCPUs: vcpus, RAMMiB: ram, DiskGiB: n.diskGiB(), Accel: n.cfg.Accel, Version: n.cfg.QEMUVersion, CPUModel: cpuModel(),
			ReportedAt: time.Now().UTC()}
		h.Error, h.ErrorSaid = n.hostError()
		if _, err := n.c.Apply(ctx, MsgReportHost, &h, nil); err != nil && ctx.Err() == nil {
			n.log.Warn("report host capacity", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.reportNow:
		}
	}
}

// diskGiB is what the node's VM disks may take: the size of their
// filesystem, less the control plane's floor if it is the data filesystem.
func (n *NodeAgent) diskGiB() int64 {
	if n.cfg.DiskGiB != 0 || n.cfg.Volumes == nil {
		return n.cfg.DiskGiB
	}
	if err := Traversable(n.cfg.Volumes.dir); err != nil {
		return 0
	}
	total, err := n.cfg.Volumes.reserve.Capacity(n.cfg.Volumes.dir)
	if err != nil {
		n.log.Warn("measure the VM disk filesystem", "err", err)
		return 0
	}
	return int64(total >> 30)
}

// cpuModel is the host CPU's model name, "" if unknown.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotalMiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kib int64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			fmt.Sscan(strings.TrimPrefix(l, "MemTotal:"), &kib)
		}
	}
	return kib >> 10
}

// QEMUVersion runs qemu --version; an error means this node cannot run VMs.
func QEMUVersion(qemuArgv []string) (string, error) {
	argv := append(append([]string{}, qemuArgv...), "--version")
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", strings.Join(qemuArgv, " "), err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(line, "QEMU emulator version "), nil
}
