package qemu

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// QEMU runs as the VM's user, who may not open the node's taps (that needs
// CAP_NET_ADMIN) nor the read-only disks (cached images and ISOs that every
// VM shares, the cloud-init seed, all root's). The Driver opens them and
// QEMU inherits them as descriptors 3, 4, ...: first one tap per NIC, then
// one file per read-only disk, in the Machine's order. Args and openPassed
// both follow that order, so the numbers on the command line are the
// descriptors QEMU gets.

// firstPassedFD is the descriptor of exec.Cmd.ExtraFiles[0].
const firstPassedFD = 3

// passedAsFD reports whether QEMU gets the disk as a descriptor (in an fd
// set) rather than opening its path: read-only local files are. Writable
// disks are the VM's own and handed to its user, since QEMU reopens them
// (and qcow2 overlays open their backing file themselves).
func (d Disk) passedAsFD() bool { return d.Path != "" && (d.ReadOnly || d.Media == "cdrom") }

// nicFD is the descriptor of the i-th NIC's tap.
func nicFD(i int) int { return firstPassedFD + i }

// diskFDs maps the ID of each disk passed as a descriptor to that
// descriptor.
func (m Machine) diskFDs() map[string]int {
	fds := map[string]int{}
	next := firstPassedFD + len(m.NICs)
	for _, d := range m.Disks {
		if d.passedAsFD() {
			fds[d.ID] = next
			next++
		}
	}
	return fds
}

// fdsetArgs adds the descriptor fd to an fd set of its own (numbered like
// the descriptor), which a block node then names as /dev/fdset/N.
func fdsetArgs(fd int, opaque string) []string {
	n := strconv.Itoa(fd)
	return []string{"-add-fd", opts("fd="+n, "set="+n, "opaque="+esc(opaque))}
}

func fdsetPath(fd int) string { return "/dev/fdset/" + strconv.Itoa(fd) }

// openPassed opens, as the agent, what QEMU gets as descriptors, in
// descriptor order. The caller closes them once QEMU has started.
func openPassed(m Machine) (_ []*os.File, err error) {
	var files []*os.File
	defer func() {
		if err != nil {
			closeAll(files)
		}
	}()
	for _, n := range m.NICs {
		f, err := openTap(n.Tap)
		if err != nil {
			return nil, fmt.Errorf("nic %s: %w", n.ID, err)
		}
		files = append(files, f)
	}
	for _, d := range m.Disks {
		if !d.passedAsFD() {
			continue
		}
		f, err := os.OpenFile(d.Path, os.O_RDONLY|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.ID, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// openTap attaches to the persistent tap name the way QEMU's ifname= would
// (IFF_TAP, no packet info, a virtio-net header; netfabric.EnsureTap made
// it so), leaving the bridge and MAC set-up as they are.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tap %s: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %s: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
