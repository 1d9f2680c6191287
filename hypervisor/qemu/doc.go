// Package qemu runs virtual machines as qemu-system-x86_64 processes, one
// per VM, and controls them over QMP.
//
// It owns three things: the QEMU command line (built by small pure functions
// from a Machine, checked by golden tests), the per-VM run directory under
// DriverConfig.RunDir (QMP, serial and VNC sockets, the serial log and the
// pidfile), and the QEMU processes it started. QEMU is launched in a
// session of its own (not with -daemonize, which the seccomp sandbox
// forbids), so a VM survives its caller being killed; after a restart the
// caller re-attaches with Driver.Attach and removes what it no longer
// wants with Driver.Cleanup. A process is only ever
// signalled after its /proc/PID/cmdline proved it is the QEMU of that run
// directory, and through a pidfd so a recycled pid cannot be hit.
//
// The run directory is runtime state: it is created by Start and removed when
// the VM stops (Instance.Quit, Driver.Cleanup) or when Start fails. The
// serial log goes with it unless Machine.SerialLog puts it elsewhere (beside
// the VM's disks, say), where QEMU keeps appending across boots; while the
// VM runs it is rotated at DriverConfig.SerialLogMax (serial.go).
//
// Every QEMU is confined (confine.go, cgroup.go): it is started as a user of
// its own from a reserved uid range (taps, read-only disks and the backing
// files of overlays reach it as descriptors, fds.go), installs QEMU's full seccomp sandbox (privilege
// changes, spawning, obsolete and resource-control syscalls denied), and runs in
// a cgroup of its own (v1 or v2) with memory, CPU, pids and I/O limits from
// the VM's size, which goes when the VM does (and at Cleanup).
//
// A running VM's vCPUs and memory grow over QMP (hotplug.go), and disks
// are plugged in, grown and unplugged (hotplug_disk.go): on the empty PCIe
// root ports every VM boots with (Machine.HotplugSlots), with the same
// block nodes the command line would have given them (devices.go builds
// both).
//
// Every VM has a qemu-guest-agent channel (a virtio-serial port whose host
// end is qga.sock in the run directory); qga.go is its client, which
// freezes and thaws the guest's file systems for snapshots. A guest may
// run no agent: calls fail within GuestAgentSyncTimeout then.
//
// The VM reconciler in package hypervisor is the intended importer; it owns
// disks, taps and firmware variable files and hands their paths in.
package qemu
