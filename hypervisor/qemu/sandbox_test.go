package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/vishvananda/netlink"
)

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			f[k] = strings.TrimSpace(v)
		}
	}
	return f
}

// TestSandbox boots the test guest the way the agent runs every VM and
// checks from the outside that its QEMU is confined: the full seccomp
// filter (elevateprivileges=deny included), started as the VM's own
// unprivileged user (no -runas: every uid and gid of the process is that
// user's), a cgroup with the flavor's limits; that what the user cannot
// open (a root-only shared image, the node's tap, the root-only base image
// under its disk's overlay) reaches QEMU as a descriptor and by no path;
// and that the guest still boots and its group goes with it.
func TestSandbox(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	kernel, initrd := testGuest(t)
	d := newTestDriver(t)
	if d.cgroupErr != nil {
		t.Fatalf("cgroups: %v", d.cgroupErr)
	}
	vmDir := vmTempDir(t)
	// The root disk is a qcow2 overlay on a cached base image, which is
	// root's alone (0400 in a 0700 directory, as the node's image cache
	// keeps them): the agent opens it for QEMU, and the overlay's header
	// names it by a path QEMU must not use.
	cacheDir := t.TempDir()
	base := filepath.Join(cacheDir, "img-1.qcow2")
	pattern := filepath.Join(t.TempDir(), "pattern.raw")
	if err := os.WriteFile(pattern, bytes.Repeat([]byte{0xab}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(vmDir, "root.qcow2")
	for _, c := range [][]string{
		{"convert", "-q", "-f", "raw", "-O", "qcow2", pattern, base},
		{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, disk, "64M"},
	} {
		if out, err := exec.Command("qemu-img", c...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", c, err, out)
		}
	}
	if err := os.Chmod(base, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cacheDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{cacheDir: 0o700, base: 0o400} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != want {
			t.Fatalf("%s: %v (%v), want mode %v", p, info.Mode().Perm(), err, want)
		}
		if owner, _ := fileUID(p); owner != 0 {
			t.Fatalf("%s owned by %d, want root", p, owner)
		}
	}
	// A shared, read-only image (an installer ISO) in a directory only
	// root may enter: the agent opens it for QEMU, and the VM's user must
	// not own it.
	shared := filepath.Join(t.TempDir(), "base.raw")
	if err := os.WriteFile(shared, make([]byte, 1<<20), 0o400); err != nil {
		t.Fatal(err)
	}
	m := Machine{Name: "boxed", VCPUs: 1, MemoryMiB: 128, MaxMemoryMiB: 256, Accel: "tcg",
		Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 quiet panic=-1",
		Disks: []Disk{{ID: "root", Path: disk, Format: "qcow2", Backing: base, Cache: diskCache(t, disk)},
			{ID: "base", Path: shared, ReadOnly: true, Cache: diskCache(t, disk)}},
		NICs:      []NIC{{ID: "nic0", Tap: testTap(t), MAC: "52:54:00:12:34:56"}},
		SerialLog: filepath.Join(vmDir, "serial.log")}
	inst, err := d.Start(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string { b, _ := os.ReadFile(inst.SerialLog()); return string(b) }
	testutil.WaitFor(t, 90*time.Second, "the guest's marker on the serial log", func() error {
		if !strings.Contains(serial(), guestMarker) {
			return errors.New("no marker yet")
		}
		return nil
	})

	st := procStatus(t, inst.PID())
	if st["Seccomp"] != "2" {
		t.Errorf("Seccomp: %q, want 2 (filter mode)", st["Seccomp"])
	}
	// Real, effective, saved and file-system ids: all the VM's user.
	uids := strings.Fields(st["Uid"])
	uid, _ := strconv.Atoi(uids[0])
	if len(uids) != 4 || uid <= d.cfg.UIDBase || uid > d.cfg.UIDBase+d.cfg.UIDCount || slices.ContainsFunc(uids, func(s string) bool { return s != uids[0] }) {
		t.Errorf("qemu runs as uids %v, want one uid of the VM range", uids)
	}
	if gids := strings.Fields(st["Gid"]); len(gids) != 4 || slices.ContainsFunc(gids, func(s string) bool { return s != uids[0] }) {
		t.Errorf("qemu runs as gids %v, want %s", gids, uids[0])
	}
	// Under TCG it needs no group at all (under KVM: /dev/kvm's).
	if g := st["Groups"]; g != "" {
		t.Errorf("qemu keeps supplementary groups %q", g)
	}
	if st["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs: %q, want 1", st["NoNewPrivs"])
	}
	// The full filter, and no -runas/-run-with: QEMU never had root to
	// give up, so nothing forced a weaker filter.
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", inst.PID()))
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if i := slices.Index(argv, "-sandbox"); i < 0 || i+1 >= len(argv) ||
		argv[i+1] != "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny" {
		t.Errorf("qemu runs without the full sandbox: %q", argv)
	}
	if slices.Contains(argv, "-runas") || slices.Contains(argv, "-run-with") {
		t.Errorf("qemu was told to change its user itself: %q", argv)
	}
	// The base image is named nowhere on the command line: QEMU gets it
	// open, and the backing chain is spelled out.
	for _, a := range argv {
		if strings.Contains(a, base) || strings.Contains(a, filepath.Base(base)) || strings.Contains(a, cacheDir) {
			t.Errorf("qemu's command line names the base image: %q", a)
		}
	}
	// The consoles: QEMU, as the VM's user, made the sockets the agent
	// relays (VNC answers RFB, the serial console accepts).
	vnc, err := net.DialTimeout("unix", inst.VNCSocket(), 5*time.Second)
	if err != nil {
		t.Fatalf("vnc: %v", err)
	}
	vnc.SetReadDeadline(time.Now().Add(10 * time.Second))
	greeting := make([]byte, 12)
	if _, err := io.ReadFull(vnc, greeting); err != nil || !strings.HasPrefix(string(greeting), "RFB 003.") {
		t.Errorf("vnc greeting %q: %v", greeting, err)
	}
	vnc.Close()
	if ser, err := net.DialTimeout("unix", inst.SerialSocket(), 5*time.Second); err != nil {
		t.Errorf("serial console: %v", err)
	} else {
		ser.Close()
	}
	// The tap and the root-only image are open in QEMU though its user
	// could open neither.
	links := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", inst.PID()))
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", inst.PID(), fd.Name())); err == nil {
			links[l] = true
		}
	}
	for _, want := range []string{"/dev/net/tun", shared, base} {
		if !links[want] {
			t.Errorf("qemu has no descriptor of %s (has %v)", want, links)
		}
	}
	// The guest's disk reads through the overlay into the base image:
	// QEMU copies the disk as the guest sees it into a file of the run
	// directory, which holds the base image's bytes.
	copied := filepath.Join(d.Dir(m.Name), "copy.raw")
	if err := os.WriteFile(copied, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(copied, 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(copied, uid, uid); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := inst.qmp.execute(ctx, "blockdev-add", map[string]any{"driver": "file", "node-name": "copy", "filename": copied}, nil); err != nil {
		t.Fatal(err)
	}
	if err := inst.qmp.execute(ctx, "blockdev-backup", map[string]any{"job-id": "copy", "device": "fmt-root", "target": "copy", "sync": "full"}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the copy of the guest's disk", func() error {
		var jobs []any
		if err := inst.qmp.execute(ctx, "query-block-jobs", nil, &jobs); err != nil {
			return err
		}
		if len(jobs) > 0 {
			return fmt.Errorf("jobs %v", jobs)
		}
		return nil
	})
	if got, err := os.ReadFile(copied); err != nil || !bytes.Equal(got[:1<<20], bytes.Repeat([]byte{0xab}, 1<<20)) {
		t.Errorf("the guest's disk does not read the base image's bytes (%v)", err)
	}
	// A process running as the VM's user cannot open the base image (an
	// escaped QEMU has only the descriptor of its own), but can open the
	// VM's own overlay.
	asVM := func(path string) error {
		cmd := exec.Command("head", "-c", "1", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := asVM(base); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("the VM's user opening the base image: %v, want permission denied", err)
	}
	if err := asVM(disk); err != nil {
		t.Errorf("the VM's user opening its own overlay: %v", err)
	}
	for _, p := range []string{disk, d.Dir(m.Name)} {
		if owner, _ := fileUID(p); owner != uid {
			t.Errorf("%s owned by %d, want the VM's user %d", p, owner, uid)
		}
	}
	for _, p := range []string{shared, base} {
		if owner, _ := fileUID(p); owner != 0 {
			t.Errorf("shared read-only image %s handed to uid %d", p, owner)
		}
	}

	// The cgroup, read back from the kernel.
	want := LimitsFor(m, "")
	read := func(ctrl, file string) string {
		b, err := os.ReadFile(filepath.Join(d.cgroups.Dir(ctrl, m.Name), file))
		if err != nil {
			t.Error(err)
		}
		return strings.TrimSpace(string(b))
	}
	procs := "cgroup.procs"
	if d.cgroups.Version() == 1 {
		if got := read("memory", "memory.limit_in_bytes"); got != strconv.FormatInt(want.MemoryBytes, 10) {
			t.Errorf("memory.limit_in_bytes %s, want %d", got, want.MemoryBytes)
		}
		if got := read("pids", "pids.max"); got != strconv.FormatInt(want.Pids, 10) {
			t.Errorf("pids.max %s, want %d", got, want.Pids)
		}
		if got := read("cpu", "cpu.cfs_quota_us"); got != strconv.FormatInt(want.CPUQuotaUS, 10) {
			t.Errorf("cpu.cfs_quota_us %s, want %d", got, want.CPUQuotaUS)
		}
		for _, ctrl := range []string{"memory", "cpu", "pids"} {
			if !slices.Contains(strings.Fields(read(ctrl, procs)), strconv.Itoa(inst.PID())) {
				t.Errorf("qemu %d not in its %s cgroup", inst.PID(), ctrl)
			}
		}
	} else {
		if got := read("", "memory.max"); got != strconv.FormatInt(want.MemoryBytes, 10) {
			t.Errorf("memory.max %s, want %d", got, want.MemoryBytes)
		}
		if !slices.Contains(strings.Fields(read("", procs)), strconv.Itoa(inst.PID())) {
			t.Errorf("qemu %d not in its cgroup", inst.PID())
		}
	}
	if dev := diskDevice(disk); dev != "" && d.cgroups.Version() == 1 {
		if got := read("blkio", "blkio.throttle.read_iops_device"); !strings.Contains(got, dev) {
			t.Errorf("blkio.throttle.read_iops_device %q, want a limit on %s", got, dev)
		}
	}

	if err := inst.Quit(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The VM's group goes, and the driver's parent group with its last VM.
	for _, dir := range d.cgroups.dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s left after quit: %v", dir, err)
		}
	}
}

// TestCgroupLeftoversCleaned: a group whose VM is gone (the agent crashed
// between the VM's exit and the removal) goes at the next Cleanup.
func TestCgroupLeftoversCleaned(t *testing.T) {
	d := newTestDriver(t)
	if d.cgroupErr != nil {
		t.Fatalf("cgroups: %v", d.cgroupErr)
	}
	if err := d.cgroups.Create("ghost", LimitsFor(testMachine("ghost"), "")); err != nil {
		t.Fatal(err)
	}
	if names, _ := d.cgroups.List(); !slices.Contains(names, "ghost") {
		t.Fatalf("groups %v, want ghost", names)
	}
	if err := d.Cleanup(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if names, _ := d.cgroups.List(); len(names) != 0 {
		t.Errorf("groups %v left after cleanup", names)
	}
	// A parent left empty (its groups removed, the agent killed before it
	// could remove it) goes at Cleanup too.
	for _, dir := range d.cgroups.dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Cleanup(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for _, dir := range d.cgroups.dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("parent group %s left after cleanup: %v", dir, err)
		}
	}
}

// TestCgroupFilesGolden pins what each writer puts in a VM's group, against
// a fake hierarchy in a temp dir (the v2 one cannot be mounted here).
func TestCgroupFilesGolden(t *testing.T) {
	m := goldenMachine()
	m.MaxVCPUs, m.MaxMemoryMiB = 4, 2048
	l := LimitsFor(m, "254:0")
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			root := t.TempDir()
			var cg *Cgroups
			if v == "v2" {
				os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory hugetlb pids rdma misc\n"), 0o644)
				var err error
				if cg, err = DetectCgroups(root, "cairn-vm"); err != nil {
					t.Fatal(err)
				}
			} else {
				cg = &Cgroups{dirs: map[string]string{}}
				for _, c := range v1Controllers {
					cg.dirs[c] = filepath.Join(root, c, "cairn-vm")
				}
			}
			if err := cg.Create("vm1", l); err != nil {
				t.Fatal(err)
			}
			if err := cg.Place("vm1", 4242); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", "cgroup-"+v+".golden"), dumpTree(t, root))
			if err := cg.Remove("vm1"); err != nil {
				t.Fatal(err)
			}
			if names, _ := cg.List(); len(names) != 0 {
				t.Errorf("groups %v left after remove", names)
			}
		})
	}
}

// dumpTree lists every file under root with its content.
func dumpTree(t *testing.T, root string) string {
	var lines []string
	filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		lines = append(lines, rel+": "+strings.TrimSpace(string(b)))
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// TestLimitsForFlavor: memory is the hot-plug ceiling plus QEMU's overhead
// (and TCG's code cache), CPU the vCPU ceiling plus one.
func TestLimitsForFlavor(t *testing.T) {
	m := Machine{VCPUs: 2, MaxVCPUs: 4, MemoryMiB: 1024, MaxMemoryMiB: 2048, Accel: "kvm"}
	l := LimitsFor(m, "")
	if l.MemoryBytes != 3<<30 {
		t.Errorf("kvm memory limit %d, want 3 GiB (2 GiB ceiling + 1 GiB)", l.MemoryBytes)
	}
	if l.CPUQuotaUS != 500_000 || l.CPUShares != 2048 || l.IODevice != "" {
		t.Errorf("limits %+v", l)
	}
	m.Accel = "tcg"
	if l := LimitsFor(m, ""); l.MemoryBytes != 4<<30 {
		t.Errorf("tcg memory limit %d, want 4 GiB", l.MemoryBytes)
	}
}

func fileUID(path string) (int, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return -1, err
	}
	return int(info.Sys().(*syscall.Stat_t).Uid), nil
}

// TestSandboxDeniesSpawn asks a confined QEMU to run a program (an exec:
// migration runs it through /bin/sh): the seccomp filter kills QEMU at the
// fork, where an unconfined one would run it and carry on.
func TestSandboxDeniesSpawn(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	d := newTestDriver(t)
	inst, err := d.Start(context.Background(), testMachine("nospawn"))
	if err != nil {
		t.Fatal(err)
	}
	if st := procStatus(t, inst.PID()); st["Seccomp"] != "2" {
		t.Fatalf("Seccomp: %q, want 2", st["Seccomp"])
	}
	marker := filepath.Join(t.TempDir(), "spawned")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// QEMU may die before it answers.
	_ = inst.qmp.execute(ctx, "migrate", map[string]any{"uri": "exec:touch " + marker}, nil)
	select {
	case <-inst.Exited():
	case <-time.After(10 * time.Second):
		t.Error("qemu still runs after spawning a program")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the program qemu spawned ran")
	}
	inst.Quit(context.Background())
}

// TestVMUsersDistinct: VMs whose names hash to the same uid still get
// users of their own, also while their starts overlap.
func TestVMUsersDistinct(t *testing.T) {
	d := NewDriver(DriverConfig{RunDir: t.TempDir(), UIDBase: 1000, UIDCount: 1, NoCgroups: true})
	d.cfg.UIDCount = 2 // two slots: both names land on one of them first
	d.mu.Lock()
	a, errA := d.allocUID("a", nil)
	b, errB := d.allocUID("b", nil)
	_, errC := d.allocUID("c", nil)
	d.mu.Unlock()
	if errA != nil || errB != nil || a == b {
		t.Errorf("uids %d (%v) and %d (%v), want two different ones", a, errA, b, errB)
	}
	if errC == nil {
		t.Error("a third VM got a uid from a range of two")
	}
	d.end("a")
	d.mu.Lock()
	if _, err := d.allocUID("c", nil); err != nil {
		t.Errorf("uid not free again after a's start ended: %v", err)
	}
	d.mu.Unlock()
}

// TestLaunchRightAfterExec starts confined machine-less QEMUs back to
// back: the driver must take the child it just started as its own even
// before the kernel has set up the new program's command line (a check of
// /proc/PID/cmdline right after exec failed now and then).
func TestLaunchRightAfterExec(t *testing.T) {
	requireQEMU(t)
	d := NewDriver(DriverConfig{RunDir: vmTempDir(t), Logger: slog.New(slog.DiscardHandler), NoCgroups: true})
	c := Confinement{UID: d.cfg.UIDBase, GID: d.cfg.UIDBase, Groups: []int{}, Sandbox: sandboxFull}
	for i := range 30 {
		if err := startBare(d, c); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
}

// startBare starts a machine-less QEMU confined by c, waits until it
// answers QMP, and stops it.
func startBare(d *Driver, c Confinement) error {
	dir := d.Dir("bare")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chown(dir, c.UID, c.GID); err != nil {
		return err
	}
	argv := append(append([]string{}, d.cfg.QEMU...),
		"-name", "guest=bare,process=cairn-bare", "-machine", "none", "-nodefaults", "-display", "none")
	argv = append(append(append(argv, qmpArgs(dir)...), confineArgs(c)...), "-pidfile", filepath.Join(dir, pidFile))
	p, err := d.launch(dir, argv, c.credential(), nil)
	if err != nil {
		return err
	}
	defer func() {
		p.kill()
		wctx, cancel := context.WithTimeout(context.Background(), killWait)
		p.wait(wctx)
		cancel()
		p.close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := d.waitReady(ctx, dir, p)
	if err != nil {
		return err
	}
	q.close()
	return nil
}

// testTap creates a persistent tap as netfabric.EnsureTap does (root
// owned: the VM's user cannot attach to it) and removes it at the end.
func testTap(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("cqt%d", os.Getpid()%100000)
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
	if err := netlink.LinkAdd(tap); err != nil {
		t.Fatalf("create tap %s: %v", name, err)
	}
	t.Cleanup(func() { netlink.LinkDel(tap) })
	return name
}
