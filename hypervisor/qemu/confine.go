package qemu

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A QEMU escape must not own the box: each VM's QEMU drops to a user of its
// own (so it can neither read another VM's disks nor signal or ptrace its
// QEMU) and installs a seccomp filter. QEMU opens what is on its command
// line (disks, taps, /dev/kvm, sockets) while still root and drops to the
// user just before the guest runs, so nothing shared (the image cache, the
// taps) has to be handed to that user; the VM's own files are chowned to it
// for what QEMU opens later.

// Confinement is how one VM's QEMU is confined. The zero value confines
// nothing (QEMU runs as the caller, without a filter).
type Confinement struct {
	UID, GID int // the VM's user; 0 = stay root
	// RunWith: QEMU 9 spells -runas as -run-with user=.
	RunWith bool
	// Sandbox is the -sandbox value; empty = no seccomp filter.
	Sandbox string
}

// Seccomp filters, strictest first. QEMU 7.2 (Debian 12) installs its
// filter before -runas calls setuid, so with elevateprivileges=deny it
// kills itself there; the Driver probes the installed QEMU and uses the
// strictest filter it survives. Even sandboxBase turns off the obsolete and
// resource-control syscalls, and libseccomp sets no_new_privs, so an
// escaped QEMU cannot gain privileges through a setuid binary either way.
const (
	sandboxFull    = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
	sandboxNoSetID = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"
	sandboxBase    = "on,obsolete=deny,resourcecontrol=deny"
)

// confineArgs are the user and seccomp options of c.
func confineArgs(c Confinement) []string {
	var a []string
	if c.UID != 0 {
		// A numeric uid:gid needs no passwd entry (the appliance has none).
		user := fmt.Sprintf("%d:%d", c.UID, c.GID)
		if c.RunWith {
			a = append(a, "-run-with", "user="+user)
		} else {
			a = append(a, "-runas", user)
		}
	}
	if c.Sandbox != "" {
		a = append(a, "-sandbox", c.Sandbox)
	}
	return a
}

// qemuFeatures is what the installed QEMU supports, found once per Driver.
type qemuFeatures struct {
	runWith bool
	sandbox string
}

// probe finds how the installed QEMU can be confined: -run-with or -runas
// from its -help, and whether the full seccomp filter survives start-up, by
// starting a machine-less QEMU with it as a VM would be started.
func (d *Driver) probe(ctx context.Context) (qemuFeatures, error) {
	var f qemuFeatures
	out, err := exec.CommandContext(ctx, d.cfg.QEMU[0], append(d.cfg.QEMU[1:], "-help")...).Output()
	if err != nil {
		return f, fmt.Errorf("probe qemu: %w", err)
	}
	help := string(out)
	f.runWith = strings.Contains(help, "\n-run-with ")
	if !strings.Contains(help, "\n-sandbox ") {
		return f, errors.New("probe qemu: no -sandbox (built without seccomp)")
	}
	if err := os.MkdirAll(d.cfg.RunDir, 0o750); err != nil {
		return f, fmt.Errorf("probe qemu: %w", err)
	}
	for _, sb := range []string{sandboxFull, sandboxNoSetID, sandboxBase} {
		c := Confinement{UID: d.cfg.UIDBase, GID: d.cfg.UIDBase, RunWith: f.runWith, Sandbox: sb}
		err := d.tryConfinement(ctx, c)
		if err == nil {
			f.sandbox = sb
			d.log.Info("qemu confinement", "run_with", f.runWith, "sandbox", f.sandbox)
			return f, nil
		}
		d.log.Info("qemu cannot run with this sandbox", "sandbox", sb, "err", err)
	}
	return f, errors.New("probe qemu: it runs with no sandbox")
}

// tryConfinement starts a machine-less QEMU confined by c, as a VM would
// be started, and reports whether it got as far as answering QMP.
func (d *Driver) tryConfinement(ctx context.Context, c Confinement) error {
	dir, err := os.MkdirTemp(d.cfg.RunDir, ".probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	name := "probe"
	argv := append(append([]string{}, d.cfg.QEMU...),
		"-name", "guest="+name+",process=cairn-probe", "-machine", "none", "-nodefaults", "-display", "none")
	argv = append(append(append(argv, qmpArgs(dir)...), confineArgs(c)...), "-pidfile", filepath.Join(dir, pidFile))
	p, err := d.launch(dir, argv)
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
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q, err := d.waitReady(pctx, dir, p)
	if err != nil {
		return err
	}
	q.close()
	return nil
}

// features probes the installed QEMU on first use.
func (d *Driver) features(ctx context.Context) (qemuFeatures, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.feat != nil {
		return *d.feat, nil
	}
	f, err := d.probe(ctx)
	if err != nil {
		return f, err
	}
	d.feat = &f
	return f, nil
}

// allocUID picks the VM's user: derived from its name, so it is stable
// across restarts, and moved on past any uid another VM's run directory
// (which is owned by its VM's user) already has. Called with d.mu held, so
// two starts cannot take the same one.
func (d *Driver) allocUID(name string) (int, error) {
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
func (d *Driver) confinement(ctx context.Context, name string) (Confinement, error) {
	f, err := d.features(ctx)
	if err != nil {
		return Confinement{}, err
	}
	d.mu.Lock()
	uid, err := d.allocUID(name)
	d.mu.Unlock()
	if err != nil {
		return Confinement{}, err
	}
	return Confinement{UID: uid, GID: uid, RunWith: f.runWith, Sandbox: f.sandbox}, nil
}

// handOver gives the VM's user its own files: the run directory, the
// writable disks, the UEFI variables and the serial log. Shared files (the
// image cache, read-only disks, firmware code) stay the agent's: QEMU
// opens them before it drops to the user, and the user cannot write them.
func handOver(m Machine, c Confinement) error {
	if c.UID == 0 {
		return nil
	}
	paths := []string{m.Dir, m.serialLogPath()}
	for _, d := range m.Disks {
		if d.Path != "" && !d.ReadOnly && d.Media != "cdrom" {
			paths = append(paths, d.Path)
		}
	}
	if m.Firmware.Type == "uefi" {
		paths = append(paths, m.Firmware.Vars)
	}
	for _, p := range paths {
		// Lchown: a link planted in place of a file must not give away
		// whatever it points at.
		if err := os.Lchown(p, c.UID, c.GID); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("hand %s to uid %d: %w", p, c.UID, err)
		}
	}
	return nil
}
