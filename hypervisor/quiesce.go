package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/hypervisor/qemu"
)

// FreezeTimeout bounds a guest's freeze: flushing its dirty pages may take
// a while, but a snapshot should not wait long for it (crash-consistent is
// the fallback). ThawTimeout bounds the thaw.
const (
	FreezeTimeout = 10 * time.Second
	ThawTimeout   = 10 * time.Second
)

// quiesced is one VM's guest freeze, shared by the snapshots taken under
// it: the guest is frozen by the first and thawed after the last.
type quiesced struct {
	mu      sync.Mutex // one guest agent call at a time: QEMU serves one client on the channel
	holders int
}

// quiesceState is the freeze state of VM id. Entries stay for the agent's
// life (a few bytes per VM that was ever snapshotted): dropping one while a
// caller waits on it could let two talk to the guest at once.
func (n *NodeAgent) quiesceState(id string) *quiesced {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.quiesce == nil {
		n.quiesce = map[string]*quiesced{}
	}
	q := n.quiesce[id]
	if q == nil {
		q = &quiesced{}
		n.quiesce[id] = q
	}
	return q
}

// QuiesceVM asks the guest of a VM running here to flush and freeze its
// file systems through its guest agent (volume.NodeConfig.Quiesce), within
// FreezeTimeout. thaw undoes it, once the snapshot is taken or abandoned;
// it must be called exactly once (again is a no-op). Snapshots of several
// of the VM's volumes at once share one freeze. An error means the guest
// was not frozen (not running here, no agent, or the agent refused): the
// snapshot is then crash-consistent.
func (n *NodeAgent) QuiesceVM(ctx context.Context, vmID string) (thaw func(), err error) {
	if vmID == "" || strings.ContainsAny(vmID, "/.") {
		return nil, fmt.Errorf("quiesce vm: bad id %q", vmID)
	}
	vm := getVM(n.c.Store().ReadTxn(), vmID)
	if vm == nil || vm.Node != n.cfg.Name {
		return nil, fmt.Errorf("quiesce vm %s: not on this node", vmID)
	}
	if vm.Status.State != StateRunning {
		return nil, fmt.Errorf("quiesce vm %s: it is %s, not running", vmID, vm.Status.State)
	}
	log := n.log.With("vm", vmID)
	q := n.quiesceState(vmID)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.holders == 0 {
		fctx, cancel := context.WithTimeout(ctx, FreezeTimeout)
		frozen, err := n.cfg.Driver.FreezeFS(fctx, vmID)
		cancel()
		if err != nil {
			var refused *qemu.GuestAgentError
			if !errors.Is(err, qemu.ErrNoGuestAgent) && !errors.As(err, &refused) {
				// Cut off mid-freeze: the guest may still freeze once
				// the freeze's turn comes, so it is thawed after it.
				n.thaw(log, vmID)
			}
			log.Info("guest file systems not frozen for a snapshot; it is crash-consistent", "err", err)
			return nil, err
		}
		log.Info("guest file systems frozen for a snapshot", "filesystems", frozen)
	}
	q.holders++
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.holders--
			if q.holders == 0 {
				n.thaw(log, vmID)
			}
		})
	}, nil
}

// thaw thaws a VM's guest within ThawTimeout, whatever the caller's
// context: a guest left frozen stalls every write it makes.
func (n *NodeAgent) thaw(log *slog.Logger, vmID string) {
	ctx, cancel := context.WithTimeout(context.Background(), ThawTimeout)
	defer cancel()
	thawed, err := n.cfg.Driver.ThawFS(ctx, vmID)
	if err != nil {
		log.Warn("thaw guest file systems after a snapshot", "err", err)
		return
	}
	log.Info("guest file systems thawed", "filesystems", thawed)
}
