package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/nbd"
)

// TestHotplugDisks plugs a raw file and an NBD volume (served by Cairn's
// own NBD server) into a running Linux guest, grows them and unplugs
// them, and checks each step both in QEMU and in the guest, which prints
// its virtio disks and their sizes on the console (cairnblock=1).
func TestHotplugDisks(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	kernel, initrd := testGuest(t)
	dir := vmTempDir(t)
	vol := newImage(t, dir, "vol.raw", 4<<20)
	sock, growVol := serveNBD(t, vol)
	d := newTestDriver(t) // after the NBD server: QEMU goes first
	cache := diskCache(t, dir)
	root := newImage(t, dir, "root.raw", 2<<20)
	m := Machine{
		Name: "plug", VCPUs: 1, MemoryMiB: 256, Accel: "tcg",
		Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 quiet panic=-1 cairnblock=1",
		Disks: []Disk{{ID: "root", Path: root, Cache: cache}},
	}
	t.Logf("command: %s", strings.Join(d.Command(m), " "))
	ctx := context.Background()
	inst, err := d.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	g := newGuestDisks(t, inst)
	g.want(map[string]int64{"root": 2 << 20})

	data := Disk{ID: "data-1", Path: newImage(t, dir, "data.raw", 8<<20), Cache: cache}
	if err := inst.AttachDisk(ctx, data); err != nil {
		t.Fatal(err)
	}
	wantDevice(t, inst, "data-1", "virtio-blk-pci")
	g.want(map[string]int64{"root": 2 << 20, "data-1": 8 << 20})
	// Again: nothing changes.
	if err := inst.AttachDisk(ctx, data); err != nil {
		t.Fatalf("second attach: %v", err)
	}
	if err := inst.AttachDisk(ctx, Disk{ID: "root", Path: root, Cache: cache}); err != nil {
		t.Fatalf("attach of a disk the vm booted with: %v", err)
	}
	if n := countPluggedPorts(t, inst); n != 1 {
		t.Fatalf("%d hot-plug ports taken after attaching one disk twice, want 1", n)
	}

	volume := Disk{ID: "vol", Source: "nbd+unix:///?socket=" + sock}
	if err := inst.AttachDisk(ctx, volume); err != nil {
		t.Fatal(err)
	}
	wantDevice(t, inst, "vol", "virtio-blk-pci")
	have := map[string]int64{"root": 2 << 20, "data-1": 8 << 20, "vol": 4 << 20}
	g.want(have)

	// A read-only disk and an overlay's base are root's alone: QEMU, as
	// the VM's user, gets them as descriptors.
	ro := Disk{ID: "ro", Path: newImage(t, dir, "ro.raw", 1<<20), ReadOnly: true, Cache: cache}
	if err := inst.AttachDisk(ctx, ro); err != nil {
		t.Fatal(err)
	}
	have["ro"] = 1 << 20
	overlay := Disk{ID: "overlay", Format: "qcow2", Cache: cache}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		overlay.Backing = filepath.Join(dir, "base.qcow2")
		overlay.Path = filepath.Join(dir, "overlay.qcow2")
		for _, args := range [][]string{
			{"create", "-q", "-f", "qcow2", overlay.Backing, "6M"},
			{"create", "-q", "-f", "qcow2", "-b", overlay.Backing, "-F", "qcow2", overlay.Path},
		} {
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
			}
		}
		if err := os.Chmod(overlay.Backing, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := inst.AttachDisk(ctx, overlay); err != nil {
			t.Fatal(err)
		}
		have["overlay"] = 6 << 20
	} else {
		t.Log("no qemu-img (apt-get install qemu-utils): overlays not covered")
	}
	g.want(have)
	for _, p := range []string{ro.Path, overlay.Backing} {
		if st, err := os.Stat(p); p != "" && (err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Mode().Perm() != 0o600) {
			t.Errorf("%s given away: %v, %v", p, st.Mode(), err)
		}
	}
	if err := inst.DetachDisk(ctx, "ro"); err != nil {
		t.Fatal(err)
	}
	delete(have, "ro")
	if overlay.Path != "" {
		if err := inst.DetachDisk(ctx, "overlay"); err != nil {
			t.Fatal(err)
		}
		delete(have, "overlay")
	}
	sets, err := inst.fdSets(ctx)
	if err != nil || len(sets) != 0 {
		t.Errorf("fd sets after the detach: %+v, %v", sets, err)
	}

	// Growing: the file and the guest's disk, and the boot disk too.
	if err := inst.ResizeDisk(ctx, "data-1", 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := inst.ResizeDisk(ctx, "root", 3<<20); err != nil {
		t.Fatal(err)
	}
	have["data-1"], have["root"] = 16<<20, 3<<20
	g.want(have)
	if st, err := os.Stat(data.Path); err != nil || st.Size() != 16<<20 {
		t.Errorf("image after resize: %v, %v; want 16 MiB", st, err)
	}
	if err := inst.ResizeDisk(ctx, "data-1", 1<<20); err == nil {
		t.Error("shrinking accepted")
	}
	if err := inst.ResizeDisk(ctx, "nope", 1<<20); err == nil {
		t.Error("resize of a missing disk accepted")
	}
	// An NBD volume's size is its server's: not beyond it, and what
	// the server has now, over a new connection; twice, so the protocol
	// node's names take turns.
	if err := inst.ResizeDisk(ctx, "vol", 8<<20); err == nil {
		t.Error("an nbd volume grew beyond its server's size")
	} else {
		t.Logf("nbd resize beyond the server's size: %v", err)
	}
	for _, size := range []int64{8 << 20, 12 << 20} {
		growVol(size)
		if err := inst.ResizeDisk(ctx, "vol", size); err != nil {
			t.Fatal(err)
		}
		have["vol"] = size
		g.want(have)
	}

	// The guest lets go of hot-plugged disks; the boot disk is on the
	// root bus, which QEMU cannot unplug from.
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := inst.DetachDisk(dctx, "vol"); err != nil {
		t.Fatal(err)
	}
	wantDevice(t, inst, "vol", "")
	wantNoNodes(t, inst, "vol")
	delete(have, "vol")
	g.want(have)
	if err := inst.DetachDisk(dctx, "vol"); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	if err := inst.DetachDisk(dctx, "data-1"); err != nil {
		t.Fatal(err)
	}
	delete(have, "data-1")
	g.want(have)
	if err := inst.DetachDisk(dctx, "root"); err == nil {
		t.Error("detach of the boot disk succeeded")
	} else {
		t.Logf("boot disk: %v", err)
	}
	wantDevice(t, inst, "root", "virtio-blk-pci")
	// The ports are free again.
	if err := inst.AttachDisk(ctx, data); err != nil {
		t.Fatal(err)
	}
	have["data-1"] = 16 << 20
	g.want(have)
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestHotplugDiskFailures runs where no guest answers: the firmware idles
// without an OS, so an unplug is never acknowledged.
func TestHotplugDiskFailures(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	dir := vmTempDir(t)
	cache := diskCache(t, dir)
	m := testMachine("noplug")
	m.HotplugSlots = 3
	ctx := context.Background()
	inst, err := d.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	a := Disk{ID: "a", Path: newImage(t, dir, "a.raw", 1<<20), Cache: cache, BootIndex: 3}
	if err := inst.AttachDisk(ctx, a); err != nil {
		t.Fatal(err)
	}
	// QEMU refuses the device (its boot index is taken): the nodes made
	// for it go again.
	b := Disk{ID: "b", Path: newImage(t, dir, "b.raw", 1<<20), Cache: cache, BootIndex: 3}
	err = inst.AttachDisk(ctx, b)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Command != "device_add" {
		t.Fatalf("attach with a taken boot index: %v, want device_add's error", err)
	}
	t.Logf("refused: %v", err)
	wantDevice(t, inst, "b", "")
	wantNoNodes(t, inst, "b")
	// Not a disk, not hot-pluggable, no room.
	for _, bad := range []Disk{
		{ID: "bad,id", Path: b.Path},
		{ID: "cd", Path: b.Path, Media: "cdrom"},
		{ID: "gone", Path: filepath.Join(dir, "missing.raw"), ReadOnly: true},
		{ID: "hp-port1", Path: b.Path},
	} {
		if err := inst.AttachDisk(ctx, bad); err == nil {
			t.Errorf("attach %+v accepted", bad)
		}
		wantNoNodes(t, inst, bad.ID)
	}
	b.BootIndex = 0
	if err := inst.AttachDisk(ctx, b); err != nil {
		t.Fatal(err)
	}

	// Nodes left by an attach cut short before its device_add are
	// replaced by the next attach, and removed by a detach.
	c := Disk{ID: "c", Path: newImage(t, dir, "c.raw", 1<<20), Cache: cache}
	e := Disk{ID: "e", Path: newImage(t, dir, "e.raw", 1<<20), Cache: cache}
	for _, dk := range []Disk{c, e} {
		if err := inst.handOver(dk.Path); err != nil {
			t.Fatal(err)
		}
		proto, _ := protocolNode(dk, 0)
		for _, n := range []blockNode{proto, formatNode(dk, false)} {
			if err := inst.run(ctx, "test", "blockdev-add", n.qmp(), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := inst.AttachDisk(ctx, c); err != nil {
		t.Fatalf("attach over leftover nodes: %v", err)
	}
	wantDevice(t, inst, "c", "virtio-blk-pci")
	if err := inst.DetachDisk(ctx, "e"); err != nil {
		t.Fatalf("detach of leftover nodes: %v", err)
	}
	wantNoNodes(t, inst, "e")

	// All ports are taken.
	if err := inst.AttachDisk(ctx, e); err == nil || !strings.Contains(err.Error(), "no free hot-plug port") {
		t.Fatalf("attach beyond the ports: %v", err)
	}
	wantNoNodes(t, inst, "e")

	// Nobody releases the device: DetachDisk gives up when ctx ends, and
	// the disk is still there, whole.
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err = inst.DetachDisk(dctx, "a")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "guest did not release") {
		t.Fatalf("detach without a guest: %v", err)
	}
	t.Logf("unanswered unplug: %v", err)
	// Asked again while the first request is pending: the same answer.
	dctx, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := inst.DetachDisk(dctx, "a"); err == nil || !strings.Contains(err.Error(), "guest did not release") {
		t.Fatalf("second detach without a guest: %v", err)
	}
	wantDevice(t, inst, "a", "virtio-blk-pci")
	if sizes, err := inst.DiskSizes(ctx); err != nil || sizes["a"] != 1<<20 {
		t.Fatalf("disk sizes after the failed detach: %v, %v", sizes, err)
	}
	if err := inst.AttachDisk(ctx, a); err != nil {
		t.Fatalf("attach of the disk still there: %v", err)
	}
	if err := inst.DetachDisk(ctx, "nothing"); err != nil {
		t.Fatalf("detach of an absent disk: %v", err)
	}
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBlockNodeQMP: blockdev-add gets what -blockdev gets, nested where
// the command line has dotted keys, with JSON's types.
func TestBlockNodeQMP(t *testing.T) {
	d := Disk{ID: "vol", Source: "nbd+unix:///exp?socket=/run/a,b.sock"}
	proto, err := protocolNode(d, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(proto.qmp())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"discard":"unmap","driver":"nbd","export":"exp","node-name":"proto-vol","read-only":false,` +
		`"reconnect-delay":60,"server":{"path":"/run/a,b.sock","type":"unix"}}`
	if string(got) != want {
		t.Errorf("nbd node:\n got %s\nwant %s", got, want)
	}
	if c := proto.cmdline(); !strings.Contains(c, "server.path=/run/a,,b.sock") || !strings.Contains(c, "reconnect-delay=60") {
		t.Errorf("nbd node's command line %s", c)
	}
	file, _ := protocolNode(Disk{ID: "d", Path: "/d.raw", ReadOnly: true}, 0)
	got, _ = json.Marshal(file.qmp())
	want = `{"aio":"native","cache":{"direct":true,"no-flush":false},"discard":"unmap","driver":"file",` +
		`"filename":"/d.raw","node-name":"proto-d","read-only":true}`
	if string(got) != want {
		t.Errorf("file node:\n got %s\nwant %s", got, want)
	}
	got, _ = json.Marshal(formatNode(Disk{ID: "d", Format: "qcow2"}, true).qmp())
	want = `{"backing":"base-d","discard":"unmap","driver":"qcow2","file":"proto-d","node-name":"fmt-d","read-only":false}`
	if string(got) != want {
		t.Errorf("format node:\n got %s\nwant %s", got, want)
	}
}

// newImage is a zeroed raw image of size bytes.
func newImage(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// growable is a file export whose size can grow; a connection keeps the
// size it was told at its start.
type growable struct {
	*nbd.FileBackend
	size atomic.Int64
}

func (g *growable) Size() int64 { return g.size.Load() }

// serveNBD serves path as the default export of a Cairn NBD server on a
// unix socket that the VM's user can reach, and returns the socket and a
// function that grows the export for new connections.
func serveNBD(t *testing.T, path string) (string, func(int64)) {
	t.Helper()
	file, err := nbd.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	be := &growable{FileBackend: file}
	be.size.Store(file.Size())
	grow := func(size int64) {
		t.Helper()
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		be.size.Store(size)
	}
	t.Cleanup(func() { be.Close() })
	return serveBackend(t, be), grow
}

// serveBackend serves be as the default export of a Cairn NBD server on a
// unix socket that the VM's user can reach.
func serveBackend(t *testing.T, be nbd.Backend) string {
	t.Helper()
	srv, err := nbd.NewServer(nbd.Config{
		Lookup: func(_ context.Context, name string) (*nbd.Export, error) {
			if name != "" {
				return nil, nbd.ErrNoExport
			}
			return &nbd.Export{Name: name, Backend: be, MultiConn: true}, nil
		},
		Logger: slog.New(slog.NewTextHandler(testutil.LogWriter(t), nil)).With("component", "nbd"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Short: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "cairn-nbd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// Root's alone, as the volume server leaves a socket it opened before
	// the VM's user existed on its node: QEMU, as that user, connects once
	// Start or AttachDisk has handed the socket over.
	for p, mode := range map[string]os.FileMode{dir: 0o711, sock: 0o600} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		os.RemoveAll(dir)
	})
	return sock
}

// guestDisks follows the disks the test guest reports on its console.
type guestDisks struct {
	t    *testing.T
	inst *Instance
}

func newGuestDisks(t *testing.T, inst *Instance) *guestDisks {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(inst.SerialLog())
			t.Logf("serial console:\n%s", b)
		}
	})
	testutil.WaitFor(t, 90*time.Second, "the guest's marker", func() error {
		if b, _ := os.ReadFile(inst.SerialLog()); !strings.Contains(string(b), guestMarker) {
			return errors.New("not yet")
		}
		return nil
	})
	return &guestDisks{t: t, inst: inst}
}

// want waits until QEMU has the disks of want (ID to bytes), and, if the
// guest can show its disks, until the guest has disks of those sizes.
func (g *guestDisks) want(want map[string]int64) {
	g.t.Helper()
	testutil.WaitFor(g.t, 10*time.Second, fmt.Sprintf("qemu's disks %v", want), func() error {
		sizes, err := g.inst.DiskSizes(context.Background())
		if err != nil {
			return err
		}
		if fmt.Sprint(sizes) != fmt.Sprint(want) {
			return fmt.Errorf("qemu has %v", sizes)
		}
		return nil
	})
	if guest.blockModules != "" {
		g.t.Logf("not checked in the guest: %s", guest.blockModules)
		return
	}
	var sectors []string
	for _, b := range want {
		sectors = append(sectors, strconv.FormatInt(b/512, 10))
	}
	slices.Sort(sectors)
	testutil.WaitFor(g.t, 60*time.Second, fmt.Sprintf("the guest's disks of %v sectors", sectors), func() error {
		got, err := g.lastReport()
		if err != nil {
			return err
		}
		if !slices.Equal(got, sectors) {
			return fmt.Errorf("the guest has disks of %v sectors", got)
		}
		return nil
	})
	g.t.Logf("the guest has disks of %v sectors", sectors)
}

// lastReport is the sizes, in sectors and sorted, of the guest's last
// report of its disks.
func (g *guestDisks) lastReport() ([]string, error) {
	b, err := os.ReadFile(g.inst.SerialLog())
	if err != nil {
		return nil, err
	}
	var last string
	found := false
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), blocksLine); ok {
			if strings.HasPrefix(rest, "ERROR") {
				return nil, errors.New("guest: " + rest)
			}
			last, found = rest, true
		}
	}
	if !found {
		return nil, errors.New("no report from the guest yet")
	}
	var sizes []string
	for _, f := range strings.Fields(last) {
		_, s, _ := strings.Cut(f, "=")
		sizes = append(sizes, s)
	}
	slices.Sort(sizes)
	return sizes, nil
}

// wantDevice checks the QOM type of device id ("" for none).
func wantDevice(t *testing.T, inst *Instance, id, typ string) {
	t.Helper()
	got, err := inst.deviceType(context.Background(), id)
	if err != nil || got != typ {
		t.Fatalf("device %s: %q, %v; want %q", id, got, err, typ)
	}
}

// wantNoNodes checks that disk id has no block node left.
func wantNoNodes(t *testing.T, inst *Instance, id string) {
	t.Helper()
	nodes, err := inst.blockNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for n := range nodes {
		if strings.HasSuffix(n, "-"+id) {
			t.Fatalf("block node %s left behind", n)
		}
	}
}

// countPluggedPorts is how many hot-plug ports have a device behind them.
func countPluggedPorts(t *testing.T, inst *Instance) int {
	t.Helper()
	var buses []struct {
		Devices []pciDevice `json:"devices"`
	}
	if err := inst.run(context.Background(), "test", "query-pci", nil, &buses); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range buses {
		for _, d := range b.Devices {
			if strings.HasPrefix(d.QdevID, hotplugPortPrefix) && d.Bridge != nil && len(d.Bridge.Devices) > 0 {
				n++
			}
		}
	}
	return n
}
