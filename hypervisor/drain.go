package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
)

// Draining a node (day-2 maintenance, as Proxmox's maintenance mode and
// kubectl drain): the node is cordoned, and the leader's drainer moves its
// VMs away one at a time, each the gentlest way it can go: a running VM
// live, a stopped one as it is. A running VM that cannot move live (or
// whose live migration failed) is stopped, moved and started again only
// with the admin's consent (Restart); otherwise it stays and the drain
// says why. A VM with a local boot disk stays too, unless the admin agreed
// that its disk is converted (Convert): then it is stopped, its disk moves
// onto a replicated volume (filled on the node, as convert-disk does), and
// it is moved and started again where it goes (drain_convert.go
// has the steps). VMs with local data disks, or UEFI settings in a file on the
// node, stay. The drain ends when nothing more can move; it never powers
// the node off. Uncordoning the node ends a drain.

// Drain is the state of a cordoned node being emptied.
type Drain struct {
	// ID names this drain: a step of an earlier one (a stale leader's) is
	// refused.
	ID string `json:"id"`
	// Restart: the admin agreed that a running VM that cannot move live is
	// stopped, moved and started again.
	Restart bool `json:"restart,omitempty"`
	// Convert: the admin agreed that a VM with a local boot disk is
	// stopped, its disk converted onto a volume, and moved and started
	// again (protocol 6: a drain without it is what older nodes know).
	Convert bool   `json:"convert,omitempty"`
	State   string `json:"state"` // draining, done
	// Message says what is left and why, once done (or blocked).
	Message string `json:"message,omitempty"`
	// Stays are the VMs left on the node and why, and Copies the volumes
	// with a copy on it: Message's parts, for pages in another language.
	Stays  []DrainStay `json:"stays,omitempty"`
	Copies []string    `json:"copies,omitempty"`
	// Objects counts the objects (versions and multipart parts) of the
	// object store with a shard on the node, which run on fewer shards
	// while it is away.
	Objects int `json:"objects,omitempty"`
	// Tried holds, per VM, the live migration the drainer started.
	Tried map[string]string `json:"tried,omitempty"`
	// Restarting are VMs the drainer stopped to move, to start once moved.
	Restarting []string `json:"restarting,omitempty"`
	// Unconverted holds, per VM, why its disk could not be converted: it
	// stays, and is not stopped for it again by this drain.
	Unconverted map[string]string `json:"unconverted,omitempty"`
	Moved       int               `json:"moved"`               // VMs moved live or while stopped
	Restarted   int               `json:"restarted"`           // VMs stopped, moved and started again
	Converted   int               `json:"converted,omitempty"` // local disks moved onto volumes
	UpdatedAt   time.Time         `json:"updated_at"`
}

// DrainStay is a VM a drain left on its node: why, by a message key
// (drain.go's stayTexts) and its parameters.
type DrainStay struct {
	VM   string   `json:"vm"`
	Key  string   `json:"key"`
	Args []string `json:"args,omitempty"`
}

// stayTexts are DrainStay's messages in English, after "VM stays: ".
var stayTexts = map[string]string{
	"cannot_move":   "%s",
	"not_reporting": "%s does not report, so it can neither move live nor be stopped",
	"no_live":       "no other node can take it live (%s)",
	"no_target":     "no other node can take it (%s)",
	"no_convert":    "its local disk cannot move onto a volume: %s",
	"not_live":      "%s; drain with restart to stop, move and start it",
	"state":         "it is %s",
}

// StayText is a DrainStay's message in English, with %s for each of its
// parameters.
func StayText(key string) (string, bool) { t, ok := stayTexts[key]; return t, ok }

// StayKeys lists DrainStay's message keys.
func StayKeys() []string {
	keys := make([]string, 0, len(stayTexts))
	for k := range stayTexts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (s DrainStay) text() string {
	args := make([]any, len(s.Args))
	for i, a := range s.Args {
		args[i] = a
	}
	return s.VM + " stays: " + fmt.Sprintf(stayTexts[s.Key], args...)
}

// wait says, while the drain waits, what for; it tells whether that
// changed (to be saved).
func (dr *Drain) wait(what string) bool {
	if dr.Message == what {
		return false
	}
	dr.Message = what
	return true
}

// Drain states.
const (
	DrainDraining = "draining"
	DrainDone     = "done"
)

type drainCmd struct {
	ID      string    `json:"id"`
	Node    string    `json:"node"`
	Restart bool      `json:"restart,omitempty"`
	Convert bool      `json:"convert,omitempty"` // MsgDrainNodeConvert only
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

type drainStepCmd struct {
	Node  string `json:"node"`
	Drain Drain  `json:"drain"`
}

func registerDrains(reg *consensus.Registry) {
	consensus.Handle(reg, MsgDrainNode, "DrainNode", func(tx *consensus.Tx, c *drainCmd) (any, error) {
		c.Convert = false // a consent only MsgDrainNodeConvert carries
		return applyDrainNode(tx, c)
	})
	consensus.Handle(reg, MsgDrainStep, "DrainStep", applyDrainStep)
	// A drain that may convert disks: older nodes would drop its consent
	// (and the step fields that come with it) and so diverge.
	consensus.HandleSince(reg, MsgDrainNodeConvert, "DrainNodeConvert", 6, applyDrainNode)
}

// applyDrainNode cordons a node and starts draining it.
func applyDrainNode(tx *consensus.Tx, c *drainCmd) (any, error) {
	if consensus.First[Host](tx.Txn, tHosts, "id", c.Node) == nil {
		return nil, notFound("node", c.Node)
	}
	row := Cordon{Node: c.Node, Reason: "draining", By: c.By, At: c.At}
	if cur := cordonOf(tx.Txn, c.Node); cur != nil {
		row = *cur
		if row.Drain != nil && row.Drain.State == DrainDraining {
			return nil, consensus.Errorf(consensus.CodeConflict, "node %s is being drained already", c.Node)
		}
	}
	d := &Drain{ID: c.ID, Restart: c.Restart, Convert: c.Convert, State: DrainDraining, UpdatedAt: c.At}
	if row.Drain != nil {
		d.Restarting = row.Drain.Restarting // stopped by the last drain, still to start
	}
	row.Drain = d
	return &row, tx.Insert(tCordons, &row)
}

// applyDrainStep records the drainer's progress on a node still being
// drained (not one uncordoned meanwhile).
func applyDrainStep(tx *consensus.Tx, c *drainStepCmd) (any, error) {
	cur := cordonOf(tx.Txn, c.Node)
	if cur == nil || cur.Drain == nil || cur.Drain.State != DrainDraining || cur.Drain.ID != c.Drain.ID {
		return nil, consensus.Errorf(consensus.CodeConflict, "node %s is not being drained by drain %s", c.Node, c.Drain.ID)
	}
	row := *cur
	d := c.Drain
	d.Restart, d.Convert = cur.Drain.Restart, cur.Drain.Convert // the admin's word, not a step's
	row.Drain = &d
	return &row, tx.Insert(tCordons, &row)
}

// DrainOptions are the admin's consents to a drain.
type DrainOptions struct {
	// Restart: a running VM that cannot move live is stopped, moved and
	// started again.
	Restart bool `json:"restart,omitempty"`
	// Convert: a VM with a local boot disk is stopped (if running), its
	// disk moved onto a volume, and moved and started again.
	Convert bool `json:"convert,omitempty"`
}

// DrainNode cordons a node and moves its VMs away (cluster admin). It is
// refused, changing nothing, when the other nodes could not take them or
// when the node is the last one that runs VMs. quorum, if set, says why
// the cluster would lose its quorum without the node, or nil.
func (s *Service) DrainNode(ctx context.Context, p *identity.Principal, node string, o DrainOptions) (*Cordon, error) {
	const action = "node.drain"
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, node, "", consensus.Errorf(consensus.CodeForbidden, "only cluster admins drain nodes"))
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	if err := drainable(s.c.Store().ReadTxn(), node, time.Now(), s.Lost, o.Convert); err != nil {
		return nil, s.id.Deny(ctx, p, action, node, "", err)
	}
	if s.Quorum != nil {
		if err := s.Quorum(node); err != nil {
			return nil, s.id.Deny(ctx, p, action, node, "", consensus.Errorf(consensus.CodeConflict, "draining %s: %v", node, err))
		}
	}
	msg := MsgDrainNode
	if o.Convert {
		msg = MsgDrainNodeConvert
	}
	var out Cordon
	if err := s.id.Mutate(ctx, p, action, node, "", msg, drainCmd{ID: newID("drain"), Node: node, Restart: o.Restart, Convert: o.Convert, By: p.User.Name, At: time.Now().UTC()}, &out); err != nil {
		if consensus.ErrorReason(err) == consensus.ReasonProtocol {
			return nil, consensus.Errorf(consensus.CodeConflict, "a drain that converts disks waits until every node is upgraded: %v", err)
		}
		return nil, err
	}
	return &out, nil
}

// drainable is the drain's pre-flight: the node is known, some other node
// is up and takes VMs, and the node's VMs fit on the others (placed
// largest first, each where the most RAM is left); with convert, the VMs
// whose disk the drain may convert too. Nodes whose lease is lost (lost,
// if set) take none.
func drainable(txn *memdb.Txn, node string, now time.Time, lost func(node string) bool, convert bool) error {
	if consensus.First[Host](txn, tHosts, "id", node) == nil {
		return notFound("node", node)
	}
	it, err := txn.Get(tHosts, "id")
	if err != nil {
		return err
	}
	st := settings(txn)
	free := map[string]*room{}
	for o := it.Next(); o != nil; o = it.Next() {
		h := o.(*Host)
		if h.Name == node || !HostAlive(*h, now) || h.Error != "" || cordonOf(txn, h.Name) != nil || lost != nil && lost(h.Name) {
			continue
		}
		r, _, err := freeRoom(txn, h, st)
		if err != nil {
			return err
		}
		free[h.Name] = &r
	}
	if len(free) == 0 {
		return consensus.Errorf(consensus.CodeConflict, "%s cannot be drained: no other node is up and takes VMs", node)
	}
	vms := onNode(txn, node)
	sort.Slice(vms, func(i, j int) bool { return vms[i].Spec.RAMMiB > vms[j].Spec.RAMMiB })
	var homeless []string
	for _, vm := range vms {
		if vm.Desired == DesiredDeleted {
			continue
		}
		if movableAtAll(vm) != nil {
			if !convert || convertible(vm) != nil {
				continue // stays anyway
			}
			vm = asConverted(vm)
		}
		best, left := "", math.Inf(-1)
		for name, r := range free {
			if r.vcpus >= float64(vm.Spec.VCPUs) && r.ramMiB >= float64(vm.Spec.RAMMiB) && r.ramMiB > left && fits(txn, name, vm) == nil {
				best, left = name, r.ramMiB
			}
		}
		if best == "" {
			homeless = append(homeless, vm.Name)
			continue
		}
		free[best].vcpus -= float64(vm.Spec.VCPUs)
		free[best].ramMiB -= float64(vm.Spec.RAMMiB)
	}
	if len(homeless) > 0 {
		return consensus.Errorf(consensus.CodeConflict, "%s cannot be drained: the other nodes have no room for %s", node, strings.Join(homeless, ", "))
	}
	return nil
}

// freeRoom is free with nothing ignored.
func freeRoom(txn *memdb.Txn, h *Host, s Settings) (room, []string, error) {
	return free(txn, h, s, "")
}

// errLocalDisk is why a VM with a local boot disk stays on a node drained
// without consent to convert disks.
var errLocalDisk = errors.New("it has local disks (drain with consent to convert disks, or convert its disk first)")

// errDataDisks is why a VM with local data disks stays on a drained node.
var errDataDisks = errors.New("it has local data disks, which cannot leave its node")

// movableAtAll says why a VM cannot leave its node in any way, or nil.
func movableAtAll(vm *VM) error {
	switch {
	case len(vm.Spec.DataDisks) > 0:
		return errDataDisks
	case vm.Spec.BootVolume == "":
		return fmt.Errorf("it has local disks (convert its disk first)")
	case vm.UEFIOnNode():
		return fmt.Errorf("it boots with UEFI, whose settings stay on its node (stop it and convert its disk first)")
	}
	return nil
}

func onNode(txn *memdb.Txn, node string) []*VM {
	it, err := txn.Get(tVMs, "node", node)
	if err != nil {
		return nil
	}
	var out []*VM
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, o.(*VM))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Drainer is the leader's controller that drains nodes.
type Drainer struct {
	c   Cluster
	log *slog.Logger
	// Lost, if set, says whether a node's VM lease is lost (ha.go): no
	// VM is moved there.
	Lost func(node string) bool
	// Disks, if set, converts local disks for drains that may
	// (drain_convert.go); without it such VMs stay.
	Disks DiskConverter
	tries map[string]int // per VM, conversions tried that failed uncertainly
}

// NewDrainer returns the drainer; Run drains until ctx ends.
func NewDrainer(c Cluster, log *slog.Logger) *Drainer { return &Drainer{c: c, log: log} }

// Run works on every node being drained, at each change of the VMs or
// cordons and every few seconds.
func (d *Drainer) Run(ctx context.Context) {
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := d.c.Store().ReadTxn()
		cordons, err := txn.Get(tCordons, "id")
		if err != nil {
			return
		}
		ws.Add(cordons.WatchCh())
		if vms, err := txn.Get(tVMs, "id"); err == nil {
			ws.Add(vms.WatchCh())
		}
		for o := cordons.Next(); o != nil; o = cordons.Next() {
			if c := o.(*Cordon); c.Drain != nil && c.Drain.State == DrainDraining {
				d.step(ctx, txn, c)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_ = d.c.Store().Watch(wctx, ws)
		cancel()
	}
}

// step moves the drain of one node on: at most one VM on its way at a
// time.
func (d *Drainer) step(ctx context.Context, txn *memdb.Txn, c *Cordon) {
	dr := *c.Drain
	dr.Tried = copyMap(dr.Tried)
	if dr.Unconverted != nil {
		dr.Unconverted = copyMap(dr.Unconverted)
	}
	dr.Restarting = append([]string(nil), dr.Restarting...)
	now := time.Now().UTC()
	user := "drain by " + c.By
	save := func() {
		dr.UpdatedAt = now
		if _, err := d.c.Apply(ctx, MsgDrainStep, drainStepCmd{Node: c.Node, Drain: dr}, nil); err != nil && ctx.Err() == nil {
			d.log.Warn("record a drain's progress", "node", c.Node, "err", err)
		}
	}
	alive := false
	if h := consensus.First[Host](txn, tHosts, "id", c.Node); h != nil {
		alive = HostAlive(*h, now)
	}
	// VMs moved while stopped for the drain are started where they went.
	for i := 0; i < len(dr.Restarting); i++ {
		vm := getVM(txn, dr.Restarting[i])
		if vm == nil || vm.Node != c.Node && vm.Desired == DesiredStopped {
			if vm != nil {
				cmd := setDesiredCmd{ID: vm.ID, Op: OpStart, Desired: DesiredRunning, User: user, At: now}
				if _, err := d.c.Apply(ctx, MsgSetDesired, cmd, nil); err != nil {
					d.log.Warn("start a drained VM again", "vm", vm.Name, "err", err)
					return
				}
				dr.Restarted++
			}
			dr.Restarting = append(dr.Restarting[:i], dr.Restarting[i+1:]...)
			save()
			return
		}
	}
	var blocked []DrainStay
	stay := func(vm *VM, key string, args ...any) {
		st := DrainStay{VM: vm.Name, Key: key}
		for _, a := range args {
			st.Args = append(st.Args, fmt.Sprint(a))
		}
		blocked = append(blocked, st)
	}
	for _, vm := range onNode(txn, c.Node) {
		if vm.Migration != nil || vm.Status.State == StateStopping {
			return // one at a time: wait for it
		}
		if vm.Desired == DesiredDeleted {
			continue
		}
		if err := movableAtAll(vm); err != nil {
			switch {
			case convertible(vm) != nil:
				stay(vm, "cannot_move", err)
			case !dr.Convert:
				stay(vm, "cannot_move", errLocalDisk)
			case d.convertStep(ctx, txn, c.Node, &dr, vm, alive, user, now, save, stay):
				return
			}
			continue
		}
		restarting := contains(dr.Restarting, vm.ID)
		running := vm.Desired == DesiredRunning && vm.Status.State == StateRunning
		stopped := vm.Desired == DesiredStopped && vm.Status.State == StateStopped
		_, tried := dr.Tried[vm.ID]
		// Between states (its owner just stopped or started it), or a
		// volume of it busy (a snapshot, a detach): in a moment it may
		// go the gentle way, so the drain waits rather than restart it
		// or give up on it.
		passing := alive && !restarting && vm.Desired != vm.Status.State && vm.Status.State != StateError
		switch {
		case passing || alive && (running || stopped) && volumesBusy(txn, vm):
			return
		case !alive && (running || restarting):
			stay(vm, "not_reporting", c.Node)
		case restarting && vm.Desired == DesiredRunning:
			// Recorded to restart, not stopped yet (the stop did not go
			// through, or another leader recorded it): stop it now.
			cmd := setDesiredCmd{ID: vm.ID, Op: OpStop, Desired: DesiredStopped, StopMode: StopACPI, User: user, At: now, IfMatch: vm.Version}
			if _, err := d.c.Apply(ctx, MsgSetDesired, cmd, nil); err != nil {
				d.log.Warn("drain: stop a VM to move it", "vm", vm.Name, "err", err)
			}
			return
		case running && !tried && liveMovable(txn, vm) == nil:
			target, err := placeLive(txn, vm, now.Add(-hostTimeout), d.Lost)
			if err != nil && dr.Restart {
				dr.Tried[vm.ID] = "" // it cannot move live: restarted instead
				save()
				return
			}
			if err != nil {
				stay(vm, "no_live", err)
				continue
			}
			id := newID("mig")
			if _, err := d.c.Apply(ctx, MsgStartMigration, startMigrationCmd{VM: vm.ID, ID: id, Target: target, User: user, At: now}, nil); err != nil {
				d.log.Warn("drain: start a live migration", "vm", vm.Name, "err", err)
				return
			}
			dr.Tried[vm.ID] = id
			dr.Moved++
			save()
			return
		case stopped && filling(txn, vm):
			// Converted (drain_convert.go): it moves once its volume holds
			// the disk, which only its node can copy.
			switch {
			case alive:
				if dr.wait(fmt.Sprintf("%s waits until its volume is filled on %s", vm.Name, c.Node)) {
					save()
				}
				return
			case restarting:
				if dr.wait(vm.Name + " waits for " + c.Node + " to report again") {
					save()
				}
				return
			}
			stay(vm, "cannot_move", movable(txn, vm))
		case stopped && movable(txn, vm) == nil:
			target, err := placeAvoiding(txn, vm, now.Add(-hostTimeout), c.Node, d.Lost)
			if err != nil {
				stay(vm, "no_target", err)
				if restarting {
					// Stopped to move and cannot: started again here.
					if d.startAgain(ctx, vm, user, now) {
						dr.Restarting = remove(dr.Restarting, vm.ID)
						save()
					}
					return
				}
				continue
			}
			if _, err := d.c.Apply(ctx, MsgMoveVM, moveVMCmd{ID: vm.ID, Node: target, User: user, At: now}, nil); err != nil {
				d.log.Warn("drain: move a stopped VM", "vm", vm.Name, "err", err)
				return
			}
			if !restarting {
				dr.Moved++
			}
			dr.Message = "" // what it waited for
			save()
			return
		case running && dr.Restart:
			// It could not move live: stopped, moved, started again, if
			// some node would take it stopped; recorded before the stop,
			// so that no leader forgets to start it again.
			as := *vm
			as.Desired, as.Status.State = DesiredStopped, StateStopped
			if _, err := placeAvoiding(txn, &as, now.Add(-hostTimeout), c.Node, d.Lost); err != nil {
				stay(vm, "no_target", err)
				continue
			}
			if tried && dr.Tried[vm.ID] != "" {
				dr.Moved-- // counted when its live migration began, which failed
			}
			dr.Restarting = append(dr.Restarting, vm.ID)
			save()
			return
		case running:
			why := "it cannot move live"
			if err := liveMovable(txn, vm); err != nil {
				why = err.Error()
			} else if tried {
				why = "its live migration did not complete"
			}
			stay(vm, "not_live", why)
		case restarting || vm.Status.State == StateBuilding:
			return // on its way down or up
		default:
			stay(vm, "state", vm.Status.State)
		}
	}
	dr.State = DrainDone
	var lines []string
	for _, b := range blocked {
		lines = append(lines, b.text())
	}
	dr.Message, dr.Stays = strings.Join(lines, "; "), blocked
	if vols := copiesOn(txn, c.Node); len(vols) > 0 {
		dr.Copies = vols
		if dr.Message != "" {
			dr.Message += ". "
		}
		dr.Message += fmt.Sprintf("Volumes with a copy on %s, which run on fewer copies while it is away: %s", c.Node, strings.Join(vols, ", "))
	}
	if dr.Objects = storage.ObjectsOn(txn, c.Node); dr.Objects > 0 {
		if dr.Message != "" {
			dr.Message += ". "
		}
		dr.Message += fmt.Sprintf("Objects with shards on %s, which run on fewer shards while it is away: %d", c.Node, dr.Objects)
	}
	save()
}

// volumesBusy says whether a volume of the VM has a snapshot or a detach
// in progress.
func volumesBusy(txn *memdb.Txn, vm *VM) bool {
	for _, v := range volume.AttachedToVM(txn, vm.ID) {
		if v.Snapshotting != "" || v.Attachment.Detaching {
			return true
		}
	}
	return false
}

// copiesOn names the volumes with a replica on node.
func copiesOn(txn *memdb.Txn, node string) []string {
	var out []string
	for _, v := range volume.All(txn) {
		for _, r := range v.Replicas {
			if r.Node == node {
				out = append(out, v.Name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// startAgain starts a VM the drain stopped and could not move.
func (d *Drainer) startAgain(ctx context.Context, vm *VM, user string, now time.Time) bool {
	cmd := setDesiredCmd{ID: vm.ID, Op: OpStart, Desired: DesiredRunning, User: user, At: now}
	if _, err := d.c.Apply(ctx, MsgSetDesired, cmd, nil); err != nil {
		d.log.Warn("start again a VM the drain could not move", "vm", vm.Name, "err", err)
		return false
	}
	return true
}

func remove(s []string, x string) []string {
	var out []string
	for _, v := range s {
		if v != x {
			out = append(out, v)
		}
	}
	return out
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
