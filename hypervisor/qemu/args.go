package qemu

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Args is QEMU's command line for m, without the binary: the Driver puts
// its argv prefix in front. It touches nothing on the host; call Validate
// first.
func (m Machine) Args() []string {
	a := []string{
		// guest= names the VM in QEMU's messages; process= in ps/top (the
		// kernel keeps 15 bytes of it, the full name is in the cmdline).
		"-name", fmt.Sprintf("guest=%s,process=cairn-vm-%s,debug-threads=on", m.Name, m.Name),
		// No host-wide qemu.conf, no default NIC, serial, parallel port or
		// monitor: everything the VM has is on this command line.
		"-no-user-config", "-nodefaults",
		"-machine", "q35",
	}
	if m.UUID != "" {
		a = append(a, "-uuid", m.UUID)
	}
	a = append(a, accelArgs(m.Accel)...)
	a = append(a, smpArgs(m)...)
	a = append(a, memoryArgs(m)...)
	a = append(a, firmwareArgs(m.Firmware)...)
	a = append(a, directBootArgs(m)...)
	// With no bootable device SeaBIOS would halt for good; retry instead so
	// a disk attached later (or a transient NBD outage) still boots.
	a = append(a, "-boot", "menu=off,reboot-timeout=5000")
	cdroms := 0
	fds, backing := m.diskFDs()
	for _, d := range m.Disks {
		if d.Port != "" {
			continue // after its port exists
		}
		d.fixedGeometry = m.Incoming && d.Source != ""
		a = append(a, diskArgs(d, cdroms, fds[d.ID], backing[d.ID])...)
		if d.Media == "cdrom" {
			cdroms++
		}
	}
	for i, n := range m.NICs {
		a = append(a, nicArgs(n, nicFD(i))...)
	}
	if f := m.Forward; f != nil {
		a = append(a, "-netdev", opts("user", "id=net-forward", fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-:%d", f.HostPort, f.GuestPort)),
			"-device", opts("virtio-net-pci", "id=forward", "netdev=net-forward", "mac="+strings.ToLower(f.MAC)))
	}
	a = append(a, entropyArgs()...)
	a = append(a, balloonArgs()...)
	a = append(a, serialArgs(m)...)
	a = append(a, displayArgs(m.Dir)...)
	// Last of the PCI devices: the root ports take the next free slots,
	// so every other device keeps the address it had before they existed
	// (guests name NICs after it).
	a = append(a, hotplugArgs(m.hotplugSlots())...)
	for _, d := range m.Disks {
		if d.Port != "" {
			d.fixedGeometry = m.Incoming && d.Source != ""
			a = append(a, diskArgs(d, 0, fds[d.ID], backing[d.ID])...)
		}
	}
	// After the root ports, so that adding the channel moved no device a
	// VM had before it; nothing in a guest is named after its address.
	a = append(a, guestAgentArgs(m.Dir)...)
	a = append(a, qmpArgs(m.Dir)...)
	a = append(a, confineArgs(m.Confine)...)
	if m.Incoming {
		a = append(a, "-incoming", "defer")
	}
	// No -daemonize (see Driver.launch); -pidfile is how a QEMU that
	// outlived its starter is found again.
	a = append(a, "-pidfile", filepath.Join(m.Dir, pidFile))
	return a
}
