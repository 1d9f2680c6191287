package qemu

import (
	"fmt"
	"net/url"
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
	return []string{
		"-drive", opts("if=pflash", "format=raw", "unit=0", "file="+esc(f.Code), "readonly=on"),
		"-drive", opts("if=pflash", "format=raw", "unit=1", "file="+esc(f.Vars)),
	}
}

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
// backing file's protocol and format nodes. (QEMU allows 31 bytes; IDs
// have at most 24.)
func protoNodeName(d Disk) string   { return "proto-" + d.ID }
func formatNodeName(d Disk) string  { return "fmt-" + d.ID }
func backingFileNode(d Disk) string { return "bfile-" + d.ID }
func backingNodeName(d Disk) string { return "base-" + d.ID }

// cacheOpts is a local file node's cache and AIO mode. cache=none is
// direct I/O with flushes honoured; native AIO needs it.
func cacheOpts(d Disk) []string {
	if d.Cache == "writeback" {
		return []string{"cache.direct=off", "cache.no-flush=off", "aio=threads"}
	}
	return []string{"cache.direct=on", "cache.no-flush=off", "aio=native"}
}

// NBDReconnectDelay is how many seconds QEMU holds a network volume's I/O
// after its server went away (QEMU's reconnect-delay).
const NBDReconnectDelay = 60

// protocolNode is the lowest block layer: a local file (its path, or the
// fd set of descriptor fd when fd > 0), or a network volume parsed from
// Source. A new network protocol is one more case here.
func protocolNode(d Disk, fd int) (string, error) {
	ro := "off"
	if d.ReadOnly || d.Media == "cdrom" {
		ro = "on"
	}
	if d.Path != "" {
		file := esc(d.Path)
		if fd > 0 {
			file = fdsetPath(fd)
		}
		return opts(append([]string{"driver=file", "node-name=" + protoNodeName(d), "filename=" + file},
			append(cacheOpts(d), "discard=unmap", "read-only="+ro)...)...), nil
	}
	u, err := url.Parse(d.Source)
	if err != nil {
		return "", fmt.Errorf("source %q: %w", d.Source, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	base := []string{"driver=nbd", "node-name=" + protoNodeName(d)}
	switch u.Scheme {
	case "nbd":
		if u.Hostname() == "" {
			return "", fmt.Errorf("source %q: no host", d.Source)
		}
		port := u.Port()
		if port == "" {
			port = "10809" // NBD's IANA port
		}
		base = append(base, "server.type=inet", "server.host="+u.Hostname(), "server.port="+port)
	case "nbd+unix":
		sock := u.Query().Get("socket")
		if sock == "" {
			return "", fmt.Errorf("source %q: no socket", d.Source)
		}
		base = append(base, "server.type=unix", "server.path="+esc(sock))
	default:
		return "", fmt.Errorf("source %q: scheme %q: want nbd or nbd+unix", d.Source, u.Scheme)
	}
	if export != "" {
		base = append(base, "export="+esc(export))
	}
	// A volume's server is its node's cairn agent: while it restarts,
	// QEMU holds the guest's requests and sends them again once it is
	// back, instead of failing them.
	base = append(base, "reconnect-delay="+strconv.Itoa(NBDReconnectDelay))
	return opts(append(base, "discard=unmap", "read-only="+ro)...), nil
}

// backingArgs is the read-only node chain of d's backing file, passed as
// descriptor fd: with it named as the overlay's backing node, QEMU ignores
// the backing path in the overlay's header (which the VM's user could
// rewrite) and opens no file by path.
func backingArgs(d Disk, fd int) []string {
	file := opts(append([]string{"driver=file", "node-name=" + backingFileNode(d), "filename=" + fdsetPath(fd)},
		append(cacheOpts(d), "read-only=on")...)...)
	format := opts("driver=qcow2", "node-name="+backingNodeName(d), "file="+backingFileNode(d), "read-only=on")
	return append(fdsetArgs(fd, "backing-"+d.ID), "-blockdev", file, "-blockdev", format)
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
		proto = opts("driver=file", "node-name="+protoNodeName(d), "filename="+esc(d.Source))
	}
	format := d.Format
	if format == "" {
		format = "raw"
	}
	ro := "off"
	if d.ReadOnly || d.Media == "cdrom" {
		ro = "on"
	}
	fmtNode := opts("driver="+format, "node-name="+formatNodeName(d), "file="+protoNodeName(d), "discard=unmap", "read-only="+ro)
	if d.Backing != "" && backingFD > 0 {
		fmtNode = opts(fmtNode, "backing="+backingNodeName(d))
	}
	dev := opts("virtio-blk-pci", "id="+d.ID, "drive="+formatNodeName(d))
	if d.Media == "cdrom" {
		dev = opts("ide-cd", "id="+d.ID, "drive="+formatNodeName(d), "bus=ide."+strconv.Itoa(cdrom))
	}
	if d.BootIndex > 0 {
		dev = opts(dev, "bootindex="+strconv.Itoa(d.BootIndex))
	}
	var a []string
	if fd > 0 {
		a = fdsetArgs(fd, "disk-"+d.ID)
	}
	if d.Backing != "" && backingFD > 0 {
		a = append(a, backingArgs(d, backingFD)...)
	}
	return append(a, "-blockdev", proto, "-blockdev", fmtNode, "-device", dev)
}

// nicArgs: QEMU gets the existing tap as descriptor fd (it may not open
// taps as the VM's user); the caller owns the tap's configuration, so no
// helper scripts run.
func nicArgs(n NIC, fd int) []string {
	netdev := "net-" + n.ID
	return []string{
		"-netdev", opts("tap", "id="+netdev, "fd="+strconv.Itoa(fd), "vhost=off"),
		"-device", opts("virtio-net-pci", "id="+n.ID, "netdev="+netdev, "mac="+strings.ToLower(n.MAC)),
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

// displayArgs: a standard VGA (which noVNC renders, and which every
// firmware and OS drives) behind a VNC server on a unix socket; no local
// window.
func displayArgs(dir string) []string {
	return []string{"-device", "VGA,id=video0", "-vnc", "unix:" + esc(dir+"/"+vncSocket), "-display", "none"}
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
