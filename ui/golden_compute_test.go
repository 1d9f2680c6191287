package ui

import (
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/storage/volume"
)

// goldenCompute is the data of the VM and image golden pages: a running VM,
// one failed to place, one being built, and two images.
func goldenCompute() (vmsData, vmData, imagesData) {
	spec := hypervisor.VMSpec{Flavor: "fl-1", VCPUs: 2, RAMMiB: 2048, DiskGiB: 20, Image: "img-1"}
	running := hypervisor.VM{ID: "vm-1", Name: "pacs-viewer", ProjectID: "p-1", Spec: spec, Desired: hypervisor.DesiredRunning, Node: "node2",
		NICs:      []hypervisor.NIC{{ID: "vm-1-0", Network: "default", MAC: "52:54:00:12:34:56", IP: "10.213.0.7"}},
		Status:    hypervisor.VMStatus{State: hypervisor.StateRunning, Accel: "kvm", VCPUs: 2, RAMMiB: 4096, Pending: "[2048 MiB at the next start]", StartedAt: goldenTime},
		CreatedAt: goldenTime, Version: 12}
	running.Spec.DataDisks = []hypervisor.DataDisk{{SizeGiB: 100}}
	running.Spec.SSHKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID5WHCIylmEUGhyxygnxLkggX/botwVqq/W+x/6LNgjl nurse@ward"}
	running.Spec.UserData = "#cloud-config\npackage_update: true\n"
	failed := hypervisor.VM{ID: "vm-2", Name: "lab <b>", ProjectID: "p-1", Spec: spec, Desired: hypervisor.DesiredRunning,
		Status: hypervisor.VMStatus{State: hypervisor.StateError, Error: `no node has 2 vCPUs, 2048 MiB and 20 GiB of disk free outside anti-affinity group "pacs" (1 of 3 nodes cordoned)`}, CreatedAt: goldenTime}
	building := hypervisor.VM{ID: "vm-3", Name: "ris", ProjectID: "p-2", Spec: spec, Desired: hypervisor.DesiredRunning, Node: "node1",
		NICs: []hypervisor.NIC{{ID: "vm-3-0"}}, Status: hypervisor.VMStatus{State: hypervisor.StateBuilding}, CreatedAt: goldenTime}
	vms := vmsData{CanCreate: true, Total: 4, VMs: []vmRow{
		{VM: failed, ProjectName: "radiology", ImageName: "debian-12", CanChange: true},
		{VM: running, ProjectName: "radiology", ImageName: "debian-12", CanChange: true, Selected: true},
		{VM: building, ProjectName: "icu", ImageName: "img-gone"},
	}, Filter: vmFilter{Q: "ward", Sort: "name"}, States: []string{"building", "error", "running"}, Nodes: []string{"node1"}, Projects: []identity.Project{{ID: "p-2", Name: "icu"}, {ID: "p-1", Name: "radiology"}}}
	vm := vmData{VM: running, ProjectName: "radiology", FlavorName: "m1.small", ImageName: "debian-12", CanChange: true,
		Reach: []reachRow{{IP: "10.213.0.7", Network: "default", Kind: "nat"}, {IP: "10.50.0.4", Network: "pacs-net", Kind: "project", Floating: []string{"192.0.2.10"}},
			{IP: "172.16.20.31", Network: "ward-lan", Kind: "vlan", VLAN: 120}},
		Flavors: goldenFlavors(),
		Events: []hypervisor.Event{
			{ID: "vm-1-1", VM: "vm-1", Time: goldenTime, Kind: "create", Message: "created with 2 vCPU, 2048 MiB, 20 GiB; address [10.213.0.7]", User: "nurse1",
				Key: "created", Args: []string{"2", "2048", "20", "[10.213.0.7]"}},
			{ID: "vm-1-2", VM: "vm-1", Time: goldenTime, Kind: "schedule", Message: "placed on node2", Node: "node2", Key: "placed", Args: []string{"node2"}},
			{ID: "vm-1-3", VM: "vm-1", Time: goldenTime, Kind: "state", Message: "running", Node: "node2", Key: "state", Args: []string{"running"}},
			{ID: "vm-1-3b", VM: "vm-1", Time: goldenTime, Kind: "node", Message: "the guest shut itself down", Node: "node2"}, // written before keys
			{ID: "vm-1-4", VM: "vm-1", Time: goldenTime, Kind: "future-kind", Message: "something new"},
			{ID: "vm-1-5", VM: "vm-1", Time: goldenTime, Kind: "failover", Message: hypervisor.FailoverMessage("node3", goldenTime, "node2", ""), Node: "node2"},
			{ID: "vm-1-6", VM: "vm-1", Time: goldenTime, Kind: "failover", Message: hypervisor.FailoverMessage("node2", goldenTime, "", "no node has 2 vCPUs, 2048 MiB and 0 GiB of disk free"), Node: "node2"},
		}}
	// A VM with a local scratch disk cannot restart elsewhere.
	running.HA = "unavailable: VM pacs-viewer has local disks on node2, which are lost with it"
	vm.VM.Spec.BootVolume = "vol-1"
	vm.VM.Spec.DataDisks = nil
	vm.VM.HA, vm.VM.Spec.HAPriority = "on", 20
	bootVol, dataVol, _, _ := goldenVolumeSet(&vm.VM)
	vm.Volumes = []volumeRow{bootVol, dataVol}
	radiology := identity.Project{ID: "p-1", Name: "radiology"}
	imgs := imagesData{Admin: true, Projects: []identity.Project{radiology, {ID: "p-2", Name: "icu"}}, Import: importForm{Project: "p-1"},
		Images: []imageRow{
			{Image: hypervisor.Image{ID: "img-1", Name: "debian-12", ProjectID: "p-1", Visibility: hypervisor.VisibilityPublic, Format: "raw",
				DiskFormat: "qcow2", Size: 412 << 20, VirtualSize: 2 << 30, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
				MinDiskGiB: 4, MinRAMMiB: 512, OSType: "linux", OSVersion: "12", Description: "Debian 12 cloud image", Version: 3},
				ProjectName: "radiology", CanChange: true},
			{Image: hypervisor.Image{ID: "img-2", Name: "win-2022", ProjectID: "p-2", Visibility: hypervisor.VisibilityProject, Format: "iso",
				DiskFormat: "iso", Size: 5 << 30, VirtualSize: 5 << 30, SHA256: "ab12", Version: 4}, ProjectName: "icu"},
		}}
	return vms, vm, imgs
}

func goldenFlavors() []identity.Flavor {
	return []identity.Flavor{{ID: "fl-2", Name: "m1.large", VCPUs: 4, RAMMiB: 8192, DiskGiB: 80}, {ID: "fl-1", Name: "m1.small", VCPUs: 2, RAMMiB: 2048, DiskGiB: 20},
		{ID: "fl-3", Name: "scratch", VCPUs: 2, RAMMiB: 2048, DiskGiB: 10, LocalDisk: true}}
}

// goldenVolumeSet is a running VM's boot volume (three copies up to
// date) and data volume (one copy catching up, one waiting), a spare
// volume with a single copy, and one that could not be made.
func goldenVolumeSet(vm *hypervisor.VM) (boot, data, spare, broken volumeRow) {
	reps := func(id string, states ...string) []volume.Replica {
		var out []volume.Replica
		for i, st := range states {
			n := string(rune('1' + i))
			out = append(out, volume.Replica{ID: id + "-r" + n, Node: "node" + n, Disk: "node" + n + "-d1", State: st})
		}
		return out
	}
	in, stale, rebuilding := volume.ReplicaInSync, volume.ReplicaStale, volume.ReplicaRebuilding
	boot = volumeRow{Volume: volume.Volume{ID: "vol-1", Name: "pacs-viewer-boot", ProjectID: "p-1", SizeBytes: 20 * volume.GiB, State: volume.StateInUse,
		Replicas: reps("vol-1", in, in, in), Writer: "node2", Epoch: 3,
		Attachment: &volume.Attachment{Node: "node2", VM: vm.ID, At: goldenTime, Boot: true, DeleteWithVM: true},
		Source:     &volume.Source{Image: "img-1", Filled: true}, CreatedAt: goldenTime, Version: 40},
		ProjectName: "radiology", VMName: vm.Name, VM: vm, CanChange: true}
	data = volumeRow{Volume: volume.Volume{ID: "vol-2", Name: "scans", ProjectID: "p-1", SizeBytes: 100 * volume.GiB, State: volume.StateInUse,
		Replicas: reps("vol-2", in, rebuilding, stale), Writer: "node2", Epoch: 5,
		Attachment: &volume.Attachment{Node: "node2", VM: vm.ID, At: goldenTime}, CreatedAt: goldenTime, Version: 41},
		ProjectName: "radiology", VMName: vm.Name, VM: vm, CanChange: true}
	spare = volumeRow{Volume: volume.Volume{ID: "vol-3", Name: "spare <b>", ProjectID: "p-1", SizeBytes: 5 * volume.GiB, State: volume.StateAvailable,
		Replicas: reps("vol-3", in), Source: &volume.Source{Image: "img-1"}, CreatedAt: goldenTime, Version: 42},
		ProjectName: "radiology", CanChange: true}
	broken = volumeRow{Volume: volume.Volume{ID: "vol-4", Name: "broken", ProjectID: "p-2", SizeBytes: 1 * volume.GiB, State: volume.StateError,
		Replicas: reps("vol-4", in, in), CreatedAt: goldenTime, Version: 43}, ProjectName: "icu"}
	return boot, data, spare, broken
}

// goldenVolumes is the volume list, a detached volume's page (with a
// refused extend) and an attached data volume's page.
func goldenVolumes() (volumesData, volumeData, volumeData) {
	_, vm, imgs := goldenCompute()
	boot, data, spare, broken := goldenVolumeSet(&vm.VM)
	restored := broken
	restored.ID, restored.Name, restored.State, restored.Origin = "vol-5", "scans-restored", volume.StateAvailable, "copy of snapshot before-upgrade of volume scans"
	list := volumesData{Volumes: []volumeRow{boot, data, spare, broken, restored}, Projects: []identity.Project{{ID: "p-1", Name: "radiology"}},
		Images: []hypervisor.Image{imgs.Images[0].Image}, CanPlace: true,
		Form: volumeForm{Name: "scans", Size: "10", Project: "p-1", ErrField: "name"}, // Err: each language's, in TestGoldenPages
		Snapshots: []snapshotRow{
			{Volume: volume.Volume{ID: "snap-1", Name: "before-upgrade", ProjectID: "p-1", Kind: volume.KindSnapshot, Of: "vol-2", SizeBytes: 100 * volume.GiB,
				State: volume.StateAvailable, Quiesced: true, CreatedAt: goldenTime}, OfName: "scans", CanChange: true},
			{Volume: volume.Volume{ID: "snap-2", Name: "nightly", ProjectID: "p-1", Kind: volume.KindSnapshot, Of: "vol-9", SizeBytes: 2 * volume.GiB,
				State: volume.StateAvailable, CreatedAt: goldenTime}, CanChange: true},
			{Volume: volume.Volume{ID: "snap-3", Name: "taking", ProjectID: "p-1", Kind: volume.KindSnapshot, Of: "vol-1", SizeBytes: 20 * volume.GiB,
				State: volume.StateCreating, CreatedAt: goldenTime}, OfName: "pacs-viewer-boot"},
		},
		SnapForm: snapshotForm{Snapshot: "snap-2", Action: "volume", Name: "restored", Size: "1"}} // Err: each language's
	stopped := vm.VM
	stopped.ID, stopped.Name, stopped.Desired, stopped.Status.State = "vm-9", "archive", hypervisor.DesiredStopped, hypervisor.StateStopped
	detached := volumeData{Row: spare, Image: "debian-12", VMs: []hypervisor.VM{stopped, vm.VM}, ErrAction: "extend",
		Err: "The volume is 5 GiB: enter a larger size. Volumes never shrink.", Typed: "4"}
	attached := volumeData{Row: data, Image: "—", VMs: []hypervisor.VM{vm.VM}}
	return list, detached, attached
}

func goldenNewVM() newVMData {
	_, _, imgs := goldenCompute()
	return newVMData{
		Projects: []identity.Project{{ID: "p-1", Name: "radiology"}, {ID: "p-2", Name: "icu"}},
		Images:   []hypervisor.Image{imgs.Images[0].Image, imgs.Images[1].Image},
		Flavors:  goldenFlavors(),
		Form: vmForm{Name: "pacs 2", Project: "p-2", Image: "img-1", Flavor: "fl-1", SSHKeys: "ssh-ed25519 AAAA nurse@ward", DataDisk: "50",
			BootDisk: "volume", BootSize: "10", ErrField: "boot_size", Err: "Size m1.small has a 20 GiB disk: the boot volume must be at least that large."},
		VolumesOK: true,
	}
}

// readerCopy is a VM as the compute service shows it to a project reader.
func readerCopy(vm hypervisor.VM) hypervisor.VM {
	vm.Spec.SSHKeys, vm.Spec.UserData, vm.CloudInitRedacted = nil, "", true
	return vm
}

// goldenFailovers are a node failure's lines on the dashboard: one VM
// restarted elsewhere, one left with its node.
func goldenFailovers() []hypervisor.VMEvent {
	lost := goldenTime.Add(-13 * time.Second)
	return []hypervisor.VMEvent{
		{VMName: "xray-viewer", Event: hypervisor.Event{ID: "vm-1/1", VM: "vm-1", Time: goldenTime, Kind: "failover", Node: "node1",
			Message: hypervisor.FailoverMessage("node3", lost, "node1", "")}},
		{VMName: "scratch", Event: hypervisor.Event{ID: "vm-2/1", VM: "vm-2", Time: goldenTime, Kind: "failover", Node: "node3",
			Message: hypervisor.FailoverMessage("node3", lost, "", "high availability is switched off for VM scratch")}},
	}
}

// goldenHosts are five nodes: in use, being drained, out of use with a
// reason, drained with VMs left, and one that stopped answering.
func goldenHosts() hostsData {
	h := func(name string, vms int, reported time.Time, c *hypervisor.Cordon) hypervisor.HostView {
		return hypervisor.HostView{Host: hypervisor.Host{Name: name, VCPUs: 16, RAMMiB: 65536, Accel: "kvm", ReportedAt: reported},
			Cordon: c, VMs: vms, UsedVCPUs: int64(2 * vms), UsedRAMMiB: int64(2048 * vms)}
	}
	at := goldenTime.Add(-time.Hour)
	return hostsData{Now: goldenTime, Hosts: []hypervisor.HostView{
		h("node1", 4, goldenTime, nil),
		h("node2", 2, goldenTime, &hypervisor.Cordon{Node: "node2", By: "admin", At: at, Drain: &hypervisor.Drain{ID: "d1", State: hypervisor.DrainDraining, Moved: 3}}),
		h("node3", 1, goldenTime, &hypervisor.Cordon{Node: "node3", Reason: "new RAM <Thursday>", By: "it-lin", At: at}),
		h("node4", 1, goldenTime, &hypervisor.Cordon{Node: "node4", By: "admin", At: at, Drain: &hypervisor.Drain{ID: "d2", State: hypervisor.DrainDone, Moved: 5, Restarted: 1,
			Message: "lab-db stays: it has local disks (convert its disk first); pacs stays: it is error. Volumes with a copy on node4, which run on fewer copies while it is away: scans. Objects with shards on node4, which run on fewer shards while it is away: 1204",
			Stays: []hypervisor.DrainStay{{VM: "lab-db", Key: "cannot_move", Args: []string{"it has local disks (convert its disk first)"}},
				{VM: "pacs", Key: "state", Args: []string{"error"}}, {VM: "ris", Key: "cannot_move", Args: []string{"it has local disks (drain with consent to convert disks, or convert its disk first)"}},
				{VM: "lis", Key: "no_convert", Args: []string{"no node has a disk for a volume"}}, {VM: "lab-scratch", Key: "cannot_move", Args: []string{"it has local data disks, which cannot leave its node"}}},
			Copies: []string{"scans"}, Objects: 1204, Converted: 2}}),
		h("node6", 1, goldenTime, &hypervisor.Cordon{Node: "node6", By: "admin", At: at, Drain: &hypervisor.Drain{ID: "d3", State: hypervisor.DrainDone,
			Message: "web stays: it is paused"}}), // recorded before drains had keys
		tcg(h("node5", 3, goldenTime.Add(-10*time.Minute), nil)),
	}}
}

// tcg makes a host one without hardware virtualisation.
func tcg(h hypervisor.HostView) hypervisor.HostView {
	h.Accel = "tcg"
	return h
}

// goldenCapacity is three boxes, one emulating its CPU; with ok the
// cluster can lose any of them, without it one VM has no room elsewhere
// and one keeps its disk on its box.
func goldenCapacity(ok bool) *hypervisor.Capacity {
	c := &hypervisor.Capacity{CPURatio: 4, RAMRatio: 1, ReservedRAMMiB: 1024, VCPUs: 96, UsedVCPUs: 14, RAMMiB: 3 * 31 << 10, UsedRAMMiB: 40 << 10,
		Nodes: []hypervisor.NodeCapacity{
			{Node: "node1", Accel: "kvm", CPUs: 8, HostRAMMiB: 32 << 10, VCPUs: 32, RAMMiB: 31 << 10, UsedVCPUs: 8, UsedRAMMiB: 24 << 10, VMs: 4, Available: true,
				DiskBytes: 2 << 40, DiskFree: 1 << 40},
			{Node: "node2", Accel: "kvm", CPUs: 8, HostRAMMiB: 32 << 10, VCPUs: 32, RAMMiB: 31 << 10, UsedVCPUs: 4, UsedRAMMiB: 12 << 10, VMs: 2, Available: true, Cordoned: true,
				DiskBytes: 2 << 40, DiskFree: 1 << 40},
			{Node: "node3", Accel: "tcg", CPUs: 8, HostRAMMiB: 32 << 10, VCPUs: 32, RAMMiB: 31 << 10, UsedVCPUs: 2, UsedRAMMiB: 4 << 10, VMs: 1, Available: true,
				DiskBytes: 1 << 40, DiskFree: 512 << 30},
			{Node: "node4", DiskBytes: 1 << 40, DiskFree: 512 << 30, StorageOnly: true},
			refusedNetwork(hypervisor.NodeCapacity{Node: "node5", Accel: "kvm", CPUs: 8, HostRAMMiB: 32 << 10, VCPUs: 32, RAMMiB: 31 << 10}),
		},
		Storage: hypervisor.StorageCapacity{Disks: 6, Nodes: 3, RawBytes: 6 << 40, RawFree: 3 << 40, Layout: "4+2", Data: 4, Parity: 2, Copies: 3,
			ObjectsFree: 2 << 40, VolumesFree: 1 << 40},
		NPlusOne: ok,
	}
	if !ok {
		c.IfLost = []hypervisor.NodeLoss{{Node: "node1", Restarted: []string{"pacs"}, NoRoom: []string{"ris"}, Stay: []string{"lab-scratch"}}}
		c.Reasons = []hypervisor.Reason{
			{Kind: hypervisor.ReasonNoRoom, Node: "node1", Names: []string{"ris"}},
			{Kind: hypervisor.ReasonStayDown, Node: "node1", Names: []string{"lab-scratch"}},
			{Kind: hypervisor.ReasonQuorum, Node: "node2"},
			{Kind: hypervisor.ReasonOneNodeData, Count: 12},
			{Kind: hypervisor.ReasonNoCopy, Names: []string{"a", "b", "c", "d", "e", "f", "g"}},
		}
	}
	return c
}

// refusedNetwork is n, its VM network refused: it holds the node's own
// address, and the reason is said from its formats (the agent's words).
func refusedNetwork(n hypervisor.NodeCapacity) hypervisor.NodeCapacity {
	refusal := consensus.Reasonf(consensus.CodeConflict, "vm_network_shadowing", "the VM network %s holds %s on %s, this node's own network: choose another range (--vm-network for the default network, before the cluster creates it)", "10.213.0.0/16", "10.213.0.11/16", "eth0")
	said := consensus.NewError(consensus.CodeUnavailable, "the VM network is not set up on this node: %v", refusal)
	n.Error, n.ErrorSaid = said.Message, said
	return n
}

// tcgVM is d's VM running by software emulation.
func tcgVM(d vmData) vmData {
	d.VM.Status.Accel = "tcg"
	return d
}
