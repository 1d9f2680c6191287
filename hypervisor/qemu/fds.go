package qemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// QEMU runs as the VM's user, who may not open the node's taps (that needs
// CAP_NET_ADMIN) nor the shared read-only files: cached base images (the
// backing files of overlays), ISOs that every VM shares and the cloud-init
// seed, all root's alone. The Driver opens them and QEMU inherits them as
// descriptors 3, 4, ...: first one tap per NIC, then, disk by disk in the
// Machine's order, the disk itself if it is read-only and its backing file
// if it has one. Args and openPassed both follow that order (passedDisks),
// so the numbers on the command line are the descriptors QEMU gets.

// firstPassedFD is the descriptor of exec.Cmd.ExtraFiles[0].
const firstPassedFD = 3

// passedAsFD reports whether QEMU gets the disk as a descriptor (in an fd
// set) rather than opening its path: read-only local files are. Writable
// disks are the VM's own and handed to its user, since QEMU reopens them;
// their backing files are passed as descriptors too (Disk.Backing).
func (d Disk) passedAsFD() bool { return d.Path != "" && (d.ReadOnly || d.Media == "cdrom") }

// nicFD is the descriptor of the i-th NIC's tap.
func nicFD(i int) int { return firstPassedFD + i }

// passedFile is one disk file QEMU gets as a descriptor.
type passedFile struct {
	disk    string // the disk's ID
	path    string
	backing bool // the disk's backing file, not the disk
	fd      int
}

// passedDisks lists the disk files QEMU gets as descriptors, in descriptor
// order.
func (m Machine) passedDisks() []passedFile {
	var files []passedFile
	next := firstPassedFD + len(m.NICs)
	for _, d := range m.Disks {
		if d.passedAsFD() {
			files = append(files, passedFile{disk: d.ID, path: d.Path, fd: next})
			next++
		}
		if d.Backing != "" {
			files = append(files, passedFile{disk: d.ID, path: d.Backing, backing: true, fd: next})
			next++
		}
	}
	return files
}

// diskFDs maps the ID of each disk passed as a descriptor to that
// descriptor, and the ID of each disk with a backing file to the backing
// file's descriptor.
func (m Machine) diskFDs() (disks, backing map[string]int) {
	disks, backing = map[string]int{}, map[string]int{}
	for _, f := range m.passedDisks() {
		if f.backing {
			backing[f.disk] = f.fd
		} else {
			disks[f.disk] = f.fd
		}
	}
	return disks, backing
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
	for _, p := range m.passedDisks() {
		f, err := os.OpenFile(p.path, os.O_RDONLY|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", p.disk, err)
		}
		files = append(files, f)
		if p.backing {
			if err := standalone(f); err != nil {
				return nil, fmt.Errorf("disk %s: backing file %s: %w", p.disk, p.path, err)
			}
		}
	}
	return files, nil
}

// standalone checks that the qcow2 image open as f has no backing file of
// its own. The command line names one backing node per overlay and no
// further: QEMU would open a second level by the path in the image's
// header, as the VM's user, which is what passing descriptors avoids.
// (Base images are refused with a backing file at upload, so this is a
// corrupt or foreign cache.)
func standalone(f *os.File) error {
	// The header's first 20 bytes: magic, version, backing file offset
	// (8 bytes) and name length (4 bytes), big-endian.
	var h [20]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("read qcow2 header: %w", err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return errors.New("not a qcow2 image")
	}
	if off, n := binary.BigEndian.Uint64(h[8:16]), binary.BigEndian.Uint32(h[16:20]); off != 0 || n != 0 {
		return errors.New("it has a backing file of its own: only one level of backing is supported")
	}
	return nil
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
