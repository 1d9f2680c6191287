package hypervisor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
	"github.com/hashicorp/go-memdb"
)

// Capacity answers a branch's first questions about its cluster: how much
// it can run and store, how much is taken, and whether it can lose a box
// and still restart every VM and keep every byte (N+1). The dashboard and
// GET /api/v1/capacity show it.
type Capacity struct {
	// The overcommit in force: a node offers its CPUs × CPURatio vCPUs and
	// (its RAM less ReservedRAMMiB) × RAMRatio of VM memory.
	CPURatio       float64        `json:"cpu_allocation_ratio"`
	RAMRatio       float64        `json:"ram_allocation_ratio"`
	ReservedRAMMiB int64          `json:"reserved_ram_mib"`
	Nodes          []NodeCapacity `json:"nodes"`
	// The cluster's totals, over the nodes that can run VMs now.
	VCPUs      int64 `json:"vcpus"`
	UsedVCPUs  int64 `json:"used_vcpus"`
	RAMMiB     int64 `json:"ram_mib"`
	UsedRAMMiB int64 `json:"used_ram_mib"`

	Storage StorageCapacity `json:"storage"`

	// IfLost says, for each node, what losing it would do.
	IfLost []NodeLoss `json:"if_lost"`
	// NPlusOne: the cluster can lose any one node, keep its control
	// plane, restart every VM that ran there, and lose no stored byte.
	// Reasons says, when it cannot, what stands in the way.
	NPlusOne bool     `json:"n_plus_one"`
	Reasons  []Reason `json:"reasons,omitempty"`
}

// Reason is one thing that keeps the cluster from losing a node safely.
// The UI words it from Kind and the fields; Text is the same in English.
type Reason struct {
	Kind  string   `json:"kind"`
	Node  string   `json:"node,omitempty"`
	Names []string `json:"names,omitempty"`
	Count int64    `json:"count,omitempty"`
	Text  string   `json:"text"`
}

// Kinds of Reason.
const (
	ReasonFewNodes     = "few_nodes"      // Count nodes can run VMs
	ReasonNodeDown     = "node_down"      // Node is not reporting or cannot run VMs: already one short
	ReasonQuorum       = "quorum"         // losing Node loses the control plane's quorum
	ReasonNoRoom       = "no_room"        // losing Node, Names find no room elsewhere
	ReasonStayDown     = "stay_down"      // losing Node, Names stay down: their disks are on it
	ReasonVolumes      = "volumes"        // losing Node, volumes Names lose their only complete copy
	ReasonDisksOneNode = "disks_one_node" // the pool's disks are all in one node
	ReasonDegraded     = "degraded"       // Count segments below full redundancy
	ReasonOneNodeData  = "one_node_data"  // Count segments would not survive losing a node
	ReasonUnknown      = "unknown"        // the pool's redundancy cannot be read now
	ReasonNoCopy       = "no_copy"        // volumes Names have no in-sync replica
)

// NodeCapacity is one node's share.
type NodeCapacity struct {
	Node       string `json:"node"`
	Accel      string `json:"accel,omitempty"` // kvm, or tcg: software emulation
	CPUs       int64  `json:"cpus"`            // the host's
	HostRAMMiB int64  `json:"host_ram_mib"`
	VCPUs      int64  `json:"vcpus"`   // what its VMs may have, after the ratio
	RAMMiB     int64  `json:"ram_mib"` // likewise, after the reserve
	UsedVCPUs  int64  `json:"used_vcpus"`
	UsedRAMMiB int64  `json:"used_ram_mib"`
	VMs        int    `json:"vms"`
	// Available: reporting, and able to run VMs. A cordoned node still
	// runs its VMs but takes no new ones, nor restarted ones.
	Available bool   `json:"available"`
	Cordoned  bool   `json:"cordoned,omitempty"`
	Error     string `json:"error,omitempty"`
	// ErrorSaid is Error made from its format (Host.ErrorSaid).
	ErrorSaid *consensus.Error `json:"error_said,omitempty"`
	// The node's share of the storage pool: its active disks' space, a
	// filesystem two disks share counted once. StorageOnly: a node with
	// pool disks that runs no VMs.
	DiskBytes   uint64 `json:"disk_bytes"`
	DiskFree    uint64 `json:"disk_free_bytes"`
	StorageOnly bool   `json:"storage_only,omitempty"`
}

// StorageCapacity is the pool.
type StorageCapacity struct {
	Disks       int    `json:"disks"` // active
	Nodes       int    `json:"nodes"` // with an active disk
	RawBytes    uint64 `json:"raw_bytes"`
	RawFree     uint64 `json:"raw_free_bytes"`
	Layout      string `json:"layout,omitempty"` // the default k+m of new objects
	Data        int    `json:"data_shards,omitempty"`
	Parity      int    `json:"parity_shards,omitempty"`
	Copies      int    `json:"volume_copies"`      // replicas of a new volume
	ObjectsFree uint64 `json:"objects_free_bytes"` // what new objects can still take, after parity
	VolumesFree uint64 `json:"volumes_free_bytes"` // what new volumes can still take, after their copies
	// Degraded counts object segments below full redundancy (a shard
	// missing, or on a disk not reporting); OneNode those whole but all
	// within reach of one node's loss. -1 when they could not be read.
	Degraded int64 `json:"degraded_segments"`
	OneNode  int64 `json:"segments_lost_with_a_node"`
	// NoCopy: volumes with no in-sync replica anywhere (catching up).
	NoCopy []string `json:"volumes_without_copy,omitempty"`
}

// NodeLoss is what losing one node would do.
type NodeLoss struct {
	Node string `json:"node"`
	// Restarted: the VMs that ran there and would run again elsewhere.
	Restarted []string `json:"restarted,omitempty"`
	// NoRoom: VMs that would restart, but the other nodes lack the vCPUs
	// or memory for them.
	NoRoom []string `json:"no_room,omitempty"`
	// Stay: VMs that would stay down until it returns: their disks (or
	// UEFI settings) are on it.
	Stay []string `json:"stay_down,omitempty"`
	// HAOff: VMs whose owners switched high availability off.
	HAOff []string `json:"ha_off,omitempty"`
	// Volumes whose only in-sync replica is there.
	Volumes []string `json:"volumes_only_there,omitempty"`
}

// CapacitySources are the services Capacity reads; Storage, Objects and
// Volumes may be nil on a node without them.
type CapacitySources struct {
	Storage *storage.Service
	Objects *storage.Objects
	Volumes *volume.Service
}

// capacityDiskStale: a disk that has not reported for this long counts as
// gone, as the healer's default takes it (the agent's --disk-stale-after).
const capacityDiskStale = 2 * time.Minute

// capacityReadTimeout bounds the pool's linearizable read: the dashboard
// says "cannot be read now" rather than hang without a leader.
const capacityReadTimeout = 2 * time.Second

// node returns the row of the named node, adding one for a node that runs
// no VMs but holds pool disks.
func (c *Capacity) node(name string) *NodeCapacity {
	for i := range c.Nodes {
		if c.Nodes[i].Node == name {
			return &c.Nodes[i]
		}
	}
	c.Nodes = append(c.Nodes, NodeCapacity{Node: name, StorageOnly: true})
	c.IfLost = append(c.IfLost, NodeLoss{Node: name}) // its loss may still cost volumes their only copy
	return &c.Nodes[len(c.Nodes)-1]
}

// Capacity works out the cluster's capacity (cluster admins).
func (s *Service) Capacity(ctx context.Context, p *identity.Principal, src CapacitySources) (*Capacity, error) {
	if !p.IsClusterAdmin() {
		return nil, consensus.Errorf(consensus.CodeForbidden, "only cluster admins see the cluster's capacity")
	}
	txn := s.c.Store().ReadTxn()
	c := computeCapacity(txn, time.Now())
	st := &c.Storage
	if src.Storage != nil {
		disks, err := src.Storage.ListDisks(p)
		if err != nil {
			return nil, err
		}
		nodeFree := map[string]uint64{}
		counted := map[string]bool{} // filesystems: two disks of one are counted once
		for _, d := range disks {
			if d.State != storage.DiskActive {
				continue
			}
			st.Disks++
			nodeFree[d.Node] += 0
			fs := d.Node + "\x00" + d.Device
			if d.Device == "" {
				fs = d.ID
			}
			if counted[fs] {
				continue
			}
			counted[fs] = true
			st.RawBytes += d.TotalBytes
			st.RawFree += d.FreeBytes
			nodeFree[d.Node] += d.FreeBytes
			n := c.node(d.Node)
			n.DiskBytes += d.TotalBytes
			n.DiskFree += d.FreeBytes
		}
		st.Nodes = len(nodeFree)
		st.Copies = min(st.Nodes, volume.MaxReplicas)
		if st.Copies > 0 {
			// Each copy on another node: a node's share of the copies is
			// at most one in Copies.
			st.VolumesFree = spread(nodeFree, 1, uint64(st.Copies)) / uint64(st.Copies)
		}
		if src.Objects != nil {
			if l, err := src.Objects.DefaultLayout(); err == nil && l.Data > 0 {
				st.Data, st.Parity = l.Data, l.Parity
				st.Layout = fmt.Sprintf("%d+%d", l.Data, l.Parity)
				// At most m of an object's k+m shards on one node (any
				// number on a single-node pool).
				num, den := uint64(1), uint64(1)
				if st.Nodes > 1 {
					num, den = uint64(l.Parity), uint64(l.Data+l.Parity)
				}
				st.ObjectsFree = spread(nodeFree, num, den) / uint64(l.Data+l.Parity) * uint64(l.Data)
			}
		}
	}
	if src.Objects != nil {
		rctx, cancel := context.WithTimeout(ctx, capacityReadTimeout)
		r, err := src.Objects.Redundancy(rctx, capacityDiskStale)
		cancel()
		st.Degraded, st.OneNode = r.Degraded, r.OneNode
		if err != nil {
			st.Degraded, st.OneNode = -1, -1
		}
	}
	if src.Volumes != nil {
		e := volume.Exposed(txn)
		st.NoCopy = e.NoCopy
		for i := range c.IfLost {
			c.IfLost[i].Volumes = e.OnlyOn[c.IfLost[i].Node]
		}
	}
	var quorum map[string]string
	if s.Quorum != nil {
		quorum = map[string]string{}
		for _, n := range c.Nodes {
			if err := s.Quorum(n.Node); err != nil {
				quorum[n.Node] = err.Error()
			}
		}
	}
	c.judge(quorum)
	return &c, nil
}

// computeCapacity is the compute side of Capacity, and what losing each
// node would do to its VMs, from the replicated state at now.
func computeCapacity(txn *memdb.Txn, now time.Time) Capacity {
	set := settings(txn)
	c := Capacity{CPURatio: set.CPUAllocationRatio, RAMRatio: set.RAMAllocationRatio, ReservedRAMMiB: set.ReservedRAMMiB,
		Nodes: []NodeCapacity{}, IfLost: []NodeLoss{}}
	if it, err := txn.Get(tHosts, "id"); err == nil {
		for o := it.Next(); o != nil; o = it.Next() {
			h := o.(*Host)
			n := NodeCapacity{Node: h.Name, Accel: h.Accel, CPUs: h.VCPUs, HostRAMMiB: h.RAMMiB,
				VCPUs: int64(float64(h.VCPUs) * set.CPUAllocationRatio), RAMMiB: max(int64(float64(h.RAMMiB-set.ReservedRAMMiB)*set.RAMAllocationRatio), 0),
				Error: h.Error, ErrorSaid: h.ErrorSaid, Cordoned: cordonOf(txn, h.Name) != nil}
			n.Available = h.Error == "" && HostAlive(*h, now)
			for _, vm := range onNode(txn, h.Name) {
				if vm.Desired == DesiredDeleted {
					continue
				}
				n.VMs++
				n.UsedVCPUs += vm.Spec.VCPUs
				n.UsedRAMMiB += vm.Spec.RAMMiB
			}
			if n.Available {
				c.VCPUs += n.VCPUs
				c.RAMMiB += n.RAMMiB
				c.UsedVCPUs += n.UsedVCPUs
				c.UsedRAMMiB += n.UsedRAMMiB
			}
			c.Nodes = append(c.Nodes, n)
		}
	}
	for _, n := range c.Nodes {
		c.IfLost = append(c.IfLost, lose(txn, n.Node, now))
	}
	return c
}

// lose plays the loss of one node as the failover controller meets it
// (Failover.failover in ha.go): the VMs it restarts (running, or stopped by
// a drain to move), highest priority first, each placed as placement places
// it among the nodes left but a moving VM's target, every earlier restart
// taking its room. Nodes whose lease is lost now are not known here: a node
// that stopped reporting already counts against N+1 (ReasonNodeDown).
func lose(txn *memdb.Txn, lost string, now time.Time) NodeLoss {
	out := NodeLoss{Node: lost}
	vms := onNode(txn, lost)
	sort.SliceStable(vms, func(i, j int) bool { return vms[i].Spec.HAPriority > vms[j].Spec.HAPriority })
	t := taken{}
	for _, vm := range vms {
		if vm.Desired != DesiredRunning && !drainRestarting(txn, lost, vm.ID) {
			continue
		}
		err := Protected(txn, vm)
		if err == nil {
			err = leavesWhole(txn, vm)
		}
		if err != nil {
			if vm.Spec.HAOff {
				out.HAOff = append(out.HAOff, vm.Name)
			} else {
				out.Stay = append(out.Stay, vm.Name)
			}
			continue
		}
		target := ""
		if m := vm.Migration; m != nil {
			target = m.Target
		}
		to, err := placeTaken(txn, vm, now.Add(-hostTimeout), lost, func(h *Host) bool { return h.Name != target }, t)
		if err != nil {
			out.NoRoom = append(out.NoRoom, vm.Name)
			continue
		}
		t.take(to, vm)
		out.Restarted = append(out.Restarted, vm.Name)
	}
	for _, l := range [][]string{out.Restarted, out.NoRoom, out.Stay, out.HAOff} {
		sort.Strings(l)
	}
	return out
}

// judge sets NPlusOne and Reasons; quorum maps a node to why losing it
// would cost the control plane its quorum.
func (c *Capacity) judge(quorum map[string]string) {
	c.Reasons = nil
	add := func(r Reason) { c.Reasons = append(c.Reasons, r) }
	available := 0
	for _, n := range c.Nodes {
		if n.Available {
			available++
		}
	}
	if available < 2 {
		add(Reason{Kind: ReasonFewNodes, Count: int64(available),
			Text: fmt.Sprintf("%d node(s) can run VMs: one more must be there to take them if a node fails", available)})
	}
	for _, n := range c.Nodes {
		if !n.Available && n.Error == "" && !n.StorageOnly && available >= 2 {
			add(Reason{Kind: ReasonNodeDown, Node: n.Node, Text: fmt.Sprintf("%s is not running VMs now: the cluster is already a node short", n.Node)})
		}
		if why, ok := quorum[n.Node]; ok {
			add(Reason{Kind: ReasonQuorum, Node: n.Node, Text: fmt.Sprintf("if %s fails, the cluster loses its quorum and can change nothing: %s", n.Node, why)})
		}
	}
	for _, l := range c.IfLost {
		if len(l.NoRoom) > 0 {
			add(Reason{Kind: ReasonNoRoom, Node: l.Node, Names: l.NoRoom,
				Text: fmt.Sprintf("if %s fails, the other nodes lack the room to restart %s", l.Node, few(l.NoRoom))})
		}
		if len(l.Stay) > 0 {
			add(Reason{Kind: ReasonStayDown, Node: l.Node, Names: l.Stay,
				Text: fmt.Sprintf("if %s fails, %s stay down until it returns: their disks are on it", l.Node, few(l.Stay))})
		}
		if len(l.Volumes) > 0 {
			add(Reason{Kind: ReasonVolumes, Node: l.Node, Names: l.Volumes,
				Text: fmt.Sprintf("if %s fails, volumes %s lose their only complete copy", l.Node, few(l.Volumes))})
		}
	}
	st := c.Storage
	switch {
	case st.Disks > 0 && st.Nodes < 2:
		add(Reason{Kind: ReasonDisksOneNode, Text: "the storage pool's disks are all in one node"})
	case st.Degraded < 0:
		add(Reason{Kind: ReasonUnknown, Text: "the storage pool's redundancy cannot be read now"})
	default:
		if st.Degraded > 0 {
			add(Reason{Kind: ReasonDegraded, Count: st.Degraded, Text: fmt.Sprintf("%d stored segments are below full redundancy and are being repaired", st.Degraded)})
		}
		if st.OneNode > 0 {
			add(Reason{Kind: ReasonOneNodeData, Count: st.OneNode, Text: fmt.Sprintf("%d stored segments have every shard within one node's reach (written while the pool had one node)", st.OneNode)})
		}
	}
	if len(st.NoCopy) > 0 {
		add(Reason{Kind: ReasonNoCopy, Names: st.NoCopy, Text: fmt.Sprintf("volumes %s have no complete copy while their replicas catch up", few(st.NoCopy))})
	}
	c.NPlusOne = len(c.Reasons) == 0
}

// spread is the most bytes that can be written over nodes with these free
// bytes when no node may hold more than num/den of them: the largest S with
// the sum over nodes of min(free, S × num/den) at least S. Worked in whole
// numbers (both sides × den), so a third is exactly a third.
func spread(free map[string]uint64, num, den uint64) uint64 {
	fits := func(total uint64) bool {
		var sum uint64
		for _, f := range free {
			sum += min(f*den, total*num)
		}
		return sum >= total*den
	}
	var all uint64
	for _, f := range free {
		all += f
	}
	lo, hi := uint64(0), all
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if fits(mid) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// few names a few things, and how many more there are.
func few(names []string) string {
	const most = 5
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
}
