package qemu

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Each piece of the command line is a small pure function of part of the
// Machine (after u-root's pkg/qemu devices), so a golden test pins it and a
// new device is one more function, not an edit of one long builder.

// esc makes s safe as a QEMU option value: QEMU splits options on ",", and
// a literal comma is written ",,". Paths are the values that can carry one.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// opts joins key=value pairs into one QEMU option string.
func opts(kv ...string) string { return strings.Join(kv, ",") }

// CPUModel is the -cpu for an accelerator: KVM passes the host CPU through;
// TCG emulates "max", the model with every feature TCG implements (qemu64
// lacks x86-64-v2, which current distributions require, and RDRAND, without
// which a guest kernel's random pool takes seconds to fill).
func CPUModel(accel string) string {
	if accel == "kvm" {
		return "host"
	}
	return "max"
}

func accelArgs(accel string) []string {
	if accel != "kvm" {
		accel = "tcg"
	}
	return []string{"-accel", accel, "-cpu", CPUModel(accel)}
}

// memorySlots is how many DIMMs can be hot-plugged; each SetMemory increase
// uses one.
const memorySlots = 8

func memoryArgs(m Machine) []string {
	size := fmt.Sprintf("size=%dM", m.MemoryMiB)
	if m.maxMemoryMiB() > m.MemoryMiB {
		size = opts(size, fmt.Sprintf("slots=%d", memorySlots), fmt.Sprintf("maxmem=%dM", m.maxMemoryMiB()))
	}
	return []string{"-m", size}
}

func smpArgs(m Machine) []string {
	return []string{"-smp", fmt.Sprintf("cpus=%d,maxcpus=%d", m.VCPUs, m.maxVCPUs())}
}

func firmwareArgs(f Firmware) []string {
	if f.Type != "uefi" {
		return nil
	}
	code := []string{"-drive", opts("if=pflash", "format=raw", "unit=0", "file="+esc(f.Code), "readonly=on")}
	if f.VarsSource == "" {
		return append(code, "-drive", opts("if=pflash", "format=raw", "unit=1", "file="+esc(f.Vars)))
	}
	// A volume: its first VarsSize bytes, as a block node the second
	// flash chip takes by name (a -drive cannot reach a volume's socket).
	d := f.varsDisk()
	proto, err := protocolNode(d, 0)
	if err != nil {
		// Validate refuses it; keep Args total and let QEMU say no.
		proto = blockNode{{"driver", "nbd"}, {"node-name", protoNodeName(d)}}
	}
	return append(code,
		"-blockdev", proto.cmdline(),
		"-blockdev", formatNode(d, false).set("size", int(f.VarsSize)).cmdline(),
		"-machine", "pflash1="+formatNodeName(d))
}

// varsDisk is a vars volume as the block layer sees it.
func (f Firmware) varsDisk() Disk {
	return Disk{ID: varsNodeID, Source: f.VarsSource, Format: "raw"}
}

// varsNodeID names the block nodes of a vars volume; no disk may take it.
const varsNodeID = "uefi-vars"

func directBootArgs(m Machine) []string {
	if m.Kernel == "" {
		return nil
	}
	a := []string{"-kernel", m.Kernel}
	if m.Initrd != "" {
		a = append(a, "-initrd", m.Initrd)
	}
	if m.Append != "" {
		a = append(a, "-append", m.Append)
	}
	return a
}

// Block node names: the protocol node (file or network) and the format node
// on top of it, which the front-end device uses; for an overlay, the
// backing file's protocol and format nodes; for a network volume that
// was reconnected to learn its new size, its protocol node may have the
// alternate name. (QEMU allows 31 bytes; IDs have at most 24.)
func protoNodeName(d Disk) string    { return "proto-" + d.ID }
func altProtoNodeName(d Disk) string { return "proto2-" + d.ID }
func formatNodeName(d Disk) string   { return "fmt-" + d.ID }
func backingFileNode(d Disk) string  { return "bfile-" + d.ID }
func backingNodeName(d Disk) string  { return "base-" + d.ID }

// blockOpt is one option of a block node. The cold path writes a node as a
// -blockdev string and the hot path as blockdev-add's JSON, both from the
// same list, so what a disk is given cannot differ between a VM started
// with it and one it was plugged into.
type blockOpt struct {
	key string // dotted for a member of a nested object: "cache.direct"
	val any    // string, bool or int
}

// blockNode is a block node's options in command-line order.
type blockNode []blockOpt

// set appends an option.
func (n blockNode) set(key string, val any) blockNode { return append(n, blockOpt{key, val}) }

// replace is n with the value of key changed.
func (n blockNode) replace(key string, val any) blockNode {
	m := slices.Clone(n)
	for i := range m {
		if m[i].key == key {
			m[i].val = val
		}
	}
	return m
}

// cmdline is n as a -blockdev value.
func (n blockNode) cmdline() string {
	kv := make([]string, len(n))
	for i, o := range n {
		var v string
		switch x := o.val.(type) {
		case bool:
			v = "off"
			if x {
				v = "on"
			}
		case int:
			v = strconv.Itoa(x)
		case string:
			v = esc(x)
		default:
			panic(fmt.Sprintf("block option %s: unexpected %T", o.key, o.val))
		}
		kv[i] = o.key + "=" + v
	}
	return opts(kv...)
}

// qmp is n as blockdev-add's arguments: dotted keys become nested objects.
func (n blockNode) qmp() map[string]any {
	root := map[string]any{}
	for _, o := range n {
		m := root
		path := strings.Split(o.key, ".")
		for _, k := range path[:len(path)-1] {
			sub, ok := m[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[k] = sub
			}
			m = sub
		}
		m[path[len(path)-1]] = o.val
	}
	return root
}

// readOnly reports whether d's nodes are opened read-only.
func (d Disk) readOnly() bool { return d.ReadOnly || d.Media == "cdrom" }

// cacheOpts is a local file node's cache and AIO mode. cache=none is
// direct I/O with flushes honoured; native AIO needs it.
func cacheOpts(n blockNode, d Disk) blockNode {
	if d.Cache == "writeback" {
		return n.set("cache.direct", false).set("cache.no-flush", false).set("aio", "threads")
	}
	return n.set("cache.direct", true).set("cache.no-flush", false).set("aio", "native")
}

// NBDReconnectDelay is how many seconds QEMU holds a network volume's I/O
// after its server went away (QEMU's reconnect-delay).
const NBDReconnectDelay = 60

// protocolNode is the lowest block layer: a local file (its path, or the
// fd set of descriptor fd when fd > 0), or a network volume parsed from
// Source. A new network protocol is one more case here.
func protocolNode(d Disk, fd int) (blockNode, error) {
	if d.Path != "" {
		file := d.Path
		if fd > 0 {
			file = fdsetPath(fd)
		}
		n := blockNode{{"driver", "file"}, {"node-name", protoNodeName(d)}, {"filename", file}}
		return cacheOpts(n, d).set("discard", "unmap").set("read-only", d.readOnly()), nil
	}
	u, err := url.Parse(d.Source)
	if err != nil {
		return nil, fmt.Errorf("source %q: %w", d.Source, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	n := blockNode{{"driver", "nbd"}, {"node-name", protoNodeName(d)}}
	switch u.Scheme {
	case "nbd":
		if u.Hostname() == "" {
			return nil, fmt.Errorf("source %q: no host", d.Source)
		}
		port := u.Port()
		if port == "" {
			port = "10809" // NBD's IANA port
		}
		// QMP's InetSocketAddress takes the port as a string.
		n = n.set("server.type", "inet").set("server.host", u.Hostname()).set("server.port", port)
	case "nbd+unix":
		sock := u.Query().Get("socket")
		if sock == "" {
			return nil, fmt.Errorf("source %q: no socket", d.Source)
		}
		n = n.set("server.type", "unix").set("server.path", sock)
	default:
		return nil, fmt.Errorf("source %q: scheme %q: want nbd or nbd+unix", d.Source, u.Scheme)
	}
	if export != "" {
		n = n.set("export", export)
	}
	// A volume's server is its node's cairn agent: while it restarts,
	// QEMU holds the guest's requests and sends them again once it is
	// back, instead of failing them.
	n = n.set("reconnect-delay", NBDReconnectDelay)
	return n.set("discard", "unmap").set("read-only", d.readOnly()), nil
}

// formatNode is the layer the guest device uses, on top of the protocol
// node; withBacking names the backing chain of an overlay.
func formatNode(d Disk, withBacking bool) blockNode {
	format := d.Format
	if format == "" {
		format = "raw"
	}
	n := blockNode{{"driver", format}, {"node-name", formatNodeName(d)}, {"file", protoNodeName(d)},
		{"discard", "unmap"}, {"read-only", d.readOnly()}}
	if withBacking {
		n = n.set("backing", backingNodeName(d))
	}
	return n
}

// backingArgs is the read-only node chain of d's backing file, passed as
// descriptor fd: with it named as the overlay's backing node, QEMU ignores
// the backing path in the overlay's header (which the VM's user could
// rewrite) and opens no file by path.
func backingArgs(d Disk, fd int) []string {
	file, format := backingNodes(d, fd)
	return append(fdsetArgs(fd, "backing-"+d.ID), "-blockdev", file.cmdline(), "-blockdev", format.cmdline())
}

// backingNodes are the protocol and format nodes of d's backing file, in
// fd set fdset.
func backingNodes(d Disk, fdset int) (file, format blockNode) {
	file = cacheOpts(blockNode{{"driver", "file"}, {"node-name", backingFileNode(d)}, {"filename", fdsetPath(fdset)}}, d).
		set("read-only", true)
	format = blockNode{{"driver", "qcow2"}, {"node-name", backingNodeName(d)}, {"file", backingFileNode(d)}, {"read-only", true}}
	return file, format
}

// diskArgs is the block node chain and the guest device of one disk.
// CD-ROMs go on the AHCI controller q35 always has (buses ide.0-ide.5):
// virtio-blk has no removable media, and every installer knows AHCI. A
// disk passed as descriptor fd (> 0) gets it in an fd set first; a disk
// with a backing file (backingFD > 0) gets the backing chain first.
func diskArgs(d Disk, cdrom, fd, backingFD int) []string {
	proto, err := protocolNode(d, fd)
	if err != nil {
		// Validate rejects such disks; keep Args total and let QEMU say no.
		proto = blockNode{{"driver", "file"}, {"node-name", protoNodeName(d)}, {"filename", d.Source}}
	}
	withBacking := d.Backing != "" && backingFD > 0
	dev := opts("virtio-blk-pci", "id="+d.ID, "drive="+formatNodeName(d))
	if d.Serial != "" && d.Media != "cdrom" {
		dev = opts(dev, "serial="+d.Serial)
	}
	if d.Media == "cdrom" {
		dev = opts("ide-cd", "id="+d.ID, "drive="+formatNodeName(d), "bus=ide."+strconv.Itoa(cdrom))
	}
	if d.BootIndex > 0 {
		dev = opts(dev, "bootindex="+strconv.Itoa(d.BootIndex))
	}
	if d.Port != "" {
		dev = opts(dev, "bus="+d.Port)
	}
	if d.fixedGeometry && d.Media != "cdrom" {
		// The classic geometry of a large disk; virtio guests address by
		// sector and do not use it.
		dev = opts(dev, "cyls=16383", "heads=16", "secs=63")
	}
	var a []string
	if fd > 0 {
		a = fdsetArgs(fd, "disk-"+d.ID)
	}
	if withBacking {
		a = append(a, backingArgs(d, backingFD)...)
	}
	return append(a, "-blockdev", proto.cmdline(), "-blockdev", formatNode(d, withBacking).cmdline(), "-device", dev)
}

// nicArgs: QEMU gets the existing tap as descriptor fd (it may not open
// taps as the VM's user); the caller owns the tap's configuration, so no
// helper scripts run.
func nicArgs(n NIC, fd int) []string {
	netdev := "net-" + n.ID
	dev := []string{"virtio-net-pci", "id=" + n.ID, "netdev=" + netdev, "mac=" + strings.ToLower(n.MAC)}
	if n.MTU > 0 {
		// A project network's segment is narrower than Ethernet (VXLAN's
		// 50 bytes); the guest's driver reads its MTU from the device.
		dev = append(dev, "host_mtu="+strconv.Itoa(n.MTU))
	}
	return []string{
		"-netdev", opts("tap", "id="+netdev, "fd="+strconv.Itoa(fd), "vhost=off"),
		"-device", opts(dev...),
	}
}

// serialArgs: QEMU itself writes the console to serial.log, so the log is
// complete even while nobody is connected to serial.sock.
func serialArgs(m Machine) []string {
	return []string{
		"-chardev", opts("socket", "id=serial0", "path="+esc(m.Dir+"/"+serialSocket), "server=on", "wait=off",
			"logfile="+esc(m.serialLogPath()), "logappend=on"),
		"-serial", "chardev:serial0",
	}
}

func qmpArgs(dir string) []string {
	return []string{
		"-chardev", opts("socket", "id=qmp", "path="+esc(dir+"/"+qmpSocket), "server=on", "wait=off"),
		"-mon", "chardev=qmp,mode=control",
	}
}

// guestAgentArgs is the channel to a qemu-guest-agent in the guest: a
// virtio-serial port by the name the agent looks for, whose host end is
// qga.sock in the run directory (qga.go speaks to it). Every VM gets it;
// a guest without an agent just never answers.
func guestAgentArgs(dir string) []string {
	return []string{
		"-device", opts("virtio-serial-pci", "id="+guestAgentBus),
		"-chardev", opts("socket", "id=qga0", "path="+esc(dir+"/"+qgaSocket), "server=on", "wait=off"),
		"-device", opts("virtserialport", "id="+guestAgentDev, "bus="+guestAgentBus+".0", "chardev=qga0", "name="+guestAgentPort),
	}
}

// The guest agent channel's device ids, which disks and NICs may not take.
const (
	guestAgentBus = "vserial0"
	guestAgentDev = "qga0port"
)

// displayArgs: a standard VGA (which noVNC renders, and which every
// firmware and OS drives) behind a VNC server on a unix socket; no local
// window.
func displayArgs(dir string) []string {
	return []string{"-device", "VGA,id=video0", "-vnc", "unix:" + esc(dir+"/"+vncSocket), "-display", "none"}
}

// hotplugPort is the id of the n-th root port left free for hot-plug.
func hotplugPort(n int) string { return hotplugPortPrefix + strconv.Itoa(n) }

const hotplugPortPrefix = "hp-port"

// hotplugArgs are n empty PCIe root ports, each of which takes one
// hot-plugged device. Chassis numbers must differ for QEMU to accept
// them. io-reserve=0 tells the firmware to reserve no I/O ports behind
// them (virtio devices on PCIe need none, and x86 has only 64 KiB of I/O
// space, which a few ports with the default 4 KiB each would exhaust).
func hotplugArgs(n int) []string {
	var a []string
	for i := range n {
		a = append(a, "-device", opts("pcie-root-port", "id="+hotplugPort(i), "chassis="+strconv.Itoa(i+1), "io-reserve=0"))
	}
	return a
}

// entropyArgs and balloonArgs: a guest that boots without entropy can stall
// for minutes; the balloon lets SetMemory shrink a guest, and deflates by
// itself when the guest runs out of memory.
func entropyArgs() []string {
	return []string{"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,id=rng0dev,rng=rng0"}
}

func balloonArgs() []string {
	return []string{"-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on"}
}
