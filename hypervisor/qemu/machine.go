package qemu

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
)

// Machine is everything QEMU needs to run one VM. It is plain data: Args
// turns it into a command line without touching the host.
type Machine struct {
	Name         string // VM id; names the run directory and the process
	UUID         string // SMBIOS system UUID; empty lets QEMU pick none
	VCPUs        int    // vCPUs at boot
	MaxVCPUs     int    // ceiling for CPU hot-plug; 0 = VCPUs
	MemoryMiB    int    // boot memory
	MaxMemoryMiB int    // ceiling for memory hot-plug; 0 = MemoryMiB
	Accel        string // "kvm" or "tcg"
	Firmware     Firmware
	Disks        []Disk
	NICs         []NIC
	// Forward, if set, gives the VM one more NIC on QEMU's user-mode
	// network, with the host's 127.0.0.1:Forward.HostPort forwarded to the
	// guest's TCP port Forward.GuestPort: a guest on one host reached
	// without taps or bridges (benchmarks; a node's VMs use NICs).
	Forward *Forward
	// HotplugSlots is how many empty PCIe root ports the VM boots with,
	// one per disk that can be plugged in while it runs (q35's root bus
	// takes no hot-plugged devices): 0 means DefaultHotplugSlots, a
	// negative number none. Each port takes a slot of the root bus, which
	// has about 30 for every PCI device of the VM.
	HotplugSlots int
	// Kernel, Initrd and Append boot a kernel directly instead of the
	// firmware's boot order (tests, installers, appliance-style guests).
	Kernel, Initrd, Append string
	// SerialLog is the file QEMU appends the serial console to. Empty means
	// Dir/serial.log, which goes with the run directory when the VM stops;
	// a path beside the VM's disks keeps the history across boots.
	SerialLog string
	// Dir is the VM's run directory. The Driver sets it to RunDir/Name.
	Dir string
	// Confine is the user and seccomp filter QEMU runs with. The Driver
	// sets it unless configured Unconfined.
	Confine Confinement
	// Incoming starts QEMU waiting for a live migration's stream instead
	// of booting (-incoming defer; Instance.MigrateIncoming listens).
	Incoming bool
}

// Firmware selects SeaBIOS or OVMF.
type Firmware struct {
	Type string // "bios" (default) or "uefi"
	// Code is the read-only OVMF image, e.g. /usr/share/OVMF/OVMF_CODE_4M.fd.
	Code string
	// Vars is this VM's writable UEFI variable store (boot entries live
	// there, so it belongs with the VM's disks, not in the run directory).
	Vars string
	// VarsSource, instead of Vars, is the variable store as a network
	// volume (an NBD URL, as Disk.Source), VarsSize bytes long from its
	// start: QEMU's flash is as large as its block node, and a volume is
	// larger than OVMF's store. The volume moves with the VM, so its
	// settings do too.
	VarsSource string
	VarsSize   int64
	// VarsTemplate, if set, is copied to Vars by Driver.Start when Vars does
	// not exist yet (a fresh VM).
	VarsTemplate string
}

// Disk is one block device. Exactly one of Path (a local image file or
// block device) and Source (a network volume URL) is set; the format and
// front-end layers are the same for both, so a remote volume slots in
// without the guest seeing a difference.
type Disk struct {
	ID        string // device id, unique in the VM
	Path      string
	Source    string // nbd://host[:port]/export or nbd+unix:///export?socket=PATH
	Format    string // "qcow2" or "raw"; default raw
	ReadOnly  bool
	Media     string // "disk" (virtio-blk, default) or "cdrom" (AHCI CD drive)
	BootIndex int    // 1 = first boot device; 0 = not in the boot order
	// Cache is "none" (default: O_DIRECT, host page cache bypassed, safe for
	// migration and power loss) or "writeback" (for file systems without
	// O_DIRECT such as tmpfs).
	Cache string
	// Backing is the local qcow2 image a qcow2 disk at Path is an overlay
	// on (a cached base image). QEMU gets it as a read-only descriptor and
	// the chain is spelled out on the command line, so QEMU never opens a
	// backing file by the path in the overlay's header. The backing image
	// must be standalone: a deeper chain is refused at Start.
	Backing string
	// Serial is the disk's serial number as the guest sees it (Linux:
	// /dev/disk/by-id/virtio-SERIAL), at most 20 characters; "": none.
	Serial string
	// Port is the hot-plug root port the disk sits on ("": the root
	// bus): a disk hot-plugged into the VM where it ran before a live
	// migration is on the same port here, as migration requires.
	Port string
	// fixedGeometry gives a virtio disk a CHS geometry instead of letting
	// QEMU guess one from its first sector (Args sets it for a QEMU
	// waiting for a migration, whose volumes serve no read until the
	// switchover).
	fixedGeometry bool
}

// Forward is a user-mode NIC's port forward from the host's loopback.
type Forward struct {
	HostPort, GuestPort int
	MAC                 string
}

// NIC is one virtio network interface backed by a host tap device that the
// caller created (QEMU opens it, it does not configure it).
type NIC struct {
	ID  string
	Tap string
	MAC string
	MTU int // told to the guest (virtio-net's host_mtu); 0: the default, 1500
}

// The files of a run directory.
const (
	qmpSocket    = "qmp.sock"
	serialSocket = "serial.sock"
	serialLog    = "serial.log"
	vncSocket    = "vnc.sock"
	qgaSocket    = "qga.sock"
	pidFile      = "qemu.pid"
	qemuLog      = "qemu.log" // QEMU's stdout and stderr
)

// maxSocketPath is sun_path's size: QEMU cannot bind a longer unix socket.
const maxSocketPath = 107

// nameRE is what may be used as a VM name: it becomes a path component and
// a QEMU option value, where "," "/" and "=" would be read as syntax. (A
// leading digit is fine: names may be UUIDs.)
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// deviceID is what QEMU accepts as a device id and, with a short prefix, as
// a block node name (which is limited to 31 bytes).
var deviceID = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,23}$`)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Validate reports the first reason m cannot be run, so a bad request fails
// before QEMU is started.
func (m Machine) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !nameRE.MatchString(m.Name) {
		bad("name %q: want 1-63 of [A-Za-z0-9_.-], starting with a letter or digit", m.Name)
	}
	if m.UUID != "" && !uuidRE.MatchString(m.UUID) {
		bad("uuid %q is not a UUID", m.UUID)
	}
	if m.VCPUs < 1 {
		bad("vcpus %d: want at least 1", m.VCPUs)
	}
	if m.MaxVCPUs != 0 && m.MaxVCPUs < m.VCPUs {
		bad("max vcpus %d is below vcpus %d", m.MaxVCPUs, m.VCPUs)
	}
	if m.MemoryMiB < 16 {
		bad("memory %d MiB: want at least 16", m.MemoryMiB)
	}
	if m.MaxMemoryMiB != 0 && m.MaxMemoryMiB < m.MemoryMiB {
		bad("max memory %d MiB is below memory %d MiB", m.MaxMemoryMiB, m.MemoryMiB)
	}
	if m.Accel != "kvm" && m.Accel != "tcg" {
		bad("accel %q: want kvm or tcg", m.Accel)
	}
	switch m.Firmware.Type {
	case "", "bios":
	case "uefi":
		f := m.Firmware
		switch {
		case f.Code == "" || (f.Vars == "") == (f.VarsSource == ""):
			bad("uefi firmware needs a code file and either a vars file or a vars volume")
		case f.VarsSource != "" && (f.VarsSize <= 0 || f.VarsSize%4096 != 0):
			bad("uefi vars size %d: want a positive multiple of 4096", f.VarsSize)
		case f.VarsSource != "":
			if _, err := protocolNode(f.varsDisk(), 0); err != nil {
				bad("uefi vars: %v", err)
			}
		}
	default:
		bad("firmware %q: want bios or uefi", m.Firmware.Type)
	}
	if m.Dir == "" {
		bad("no run directory")
	} else if p := filepath.Join(m.Dir, serialSocket); len(p) > maxSocketPath {
		bad("run directory %s: socket path %s is longer than %d bytes", m.Dir, p, maxSocketPath)
	}
	if m.SerialLog != "" && !filepath.IsAbs(m.SerialLog) {
		bad("serial log %q is not an absolute path", m.SerialLog)
	}
	if m.Kernel == "" && (m.Initrd != "" || m.Append != "") {
		bad("initrd or kernel command line without a kernel")
	}
	ids := map[string]bool{guestAgentBus: true, guestAgentDev: true, varsNodeID: true}
	for i := range m.hotplugSlots() {
		ids[hotplugPort(i)] = true
	}
	for i, d := range m.Disks {
		if err := d.validate(); err != nil {
			bad("disk %d: %w", i, err)
		}
		if ids[d.ID] {
			bad("disk %d: duplicate or reserved id %q", i, d.ID)
		}
		ids[d.ID] = true
	}
	for i, n := range m.NICs {
		if err := n.validate(); err != nil {
			bad("nic %d: %w", i, err)
		}
		if ids[n.ID] {
			bad("nic %d: duplicate or reserved id %q", i, n.ID)
		}
		ids[n.ID] = true
	}
	if f := m.Forward; f != nil {
		if ids["forward"] {
			bad("forward: a disk or NIC has its id \"forward\"")
		}
		if hw, err := net.ParseMAC(f.MAC); err != nil || len(hw) != 6 || hw[0]&1 != 0 {
			bad("forward: mac %q is not a unicast Ethernet address", f.MAC)
		}
		if f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
			bad("forward: ports %d and %d are not TCP ports", f.HostPort, f.GuestPort)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate machine %q: %w", m.Name, err)
	}
	return nil
}

var serialRE = regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)

// unixSocket is the path of an nbd+unix source's socket, or "".
func (d Disk) unixSocket() string {
	u, err := url.Parse(d.Source)
	if err != nil || u.Scheme != "nbd+unix" {
		return ""
	}
	return u.Query().Get("socket")
}

func (d Disk) validate() error {
	if !deviceID.MatchString(d.ID) {
		return fmt.Errorf("id %q: want 1-24 of [A-Za-z0-9_.-], starting with a letter", d.ID)
	}
	if len(d.Serial) > 20 || !serialRE.MatchString(d.Serial) {
		return fmt.Errorf("%s: serial %q: want at most 20 of [A-Za-z0-9_.-]", d.ID, d.Serial)
	}
	if (d.Path == "") == (d.Source == "") {
		return fmt.Errorf("%s: want exactly one of path and source", d.ID)
	}
	if d.Source != "" {
		if _, err := protocolNode(d, 0); err != nil {
			return fmt.Errorf("%s: %w", d.ID, err)
		}
	}
	switch d.Format {
	case "", "raw", "qcow2":
	default:
		return fmt.Errorf("%s: format %q: want raw or qcow2", d.ID, d.Format)
	}
	if d.Backing != "" {
		if d.Path == "" || d.Format != "qcow2" {
			return fmt.Errorf("%s: a backing file needs a local qcow2 disk", d.ID)
		}
		if !filepath.IsAbs(d.Backing) {
			return fmt.Errorf("%s: backing file %q is not an absolute path", d.ID, d.Backing)
		}
	}
	switch d.Media {
	case "", "disk", "cdrom":
	default:
		return fmt.Errorf("%s: media %q: want disk or cdrom", d.ID, d.Media)
	}
	switch d.Cache {
	case "", "none", "writeback":
	default:
		return fmt.Errorf("%s: cache %q: want none or writeback", d.ID, d.Cache)
	}
	if d.BootIndex < 0 {
		return fmt.Errorf("%s: negative boot index", d.ID)
	}
	if n, ok := strings.CutPrefix(d.Port, hotplugPortPrefix); d.Port != "" && (!ok || !isDigits(n) || d.Media == "cdrom") {
		return fmt.Errorf("%s: port %q: want a hot-plug port (%sN) for a disk", d.ID, d.Port, hotplugPortPrefix)
	}
	return nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func (n NIC) validate() error {
	if !deviceID.MatchString(n.ID) {
		return fmt.Errorf("id %q: want 1-24 of [A-Za-z0-9_.-], starting with a letter", n.ID)
	}
	// IFNAMSIZ is 16 with the NUL; a comma would end QEMU's option value.
	if n.Tap == "" || len(n.Tap) > 15 || strings.ContainsAny(n.Tap, ",/ ") {
		return fmt.Errorf("%s: tap %q is not an interface name", n.ID, n.Tap)
	}
	// A MAC is required: QEMU's default is the same on every VM of a host,
	// which breaks as soon as two share a bridge.
	hw, err := net.ParseMAC(n.MAC)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("%s: mac %q is not an Ethernet address", n.ID, n.MAC)
	}
	if hw[0]&1 != 0 {
		return fmt.Errorf("%s: mac %s is multicast", n.ID, n.MAC)
	}
	return nil
}

// maxVCPUs and maxMemoryMiB resolve the "0 = same as boot" convention.
func (m Machine) maxVCPUs() int {
	return max(m.MaxVCPUs, m.VCPUs)
}

// DefaultHotplugSlots is how many disks can be hot-plugged into a VM whose
// Machine.HotplugSlots is 0.
const DefaultHotplugSlots = 8

// hotplugSlots resolves the "0 = default, negative = none" convention.
func (m Machine) hotplugSlots() int {
	if m.HotplugSlots == 0 {
		return DefaultHotplugSlots
	}
	return max(m.HotplugSlots, 0)
}

// serialLogPath resolves the "empty = in the run directory" convention.
func (m Machine) serialLogPath() string {
	if m.SerialLog != "" {
		return m.SerialLog
	}
	return filepath.Join(m.Dir, serialLog)
}

func (m Machine) maxMemoryMiB() int {
	return max(m.MaxMemoryMiB, m.MemoryMiB)
}
