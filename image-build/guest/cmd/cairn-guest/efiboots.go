//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// efiBootGUID is the vendor GUID of the boot counter's variables: the
	// guest's own, so they cannot clash with the firmware's.
	efiBootGUID = "6d1c7e0a-3c2b-4b8e-9f1d-2a5e0c4b7d11"
	// efiVars is where efivarfs shows the UEFI variables, one file each.
	efiVars = "/sys/firmware/efi/efivars"
	// efiVarAttrs are NON_VOLATILE|BOOTSERVICE_ACCESS|RUNTIME_ACCESS: kept
	// in the variable store, and writable from the running kernel.
	efiVarAttrs = 0x7
)

// wantsEFIBoots says whether its user-data asks for the UEFI boot counter,
//
//	#cairn-guest efiboots
func wantsEFIBoots(userData []byte) bool { return hasMode(userData, "efiboots") }

// wantsEFITick says whether its user-data asks for UEFI variable writes
// all the while it runs,
//
//	#cairn-guest efitick
func wantsEFITick(userData []byte) bool { return hasMode(userData, "efitick") }

// hasMode says whether its user-data has the line "#cairn-guest MODE".
func hasMode(userData []byte, mode string) bool {
	for _, line := range strings.Split(string(userData), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if len(f) == 2 && f[0] == "cairn-guest" && f[1] == mode {
			return true
		}
	}
	return false
}

// efiTick adds a variable CairnTick<N>-<efiBootGUID> five times a second
// for as long as the guest runs, and prints
//
//	cairn-guest: efi tick N          (every 25th)
//	cairn-guest: efi tick error: <error>   (and stops)
//
// so that its firmware writes its flash all the while: tests move such a
// guest live and see the move called off (its host cannot copy a flash
// that changes under the copy).
func efiTick(con *console) {
	if err := mountEFIVars(); err != nil {
		con.Printf("efi tick error: %v", err)
		return
	}
	for n := 1; ; n++ {
		name := filepath.Join(efiVars, fmt.Sprintf("CairnTick%d-%s", n, efiBootGUID))
		b := binary.LittleEndian.AppendUint32(nil, efiVarAttrs)
		b = binary.LittleEndian.AppendUint32(b, uint32(n))
		if err := os.WriteFile(name, b, 0o644); err != nil {
			con.Printf("efi tick error: %v", err)
			return
		}
		if n%25 == 0 {
			con.Printf("efi tick %d", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// printEFIBoots counts this boot in the VM's UEFI variable store and prints
//
//	cairn-guest: efi boots=N
//
// N being the boots the store has counted, this one included, or
//
//	cairn-guest: efi boots error: <error>
//
// ("not booted with UEFI" under BIOS). Tests boot a VM, move it to another
// host, boot it again and look for the next N: a store that was not moved
// with the VM, or an older copy of it, counts from 1 again or repeats a
// number.
func printEFIBoots(con *console) {
	n, err := countEFIBoot()
	if err != nil {
		con.Printf("efi boots error: %v", err)
		return
	}
	con.Printf("efi boots=%d", n)
}

// countEFIBoot adds a variable CairnBoot<N>-<efiBootGUID> for this boot,
// where the store has N-1 of them, and returns N. Each boot adds one rather
// than rewriting a counter, so a boot never depends on rewriting a variable
// (efivarfs makes some of its files immutable) and a lost write shows as a
// missing boot, not a corrupt count.
func countEFIBoot() (int, error) {
	if !fileExists("/sys/firmware/efi") {
		return 0, errors.New("not booted with UEFI")
	}
	if err := mountEFIVars(); err != nil {
		return 0, err
	}
	entries, err := os.ReadDir(efiVars)
	if err != nil {
		return 0, err
	}
	n := 1
	for _, e := range entries {
		if isEFIBootVar(e.Name()) {
			n++
		}
	}
	name := filepath.Join(efiVars, efiBootVar(n))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, fmt.Errorf("create variable: %w", err)
	}
	// efivarfs takes the attributes and the data in one write; the data
	// is the boot's number.
	b := binary.LittleEndian.AppendUint32(nil, efiVarAttrs)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("write variable %s: %w", efiBootVar(n), err)
	}
	return n, nil
}

// efiBootVar is the efivarfs name of the variable for boot n.
func efiBootVar(n int) string { return fmt.Sprintf("CairnBoot%d-%s", n, efiBootGUID) }

// isEFIBootVar says whether an efivarfs name is one of the boot counter's.
func isEFIBootVar(name string) bool {
	rest, ok := strings.CutPrefix(name, "CairnBoot")
	if !ok {
		return false
	}
	num, ok := strings.CutSuffix(rest, "-"+efiBootGUID)
	if !ok {
		return false
	}
	n, err := strconv.Atoi(num)
	return err == nil && n > 0 && strconv.Itoa(n) == num
}

// mountEFIVars mounts efivarfs on efiVars unless it is there already,
// loading its module (guest.sh ships it as efivarfs.load) when the kernel
// does not know it yet.
func mountEFIVars() error {
	var st unix.Statfs_t
	if err := unix.Statfs(efiVars, &st); err == nil && uint32(st.Type) == unix.EFIVARFS_MAGIC {
		return nil
	}
	mount := func() error {
		return unix.Mount("efivarfs", efiVars, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	err := mount()
	if errors.Is(err, unix.ENODEV) { // no such file system: not loaded yet
		paths, lerr := moduleList("/lib/modules/efivarfs.load")
		if lerr != nil {
			return fmt.Errorf("load efivarfs: %w", lerr)
		}
		for _, p := range paths {
			if lerr := loadModule(p); lerr != nil {
				return fmt.Errorf("load efivarfs: %w", lerr)
			}
		}
		err = mount()
	}
	if err != nil {
		return fmt.Errorf("mount efivarfs on %s: %w", efiVars, err)
	}
	return nil
}
