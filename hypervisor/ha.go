package hypervisor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/hashicorp/go-memdb"
)

// VM high availability: when a node dies, its VMs run again on the others,
// quickly and never twice.
//
//   - Ownership. Every node running VMs holds a lease in the replicated
//     state (one per node, covering every VM placed on it), renewed every
//     second (NodeAgent.KeepLease). Its HA VMs (boot from volume, no local
//     disk, UEFI settings on a volume if any, not switched off:
//     Protected) are what it leases.
//   - Lost. Every node watches the leases (Leases). A lease is lost when
//     HATiming.Lease has passed, by the watching node's own monotonic
//     clock, since it saw the lease last renewed, counting only time in
//     which some other node's lease was renewed (a cluster whose log is
//     stalled loses nobody). It saw the renewal applied, which is after
//     the renewing node sent it: the loser's own view is always earlier.
//   - Self-fencing. A node that has not renewed for HATiming.Fence (less
//     than Lease) since it sent its last successful renewal kills its HA
//     VMs' QEMUs and starts none until it renews again: by the time anyone
//     sees its lease lost, they are dead, if its agent runs. A hardware
//     watchdog, petted only while this holds, resets a box whose agent
//     hangs before it can. Whichever fails, the writer epoch below holds.
//   - Restart elsewhere. The leader's Failover controller moves each HA VM
//     of a node whose lease is lost, highest priority first, to a node with
//     room (MsgFailoverVM). The command is refused if the lease was renewed
//     since it was judged lost; it hands the VM's volumes to the new node at
//     a new writer epoch, so the replicas refuse the old node from the
//     moment the new one opens them, even if the old one is alive behind a
//     partition and the clocks, the watchdog or the timing above are wrong.
//     The ports follow the VM, and the new node boots it.
//   - The returning node finds its VMs placed elsewhere: its workers kill
//     what is left of them and remove their taps (worker.run); its volume
//     server closes their volumes without a flush (the writer moved).

// HA commands.
const (
	MsgRenewLease consensus.MessageType = 282
	MsgFailoverVM consensus.MessageType = 283
	MsgSetHA      consensus.MessageType = 284
)

const tLeases = "vm_leases"

// Lease is a node's hold on the VMs placed on it.
type Lease struct {
	Node string `json:"node"`
	// Index is the Raft index of the latest renewal: a lease judged lost
	// at one index is not lost once renewed at another.
	Index uint64 `json:"index"`
	// At is when the node sent that renewal, by its clock (shown to staff;
	// never used to judge the lease).
	At time.Time `json:"at"`
	// Applied is the index the node's copy of the state had reached when
	// it sent it (renewLeaseCmd).
	Applied uint64 `json:"applied,omitempty"`
}

// HATiming is how fast leases are renewed, fenced and lost. Fence must be
// below Lease with room for the watchdog's timeout (Watchdog) and the
// clocks' drift; every node of a cluster uses the same.
type HATiming struct {
	Renew time.Duration // how often a node renews its lease
	Fence time.Duration // a node that has not renewed for this long kills its HA VMs
	Lease time.Duration // a lease not renewed for this long is lost
}

// DefaultHATiming restarts a dead node's VMs about 8 s after its last
// renewal; a hung agent is reset by its watchdog (3 s) by 7 s.
var DefaultHATiming = HATiming{Renew: time.Second, Fence: 4 * time.Second, Lease: 8 * time.Second}

// Highest and lowest restart priority: higher restarts first.
const (
	MaxHAPriority = 100
	MinHAPriority = -100
)

// Protected says why a VM is not restarted elsewhere when its node dies,
// or nil: it must be free to leave its node (its disks all volumes, its
// UEFI settings, if any, on a volume too) and its HA not switched off.
func Protected(txn *memdb.Txn, vm *VM) error {
	if vm.Spec.HAOff {
		return consensus.Errorf(consensus.CodeConflict, "high availability is switched off for VM %s", vm.Name)
	}
	switch {
	case vm.Spec.BootVolume == "" || len(vm.Spec.DataDisks) > 0:
		return consensus.Errorf(consensus.CodeConflict, "VM %s has local disks on %s, which are lost with it", vm.Name, vm.Node)
	case vm.UEFIOnNode():
		return consensus.Errorf(consensus.CodeConflict, "VM %s boots with UEFI, whose settings are kept on %s", vm.Name, vm.Node)
	}
	return nil
}

type renewLeaseCmd struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Applied is how far the node's own copy of the state had got when
	// it sent the renewal: when it fences, it judges its VMs by that copy
	// or a later one.
	Applied uint64 `json:"applied"`
}

func applyRenewLease(tx *consensus.Tx, c *renewLeaseCmd) (any, error) {
	if c.Node == "" {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a lease needs a node")
	}
	return nil, tx.Insert(tLeases, &Lease{Node: c.Node, Index: tx.Index, At: c.At, Applied: c.Applied})
}

type failoverCmd struct {
	ID   string `json:"id"`
	From string `json:"from"`
	To   string `json:"to"`
	// Lease is the index of From's lease judged lost.
	Lease  uint64    `json:"lease"`
	LostAt time.Time `json:"lost_at"` // From's last renewal, for the history
	At     time.Time `json:"at"`
}

// applyFailoverVM restarts an HA VM of a node whose lease is lost on
// another node: its volumes go to the new node at a new writer epoch and
// its ports with it, in one step.
func applyFailoverVM(tx *consensus.Tx, c *failoverCmd) (any, error) {
	cur := getVM(tx.Txn, c.ID)
	if cur == nil {
		return nil, notFound("VM", c.ID)
	}
	if cur.Node != c.From {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is on %s, not %s", cur.Name, cur.Node, c.From)
	}
	l := consensus.First[Lease](tx.Txn, tLeases, "id", c.From)
	if l == nil || l.Index != c.Lease {
		return nil, consensus.Errorf(consensus.CodeConflict, "node %s has renewed its lease since it was judged lost", c.From)
	}
	restarting := drainRestarting(tx.Txn, c.From, cur.ID)
	if cur.Desired != DesiredRunning && !restarting {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s is %s: only a VM that should run is restarted elsewhere", cur.Name, cur.Desired)
	}
	if err := Protected(tx.Txn, cur); err != nil {
		return nil, err
	}
	if cur.Spec.HAOnAt > l.Applied {
		// The lost node may not have seen it switched on, and so not have
		// killed it when it fenced: it may run there still.
		return nil, consensus.Errorf(consensus.CodeConflict, "high availability was switched on for VM %s after %s last heard from the cluster: it may still run there", cur.Name, c.From)
	}
	if err := leavesWhole(tx.Txn, cur); err != nil {
		return nil, err
	}
	if m := cur.Migration; m != nil && m.Target == c.To {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s was moving live to %s, whose QEMU for it must go first", cur.Name, c.To)
	}
	if err := canTake(tx.Txn, c.To, cur, c.At); err != nil {
		return nil, err
	}
	vm := *cur
	vm.Node = c.To
	vm.Migration = nil // a live migration from the lost node ends with it
	vm.Status = VMStatus{State: StateBuilding, UpdatedAt: c.At}
	if cur.Desired != DesiredRunning {
		// Stopped by a drain to move: the drainer starts it where it went.
		vm.Status.State = StateStopped
	}
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	if cur.Migration != nil {
		if err := volume.MigrateIn(tx, vm.ID, ""); err != nil {
			return nil, err
		}
	}
	if err := volume.HandOver(tx, vm.ID, c.To); err != nil {
		return nil, err
	}
	if err := netfabric.BindPorts(tx, vm.ID, c.To); err != nil {
		return nil, err
	}
	// Said by FailoverParts' reader (ui), as the leader's notes are.
	return &vm, insertEvent(tx, Event{VM: vm.ID, Time: c.At, Kind: "failover", Message: FailoverMessage(c.From, c.LostAt, c.To, ""), Node: c.To})
}

// drainRestarting says whether a drain of node stopped the VM to move it
// and start it again elsewhere: it should run.
func drainRestarting(txn *memdb.Txn, node, vmID string) bool {
	c := cordonOf(txn, node)
	return c != nil && c.Drain != nil && contains(c.Drain.Restarting, vmID)
}

// leavesWhole says why a VM's volumes cannot go to another node with it
// now its node is lost, or nil. A snapshot or a detach under way is
// finished by the new node; a boot volume still being filled from the
// lost node's local disk (convert-disk) cannot be.
func leavesWhole(txn *memdb.Txn, vm *VM) error {
	for _, v := range volume.AttachedToVM(txn, vm.ID) {
		if v.Unfilled() && v.Source != nil && v.Source.VMDisk != "" {
			return consensus.Errorf(consensus.CodeConflict, "VM %s's volume %s was being filled from a disk on its lost node", vm.Name, v.Name)
		}
	}
	return nil
}

// FailoverMessage is the history's line for a restart elsewhere, or (to
// "") for a VM left with its lost node and why; the UI says it in the
// reader's language from the same parts (FailoverParts).
func FailoverMessage(from string, lostAt time.Time, to, why string) string {
	head := fmt.Sprintf("%s lost contact at %s; ", from, lostAt.UTC().Format(time.RFC3339))
	if to == "" {
		return head + "not restarted elsewhere: " + why
	}
	return head + "restarting on " + to
}

// FailoverParts reads a FailoverMessage back.
func FailoverParts(msg string) (from string, lostAt time.Time, to, why string, ok bool) {
	from, rest, ok1 := strings.Cut(msg, " lost contact at ")
	at, rest, ok2 := strings.Cut(rest, "; ")
	t, err := time.Parse(time.RFC3339, at)
	if !ok1 || !ok2 || err != nil {
		return "", time.Time{}, "", "", false
	}
	if to, ok := strings.CutPrefix(rest, "restarting on "); ok {
		return from, t, to, "", true
	}
	if why, ok := strings.CutPrefix(rest, "not restarted elsewhere: "); ok {
		return from, t, "", why, true
	}
	return "", time.Time{}, "", "", false
}

type setHACmd struct {
	ID       string    `json:"id"`
	Off      *bool     `json:"off,omitempty"`
	Priority *int      `json:"priority,omitempty"`
	IfMatch  uint64    `json:"if_match,omitempty"`
	User     string    `json:"user"`
	At       time.Time `json:"at"`
}

func applySetHA(tx *consensus.Tx, c *setHACmd) (any, error) {
	cur, err := changeable(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	vm := *cur
	if c.Off != nil {
		if vm.Spec.HAOff && !*c.Off {
			vm.Spec.HAOnAt = tx.Index
		}
		vm.Spec.HAOff = *c.Off
	}
	if c.Priority != nil {
		if *c.Priority < MinHAPriority || *c.Priority > MaxHAPriority {
			return nil, invalid("a restart priority is from %d to %d, not %d", MinHAPriority, MaxHAPriority, *c.Priority)
		}
		vm.Spec.HAPriority = *c.Priority
	}
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	state := "on"
	if vm.Spec.HAOff {
		state = "off"
	}
	return &vm, addEvent(tx, vm.ID, "ha", evm("ha", state, vm.Spec.HAPriority), c.User, vm.Node, c.At)
}

type recordEventsCmd struct {
	Events []Event `json:"events"`
}

// applyRecordEvents adds lines to VMs' histories (what the leader's
// controllers could not do, and why).
func applyRecordEvents(tx *consensus.Tx, c *recordEventsCmd) (any, error) {
	for _, e := range c.Events {
		if getVM(tx.Txn, e.VM) == nil {
			continue
		}
		if err := insertEvent(tx, Event{VM: e.VM, Time: e.Time, Kind: e.Kind, Key: e.Key, Args: e.Args, Message: e.Message, User: e.User, Node: e.Node}); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func registerHA(reg *consensus.Registry) {
	consensus.RegisterTable[Lease](reg, &memdb.TableSchema{Name: tLeases, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Node"}},
	}})
	consensus.Handle(reg, MsgRenewLease, "RenewLease", applyRenewLease)
	consensus.Handle(reg, MsgFailoverVM, "FailoverVM", applyFailoverVM)
	consensus.Handle(reg, MsgSetHA, "SetVMHA", applySetHA)
	consensus.Handle(reg, MsgRecordEvents, "RecordVMEvents", applyRecordEvents)
}

// GetLease returns a node's lease, or nil.
func GetLease(txn *memdb.Txn, node string) *Lease {
	return consensus.First[Lease](txn, tLeases, "id", node)
}

// Leases watches every node's lease from this node and tells which are
// lost. It runs on every node (a new leader knows at once what its
// predecessor knew).
type Leases struct {
	c      Cluster
	timing HATiming
	now    func() time.Time // monotonic; a test's clock

	mu   sync.Mutex
	seen map[string]*seenLease
	last time.Time
}

type seenLease struct {
	lease   Lease
	renewed time.Time     // when this node saw it renewed
	silent  time.Duration // counted silence since then
}

// NewLeases returns the lease watcher; Run it.
func NewLeases(c Cluster, t HATiming) *Leases {
	return &Leases{c: c, timing: t, now: time.Now, seen: map[string]*seenLease{}}
}

// Run watches the leases until ctx ends.
func (l *Leases) Run(ctx context.Context) {
	tick := time.NewTicker(l.timing.Renew / 4)
	defer tick.Stop()
	for {
		ws := memdb.NewWatchSet()
		txn := l.c.Store().ReadTxn()
		it, err := txn.Get(tLeases, "id")
		if err != nil {
			return
		}
		ws.Add(it.WatchCh())
		l.observe(allLeases(it))
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-tick.C:
			case <-wctx.Done():
			}
			cancel()
		}()
		_ = l.c.Store().Watch(wctx, ws)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

func allLeases(it memdb.ResultIterator) []Lease {
	var all []Lease
	for o := it.Next(); o != nil; o = it.Next() {
		all = append(all, *o.(*Lease))
	}
	return all
}

// observe takes the leases as this node's state has them now.
func (l *Leases) observe(all []Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	dt := time.Duration(0)
	if !l.last.IsZero() {
		dt = now.Sub(l.last)
	}
	l.last = now
	for _, le := range all {
		s := l.seen[le.Node]
		if s == nil || s.lease.Index != le.Index {
			l.seen[le.Node] = &seenLease{lease: le, renewed: now}
		}
	}
	// Silence counts only while the log moves: some other node's lease
	// was seen renewed lately.
	live := func(except string) bool {
		for n, s := range l.seen {
			if n != except && now.Sub(s.renewed) <= 2*l.timing.Renew+l.timing.Renew/2 {
				return true
			}
		}
		return false
	}
	for n, s := range l.seen {
		if now.Sub(s.renewed) > 0 && live(n) {
			s.silent += dt
		}
	}
}

// Lost returns node's lease if it is lost, as judged here.
func (l *Leases) Lost(node string) (Lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.seen[node]
	if s == nil || s.silent < l.timing.Lease {
		return Lease{}, false
	}
	return s.lease, true
}

// lostNodes lists the nodes whose lease is lost.
func (l *Leases) lostNodes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n, s := range l.seen {
		if s.silent >= l.timing.Lease {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Failover is the leader's controller that restarts the HA VMs of nodes
// whose lease is lost.
type Failover struct {
	c      Cluster
	leases *Leases
	log    *slog.Logger
	// told: VMs whose history already says why they were not restarted,
	// by the lease judged lost; retryAt: when to try again a VM whose
	// restart was refused.
	told    map[string]uint64
	retryAt map[string]time.Time
}

// NewFailover returns the failover controller; register Run as a leader
// controller.
func NewFailover(c Cluster, leases *Leases, log *slog.Logger) *Failover {
	return &Failover{c: c, leases: leases, log: log, told: map[string]uint64{}, retryAt: map[string]time.Time{}}
}

// Run restarts what lost nodes held, a few times a second.
func (f *Failover) Run(ctx context.Context) {
	t := time.NewTicker(f.leases.timing.Renew / 4)
	defer t.Stop()
	for {
		// What is remembered of VMs no longer on a lost node is moot.
		onLost := map[string]bool{}
		for _, node := range f.leases.lostNodes() {
			for _, vm := range onNode(f.c.Store().ReadTxn(), node) {
				onLost[vm.ID] = true
			}
			f.failover(ctx, node)
		}
		maps.DeleteFunc(f.told, func(id string, _ uint64) bool { return !onLost[id] })
		maps.DeleteFunc(f.retryAt, func(id string, _ time.Time) bool { return !onLost[id] })
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// failover restarts the HA VMs of one lost node elsewhere, highest
// priority first.
func (f *Failover) failover(ctx context.Context, node string) {
	lease, ok := f.leases.Lost(node)
	if !ok {
		return
	}
	txn := f.c.Store().ReadTxn()
	vms := onNode(txn, node)
	sort.SliceStable(vms, func(i, j int) bool { return vms[i].Spec.HAPriority > vms[j].Spec.HAPriority })
	var notes []Event
	note := func(vm *VM, msg string) {
		if f.told[vm.ID] == lease.Index {
			return
		}
		f.told[vm.ID] = lease.Index
		notes = append(notes, Event{VM: vm.ID, Time: time.Now().UTC(), Kind: "failover", Node: node,
			Message: FailoverMessage(node, lease.At, "", msg)})
	}
	for _, vm := range vms {
		if vm.Desired != DesiredRunning && !drainRestarting(txn, node, vm.ID) || time.Now().Before(f.retryAt[vm.ID]) {
			continue
		}
		if err := Protected(txn, vm); err != nil {
			note(vm, err.Error())
			continue
		}
		target := ""
		if m := vm.Migration; m != nil {
			target = m.Target
		}
		to, err := placeWhere(txn, vm, time.Now().Add(-hostTimeout), node, func(h *Host) bool {
			_, lost := f.leases.Lost(h.Name)
			return !lost && h.Name != target
		})
		if err != nil {
			note(vm, err.Error())
			continue
		}
		cmd := failoverCmd{ID: vm.ID, From: node, To: to, Lease: lease.Index, LostAt: lease.At, At: time.Now().UTC()}
		if _, err := f.c.Apply(ctx, MsgFailoverVM, cmd, nil); err != nil {
			if ctx.Err() == nil {
				f.retryAt[vm.ID] = time.Now().Add(5 * time.Second)
				if f.told[vm.ID] != lease.Index {
					f.log.Warn("restart a VM of a lost node", "vm", vm.Name, "node", node, "to", to, "err", err)
				}
				note(vm, err.Error())
			}
			continue
		}
		delete(f.retryAt, vm.ID)
		f.log.Info("VM restarted elsewhere", "vm", vm.Name, "lost", node, "to", to, "last_renewal", lease.At)
		txn = f.c.Store().ReadTxn() // the next placement sees this one
	}
	if len(notes) > 0 {
		if _, err := f.c.Apply(ctx, MsgRecordEvents, recordEventsCmd{Events: notes}, nil); err != nil && ctx.Err() == nil {
			f.log.Warn("record why VMs were not restarted", "node", node, "err", err)
		}
	}
}

// VMEvent is a line of a VM's history with the VM's name.
type VMEvent struct {
	VMName string `json:"vm_name"`
	Event
}

// RecentFailovers lists what the failover controller did or could not do
// since then to the VMs p can see, newest first: what the dashboard shows.
func (s *Service) RecentFailovers(p *identity.Principal, since time.Time) []VMEvent {
	vms, err := s.ListVMs(p, "")
	if err != nil {
		return nil
	}
	txn := s.c.Store().ReadTxn()
	var out []VMEvent
	for _, vm := range vms {
		it, err := txn.Get(tEvents, "vm", vm.ID)
		if err != nil {
			continue
		}
		for o := it.Next(); o != nil; o = it.Next() {
			if e := o.(*Event); e.Kind == "failover" && !e.Time.Before(since) {
				out = append(out, VMEvent{VMName: vm.Name, Event: *e})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out
}
