package qemu

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// A QEMU escape must not own the box: each VM's QEMU runs as a user of its
// own (so it can neither read another VM's disks nor signal or ptrace its
// QEMU) under the strictest seccomp filter QEMU has. The Driver starts QEMU
// already as that user (exec with credentials, no -runas): QEMU 7.2 installs
// its filter before -runas would call setuid, so with -runas the filter
// could not deny privilege changes. What QEMU cannot open as that user is
// opened by the Driver and passed as a file descriptor (taps, read-only
// disks, backing files); the VM's own files are chowned to it, and the
// directories on the way to them are traversable (0711) but not listable.

// Confinement is how one VM's QEMU is confined. The zero value confines
// nothing (QEMU runs as the caller, without a filter).
type Confinement struct {
	UID, GID int   // the VM's user; 0 = stay root
	Groups   []int // supplementary groups, e.g. /dev/kvm's group
	// Sandbox is the -sandbox value; empty = no seccomp filter.
	Sandbox string
}

// sandboxFull is the filter every confined VM runs with: on top of QEMU's
// default allow-list it denies obsolete syscalls, any change of user or
// group (elevateprivileges), fork and exec (spawn) and scheduler and
// affinity changes (resourcecontrol). libseccomp also sets no_new_privs.
// There is no weaker fallback: QEMU never changes its user itself now, so
// nothing in its start-up trips the filter, and a QEMU that cannot take it
// fails Start with its own message instead of running less confined.
const sandboxFull = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// confineArgs are the seccomp options of c; the user is not on the command
// line (Driver.launch execs QEMU as it).
func confineArgs(c Confinement) []string {
	if c.Sandbox == "" {
		return nil
	}
	return []string{"-sandbox", c.Sandbox}
}

// credential is what launch execs QEMU as: nil stays the caller.
func (c Confinement) credential() *syscall.Credential {
	if c.UID == 0 {
		return nil
	}
	groups := make([]uint32, len(c.Groups))
	for i, g := range c.Groups {
		groups[i] = uint32(g)
	}
	// Groups is always set (possibly empty), so the agent's own
	// supplementary groups are dropped.
	return &syscall.Credential{Uid: uint32(c.UID), Gid: uint32(c.GID), Groups: groups}
}

// kvmGroup is the group through which VM users open /dev/kvm: its own
// group where udev gave it one (kvm on Debian; found from the node, as the
// appliance has no /etc/group). A root-only /dev/kvm (devtmpfs without
// udev, as in the appliance) is given to the VM range's group, vmGID.
func kvmGroup(vmGID int) (int, error) {
	const dev = "/dev/kvm"
	info, err := os.Stat(dev)
	if err != nil {
		return 0, fmt.Errorf("kvm: %w", err)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("kvm: no owner of %s", dev)
	}
	if st.Gid != 0 && info.Mode().Perm()&0o060 == 0o060 {
		return int(st.Gid), nil
	}
	if err := os.Chown(dev, 0, vmGID); err != nil {
		return 0, fmt.Errorf("kvm: %w", err)
	}
	if err := os.Chmod(dev, 0o660); err != nil {
		return 0, fmt.Errorf("kvm: %w", err)
	}
	return vmGID, nil
}

// allocUID picks the VM's user: derived from its name, so it is stable
// across restarts, and moved on past any uid another VM's run directory
// (which is owned by its VM's user) or another VM's disk already has; own
// are this VM's disks. Called with d.mu held, so
// two starts cannot take the same one.
func (d *Driver) allocUID(name string, own []string) (int, error) {
	used := map[int]bool{}
	for other, uid := range d.uids {
		if other != name {
			used[uid] = true
		}
	}
	entries, _ := os.ReadDir(d.cfg.RunDir)
	for _, e := range entries {
		if e.Name() == name {
			continue
		}
		if info, err := e.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				used[int(st.Uid)] = true
			}
		}
	}
	// A stopped VM's disks stay its user's: a uid that owns another VM's
	// disk is not free either, or a new VM would get write access to it.
	for uid := range diskOwners(own) {
		used[uid] = true
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	span := d.cfg.UIDCount
	for i := range span {
		uid := d.cfg.UIDBase + 1 + (int(h.Sum32())+i)%span
		if !used[uid] {
			// Held until Start ends: by then the run directory says it.
			d.uids[name] = uid
			return uid, nil
		}
	}
	return 0, fmt.Errorf("no free vm uid in %d-%d", d.cfg.UIDBase+1, d.cfg.UIDBase+span)
}

// confinement decides m's Confinement; Start applies it.
func (d *Driver) confinement(m Machine) (Confinement, error) {
	d.mu.Lock()
	var own []string
	for _, dk := range m.Disks {
		if dk.Path != "" && !dk.passedAsFD() {
			own = append(own, dk.Path)
		}
	}
	uid, err := d.allocUID(m.Name, own)
	d.mu.Unlock()
	if err != nil {
		return Confinement{}, err
	}
	c := Confinement{UID: uid, GID: uid, Groups: []int{}, Sandbox: sandboxFull}
	if m.Accel == "kvm" {
		// UIDBase is no VM's uid: as a gid it names the VMs' users.
		g, err := kvmGroup(d.cfg.UIDBase)
		if err != nil {
			return Confinement{}, err
		}
		c.Groups = append(c.Groups, g)
	}
	return c, nil
}

// handOver gives the VM's user its own files: the run directory, the
// writable disks, the UEFI variables and the serial log (created here if
// need be, as QEMU could not create it in a directory it does not own).
// Shared and read-only files stay the agent's, root-only: read-only disks
// and qcow2 backing files reach QEMU as descriptors. The run directory's
// parent must be traversable (0711).
func handOver(m Machine, c Confinement) error {
	if c.UID == 0 {
		return nil
	}
	if log := m.serialLogPath(); log != "" {
		f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("serial log: %w", err)
		}
		f.Close()
	}
	paths := []string{m.Dir, m.serialLogPath()}
	for _, d := range m.Disks {
		if d.Path != "" && !d.passedAsFD() {
			paths = append(paths, d.Path)
		}
		// A volume's NBD socket, served for this VM alone.
		if sock := d.unixSocket(); sock != "" {
			paths = append(paths, sock)
		}
	}
	if f := m.Firmware; f.Type == "uefi" && f.Vars != "" {
		paths = append(paths, f.Vars)
	} else if sock := f.varsDisk().unixSocket(); f.Type == "uefi" && sock != "" {
		paths = append(paths, sock)
	}
	for i, p := range paths {
		if err := handOverPath(p, c.UID, c.GID, i > 0); err != nil {
			return err
		}
	}
	return nil
}

// handOverPath gives p to the VM's user; a regular file (private) becomes
// that user's alone. A missing p is left to QEMU to report.
func handOverPath(p string, uid, gid int, private bool) error {
	// Lchown: a link planted in place of a file must not give away
	// whatever it points at.
	if err := os.Lchown(p, uid, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hand %s to uid %d: %w", p, uid, err)
	}
	// The VM's own files are its user's alone: qemu-img creates disks
	// 0644, and the directories above them are passable by every VM
	// user (0711).
	if st, err := os.Lstat(p); private && err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(p, 0o600); err != nil {
			return fmt.Errorf("hand %s to uid %d: %w", p, uid, err)
		}
	}
	return nil
}

// diskOwners are the owners of the other VMs' disks: the files of the
// directories beside the ones own's files are in (a VM's disks live in a
// directory of their own, these directories in one parent).
func diskOwners(own []string) map[int]bool {
	mine := map[string]bool{}
	parents := map[string]bool{}
	for _, p := range own {
		mine[p] = true
		parents[filepath.Dir(filepath.Dir(p))] = true
	}
	owners := map[int]bool{}
	for parent := range parents {
		dirs, _ := os.ReadDir(parent)
		for _, dir := range dirs {
			if !dir.IsDir() {
				continue
			}
			files, _ := os.ReadDir(filepath.Join(parent, dir.Name()))
			for _, f := range files {
				path := filepath.Join(parent, dir.Name(), f.Name())
				if mine[path] {
					continue
				}
				if info, err := f.Info(); err == nil {
					if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
						owners[int(st.Uid)] = true
					}
				}
			}
		}
	}
	return owners
}
