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
	// NPlusOne: the cluster can lose any one node and restart every VM
	// that ran there, and no stored byte depends on a single node. Why
	// lists, in words, what stands in the way when it cannot.
	NPlusOne bool     `json:"n_plus_one"`
	Why      []string `json:"why,omitempty"`
}

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
	// Degraded counts object segments below full redundancy; -1 when it
	// could not be read (no leader).
	Degraded int64 `json:"degraded_segments"`
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

// Capacity works out the cluster's capacity (cluster admins).
func (s *Service) Capacity(ctx context.Context, p *identity.Principal, src CapacitySources) (*Capacity, error) {
	if !p.IsClusterAdmin() {
		return nil, consensus.Errorf(consensus.CodeForbidden, "only cluster admins see the cluster's capacity")
	}
	txn := s.c.Store().ReadTxn()
	c := computeCapacity(txn, time.Now())
	st := &c.Storage
	st.Degraded = 0
	if src.Storage != nil {
		disks, err := src.Storage.ListDisks(p)
		if err != nil {
			return nil, err
		}
		nodes := map[string]bool{}
		for _, d := range disks {
			if d.State != storage.DiskActive {
				continue
			}
			st.Disks++
			nodes[d.Node] = true
			st.RawBytes += d.TotalBytes
			st.RawFree += d.FreeBytes
		}
		st.Nodes = len(nodes)
		st.Copies = min(st.Nodes, volume.MaxReplicas)
		if st.Copies > 0 {
			st.VolumesFree = st.RawFree / uint64(st.Copies)
		}
	}
	if src.Objects != nil {
		if l, err := src.Objects.DefaultLayout(); err == nil && l.Data > 0 {
			st.Data, st.Parity = l.Data, l.Parity
			st.Layout = fmt.Sprintf("%d+%d", l.Data, l.Parity)
			st.ObjectsFree = st.RawFree / uint64(l.Data+l.Parity) * uint64(l.Data)
		}
		n, err := src.Objects.Degraded(ctx)
		if err != nil {
			n = -1
		}
		st.Degraded = n
	}
	if src.Volumes != nil {
		e := volume.Exposed(txn)
		st.NoCopy = e.NoCopy
		for i := range c.IfLost {
			c.IfLost[i].Volumes = e.OnlyOn[c.IfLost[i].Node]
		}
	}
	c.judge()
	return &c, nil
}

// computeCapacity is the compute side of Capacity, and what losing each
// node would do to its VMs, from the replicated state at now.
func computeCapacity(txn *memdb.Txn, now time.Time) Capacity {
	set := settings(txn)
	c := Capacity{CPURatio: set.CPUAllocationRatio, RAMRatio: set.RAMAllocationRatio, ReservedRAMMiB: set.ReservedRAMMiB,
		Nodes: []NodeCapacity{}, IfLost: []NodeLoss{}}
	var hosts []*Host
	if it, err := txn.Get(tHosts, "id"); err == nil {
		for o := it.Next(); o != nil; o = it.Next() {
			hosts = append(hosts, o.(*Host))
		}
	}
	byNode := map[string][]*VM{}
	if it, err := txn.Get(tVMs, "id"); err == nil {
		for o := it.Next(); o != nil; o = it.Next() {
			if vm := o.(*VM); vm.Node != "" && vm.Desired != DesiredDeleted {
				byNode[vm.Node] = append(byNode[vm.Node], vm)
			}
		}
	}
	for _, h := range hosts {
		n := NodeCapacity{Node: h.Name, Accel: h.Accel, CPUs: h.VCPUs, HostRAMMiB: h.RAMMiB,
			VCPUs: int64(float64(h.VCPUs) * set.CPUAllocationRatio), RAMMiB: max(int64(float64(h.RAMMiB-set.ReservedRAMMiB)*set.RAMAllocationRatio), 0),
			Error: h.Error, Cordoned: cordonOf(txn, h.Name) != nil}
		n.Available = h.Error == "" && HostAlive(*h, now)
		for _, vm := range byNode[h.Name] {
			n.VMs++
			n.UsedVCPUs += vm.Spec.VCPUs
			n.UsedRAMMiB += vm.Spec.RAMMiB
		}
		if n.Available {
			c.VCPUs += n.VCPUs
			c.RAMMiB += n.RAMMiB
		}
		c.UsedVCPUs += n.UsedVCPUs
		c.UsedRAMMiB += n.UsedRAMMiB
		c.Nodes = append(c.Nodes, n)
	}
	for _, lost := range c.Nodes {
		c.IfLost = append(c.IfLost, lose(txn, set, hosts, c.Nodes, lost.Node, byNode[lost.Node]))
	}
	return c
}

// lose plays the loss of one node as the HA controller would meet it: its
// protected, running VMs are restarted on the available, uncordoned nodes
// left, the largest first, each where the most memory stays free.
func lose(txn *memdb.Txn, set Settings, hosts []*Host, nodes []NodeCapacity, lost string, vms []*VM) NodeLoss {
	out := NodeLoss{Node: lost}
	type target struct {
		name   string
		room   room
		groups []string
	}
	var targets []*target
	for i, h := range hosts {
		if h.Name == lost || !nodes[i].Available || nodes[i].Cordoned {
			continue
		}
		r, groups, err := free(txn, h, set, "")
		if err != nil {
			continue
		}
		targets = append(targets, &target{name: h.Name, room: r, groups: groups})
	}
	var restart []*VM
	for _, vm := range vms {
		if vm.Desired == DesiredStopped {
			continue // nothing to restart
		}
		switch err := Protected(txn, vm); {
		case vm.Spec.HAOff:
			out.HAOff = append(out.HAOff, vm.Name)
		case err != nil:
			out.Stay = append(out.Stay, vm.Name)
		default:
			restart = append(restart, vm)
		}
	}
	sort.Slice(restart, func(i, j int) bool {
		a, b := restart[i], restart[j]
		if a.Spec.HAPriority != b.Spec.HAPriority {
			return a.Spec.HAPriority > b.Spec.HAPriority
		}
		if a.Spec.RAMMiB != b.Spec.RAMMiB {
			return a.Spec.RAMMiB > b.Spec.RAMMiB
		}
		return a.Name < b.Name
	})
	for _, vm := range restart {
		var best *target
		for _, t := range targets {
			if float64(vm.Spec.VCPUs) > t.room.vcpus || float64(vm.Spec.RAMMiB) > t.room.ramMiB {
				continue
			}
			if vm.Spec.Group != "" && hasGroup(t.groups, vm.Spec.ProjectGroup(vm.ProjectID)) {
				continue
			}
			if best == nil || t.room.ramMiB > best.room.ramMiB {
				best = t
			}
		}
		if best == nil {
			out.NoRoom = append(out.NoRoom, vm.Name)
			continue
		}
		best.room.vcpus -= float64(vm.Spec.VCPUs)
		best.room.ramMiB -= float64(vm.Spec.RAMMiB)
		if vm.Spec.Group != "" {
			best.groups = append(best.groups, vm.Spec.ProjectGroup(vm.ProjectID))
		}
		out.Restarted = append(out.Restarted, vm.Name)
	}
	for _, l := range [][]string{out.Restarted, out.NoRoom, out.Stay, out.HAOff} {
		sort.Strings(l)
	}
	return out
}

func hasGroup(groups []string, g string) bool {
	for _, x := range groups {
		if x == g {
			return true
		}
	}
	return false
}

// judge sets NPlusOne and says why not.
func (c *Capacity) judge() {
	c.Why = nil
	available := 0
	for _, n := range c.Nodes {
		if n.Available {
			available++
		}
	}
	if available < 2 {
		c.Why = append(c.Why, fmt.Sprintf("only %d node can run VMs: if it fails, its VMs stop until it is back", available))
	}
	for _, l := range c.IfLost {
		if len(l.NoRoom) > 0 {
			c.Why = append(c.Why, fmt.Sprintf("if %s fails, the other nodes lack the vCPUs or memory to restart %s", l.Node, few(l.NoRoom)))
		}
		if len(l.Stay) > 0 {
			c.Why = append(c.Why, fmt.Sprintf("if %s fails, %s stay down until it returns: their disks are on it", l.Node, few(l.Stay)))
		}
		if len(l.Volumes) > 0 {
			c.Why = append(c.Why, fmt.Sprintf("if %s fails, volumes %s lose their only complete copy", l.Node, few(l.Volumes)))
		}
	}
	st := c.Storage
	switch {
	case st.Disks > 0 && st.Nodes < 2:
		c.Why = append(c.Why, "the storage pool's disks are all in one node")
	case st.Degraded > 0:
		c.Why = append(c.Why, fmt.Sprintf("%d stored segments are below full redundancy and are being repaired", st.Degraded))
	case st.Degraded < 0:
		c.Why = append(c.Why, "the storage pool's redundancy cannot be read now")
	}
	if len(st.NoCopy) > 0 {
		c.Why = append(c.Why, fmt.Sprintf("volumes %s have no complete copy while their replicas catch up", few(st.NoCopy)))
	}
	c.NPlusOne = len(c.Why) == 0
}

// few names a few things, and how many more there are.
func few(names []string) string {
	const most = 5
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
}
