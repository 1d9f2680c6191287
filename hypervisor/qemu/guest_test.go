package qemu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The test guest is the host's Debian kernel with a small initramfs: a
// static Go /init that prints guestMarker on the console and sleeps, and
// the kernel's virtio block modules. It boots to the marker in a few
// seconds under TCG.

const guestMarker = "CAIRN-TEST-GUEST-UP"

// With cairnflood=N on the kernel command line (which the kernel hands to
// init as an environment variable) the guest then prints N bytes of
// filler, floodDone, and a tick line every 100 ms for ever.
const initSource = `package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	fmt.Println("` + guestMarker + `")
	if n, _ := strconv.Atoi(os.Getenv("cairnmemcheck")); n > 0 {
		go memCheck(n)
	}
	if n, _ := strconv.Atoi(os.Getenv("cairnflood")); n > 0 {
		line := strings.Repeat("x", 99)
		for i := 0; i < n/100; i++ {
			fmt.Println(line)
		}
		fmt.Println("` + floodDone + `")
		for i := 0; ; i++ {
			fmt.Printf("tick %d\n", i)
			time.Sleep(100 * time.Millisecond)
		}
	}
	if os.Getenv("cairnblock") != "" {
		watchBlocks()
	}
	for {
		time.Sleep(time.Hour)
	}
}

func memCheck(mib int) {
	mem, err := syscall.Mmap(-1, 0, mib<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		fmt.Println("` + memLine + `ERROR", err)
		return
	}
	const page = 4096
	word := func(i int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[i*page])) }
	last := func(i int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[i*page+page-8])) }
	pages := len(mem) / page
	bad := 0
	for round := uint64(1); ; round++ {
		for i := 0; i < pages; i++ {
			want := uint64(i)<<32 | (round - 1)
			if round > 1 && (*word(i) != want || *last(i) != ^want) && bad < 10 {
				bad++
				fmt.Printf("` + memLine + `BAD page %d round %d: %x %x, want %x\n", i, round, *word(i), *last(i), want)
			}
			*word(i), *last(i) = uint64(i)<<32|round, ^(uint64(i)<<32 | round)
		}
		if round%10 == 0 {
			fmt.Printf("` + memLine + `round %d\n", round)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func watchBlocks() {
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		fmt.Println("` + blocksLine + `ERROR mount sysfs:", err)
	}
	order, _ := os.ReadFile("/modules/order")
	for _, m := range strings.Fields(string(order)) {
		f, err := os.Open("/modules/" + m)
		if err != nil {
			fmt.Println("` + blocksLine + `ERROR", err)
			continue
		}
		params, _ := syscall.BytePtrFromString("")
		const finitModule = 313 // amd64
		if _, _, e := syscall.Syscall(finitModule, f.Fd(), uintptr(unsafe.Pointer(params)), 0); e != 0 && e != syscall.EEXIST {
			fmt.Println("` + blocksLine + `ERROR load", m, e)
		}
		f.Close()
	}
	last := ""
	for {
		entries, _ := os.ReadDir("/sys/block")
		var disks []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "vd") {
				b, _ := os.ReadFile("/sys/block/" + e.Name() + "/size")
				disks = append(disks, e.Name()+"="+strings.TrimSpace(string(b)))
			}
		}
		if line := "` + blocksLine + `" + strings.Join(disks, " "); line != last {
			fmt.Println(line)
			last = line
		}
		time.Sleep(200 * time.Millisecond)
	}
}
`

// With cairnblock=1 the guest loads the virtio block modules and prints a
// blocksLine with its virtio disks and their sizes in 512-byte sectors
// (/sys/block/vdX/size) whenever they change: "BLOCKS vda=16384 vdb=8192".
const blocksLine = "BLOCKS "

// guestModules are the modules, in load order, that give the test guest
// virtio disks (the Debian kernel has them as modules).
var guestModules = []string{
	"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci_modern_dev.ko",
	"drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
}

const floodDone = "CAIRN-TEST-FLOOD-DONE"

// With cairnmemcheck=MIB the guest writes to every page of MIB MiB of its
// memory (a value of the page and the round at both ends) twenty times a
// second, checking first that each page holds what it wrote the round
// before: "MEMCHECK round N" every tenth round, "MEMCHECK BAD ..." for a
// page that does not (memory a migration lost).
const memLine = "MEMCHECK "

var guest struct {
	once           sync.Once
	kernel, initrd string
	// blockModules is why the guest cannot show its disks ("" if it can).
	blockModules string
	err          error
}

// testGuest returns a kernel and initramfs, building the initramfs once per
// test binary; it fails the test when the host has no kernel to boot.
func testGuest(t *testing.T) (kernel, initrd string) {
	t.Helper()
	guest.once.Do(func() {
		kernels, _ := filepath.Glob("/boot/vmlinuz-*")
		if len(kernels) == 0 {
			guest.err = fmt.Errorf("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")
			return
		}
		guest.kernel = kernels[len(kernels)-1]
		release := strings.TrimPrefix(filepath.Base(guest.kernel), "vmlinuz-")
		guest.initrd, guest.blockModules, guest.err = buildInitramfs(tempRoot, filepath.Join("/lib/modules", release, "kernel"))
	})
	if guest.err != nil {
		t.Fatal(guest.err) // make test installs the kernel (qa/scripts/deps.sh)
	}
	return guest.kernel, guest.initrd
}

// buildInitramfs also says why the guest has no virtio block modules, if
// it has not: modDir (the kernel's /lib/modules/RELEASE/kernel) lacks them.
func buildInitramfs(dir, modDir string) (initrd, noModules string, _ error) {
	src := filepath.Join(dir, "init-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module testinit\n\ngo 1.21\n"), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(initSource), 0o644); err != nil {
		return "", "", err
	}
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build test init: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", "", err
	}
	var w cpioWriter
	w.add("dev", 0o040755, 0, nil)
	// The kernel opens /dev/console for init's stdio; without the node
	// init's output goes nowhere.
	w.add("dev/console", 0o020600, 5<<8|1, nil)
	w.add("init", 0o100755, 0, data)
	w.add("sys", 0o040755, 0, nil)
	w.add("modules", 0o040755, 0, nil)
	var order []string
	for _, m := range guestModules {
		ko, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			noModules = fmt.Sprintf("the guest kernel's virtio block modules are missing: %v", err)
			order = nil
			break
		}
		w.add("modules/"+filepath.Base(m), 0o100644, 0, ko)
		order = append(order, filepath.Base(m))
	}
	w.add("modules/order", 0o100644, 0, []byte(strings.Join(order, "\n")+"\n"))
	w.add("TRAILER!!!", 0, 0, nil)
	out := filepath.Join(dir, "initramfs.cpio")
	return out, noModules, os.WriteFile(out, w.buf.Bytes(), 0o644)
}

// cpioWriter writes the "newc" format the kernel unpacks.
type cpioWriter struct {
	buf bytes.Buffer
	ino int
}

func (w *cpioWriter) add(name string, mode, rdev int, data []byte) {
	w.ino++
	fmt.Fprintf(&w.buf, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev>>8, rdev&0xff, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}
