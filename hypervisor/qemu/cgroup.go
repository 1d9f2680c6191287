package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Each VM's QEMU runs in a cgroup of its own, so one guest (or an escaped
// QEMU) cannot take the box's memory, CPU, pids or disk bandwidth from the
// agent and the other VMs. Both hierarchies are supported: cgroup v1 (one
// tree per controller, what this kind of host runs) and the unified v2.
// The writes are a few files per VM, so this is a small writer rather than
// containerd/cgroups, which would bring D-Bus, eBPF and protobuf along.

// Limits are the cgroup limits of one VM, derived from its flavor.
type Limits struct {
	MemoryBytes int64 // guest RAM ceiling plus QEMU's overhead
	CPUQuotaUS  int64 // CPU time per CPUPeriodUS
	CPUPeriodUS int64
	CPUShares   int64 // relative weight, 1024 per vCPU (v1 units)
	Pids        int64
	// IODevice is the block device ("MAJ:MIN") holding the VM's disks;
	// empty (disks on tmpfs, or on the network) means no I/O limit.
	IODevice            string
	ReadIOPS, WriteIOPS int64
	ReadBPS, WriteBPS   int64
}

// QEMU's own memory on top of the guest's RAM: device emulation, block
// and network buffers, the VNC framebuffer, thread stacks. libvirt and
// Nova allow about 1 GiB of such overhead (libvirt's default lock limit is
// guest RAM + 1 GiB); under TCG the translated-code cache adds up to its
// default 1 GiB. Never tighter: a cgroup OOM kills the whole guest.
const (
	memOverhead    = 1 << 30
	tcgCodeCache   = 1 << 30
	cpuPeriodUS    = 100_000
	pidsBase       = 256 // QEMU's I/O worker pools, VNC, QMP, RCU threads
	iopsPerVCPU    = 5000
	bpsPerVCPU     = 250 << 20
	maxCPUShares   = 262144
	cgroupRemoveBy = 5 * time.Second
)

// LimitsFor is the cgroup limits of m, with its disks on device dev.
// Memory and CPU count the hot-plug ceilings: the guest may grow to them.
func LimitsFor(m Machine, dev string) Limits {
	mem := int64(m.maxMemoryMiB())<<20 + memOverhead
	if m.Accel != "kvm" {
		mem += tcgCodeCache
	}
	vcpus := int64(m.maxVCPUs())
	l := Limits{
		MemoryBytes: mem,
		// One core beyond the vCPUs for QEMU's main loop and I/O threads.
		CPUQuotaUS:  (vcpus + 1) * cpuPeriodUS,
		CPUPeriodUS: cpuPeriodUS,
		CPUShares:   min(1024*int64(m.VCPUs), maxCPUShares),
		Pids:        pidsBase + 2*vcpus,
	}
	if dev != "" {
		l.IODevice = dev
		l.ReadIOPS, l.WriteIOPS = iopsPerVCPU*vcpus, iopsPerVCPU*vcpus
		l.ReadBPS, l.WriteBPS = bpsPerVCPU*vcpus, bpsPerVCPU*vcpus
	}
	return l
}

// diskDevice is the whole block device ("MAJ:MIN") that holds path, or ""
// when it is on no block device (tmpfs, overlay). Throttling applies to
// disks, not partitions.
func diskDevice(path string) string {
	var st syscall.Stat_t
	if path == "" || syscall.Stat(path, &st) != nil {
		return ""
	}
	major, minor := (st.Dev>>8)&0xfff|(st.Dev>>32)&^0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)
	if _, err := os.Stat(sys); err != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		b, err := os.ReadFile(filepath.Join(sys, "..", "dev"))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d:%d", major, minor)
}

// Cgroups makes, fills and removes the VMs' cgroups under one parent group
// per hierarchy. Its paths are fixed at detection; it holds no VM state.
type Cgroups struct {
	// mu orders making groups against removing the then empty parents.
	mu sync.Mutex
	v2 bool
	// dirs are the parent groups: one per controller for v1 (keyed by
	// controller), one ("") for v2.
	dirs map[string]string
}

// v1Controllers are the v1 hierarchies a VM's group is made in.
var v1Controllers = []string{"memory", "cpu", "pids", "blkio"}

// DetectCgroups finds the cgroup hierarchy under root (/sys/fs/cgroup):
// v2 if root is a cgroup2 mount with controllers, else v1 with the
// controllers mounted under root. VMs' groups go in a group called parent,
// for v1 below the caller's own group of each controller (v1 has no rule
// against groups beside processes), for v2 below the root (v2 allows
// controllers only in groups without processes, and the appliance's agent
// is PID 1 in the root).
func DetectCgroups(root, parent string) (*Cgroups, error) {
	if err := mountCgroups(root); err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil {
		have := strings.Fields(string(b))
		for _, c := range []string{"memory", "cpu", "pids"} {
			if !slices.Contains(have, c) {
				return nil, fmt.Errorf("detect cgroups: v2 at %s lacks the %s controller", root, c)
			}
		}
		return &Cgroups{v2: true, dirs: map[string]string{"": filepath.Join(root, parent)}}, nil
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	cg := &Cgroups{dirs: map[string]string{}}
	for _, c := range v1Controllers {
		if _, err := os.Stat(filepath.Join(root, c, "cgroup.procs")); err != nil {
			if c == "blkio" {
				continue // I/O limits are the one optional part
			}
			return nil, fmt.Errorf("detect cgroups: no v1 %s controller under %s", c, root)
		}
		cg.dirs[c] = filepath.Join(root, c, own[c], parent)
	}
	return cg, nil
}

// ownCgroups maps each v1 controller to this process's group in it.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	own := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	return own, sc.Err()
}

// CgroupParent names the parent group of a Driver's VMs after its run
// directory, so two drivers on one host (tests) never clean up each other's.
func CgroupParent(runDir string) string {
	h := fnv.New32a()
	h.Write([]byte(filepath.Clean(runDir)))
	return fmt.Sprintf("cairn-vm-%08x", h.Sum32())
}

// Version is 1 or 2.
func (c *Cgroups) Version() int {
	if c.v2 {
		return 2
	}
	return 1
}

// Dir is the VM's group in controller's hierarchy (v2: controller is
// ignored).
func (c *Cgroups) Dir(controller, vm string) string {
	if c.v2 {
		controller = ""
	}
	return filepath.Join(c.dirs[controller], vm)
}

// files are the limit files of l, by controller, in the order they are
// written (v1 wants the period before the quota).
func (c *Cgroups) files(l Limits) map[string][][2]string {
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	if c.v2 {
		f := [][2]string{
			{"memory.max", i(l.MemoryBytes)},
			{"memory.swap.max", "0"},
			{"cpu.max", i(l.CPUQuotaUS) + " " + i(l.CPUPeriodUS)},
			// v2's weight runs 1-10000 with 100 the default, v1's shares
			// 2-262144 with 1024: the kernel's own conversion.
			{"cpu.weight", i(max(1, min(10000, 1+(l.CPUShares-2)*9999/262142)))},
			{"pids.max", i(l.Pids)},
		}
		if l.IODevice != "" {
			f = append(f, [2]string{"io.max", fmt.Sprintf("%s riops=%d wiops=%d rbps=%d wbps=%d",
				l.IODevice, l.ReadIOPS, l.WriteIOPS, l.ReadBPS, l.WriteBPS)})
		}
		return map[string][][2]string{"": f}
	}
	m := map[string][][2]string{
		"memory": {{"memory.limit_in_bytes", i(l.MemoryBytes)}},
		"cpu":    {{"cpu.cfs_period_us", i(l.CPUPeriodUS)}, {"cpu.cfs_quota_us", i(l.CPUQuotaUS)}, {"cpu.shares", i(l.CPUShares)}},
		"pids":   {{"pids.max", i(l.Pids)}},
	}
	if _, ok := c.dirs["blkio"]; ok && l.IODevice != "" {
		m["blkio"] = [][2]string{
			{"blkio.throttle.read_iops_device", l.IODevice + " " + i(l.ReadIOPS)},
			{"blkio.throttle.write_iops_device", l.IODevice + " " + i(l.WriteIOPS)},
			{"blkio.throttle.read_bps_device", l.IODevice + " " + i(l.ReadBPS)},
			{"blkio.throttle.write_bps_device", l.IODevice + " " + i(l.WriteBPS)},
		}
	}
	return m
}

// Create makes the VM's group with limits l (replacing a stale one).
func (c *Cgroups) Create(vm string, l Limits) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.v2 {
		if err := c.enableV2(); err != nil {
			return fmt.Errorf("create cgroup %s: %w", vm, err)
		}
	}
	files := c.files(l)
	// Every hierarchy gets the group, with limits or not: Place puts the
	// process in all of them.
	ctrls := make([]string, 0, len(c.dirs))
	for k := range c.dirs {
		ctrls = append(ctrls, k)
	}
	sort.Strings(ctrls)
	for _, ctrl := range ctrls {
		dir := c.Dir(ctrl, vm)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", vm, err)
		}
		for _, f := range files[ctrl] {
			if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0o644); err != nil {
				return fmt.Errorf("create cgroup %s: %s: %w", vm, f[0], err)
			}
		}
	}
	return nil
}

// enableV2 makes the parent group and hands the controllers down to its
// children (cgroup.subtree_control of the root and of the parent).
func (c *Cgroups) enableV2() error {
	parent := c.dirs[""]
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	ctl := "+memory +cpu +pids"
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(parent), "cgroup.controllers")); err == nil && slices.Contains(strings.Fields(string(b)), "io") {
		ctl += " +io"
	}
	for _, d := range []string{filepath.Dir(parent), parent} {
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(ctl), 0o644); err != nil {
			return fmt.Errorf("enable controllers in %s: %w", d, err)
		}
	}
	return nil
}

// Place moves process pid (all its threads) into the VM's group.
func (c *Cgroups) Place(vm string, pid int) error {
	for ctrl := range c.dirs {
		p := filepath.Join(c.Dir(ctrl, vm), "cgroup.procs")
		if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("place qemu %d in cgroup %s: %w", pid, vm, err)
		}
	}
	return nil
}

// Remove deletes the VM's group, and the parent with it when that was the
// last one (every run directory has its own parent, which would otherwise
// pile up). A group empties only once its exited process is reaped, so
// EBUSY is retried for a short while.
func (c *Cgroups) Remove(vm string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for ctrl := range c.dirs {
		errs = append(errs, removeGroup(c.Dir(ctrl, vm)))
	}
	c.removeParent()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", vm, err)
	}
	return nil
}

func removeGroup(dir string) error {
	deadline := time.Now().Add(cgroupRemoveBy)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if errors.Is(err, syscall.ENOTEMPTY) {
			// A plain directory (a test's fake hierarchy) holds files.
			return os.RemoveAll(dir)
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Prune removes the parent groups if no VM has a group in them.
func (c *Cgroups) Prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeParent()
}

// removeParent removes the parent groups if they are empty; a parent
// still in use stays (rmdir fails).
func (c *Cgroups) removeParent() {
	for _, dir := range c.dirs {
		syscall.Rmdir(dir)
	}
}

// List names the VMs that have a group (in any hierarchy).
func (c *Cgroups) List() ([]string, error) {
	seen := map[string]bool{}
	for _, dir := range c.dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list cgroups: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() && nameRE.MatchString(e.Name()) {
				seen[e.Name()] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}
