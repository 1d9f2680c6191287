// Package cloudinit writes and reads NoCloud seeds: the small ISO9660 image,
// labelled "cidata", that cloud-init (and cloudbase-init, and our own test
// guest) reads at first boot to learn a VM's instance ID, hostname, SSH keys,
// user-data and network configuration.
//
// It owns the seed's format and its validation, nothing else: the hypervisor
// package decides what goes into a seed and attaches the file to a VM. Any
// package may import it; it touches only the paths it is given and, while
// writing, a scratch directory under os.TempDir.
package cloudinit
