package hypervisor

import (
	"context"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/hashicorp/go-memdb"
)

// Migration of a stopped VM (a cold migration, as Nova calls it): only its
// placement moves. Its disks are block volumes, which any node serves, so
// nothing is copied: the volumes' attachments and the VM's ports follow it
// to the new node in the same command, the old node's worker finds the VM
// gone from it and removes what it kept there (its run directory, taps),
// and the VM starts on the new node when its owner starts it. The volumes'
// epochs keep the old node from writing once the new one opens them.
//
// A VM with local disks cannot move this way (its disks stay on its node),
// nor can a UEFI VM whose firmware variables are in a file on its node
// rather than on a volume (uefi_vars.go). A running VM moves live
// (live.go).

type moveVMCmd struct {
	ID      string    `json:"id"`
	Node    string    `json:"node"`
	IfMatch uint64    `json:"if_match,omitempty"`
	User    string    `json:"user"`
	At      time.Time `json:"at"`
}

func applyMoveVM(tx *consensus.Tx, c *moveVMCmd) (any, error) {
	cur, err := changeable(tx, c.ID, c.IfMatch)
	if err != nil {
		return nil, err
	}
	if err := movable(tx.Txn, cur); err != nil {
		return nil, err
	}
	if err := canTake(tx.Txn, c.Node, cur, c.At); err != nil {
		return nil, err
	}
	from := cur.Node
	vm := *cur
	vm.Node = c.Node
	vm.Status.Accel = "" // the new node's, once it runs there
	vm.Version = tx.Index
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	if err := volume.FollowVM(tx, vm.ID, vm.Node); err != nil {
		return nil, err
	}
	if err := netfabric.BindPorts(tx, vm.ID, vm.Node); err != nil {
		return nil, err
	}
	return &vm, addEvent(tx, vm.ID, "migrate", evm("moved_stopped", from, c.Node), c.User, c.Node, c.At)
}

// movable says why a VM cannot change nodes while stopped, or nil. Its
// volumes must be whole and settled: one still being filled from its old
// node's local disk (convert-disk) would lose that disk with the move, and
// a snapshot or a detach in progress is its old node's to finish.
func movable(txn *memdb.Txn, vm *VM) error {
	var state error
	if vm.Desired != DesiredStopped || vm.Status.State != StateStopped {
		state = consensus.Errorf(consensus.CodeConflict, "VM %s is %s: only a stopped VM moves as it is (a running one moves live)", vm.Name, vm.Status.State)
	}
	return canLeave(txn, vm, state)
}

// canLeave says why a VM cannot leave its node either way, or nil; state
// is why it is in no state to (checked after its volumes and placement).
func canLeave(txn *memdb.Txn, vm *VM, state error) error {
	for _, v := range volume.AttachedToVM(txn, vm.ID) {
		switch {
		case v.Unfilled():
			return consensus.Errorf(consensus.CodeConflict, "VM %s's volume %s is still being filled on %s: move it once that is done", vm.Name, v.Name, vm.Node)
		case v.Snapshotting != "" || v.Attachment.Detaching:
			return consensus.Errorf(consensus.CodeConflict, "VM %s's volume %s has a snapshot or a detach in progress on %s: try again in a moment", vm.Name, v.Name, vm.Node)
		}
	}
	switch {
	case vm.Node == "":
		return consensus.Errorf(consensus.CodeConflict, "VM %s is not placed yet", vm.Name)
	case state != nil:
		return state
	case vm.Spec.BootVolume == "" || len(vm.Spec.DataDisks) > 0:
		return consensus.Errorf(consensus.CodeConflict, "VM %s has local disks on %s: only a VM whose disks are all volumes can move; stop it and convert its disk (cairn vm convert-disk) first", vm.Name, vm.Node)
	case varsOnNode(vm):
		return consensus.Errorf(consensus.CodeConflict, "VM %s boots with UEFI, whose settings are kept in a file on %s: stop it and move them onto a volume (cairn vm convert-disk) first", vm.Name, vm.Node)
	case vm.Spec.VarsFrom != "":
		return consensus.Errorf(consensus.CodeConflict, "VM %s's UEFI settings are still to move from a file on %s onto their volume: start it there once first", vm.Name, vm.Spec.VarsFrom)
	}
	return nil
}

// Migrate moves a VM to another node (cluster admin): to node, or where
// the scheduler would place it if node is "". A running VM moves live
// (live.go), a stopped one as it is. postCopy lets a live migration go
// post-copy after its first pass over the guest's memory.
func (s *Service) Migrate(ctx context.Context, p *identity.Principal, ref, node string, postCopy bool, ifMatch uint64) (*VM, error) {
	const action = "vm.migrate"
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only cluster admins move VMs between nodes"))
	}
	if err := checkVersion("VM", vm.Name, vm.Version, ifMatch); err != nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, err)
	}
	// Judged on the cluster's latest state, not this node's copy: an
	// admin who saw the VM stopped through another node moves it stopped.
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	txn := s.c.Store().ReadTxn()
	cur := getVM(txn, vm.ID)
	if cur == nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, notFound("VM", vm.Name))
	}
	if node != "" && s.Lost != nil && s.Lost(node) {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeConflict, "node %s has lost contact with the cluster: it takes no VMs until it is back", node))
	}
	if cur.Desired != DesiredStopped {
		return s.migrateLive(ctx, p, cur, node, postCopy, ifMatch)
	}
	if postCopy {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeInvalid, "VM %s is stopped: it moves as it is, with no memory to copy; post-copy is for a running VM", vm.Name))
	}
	if err := movable(txn, cur); err != nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, err)
	}
	if node == "" {
		if node, err = placeAvoiding(txn, cur, time.Now().Add(-hostTimeout), vm.Node, s.Lost); err != nil {
			return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeConflict, "no other node can take VM %s: %v", vm.Name, err))
		}
	}
	var out VM
	err = s.id.Mutate(ctx, p, action, vm.Name, vm.ProjectID, MsgMoveVM, moveVMCmd{ID: vm.ID, Node: node, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}, &out)
	if err != nil {
		return nil, err
	}
	return viewVM(s.c.Store().ReadTxn(), p, &out), nil
}
