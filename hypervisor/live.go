package hypervisor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/leafca"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage/volume"
)

// Live migration of a running VM moves its memory and device state to
// another node while it runs; its disks are block volumes, which both
// nodes reach, so nothing else is copied. The two nodes' workers follow
// one record in the replicated state (VM.Migration), each moving it one
// phase on:
//
//	planning      the source reads what its QEMU runs (vCPUs, memory,
//	              which hot-plug port each volume is on)
//	preparing     the target starts a QEMU waiting for the stream, its
//	              volumes on standby sockets (no writer yet), its taps
//	transferring  the target listens; the source streams RAM over TLS
//	switched      the source's guest is paused before the switchover,
//	              every write of it flushed, and the target has said it
//	              is ready: the source hands the VM over, its node, its
//	              volumes' writer epoch (which fences the source on every
//	              replica) and its ports, in one command; the source sends
//	              the rest and the guest runs on the target
//
// Older agents switched over in two steps: the source committed
// "switching" with its guest paused, and the target "switched" when it saw
// that, two commits and two wake-ups inside the guest's pause. The log
// may hold such migrations, so the state machine still takes both steps,
// and a target still switches a migration it finds in "switching".
//
// Until switched, ending the migration (a cancel, a failure on either
// side, a timeout) leaves the guest running on the source: its QEMU
// resumes. From switched on only the target ends the record: the guest
// runs there, from the stream or, if the stream broke after the switch,
// booted afresh from its volumes. The source cannot write from then on:
// before it sends the rest, its volume server has closed the volumes
// (so a guest QEMU resumed after a broken stream reaches no disk) and its
// taps are gone; and the target's writer fences every replica at the new
// epoch before the guest's first request there goes through.
// The source asks the target over the cluster port, its guest paused,
// whether it is ready to take the VM (its agent there, its QEMU receiving
// this migration, the node not fenced) and commits the switch only on a
// yes, so a target whose agent died never gets a VM it cannot serve. A
// yes counts as word from the source (the target's silence timeout starts
// again). If the target still gives the migration up in the moment
// between its yes and the switch (its QEMU exited, its agent restarted)
// and the switch commits first, its end is taken as after any switch: the
// VM boots afresh on the target from its volumes.
//
// The stream runs over TLS with certificates from a migration CA kept in
// the replicated state, issued per migration: the target's QEMU admits
// only the source's certificate for this migration (tls-authz), the
// source checks the target's names this migration. Node certificates are
// not handed to QEMU: a QEMU is confined as a possibly hostile process,
// and a node's key opens the cluster port.

// Migration phases.
const (
	PhasePlanning     = "planning"
	PhasePreparing    = "preparing"
	PhaseTransferring = "transferring"
	PhaseSwitching    = "switching"
	PhaseSwitched     = "switched"
)

var phaseOrder = map[string]int{PhasePlanning: 1, PhasePreparing: 2, PhaseTransferring: 3, PhaseSwitching: 4, PhaseSwitched: 5}

// Migration is a live migration under way.
type Migration struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Target string `json:"target"`
	Phase  string `json:"phase"`
	// What the source's QEMU runs (planning), for the target's to match.
	VCPUs    int64             `json:"vcpus,omitempty"`
	MaxVCPUs int64             `json:"max_vcpus,omitempty"`
	RAMMiB   int64             `json:"ram_mib,omitempty"`
	Ports    map[string]string `json:"ports,omitempty"` // hot-plug port by disk ID
	Addr     string            `json:"addr,omitempty"`  // where the target's QEMU listens
	// PostCopy: the admin let the migration go post-copy after the first
	// pass over the guest's memory (MsgStartPostCopyMigration).
	PostCopy  bool              `json:"post_copy,omitempty"`
	Progress  MigrationProgress `json:"progress"`
	User      string            `json:"user,omitempty"`
	StartedAt time.Time         `json:"started_at"`
}

// MigrationProgress is what the source's QEMU last reported.
type MigrationProgress struct {
	RAMTotal       int64   `json:"ram_total"`       // bytes
	RAMTransferred int64   `json:"ram_transferred"` // bytes
	RAMRemaining   int64   `json:"ram_remaining"`   // bytes
	DirtyRate      int64   `json:"dirty_rate"`      // bytes/s
	Mbps           float64 `json:"mbps"`
	Iterations     int64   `json:"iterations"`
	// ExpectedDowntimeMS is QEMU's estimate of the pause; DowntimeLimitMS
	// the limit in force (raised step by step while it stalls).
	ExpectedDowntimeMS int64 `json:"expected_downtime_ms"`
	DowntimeLimitMS    int64 `json:"downtime_limit_ms"`
	Stalls             int   `json:"stalls,omitempty"`
	ThrottlePercent    int64 `json:"throttle_percent,omitempty"` // auto-converge's slowing of the guest
	// PostCopyAt is when the source switched the stream to post-copy
	// (zero: it did not, it ended in pre-copy).
	PostCopyAt time.Time `json:"post_copy_at,omitzero"`
	// DowntimeMS and TotalMS are QEMU's figures once the stream is done.
	DowntimeMS int64     `json:"downtime_ms,omitempty"`
	TotalMS    int64     `json:"total_ms,omitempty"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
}

// migrationHost is the name the target's certificate carries and the
// source checks; migrationClient the subject the target admits.
func migrationHost(id string) string   { return id + ".migration.cairn" }
func migrationClient(id string) string { return "cairn-migration-source-" + id }

// migratingIndex indexes VMs moving live by both nodes involved.
type migratingIndex struct{}

func (migratingIndex) FromObject(o any) (bool, [][]byte, error) {
	m := o.(*VM).Migration
	if m == nil {
		return false, nil, nil
	}
	return true, [][]byte{[]byte(m.Source + "\x00"), []byte(m.Target + "\x00")}, nil
}

func (migratingIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("migrating index: want one node name")
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("migrating index: want a string")
	}
	return []byte(s + "\x00"), nil
}

// startMigrationCmd starts a live migration (MsgStartMigration), or one
// that may go post-copy (MsgStartPostCopyMigration, the same command).
type startMigrationCmd struct {
	VM      string    `json:"vm"`
	ID      string    `json:"id"`
	Target  string    `json:"target"`
	IfMatch uint64    `json:"if_match,omitempty"`
	User    string    `json:"user"`
	At      time.Time `json:"at"`
}

// migrationCmd moves a migration on a phase; Node is the node that sends it.
type migrationCmd struct {
	VM    string `json:"vm"`
	ID    string `json:"id"`
	Node  string `json:"node"`
	Phase string `json:"phase"` // the phase it moves to
	// planning → preparing
	VCPUs    int64             `json:"vcpus,omitempty"`
	MaxVCPUs int64             `json:"max_vcpus,omitempty"`
	RAMMiB   int64             `json:"ram_mib,omitempty"`
	Ports    map[string]string `json:"ports,omitempty"`
	// preparing → transferring
	Addr     string             `json:"addr,omitempty"`
	Progress *MigrationProgress `json:"progress,omitempty"` // with or without a phase change
	At       time.Time          `json:"at"`
}

// endMigrationCmd ends a migration: with Error, it failed or was
// cancelled (only before the switch); without, the target has the VM.
type endMigrationCmd struct {
	VM    string    `json:"vm"`
	ID    string    `json:"id"` // "": whichever runs (a cancel)
	Node  string    `json:"node,omitempty"`
	User  string    `json:"user,omitempty"`
	Error string    `json:"error,omitempty"`
	At    time.Time `json:"at"`
	// ErrorSaid is Error as made from its format, for pages in another
	// language; none from older nodes.
	ErrorSaid *consensus.Error `json:"error_said,omitempty"`
}

// reason is why the migration ended, made from its format when the
// command says so (and says the same), else its text.
func (c *endMigrationCmd) reason() any {
	if c.ErrorSaid != nil && c.ErrorSaid.Message == c.Error {
		return c.ErrorSaid
	}
	return c.Error
}

func registerMigrations(reg *consensus.Registry) {
	consensus.Handle(reg, MsgStartMigration, "StartLiveMigration", applyStartMigration)
	consensus.Handle(reg, MsgMigrationStep, "LiveMigrationStep", applyMigrationStep)
	consensus.Handle(reg, MsgEndMigration, "EndLiveMigration", applyEndMigration)
	consensus.HandleSince(reg, MsgSwitchMigration, "SwitchLiveMigration", 2, applySwitchMigration)
	consensus.HandleSince(reg, MsgStartPostCopyMigration, "StartPostCopyLiveMigration", 3, func(tx *consensus.Tx, c *startMigrationCmd) (any, error) {
		return startMigration(tx, c, true)
	})
	consensus.RegisterTable[migrationCA](reg, &memdb.TableSchema{Name: tMigrationCA, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: consensus.Singleton{}},
	}})
	consensus.Handle(reg, MsgMigrationCA, "SetMigrationCA", applyMigrationCA)
}

func applyStartMigration(tx *consensus.Tx, c *startMigrationCmd) (any, error) {
	return startMigration(tx, c, false)
}

// startMigration starts a live migration; postCopy lets it go post-copy
// (a command of its own: an option of the old command would be lost on
// nodes that do not know it, and their state would differ).
func startMigration(tx *consensus.Tx, c *startMigrationCmd, postCopy bool) (any, error) {
	cur, err := changeable(tx, c.VM, c.IfMatch)
	if err != nil {
		return nil, err
	}
	if err := liveMovable(tx.Txn, cur); err != nil {
		return nil, err
	}
	if err := canTake(tx.Txn, c.Target, cur, c.At); err != nil {
		return nil, err
	}
	if err := alike(tx.Txn, cur, c.Target); err != nil {
		return nil, err
	}
	vm := *cur
	vm.Migration = &Migration{ID: c.ID, Source: cur.Node, Target: c.Target, Phase: PhasePlanning, PostCopy: postCopy, User: c.User, StartedAt: c.At}
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	if err := volume.MigrateIn(tx, vm.ID, c.Target); err != nil {
		return nil, err
	}
	m := evm("migration_started", cur.Node, c.Target)
	if postCopy {
		m = evm("migration_postcopy", cur.Node, c.Target)
	}
	return &vm, addEvent(tx, vm.ID, "migrate", m, c.User, cur.Node, c.At)
}

// Arriving returns the VMs moving live to node from another node (node
// carries their networks before their ports are bound to it:
// netfabric.Segments), and adds to ws a watch that fires when one starts or
// stops moving there, and also on every change to such a VM's record (its
// migration's progress, every second): a watcher compares what it gets.
func Arriving(txn *memdb.Txn, node string, ws memdb.WatchSet) []string {
	it, err := txn.Get(tVMs, "migrating", node)
	if err != nil {
		return nil
	}
	ws.Add(it.WatchCh())
	var out []string
	for o := it.Next(); o != nil; o = it.Next() {
		if vm := o.(*VM); vm.Node != node && vm.Migration != nil && vm.Migration.Target == node {
			out = append(out, vm.ID)
		}
	}
	return out
}

// alike says why a running VM cannot move live to node (its host differs
// from the VM's in what the guest or the stream depends on), or nil.
func alike(txn *memdb.Txn, vm *VM, node string) error {
	to := consensus.First[Host](txn, tHosts, "id", node)
	from := consensus.First[Host](txn, tHosts, "id", vm.Node)
	if to == nil || from == nil {
		return nil // canTake says so
	}
	switch {
	case vm.Status.Accel != "" && to.Accel != vm.Status.Accel:
		return consensus.Errorf(consensus.CodeConflict, "VM %s runs with %s and node %s with %s: a running VM moves only between nodes alike", vm.Name, vm.Status.Accel, node, to.Accel)
	case from.Version != "" && to.Version != "" && from.Version != to.Version:
		return consensus.Errorf(consensus.CodeConflict, "node %s runs QEMU %s and %s QEMU %s: a running VM moves only between nodes with the same QEMU", vm.Node, from.Version, node, to.Version)
	case vm.Status.Accel == "kvm" && from.CPUModel != "" && to.CPUModel != "" && from.CPUModel != to.CPUModel:
		return consensus.Errorf(consensus.CodeConflict, "node %s has a %s and %s a %s: under KVM a running VM moves only between nodes with the same CPU", vm.Node, from.CPUModel, node, to.CPUModel)
	}
	return nil
}

// canTake says why node cannot take vm (moving from its node), or nil.
// Judged by the command's own time, so every replica decides alike.
func canTake(txn *memdb.Txn, node string, vm *VM, at time.Time) error {
	if node == vm.Node {
		return consensus.Errorf(consensus.CodeInvalid, "VM %s is on %s already", vm.Name, node)
	}
	h := consensus.First[Host](txn, tHosts, "id", node)
	if h == nil {
		return notFound("node", node)
	}
	if h.ReportedAt.Before(at.Add(-hostTimeout)) {
		return consensus.Errorf(consensus.CodeConflict, "node %s has not reported since %s: it may be down", node, h.ReportedAt.UTC().Format(time.RFC3339))
	}
	if cordonOf(txn, node) != nil {
		return consensus.Errorf(consensus.CodeConflict, "node %s is cordoned: it takes no new VMs", node)
	}
	return fits(txn, node, vm)
}

// liveMovable says why a running VM cannot move live, or nil.
func liveMovable(txn *memdb.Txn, vm *VM) error {
	var state error
	if vm.Desired != DesiredRunning || vm.Status.State != StateRunning {
		state = consensus.Errorf(consensus.CodeConflict, "VM %s is %s: only a running VM moves live (a stopped one moves as it is)", vm.Name, vm.Status.State)
	}
	if err := canLeave(txn, vm, state); err != nil {
		return err
	}
	if vm.Status.Pending != "" {
		return consensus.Errorf(consensus.CodeConflict, "VM %s has a change waiting for its next start (%s): stop and start it, then move it", vm.Name, vm.Status.Pending)
	}
	return nil
}

// migrating returns the VM's migration if id is the one under way.
func migrating(tx *consensus.Tx, vmID, id string) (*VM, error) {
	cur := getVM(tx.Txn, vmID)
	if cur == nil {
		return nil, notFound("VM", vmID)
	}
	if cur.Migration == nil || (id != "" && cur.Migration.ID != id) {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s has no live migration %s under way", cur.Name, id)
	}
	return cur, nil
}

// applyMigrationStep moves a migration on by one phase, from the node
// whose turn it is, or records the source's progress.
func applyMigrationStep(tx *consensus.Tx, c *migrationCmd) (any, error) {
	cur, err := migrating(tx, c.VM, c.ID)
	if err != nil {
		return nil, err
	}
	m := *cur.Migration
	from := m.Phase
	if c.Progress != nil && c.Node == m.Source {
		m.Progress = *c.Progress
	}
	vm := *cur
	vm.Migration = &m
	if c.Phase != "" {
		// (The one-step switch is its own command, MsgSwitchMigration:
		// a command whose meaning changes would split a cluster whose
		// nodes run different versions.)
		type turn struct{ from, to, node string }
		turns := []turn{
			{PhasePlanning, PhasePreparing, m.Source},
			{PhasePreparing, PhaseTransferring, m.Target},
			{PhaseTransferring, PhaseSwitching, m.Source},
			{PhaseSwitching, PhaseSwitched, m.Target},
		}
		if !slices.Contains(turns, turn{from, c.Phase, c.Node}) {
			return nil, consensus.Errorf(consensus.CodeConflict, "VM %s's migration is %s: %s cannot move it to %s", cur.Name, from, c.Node, c.Phase)
		}
		m.Phase = c.Phase
		switch c.Phase {
		case PhasePreparing:
			m.VCPUs, m.MaxVCPUs, m.RAMMiB, m.Ports = c.VCPUs, c.MaxVCPUs, c.RAMMiB, c.Ports
		case PhaseTransferring:
			m.Addr = c.Addr
		case PhaseSwitched:
			if err := switchOver(tx, &vm, c.At); err != nil {
				return nil, err
			}
		}
	}
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, nil
}

// switchOver gives the VM to its migration's target: its node, its
// volumes' attachment and writer at a new epoch, its ports.
func switchOver(tx *consensus.Tx, vm *VM, at time.Time) error {
	m := vm.Migration
	m.Phase = PhaseSwitched
	vm.Node = m.Target
	if err := volume.HandOver(tx, vm.ID, m.Target); err != nil {
		return err
	}
	if err := netfabric.BindPorts(tx, vm.ID, m.Target); err != nil {
		return err
	}
	return addEvent(tx, vm.ID, "migrate", evm("switched_over", m.Source, m.Target), "", m.Target, at)
}

// applySwitchMigration is the one-step switchover (protocol 2): the
// source, its guest paused and the target's yes in hand, hands the VM
// over from transferring, with its last progress report.
func applySwitchMigration(tx *consensus.Tx, c *migrationCmd) (any, error) {
	cur, err := migrating(tx, c.VM, c.ID)
	if err != nil {
		return nil, err
	}
	m := *cur.Migration
	if m.Phase != PhaseTransferring || c.Node != m.Source {
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s's migration is %s: %s cannot switch it over", cur.Name, m.Phase, c.Node)
	}
	if c.Progress != nil {
		m.Progress = *c.Progress
	}
	vm := *cur
	vm.Migration = &m
	if err := switchOver(tx, &vm, c.At); err != nil {
		return nil, err
	}
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	return &vm, nil
}

// applyEndMigration ends a migration. Before the switch anyone involved
// may end it with an error (the source runs on); after it, only the
// target, which has the VM.
func applyEndMigration(tx *consensus.Tx, c *endMigrationCmd) (any, error) {
	cur, err := migrating(tx, c.VM, c.ID)
	if err != nil {
		return nil, err
	}
	m := cur.Migration
	switched := m.Phase == PhaseSwitched
	switch {
	case switched && c.Node != m.Target:
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s has switched over to %s already: the migration can no longer be cancelled", cur.Name, m.Target)
	case !switched && c.Error == "":
		return nil, consensus.Errorf(consensus.CodeConflict, "VM %s's migration is %s: it cannot end well before the switchover", cur.Name, m.Phase)
	}
	vm := *cur
	vm.Migration = nil
	if err := tx.Insert(tVMs, &vm); err != nil {
		return nil, err
	}
	if !switched {
		if err := volume.MigrateIn(tx, vm.ID, ""); err != nil {
			return nil, err
		}
	}
	var msg eventMsg
	switch p := m.Progress; {
	case switched && c.Error == "":
		took := c.At.Sub(m.StartedAt).Round(100 * time.Millisecond)
		pc := p.PostCopyAt.Sub(m.StartedAt).Round(100 * time.Millisecond)
		switch {
		case p.DowntimeMS > 0 && !p.PostCopyAt.IsZero():
			msg = evm("moved_live_all", m.Source, m.Target, took, p.RAMTransferred>>20, p.DowntimeMS, pc)
		case p.DowntimeMS > 0:
			msg = evm("moved_live_paused", m.Source, m.Target, took, p.RAMTransferred>>20, p.DowntimeMS)
		case !p.PostCopyAt.IsZero():
			msg = evm("moved_live_pc", m.Source, m.Target, took, pc)
		default:
			msg = evm("moved_live", m.Source, m.Target, took)
		}
	case switched:
		msg = evm("moved_error", m.Source, m.Target, c.reason())
	case c.User != "":
		msg = evm("migration_cancel", m.Target, c.reason())
	default:
		msg = evm("migration_failed", m.Target, m.Source, c.reason())
	}
	return &vm, addEvent(tx, vm.ID, "migrate", msg, c.User, c.Node, c.At)
}

// The migration CA (see the package comment above).
const tMigrationCA = "migration_ca"

type migrationCA struct {
	CertPEM []byte `json:"cert_pem"`
	KeyPEM  []byte `json:"key_pem"`
}

// applyMigrationCA keeps the first CA proposed; later ones are moot.
func applyMigrationCA(tx *consensus.Tx, c *migrationCA) (any, error) {
	if consensus.First[migrationCA](tx.Txn, tMigrationCA, "id") != nil {
		return nil, nil
	}
	if _, err := leafca.Parse(c.CertPEM, c.KeyPEM); err != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "migration CA: %v", err)
	}
	return nil, tx.Insert(tMigrationCA, c)
}

// EnsureMigrationCA makes the cluster's migration CA once (leader).
func EnsureMigrationCA(ctx context.Context, c Cluster) error {
	if consensus.First[migrationCA](c.Store().ReadTxn(), tMigrationCA, "id") != nil {
		return nil
	}
	certPEM, keyPEM, err := leafca.New("Cairn VM migration CA")
	if err != nil {
		return err
	}
	_, err = c.Apply(ctx, MsgMigrationCA, &migrationCA{CertPEM: certPEM, KeyPEM: keyPEM}, nil)
	return err
}

func loadMigrationCA(txn *memdb.Txn) (*leafca.CA, error) {
	c := consensus.First[migrationCA](txn, tMigrationCA, "id")
	if c == nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "the migration CA is not made yet")
	}
	return leafca.Parse(c.CertPEM, c.KeyPEM)
}

// migrateLive starts moving a running VM to another node (cluster admin):
// to node, or where the scheduler would place it if node is "".
func (s *Service) migrateLive(ctx context.Context, p *identity.Principal, vm *VM, node string, postCopy bool, ifMatch uint64) (*VM, error) {
	const action = "vm.migrate"
	txn := s.c.Store().ReadTxn()
	cur := getVM(txn, vm.ID)
	if cur == nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, notFound("VM", vm.Name))
	}
	if cur.Migration != nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeConflict, "VM %s is moving to %s already", vm.Name, cur.Migration.Target))
	}
	if err := liveMovable(txn, cur); err != nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, err)
	}
	if node == "" {
		var err error
		if node, err = placeLive(txn, cur, time.Now().Add(-hostTimeout), s.Lost); err != nil {
			return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeConflict, "no other node can take VM %s: %v", vm.Name, err))
		}
	}
	if _, err := loadMigrationCA(txn); err != nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeUnavailable, "%v; try again in a moment", err))
	}
	var out VM
	cmd := startMigrationCmd{VM: vm.ID, ID: newID("mig"), Target: node, IfMatch: ifMatch, User: p.User.Name, At: time.Now().UTC()}
	msg := MsgStartMigration
	if postCopy {
		msg = MsgStartPostCopyMigration
	}
	if err := s.id.Mutate(ctx, p, action, vm.Name, vm.ProjectID, msg, cmd, &out); err != nil {
		return nil, err
	}
	return viewVM(s.c.Store().ReadTxn(), p, &out), nil
}

// CancelMigration stops a live migration before its switchover; the VM
// runs on where it was.
func (s *Service) CancelMigration(ctx context.Context, p *identity.Principal, ref string) (*VM, error) {
	const action = "vm.migrate.cancel"
	vm, err := s.fresh(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only cluster admins move VMs between nodes"))
	}
	if vm.Migration == nil {
		return nil, s.id.Deny(ctx, p, action, vm.Name, vm.ProjectID, consensus.Errorf(consensus.CodeConflict, "VM %s is not moving", vm.Name))
	}
	var out VM
	why := consensus.Errorf("", "cancelled by %s", p.User.Name)
	cmd := endMigrationCmd{VM: vm.ID, ID: vm.Migration.ID, User: p.User.Name, Error: why.Error(), ErrorSaid: said(why), At: time.Now().UTC()}
	if err := s.id.Mutate(ctx, p, action, vm.Name, vm.ProjectID, MsgEndMigration, cmd, &out); err != nil {
		return nil, err
	}
	return viewVM(s.c.Store().ReadTxn(), p, &out), nil
}
