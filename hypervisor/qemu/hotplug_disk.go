package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Disks are hot-plugged as on the command line: the same protocol and
// format nodes (devices.go builds both paths' options), added with
// blockdev-add, and a virtio-blk-pci on one of the empty root ports the VM
// booted with (Machine.HotplugSlots). The nodes and the device are named
// after the disk's ID, which is how they are found again, by this Instance
// or after a re-attach, without remembering anything.

// unplugPoll is how often DetachDisk checks whether the device is gone,
// besides listening for DEVICE_DELETED (an event can be missed: it may have
// come before a re-attach, or while the watcher's buffer was full).
const unplugPoll = 500 * time.Millisecond

// AttachDisk plugs d into the running VM as a virtio disk on a free
// hot-plug port. A disk with d.ID already in the VM is left as it is
// (nil), so a repeated attach is harmless. Block nodes of d without a
// device, left by an attach that was cut short, are replaced. If the
// device is refused, the nodes and descriptors added for it are removed
// again.
//
// Local files reach QEMU as at Start: a writable disk is handed to the
// VM's user and opened by path; a read-only disk and an overlay's backing
// file are opened here and passed to QEMU as descriptors (add-fd), so
// they stay root's. CD-ROMs are refused: AHCI has no hot-plug.
func (i *Instance) AttachDisk(ctx context.Context, d Disk) error {
	fail := func(err error) error { return fmt.Errorf("attach disk %s to vm %s: %w", d.ID, i.name, err) }
	if err := d.validate(); err != nil {
		return fail(err)
	}
	if d.Media == "cdrom" {
		return fail(errors.New("a cdrom cannot be hot-plugged"))
	}
	i.plugMu.Lock()
	defer i.plugMu.Unlock()
	present, err := i.deviceType(ctx, d.ID)
	if err != nil {
		return fail(err)
	}
	if present != "" {
		if present != "virtio-blk-pci" && present != "ide-cd" {
			return fail(fmt.Errorf("id is taken by a %s", present))
		}
		return nil
	}
	if err := i.removeNodes(ctx, d.ID); err != nil {
		return fail(fmt.Errorf("nodes left by an earlier attach: %w", err))
	}
	port, err := i.freePort(ctx)
	if err != nil {
		return fail(err)
	}
	if d.Path != "" && !d.passedAsFD() {
		if err := i.handOver(d.Path); err != nil {
			return fail(err)
		}
	}
	// A volume's NBD socket, served for this VM alone, as at Start: the
	// volume server may have opened it before this VM's user existed on
	// this node (a VM restarted here after its node died).
	if sock := d.unixSocket(); sock != "" {
		if err := i.handOver(sock); err != nil {
			return fail(err)
		}
	}

	var r reverter
	defer r.fail()
	var nodes []blockNode
	fdset := 0
	if d.passedAsFD() {
		if fdset, err = i.passFile(ctx, &r, d.Path, "disk-"+d.ID, false); err != nil {
			return fail(err)
		}
	}
	if d.Backing != "" {
		set, err := i.passFile(ctx, &r, d.Backing, "backing-"+d.ID, true)
		if err != nil {
			return fail(err)
		}
		file, format := backingNodes(d, set)
		nodes = append(nodes, file, format)
	}
	proto, err := protocolNode(d, fdset)
	if err != nil {
		return fail(err)
	}
	nodes = append(nodes, proto, formatNode(d, d.Backing != ""))
	undo := context.WithoutCancel(ctx)
	for _, n := range nodes {
		if err := i.exec(ctx, "blockdev-add", n.qmp(), nil, nil); err != nil {
			return fail(err)
		}
		name := n.qmp()["node-name"].(string)
		r.add(func() {
			if err := i.deleteNode(undo, name); err != nil {
				i.log.Warn("block node left behind", "node", name, "err", err)
			}
		})
	}
	dev := map[string]any{"driver": "virtio-blk-pci", "id": d.ID, "drive": formatNodeName(d), "bus": port}
	if d.Serial != "" {
		dev["serial"] = d.Serial
	}
	if d.BootIndex > 0 {
		dev["bootindex"] = d.BootIndex
	}
	if err := i.exec(ctx, "device_add", dev, nil, nil); err != nil {
		return fail(err)
	}
	r.success()
	i.log.Info("disk attached", "disk", d.ID, "port", port)
	return nil
}

// passFile opens path read-only and hands it to QEMU in a new fd set,
// named by opaque (how removeNodes finds it again); backing files must be
// standalone (see standalone). It returns the set's number.
func (i *Instance) passFile(ctx context.Context, r *reverter, path, opaque string, backing bool) (int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if backing {
		if err := standalone(f); err != nil {
			return 0, fmt.Errorf("backing file %s: %w", path, err)
		}
	}
	sets, err := i.fdSets(ctx)
	if err != nil {
		return 0, err
	}
	// Above every set there is, including those of the command line
	// (numbered like their descriptors).
	set := 1
	for _, s := range sets {
		set = max(set, s.ID+1)
	}
	if err := i.exec(ctx, "add-fd", map[string]any{"fdset-id": set, "opaque": opaque}, nil, f); err != nil {
		return 0, err
	}
	undo := context.WithoutCancel(ctx)
	r.add(func() {
		if err := i.exec(undo, "remove-fd", map[string]any{"fdset-id": set}, nil, nil); err != nil {
			i.log.Warn("fd set left behind", "fdset", set, "err", err)
		}
	})
	return set, nil
}

// fdSet is one entry of query-fdsets.
type fdSet struct {
	ID  int `json:"fdset-id"`
	FDs []struct {
		Opaque string `json:"opaque"`
	} `json:"fds"`
}

// of reports whether the set holds one of disk id's files.
func (s fdSet) of(id string) bool {
	for _, fd := range s.FDs {
		if fd.Opaque == "disk-"+id || fd.Opaque == "backing-"+id {
			return true
		}
	}
	return false
}

func (i *Instance) fdSets(ctx context.Context) ([]fdSet, error) {
	var sets []fdSet
	err := i.exec(ctx, "query-fdsets", nil, &sets, nil)
	return sets, err
}

// DetachDisk unplugs the disk with the given ID and removes its block
// nodes. An absent disk is not an error (its leftover nodes, if any, are
// removed), so a repeated detach is harmless.
//
// Unplugging a PCI device needs the guest's cooperation: QEMU asks the
// guest (ACPI or PCIe native hot-plug) to let go, and removes the device
// only once the guest has. DetachDisk waits for that until ctx ends (so
// give ctx a deadline: a Linux guest answers within seconds); a
// guest that does not answer (one without hot-plug support, one that is
// hung, firmware that is still booting) gets an error saying so, and the
// device stays where it was, in use (QEMU may still remove it later if the
// guest gets round to it; a repeated DetachDisk then completes). Disks on
// the root bus (those the VM booted with) cannot be unplugged at all:
// QEMU refuses.
func (i *Instance) DetachDisk(ctx context.Context, id string) error {
	fail := func(err error) error { return fmt.Errorf("detach disk %s from vm %s: %w", id, i.name, err) }
	if !deviceID.MatchString(id) {
		return fail(errors.New("not a device id"))
	}
	if i.qmp == nil {
		return fail(ErrDisconnected)
	}
	typ, err := i.deviceType(ctx, id)
	if err != nil {
		return fail(err)
	}
	if typ != "" {
		if typ != "virtio-blk-pci" {
			return fail(fmt.Errorf("the device is a %s: only virtio disks are unplugged", typ))
		}
		if err := i.unplug(ctx, id); err != nil {
			return fail(err)
		}
		i.log.Info("disk detached", "disk", id)
	}
	if err := i.removeNodes(ctx, id); err != nil {
		return fail(err)
	}
	return nil
}

// unplug asks for device id's removal and waits until it is gone.
func (i *Instance) unplug(ctx context.Context, id string) error {
	events, stop := i.qmp.watch()
	defer stop()
	err := i.exec(ctx, "device_del", map[string]any{"id": id}, nil, nil)
	var qe *QMPError
	// A second device_del while the guest has not answered the first is
	// refused: keep waiting for the first.
	if err != nil && !(errors.As(err, &qe) && strings.Contains(qe.Desc, "process of unplug")) {
		return err
	}
	tick := time.NewTicker(unplugPoll)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return ErrDisconnected
			}
			var data struct {
				Device string `json:"device"`
			}
			if ev.Name == "DEVICE_DELETED" && json.Unmarshal(ev.Data, &data) == nil && data.Device == id {
				return nil
			}
		case <-tick.C:
			if typ, err := i.deviceType(ctx, id); err == nil && typ == "" {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("the guest did not release the device (PCI unplug needs the guest's cooperation), it stays in place: %w", ctx.Err())
		}
	}
}

// ResizeDisk tells QEMU, and through it the guest, that the disk with the
// given ID has bytes now. A local image is grown to that size (raw: the
// file; qcow2: its virtual size). A network volume must have that size on
// its server already: NBD fixes the size per connection, so QEMU is given
// a new connection to it (its protocol node is replaced, under the disk's
// format node, by blockdev-reopen) and is refused if the server's size is
// smaller. Shrinking is refused: the guest's data past the new end would
// be lost.
func (i *Instance) ResizeDisk(ctx context.Context, id string, bytes int64) error {
	fail := func(err error) error { return fmt.Errorf("resize disk %s of vm %s: %w", id, i.name, err) }
	if !deviceID.MatchString(id) {
		return fail(errors.New("not a device id"))
	}
	nodes, err := i.blockNodes(ctx)
	if err != nil {
		return fail(err)
	}
	d := Disk{ID: id}
	format, ok := nodes[formatNodeName(d)]
	switch {
	case !ok:
		return fail(errors.New("no such disk"))
	case bytes < format.Size:
		return fail(fmt.Errorf("%d bytes is below its size of %d: disks are not shrunk", bytes, format.Size))
	case bytes == format.Size:
		return nil
	}
	for _, name := range []string{protoNodeName(d), altProtoNodeName(d)} {
		if proto, ok := nodes[name]; ok && proto.Driver == "nbd" {
			if err := i.reconnect(ctx, id, name, proto, format); err != nil {
				return fail(err)
			}
		}
	}
	if err := i.exec(ctx, "block_resize", map[string]any{"node-name": formatNodeName(d), "size": bytes}, nil, nil); err != nil {
		return fail(err)
	}
	i.log.Info("disk resized", "disk", id, "bytes", bytes)
	return nil
}

// reconnect replaces the NBD node old of disk id, under its format node,
// by a new connection to the same export, which learns the export's size
// now. The two nodes take turns at protoNodeName and altProtoNodeName.
// The node's options are rebuilt from QEMU's URL for it, as a Disk.Source
// (the same options the disk was plugged in with).
func (i *Instance) reconnect(ctx context.Context, id, old string, proto, format nodeInfo) error {
	d := Disk{ID: id, Source: proto.File, Format: format.Driver, ReadOnly: format.ReadOnly}
	n, err := protocolNode(d, 0)
	if err != nil {
		return fmt.Errorf("reconnect: node %s: %w", old, err)
	}
	name := altProtoNodeName(d)
	if old == name {
		name = protoNodeName(d)
	}
	n = n.replace("node-name", name)
	if err := i.exec(ctx, "blockdev-add", n.qmp(), nil, nil); err != nil {
		return fmt.Errorf("reconnect: %w", err)
	}
	top := formatNode(d, false).replace("file", name)
	if err := i.exec(ctx, "blockdev-reopen", map[string]any{"options": []any{top.qmp()}}, nil, nil); err != nil {
		if derr := i.deleteNode(context.WithoutCancel(ctx), name); derr != nil {
			i.log.Warn("block node left behind", "node", name, "err", derr)
		}
		return fmt.Errorf("reconnect: %w", err)
	}
	if err := i.deleteNode(ctx, old); err != nil {
		// The new connection is in use; the old one is only idle.
		i.log.Warn("old nbd connection left behind", "node", old, "err", err)
	}
	return nil
}

// DiskSizes maps the ID of each disk of the VM to its size in bytes, as
// QEMU (and so the guest) sees it.
func (i *Instance) DiskSizes(ctx context.Context) (map[string]int64, error) {
	nodes, err := i.blockNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("disk sizes of vm %s: %w", i.name, err)
	}
	sizes := map[string]int64{}
	for name, n := range nodes {
		if id, ok := strings.CutPrefix(name, "fmt-"); ok {
			sizes[id] = n.Size
		}
	}
	return sizes, nil
}

// deviceType is the QOM type of the device with the given id, "" if the VM
// has none.
func (i *Instance) deviceType(ctx context.Context, id string) (string, error) {
	var children []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := i.exec(ctx, "qom-list", map[string]any{"path": "/machine/peripheral"}, &children, nil); err != nil {
		return "", err
	}
	for _, c := range children {
		if c.Name == id {
			return strings.TrimSuffix(strings.TrimPrefix(c.Type, "child<"), ">"), nil
		}
	}
	return "", nil
}

// nodeInfo is what query-named-block-nodes says of a node.
type nodeInfo struct {
	Driver   string `json:"drv"`
	ReadOnly bool   `json:"ro"`
	File     string `json:"file"` // QEMU's file name or URL for it
	Image    struct {
		VirtualSize int64 `json:"virtual-size"`
	} `json:"image"`
	Size int64 `json:"-"`
}

// blockNodes maps the VM's named block nodes to what QEMU says of them.
func (i *Instance) blockNodes(ctx context.Context) (map[string]nodeInfo, error) {
	var nodes []struct {
		NodeName string `json:"node-name"`
		nodeInfo
	}
	if err := i.exec(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes, nil); err != nil {
		return nil, err
	}
	m := map[string]nodeInfo{}
	for _, n := range nodes {
		n.Size = n.Image.VirtualSize
		m[n.NodeName] = n.nodeInfo
	}
	return m, nil
}

// removeNodes deletes the block nodes of disk id that exist, top down,
// and then the fd sets of its files.
func (i *Instance) removeNodes(ctx context.Context, id string) error {
	nodes, err := i.blockNodes(ctx)
	if err != nil {
		return err
	}
	d := Disk{ID: id}
	for _, name := range []string{formatNodeName(d), protoNodeName(d), altProtoNodeName(d), backingNodeName(d), backingFileNode(d)} {
		if _, ok := nodes[name]; !ok {
			continue
		}
		if err := i.deleteNode(ctx, name); err != nil {
			return err
		}
	}
	sets, err := i.fdSets(ctx)
	if err != nil {
		return err
	}
	for _, s := range sets {
		if !s.of(id) {
			continue
		}
		// QEMU closes the set's descriptor once no node uses it.
		if err := i.exec(ctx, "remove-fd", map[string]any{"fdset-id": s.ID}, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

func (i *Instance) deleteNode(ctx context.Context, name string) error {
	return i.exec(ctx, "blockdev-del", map[string]any{"node-name": name}, nil, nil)
}

// pciDevice is a device of query-pci; a bridge (a root port) has the
// devices behind it.
type pciDevice struct {
	QdevID string `json:"qdev_id"`
	Bridge *struct {
		Devices []pciDevice `json:"devices"`
	} `json:"pci_bridge"`
}

// freePort is the first hot-plug root port with nothing behind it.
func (i *Instance) freePort(ctx context.Context) (string, error) {
	var buses []struct {
		Devices []pciDevice `json:"devices"`
	}
	if err := i.exec(ctx, "query-pci", nil, &buses, nil); err != nil {
		return "", err
	}
	ports, free := 0, -1
	for _, b := range buses {
		for _, dev := range b.Devices {
			n, err := strconv.Atoi(strings.TrimPrefix(dev.QdevID, hotplugPortPrefix))
			if !strings.HasPrefix(dev.QdevID, hotplugPortPrefix) || err != nil || dev.Bridge == nil {
				continue
			}
			ports++
			if len(dev.Bridge.Devices) == 0 && (free < 0 || n < free) {
				free = n
			}
		}
	}
	switch {
	case ports == 0:
		return "", errors.New("no free hot-plug port: the vm has none (it was started without Machine.HotplugSlots)")
	case free < 0:
		return "", fmt.Errorf("no free hot-plug port: all %d are taken", ports)
	}
	return hotplugPort(free), nil
}

// handOver gives a writable local disk to the VM's user, the owner of the
// run directory; a VM that runs as root needs nothing.
func (i *Instance) handOver(path string) error {
	st, err := os.Stat(i.dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	return handOverPath(path, int(sys.Uid), int(sys.Gid), true)
}
