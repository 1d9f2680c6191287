package hypervisor

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sort"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// The scheduler is Nova's filter-and-weigh in miniature: filter the nodes
// that are alive, not cordoned (cordon.go), have room (with the admin's
// overcommit ratios) and hold no VM of the same anti-affinity group; weigh by free RAM share, so VMs spread.
// The leader proposes a placement; the FSM re-checks the fit when it commits
// (fits), so placement can never overfill a node whatever the races.

// room is what a node can still give.
type room struct {
	vcpus, ramMiB, diskGiB float64
}

// free computes a host's remaining capacity, ignoring the VM being placed
// (so a resize is judged against the room its old size leaves).
func free(txn *memdb.Txn, h *Host, s Settings, ignore string) (room, []string, error) {
	r := room{vcpus: float64(h.VCPUs) * s.CPUAllocationRatio, ramMiB: float64(h.RAMMiB-s.ReservedRAMMiB) * s.RAMAllocationRatio,
		diskGiB: float64(h.DiskGiB) * s.DiskRatio()}
	it, err := txn.Get(tVMs, "node", h.Name)
	if err != nil {
		return r, nil, err
	}
	var groups []string
	for o := it.Next(); o != nil; o = it.Next() {
		vm := o.(*VM)
		if vm.ID == ignore {
			continue
		}
		r.vcpus -= float64(vm.Spec.VCPUs)
		r.ramMiB -= float64(vm.Spec.RAMMiB)
		// Thin disks count at their virtual size: what they may grow to.
		r.diskGiB -= float64(vm.Spec.DiskGiBTotal())
		if vm.Spec.Group != "" {
			groups = append(groups, vm.Spec.ProjectGroup(vm.ProjectID))
		}
	}
	// A VM moving here live holds its room on both nodes until it has.
	in, err := txn.Get(tVMs, "migrating", h.Name)
	if err != nil {
		return r, nil, err
	}
	for o := in.Next(); o != nil; o = in.Next() {
		if vm := o.(*VM); vm.ID != ignore && vm.Node != h.Name && vm.Migration.Target == h.Name {
			r.vcpus -= float64(vm.Spec.VCPUs)
			r.ramMiB -= float64(vm.Spec.RAMMiB)
			if vm.Spec.Group != "" {
				groups = append(groups, vm.Spec.ProjectGroup(vm.ProjectID))
			}
		}
	}
	return r, groups, nil
}

// ProjectGroup scopes an anti-affinity group to its project, so two projects
// using the same group name do not constrain each other.
func (s VMSpec) ProjectGroup(project string) string { return project + "/" + s.Group }

// taken is room the capacity simulation has already given away on nodes,
// beyond what the state says (capacity.go); placement proper passes nil.
type taken map[string]*takenRoom

type takenRoom struct {
	room
	groups []string
}

// less is r and groups of node with what t has taken there removed.
func (t taken) less(node string, r room, groups []string) (room, []string) {
	if x := t[node]; x != nil {
		r.vcpus -= x.vcpus
		r.ramMiB -= x.ramMiB
		r.diskGiB -= x.diskGiB
		groups = append(groups[:len(groups):len(groups)], x.groups...)
	}
	return r, groups
}

// take gives vm's room on node away.
func (t taken) take(node string, vm *VM) {
	x := t[node]
	if x == nil {
		x = &takenRoom{}
		t[node] = x
	}
	x.vcpus += float64(vm.Spec.VCPUs)
	x.ramMiB += float64(vm.Spec.RAMMiB)
	x.diskGiB += float64(vm.Spec.DiskGiBTotal())
	if vm.Spec.Group != "" {
		x.groups = append(x.groups, vm.Spec.ProjectGroup(vm.ProjectID))
	}
}

// fits is the FSM's check that vm may run on node.
func fits(txn *memdb.Txn, node string, vm *VM) error { return fitsTaken(txn, node, vm, nil) }

// fitsTaken is fits with room t has taken away.
func fitsTaken(txn *memdb.Txn, node string, vm *VM, t taken) error {
	h := consensus.First[Host](txn, tHosts, "id", node)
	if h == nil {
		return consensus.Errorf(consensus.CodeNotFound, "node %q has not reported its capacity", node)
	}
	if h.Error != "" {
		return consensus.Errorf(consensus.CodeConflict, "node %s cannot run VMs: %s", node, h.Error)
	}
	r, groups, err := free(txn, h, settings(txn), vm.ID)
	if err != nil {
		return err
	}
	r, groups = t.less(node, r, groups)
	if float64(vm.Spec.VCPUs) > r.vcpus || float64(vm.Spec.RAMMiB) > r.ramMiB {
		return consensus.Errorf(consensus.CodeConflict, "node %s has %.0f vCPUs and %.0f MiB free, VM %s needs %d and %d",
			node, math.Max(r.vcpus, 0), math.Max(r.ramMiB, 0), vm.Name, vm.Spec.VCPUs, vm.Spec.RAMMiB)
	}
	// A host that reports no disk size (an older agent) is not judged on it.
	if h.DiskGiB > 0 && float64(vm.Spec.DiskGiBTotal()) > r.diskGiB {
		return consensus.Errorf(consensus.CodeConflict, "node %s has %.0f GiB of VM disk free (ratio %.1f), VM %s needs %d",
			node, math.Max(r.diskGiB, 0), settings(txn).DiskRatio(), vm.Name, vm.Spec.DiskGiBTotal())
	}
	if vm.Spec.Group != "" {
		for _, g := range groups {
			if g == vm.Spec.ProjectGroup(vm.ProjectID) {
				return consensus.Errorf(consensus.CodeConflict, "node %s already runs a VM of anti-affinity group %q", node, vm.Spec.Group)
			}
		}
	}
	return nil
}

// Place chooses a node for vm among hosts reported since notBefore, or
// explains why none fits.
func Place(txn *memdb.Txn, vm *VM, notBefore time.Time) (string, error) {
	return placeAvoiding(txn, vm, notBefore, "", nil)
}

// placeAvoiding is Place with one node left out (where a VM moves from),
// and the nodes whose VM lease is lost (lost, if set; ha.go).
func placeAvoiding(txn *memdb.Txn, vm *VM, notBefore time.Time, avoid string, lost func(node string) bool) (string, error) {
	return placeWhere(txn, vm, notBefore, avoid, func(h *Host) bool { return lost == nil || !lost(h.Name) })
}

// placeLive is where a running VM would move live: a node alike its own
// whose lease is not lost.
func placeLive(txn *memdb.Txn, vm *VM, notBefore time.Time, lost func(node string) bool) (string, error) {
	return placeWhere(txn, vm, notBefore, vm.Node, func(h *Host) bool {
		return (lost == nil || !lost(h.Name)) && alike(txn, vm, h.Name) == nil
	})
}

// placeWhere is Place among the nodes but avoid that ok accepts (nil: all).
func placeWhere(txn *memdb.Txn, vm *VM, notBefore time.Time, avoid string, ok func(*Host) bool) (string, error) {
	return placeTaken(txn, vm, notBefore, avoid, ok, nil)
}

// placeTaken is placeWhere with room t has taken away.
func placeTaken(txn *memdb.Txn, vm *VM, notBefore time.Time, avoid string, ok func(*Host) bool, t taken) (string, error) {
	it, err := txn.Get(tHosts, "id")
	if err != nil {
		return "", err
	}
	s := settings(txn)
	type cand struct {
		name  string
		share float64
	}
	var cands []cand
	var alive, cordoned int
	for o := it.Next(); o != nil; o = it.Next() {
		h := o.(*Host)
		if h.ReportedAt.Before(notBefore) || h.Error != "" || h.Name == avoid || ok != nil && !ok(h) {
			continue
		}
		alive++
		if cordonOf(txn, h.Name) != nil {
			cordoned++
			continue
		}
		if fitsTaken(txn, h.Name, vm, t) != nil {
			continue
		}
		r, _, err := free(txn, h, s, vm.ID)
		if err != nil {
			return "", err
		}
		r, _ = t.less(h.Name, r, nil)
		total := float64(h.RAMMiB-s.ReservedRAMMiB) * s.RAMAllocationRatio
		cands = append(cands, cand{h.Name, (r.ramMiB - float64(vm.Spec.RAMMiB)) / math.Max(total, 1)})
	}
	if len(cands) == 0 {
		if alive == 0 {
			return "", ErrNoHosts
		}
		return "", noRoom(vm, cordoned, alive)
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].share != cands[j].share {
			return cands[i].share > cands[j].share
		}
		return cands[i].name < cands[j].name
	})
	return cands[0].name, nil
}

// noRoom says why no node takes vm: the room it needs, the anti-affinity
// group it avoids, and how many of the live nodes take no new VMs.
func noRoom(vm *VM, cordoned, alive int) error {
	const code = consensus.CodeConflict
	cpu, ram, disk, group := vm.Spec.VCPUs, vm.Spec.RAMMiB, vm.Spec.DiskGiBTotal(), vm.Spec.Group
	switch {
	case group != "" && cordoned > 0:
		return consensus.Errorf(code, "no node has %d vCPUs, %d MiB and %d GiB of disk free outside anti-affinity group %q (%d of %d nodes cordoned)", cpu, ram, disk, group, cordoned, alive)
	case group != "":
		return consensus.Errorf(code, "no node has %d vCPUs, %d MiB and %d GiB of disk free outside anti-affinity group %q", cpu, ram, disk, group)
	case cordoned > 0:
		return consensus.Errorf(code, "no node has %d vCPUs, %d MiB and %d GiB of disk free (%d of %d nodes cordoned)", cpu, ram, disk, cordoned, alive)
	}
	return consensus.Errorf(code, "no node has %d vCPUs, %d MiB and %d GiB of disk free", cpu, ram, disk)
}

// ErrNoHosts: no node has reported recently; the VM waits rather than fail,
// as it does while a cluster is still starting.
var ErrNoHosts = errors.New("no node can run VMs right now")

// Scheduler is the leader's controller that places new VMs.
type Scheduler struct {
	c   Cluster
	log *slog.Logger
	// HostTimeout: a node that has not reported for this long gets no new VMs.
	HostTimeout time.Duration
	// Lost, if set, says whether a node's VM lease is lost (ha.go): it
	// gets no new VMs either.
	Lost func(node string) bool
	// Patience: a VM that fits nowhere waits this long after its creation
	// for capacity (nodes still starting, a VM being deleted) before it
	// fails with the reason.
	Patience time.Duration
}

// hostTimeout: a node that has not reported for this long gets no new VMs.
const hostTimeout = 90 * time.Second

// HostAlive says whether h has reported recently enough to take VMs.
func HostAlive(h Host, now time.Time) bool { return !h.ReportedAt.Before(now.Add(-hostTimeout)) }

// NewScheduler returns the scheduler; register Run as a leader controller.
func NewScheduler(c Cluster, log *slog.Logger) *Scheduler {
	return &Scheduler{c: c, log: log, HostTimeout: hostTimeout, Patience: time.Minute}
}

// Run places VMs waiting for a node until ctx ends (leadership lost). It
// reacts to the state at once, through a watch, so creating a VM does not
// wait for a tick.
func (s *Scheduler) Run(ctx context.Context) {
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := s.c.Store().ReadTxn()
		// Unplaced VMs are not in the node index (memdb leaves empty values
		// out), so scan: a few hundred VMs per wake-up is nothing.
		it, err := txn.Get(tVMs, "id")
		if err != nil {
			s.log.Error("list unplaced VMs", "err", err)
			return
		}
		ws.Add(it.WatchCh())
		hosts, err := txn.Get(tHosts, "id")
		if err == nil {
			ws.Add(hosts.WatchCh())
		}
		if cordons, err := txn.Get(tCordons, "id"); err == nil {
			ws.Add(cordons.WatchCh()) // an uncordon makes room
		}
		var pending []*VM
		for o := it.Next(); o != nil; o = it.Next() {
			if vm := o.(*VM); vm.Node == "" && vm.Status.State == StateScheduling && vm.Desired != DesiredDeleted {
				pending = append(pending, vm)
			}
		}
		for _, vm := range pending {
			s.place(ctx, vm)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = s.c.Store().Watch(wctx, ws)
		cancel()
	}
}

func (s *Scheduler) place(ctx context.Context, vm *VM) {
	var ok func(*Host) bool
	if s.Lost != nil {
		ok = func(h *Host) bool { return !s.Lost(h.Name) }
	}
	node, err := placeWhere(s.c.Store().ReadTxn(), vm, time.Now().Add(-s.HostTimeout), "", ok)
	if errors.Is(err, ErrNoHosts) || (err != nil && time.Since(vm.CreatedAt) < s.Patience) {
		return // the next host report or VM change wakes us
	}
	cmd := placeVMCmd{ID: vm.ID, Node: node, At: time.Now().UTC()}
	if err != nil {
		cmd.Error, cmd.ErrorSaid = err.Error(), said(err)
	}
	if _, err := s.c.Apply(ctx, MsgPlaceVM, cmd, nil); err != nil && ctx.Err() == nil {
		// A conflict means the state moved under us (another placement
		// filled the node): the watch fires and we try again.
		s.log.Info("placement not committed", "vm", vm.ID, "node", node, "err", err)
	}
}

// ReapDeleted purges VMs deleted on a node that has not reported for
// longer than after: that node cannot tear them down, and the owner should
// not see them linger. When the node comes back, its agent removes what the
// VMs left there (it keeps only what records still name).
func (s *Scheduler) ReapDeleted(ctx context.Context, after time.Duration) error {
	txn := s.c.Store().ReadTxn()
	it, err := txn.Get(tVMs, "id")
	if err != nil {
		return err
	}
	var errs []error
	for o := it.Next(); o != nil; o = it.Next() {
		vm := o.(*VM)
		if vm.Desired != DesiredDeleted || vm.Node == "" {
			continue
		}
		h := consensus.First[Host](txn, tHosts, "id", vm.Node)
		if h != nil && time.Since(h.ReportedAt) < after {
			continue
		}
		s.log.Warn("purging a VM deleted on a node that stopped reporting", "vm", vm.ID, "node", vm.Node)
		_, err := s.c.Apply(ctx, MsgPurgeVM, purgeVMCmd{ID: vm.ID, Node: vm.Node}, nil)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
