package qemu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The test guest is the host's Debian kernel with a one-file initramfs: a
// static Go /init that prints guestMarker on the console and sleeps. It
// boots to the marker in a few seconds under TCG.

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
	"time"
)

func main() {
	fmt.Println("` + guestMarker + `")
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
	for {
		time.Sleep(time.Hour)
	}
}
`

const floodDone = "CAIRN-TEST-FLOOD-DONE"

var guest struct {
	once           sync.Once
	kernel, initrd string
	err            error
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
		guest.initrd, guest.err = buildInitramfs(tempRoot)
	})
	if guest.err != nil {
		t.Fatal(guest.err) // make test installs the kernel (qa/scripts/deps.sh)
	}
	return guest.kernel, guest.initrd
}

func buildInitramfs(dir string) (string, error) {
	src := filepath.Join(dir, "init-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module testinit\n\ngo 1.21\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(initSource), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test init: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var w cpioWriter
	w.add("dev", 0o040755, 0, nil)
	// The kernel opens /dev/console for init's stdio; without the node
	// init's output goes nowhere.
	w.add("dev/console", 0o020600, 5<<8|1, nil)
	w.add("init", 0o100755, 0, data)
	w.add("TRAILER!!!", 0, 0, nil)
	out := filepath.Join(dir, "initramfs.cpio")
	return out, os.WriteFile(out, w.buf.Bytes(), 0o644)
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
