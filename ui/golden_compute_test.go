package ui

import (
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/hypervisor"
)

// goldenCompute is the data of the VM and image golden pages: a running VM,
// one failed to place, one being built, and two images.
func goldenCompute() (vmsData, vmData, imagesData) {
	spec := hypervisor.VMSpec{Flavor: "fl-1", VCPUs: 2, RAMMiB: 2048, DiskGiB: 20, Image: "img-1"}
	running := hypervisor.VM{ID: "vm-1", Name: "pacs-viewer", ProjectID: "p-1", Spec: spec, Desired: hypervisor.DesiredRunning, Node: "node2",
		NICs:      []hypervisor.NIC{{ID: "vm-1-0", Network: "default", MAC: "52:54:00:12:34:56", IP: "10.213.0.7"}},
		Status:    hypervisor.VMStatus{State: hypervisor.StateRunning, Accel: "kvm", Pending: "4 vCPU at the next start", StartedAt: goldenTime},
		CreatedAt: goldenTime, Version: 12}
	running.Spec.DataDisks = []hypervisor.DataDisk{{SizeGiB: 100}}
	running.Spec.SSHKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID5WHCIylmEUGhyxygnxLkggX/botwVqq/W+x/6LNgjl nurse@ward"}
	running.Spec.UserData = "#cloud-config\npackage_update: true\n"
	failed := hypervisor.VM{ID: "vm-2", Name: "lab <b>", ProjectID: "p-1", Spec: spec, Desired: hypervisor.DesiredRunning,
		Status: hypervisor.VMStatus{State: hypervisor.StateError, Error: "no node can run VMs right now"}, CreatedAt: goldenTime}
	building := hypervisor.VM{ID: "vm-3", Name: "ris", ProjectID: "p-2", Spec: spec, Desired: hypervisor.DesiredRunning, Node: "node1",
		NICs: []hypervisor.NIC{{ID: "vm-3-0"}}, Status: hypervisor.VMStatus{State: hypervisor.StateBuilding}, CreatedAt: goldenTime}
	vms := vmsData{CanCreate: true, VMs: []vmRow{
		{VM: failed, ProjectName: "radiology", ImageName: "debian-12"},
		{VM: running, ProjectName: "radiology", ImageName: "debian-12"},
		{VM: building, ProjectName: "icu", ImageName: "img-gone"},
	}}
	vm := vmData{VM: running, ProjectName: "radiology", FlavorName: "m1.small", ImageName: "debian-12", CanChange: true,
		Flavors: goldenFlavors(),
		Events: []hypervisor.Event{
			{ID: "vm-1-1", VM: "vm-1", Time: goldenTime, Kind: "create", Message: "created with 2 vCPU, 2048 MiB, 20 GiB; address [10.213.0.7]", User: "nurse1"},
			{ID: "vm-1-2", VM: "vm-1", Time: goldenTime, Kind: "schedule", Message: "placed on node2", Node: "node2"},
			{ID: "vm-1-3", VM: "vm-1", Time: goldenTime, Kind: "state", Message: "running", Node: "node2"},
			{ID: "vm-1-4", VM: "vm-1", Time: goldenTime, Kind: "future-kind", Message: "something new"},
		}}
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
	return []identity.Flavor{{ID: "fl-2", Name: "m1.large", VCPUs: 4, RAMMiB: 8192, DiskGiB: 80}, {ID: "fl-1", Name: "m1.small", VCPUs: 2, RAMMiB: 2048, DiskGiB: 20}}
}

func goldenNewVM() newVMData {
	_, _, imgs := goldenCompute()
	return newVMData{
		Projects: []identity.Project{{ID: "p-1", Name: "radiology"}, {ID: "p-2", Name: "icu"}},
		Images:   []hypervisor.Image{imgs.Images[0].Image, imgs.Images[1].Image},
		Flavors:  goldenFlavors(),
		Form:     vmForm{Name: "pacs 2", Project: "p-2", Image: "img-1", Flavor: "fl-1", SSHKeys: "ssh-ed25519 AAAA nurse@ward", DataDisk: "50"},
	}
}

// readerCopy is a VM as the compute service shows it to a project reader.
func readerCopy(vm hypervisor.VM) hypervisor.VM {
	vm.Spec.SSHKeys, vm.Spec.UserData, vm.CloudInitRedacted = nil, "", true
	return vm
}
