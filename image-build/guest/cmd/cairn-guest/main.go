//go:build linux

// Command cairn-guest is the init (PID 1) of the test guest built by
// image-build/guest.sh. It prints, on the serial port and the screen,
//
//	cairn-guest: hostname=<name> ip=<addr>
//
// once it has read its seed and got a DHCP lease, answers every connection
// to TCP port 8080, and every datagram to UDP port 8080, with
// "hostname=<name> ip=<addr>\n", prints its virtio
// disks and their sizes ("cairn-guest: disks vda=<bytes> ...") whenever they
// change, probes the targets its user-data names (probe.go), and powers off
// on the ACPI power button. It prints its global IPv6 addresses
// ("cairn-guest: ipv6=<addr>,...", from router advertisements: the kernel's
// SLAAC) whenever they change. Failures print "cairn-guest: seed: <error>" and
// "cairn-guest: dhcp: <error>" lines; DHCP is retried for ever.
//
// It also runs a minimal guest agent on the virtio-serial port
// org.qemu.guest_agent.0 (agent.go: sync, ping, info and fsfreeze), and
// scribbles numbered records on every disk whose first block holds
// qa/scribble's magic (scribble.go), printing
//
//	cairn-guest: scribble vdb seq=100
//	cairn-guest: frozen scribble=<last record flushed> vdb=<same> ...
//	cairn-guest: thawed
//	cairn-guest: scribble done vdb seq=16384
//
// so tests can snapshot a disk under load and check what they got. With
// "#cairn-guest memcheck MIB" in its user-data it keeps rewriting and
// checking MIB MiB of its memory (memcheck.go), for tests that move it
// live. With "#cairn-guest efiboots" it counts its boots in UEFI variables
// and prints "cairn-guest: efi boots=N" (efiboots.go), for tests that move
// it and its UEFI variable store between hosts; with "#cairn-guest
// efitick" it keeps writing UEFI variables while it runs.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fallbackHostname names the guest when it finds no seed, so that it still
// comes up and says what went wrong.
const fallbackHostname = "cairn-guest"

func main() {
	mountKernelFS()
	con := openConsole()
	con.Printf("starting")
	loadModules(con, "/lib/modules/guest.load")
	go reap()
	power := make(chan string, 1)
	go handleSignals(power)
	watchPowerButton(con, power)

	name := fallbackHostname
	var probes []string
	if s, dev, err := findSeed(10 * time.Second); err != nil {
		con.Printf("seed: %v", err)
	} else {
		name, probes = s.Hostname, probeTargets(s.UserData)
		if mib := memcheckMiB(s.UserData); mib > 0 {
			go memcheck(con, mib)
		}
		if wantsEFIBoots(s.UserData) {
			printEFIBoots(con)
		}
		if wantsEFITick(s.UserData) {
			go efiTick(con)
		}
		first, _, _ := strings.Cut(string(s.UserData), "\n")
		con.Printf("seed: %s instance-id=%s ssh-keys=%d user-data=%q", dev, s.InstanceID, len(s.SSHKeys), first)
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		con.Printf("hostname: %v", err)
	}
	if _, err := unix.Getrandom(make([]byte, 1), unix.GRND_NONBLOCK); errors.Is(err, unix.EAGAIN) {
		// DHCP's transaction ID comes from crypto/rand, which waits for
		// the kernel's RNG; under TCG without one that takes minutes.
		con.Printf("dhcp: waiting for the kernel's random number generator: give the VM virtio-rng-pci or a CPU with RDRAND (-cpu max)")
	}
	sc := newScribblers()
	go watchDisks(con, sc)
	go runAgent(con, sc)
	go func() {
		addr := bringUpNetwork(con)
		con.Printf("hostname=%s ip=%s", name, addr)
		if l, err := firstEthernet(0); err == nil {
			con.Printf("mtu=%d", l.Attrs().MTU)
			go watchIPv6(con, l.Attrs().Name)
		}
		if len(probes) > 0 {
			go probeLoop(con, probes)
		}
		serve(con, fmt.Sprintf("hostname=%s ip=%s\n", name, addr))
	}()

	what := <-power
	con.Printf("%s", what)
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if what == "reboot" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		con.Printf("power off: %v", err)
	}
	select {} // PID 1 must not exit: the kernel would panic
}

// watchDisks prints the virtio disks and their sizes in bytes,
//
//	cairn-guest: disks vda=1073741824 vdb=2147483648/vol-0123456789abcdef
//
// (with the disk's serial number after a slash when it has one)
//
// at start and whenever they change (a disk hot-plugged, unplugged or
// grown), so tests see what the guest sees.
//
// A disk seen for the first time whose first block holds the scribble
// magic is scribbled on (scribble.go).
func watchDisks(con *console, sc *scribblers) {
	last := ""
	seen := map[string]bool{}
	for {
		names, _ := filepath.Glob("/sys/block/vd*")
		var b strings.Builder
		now := map[string]bool{}
		for _, n := range names {
			// Looked at once its device node is there (devtmpfs makes
			// it a moment after the sysfs entry).
			if dev := filepath.Base(n); fileExists("/dev/" + dev) {
				now[dev] = true
				if !seen[dev] {
					sc.maybeScribble(con, dev)
				}
			}
			sectors, err := os.ReadFile(filepath.Join(n, "size"))
			if err != nil {
				continue
			}
			var s int64
			fmt.Sscan(strings.TrimSpace(string(sectors)), &s)
			fmt.Fprintf(&b, " %s=%d", filepath.Base(n), s*512)
			if serial, err := os.ReadFile(filepath.Join(n, "serial")); err == nil && len(bytes.TrimSpace(serial)) > 0 {
				fmt.Fprintf(&b, "/%s", bytes.TrimSpace(serial))
			}
		}
		if cur := b.String(); cur != last {
			con.Printf("disks%s", cur)
			last = cur
		}
		seen = now
		time.Sleep(time.Second)
	}
}

// serve answers each connection to port 8080 with answer and closes it:
// a test reaches the guest through QEMU's port forwarding and checks who
// answered.
// watchIPv6 prints the link's global IPv6 addresses whenever they change.
func watchIPv6(con *console, link string) {
	last := ""
	for {
		var as []string
		if ifi, err := net.InterfaceByName(link); err == nil {
			addrs, _ := ifi.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil && n.IP.IsGlobalUnicast() {
					as = append(as, n.IP.String())
				}
			}
		}
		if now := strings.Join(as, ","); now != last {
			last = now
			con.Printf("ipv6=%s", now)
		}
		time.Sleep(time.Second)
	}
}

func serve(con *console, answer string) {
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		con.Printf("listen: %v", err)
		return
	}
	// UDP on the same port answers every datagram with the same line.
	if pc, err := net.ListenPacket("udp", ":8080"); err != nil {
		con.Printf("listen udp: %v", err)
	} else {
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					con.Printf("udp: %v", err)
					return
				}
				_, _ = pc.WriteTo([]byte(answer), from)
			}
		}()
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			con.Printf("accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, answer)
		}()
	}
}

// console writes "cairn-guest: " lines to the serial port and the screen:
// the kernel's /dev/console is only the last console= of the command line,
// and both a serial log and a VNC view should show them.
type console struct {
	mu sync.Mutex
	w  []io.Writer
}

func openConsole() *console {
	c := &console{}
	for _, dev := range []string{"/dev/ttyS0", "/dev/tty0"} {
		if f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			c.w = append(c.w, f)
		}
	}
	if len(c.w) == 0 {
		c.w = append(c.w, os.Stdout) // the kernel's /dev/console
	}
	return c
}

// Printf writes one line to every console.
func (c *console) Printf(format string, args ...any) {
	line := "cairn-guest: " + fmt.Sprintf(format, args...) + "\n"
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.w {
		_, _ = io.WriteString(w, line)
	}
}

// mountKernelFS mounts what the rest needs; errors show up later as missing
// devices, which say more than a mount error would.
func mountKernelFS() {
	for _, m := range []struct{ src, dst, fstype, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		_ = unix.Mount(m.src, m.dst, m.fstype, unix.MS_NOSUID, m.data)
	}
}

// loadModules loads the modules listed in list, printing those that fail.
func loadModules(con *console, list string) {
	paths, err := moduleList(list)
	if err != nil {
		con.Printf("modules: %v", err)
		return
	}
	for _, path := range paths {
		if err := loadModule(path); err != nil {
			con.Printf("%v", err)
		}
	}
}

// moduleList reads a list of modules guest.sh wrote: one path per line, in
// dependency order (modprobe --show-depends).
func moduleList(list string) ([]string, error) {
	b, err := os.ReadFile(list)
	if err != nil {
		return nil, err
	}
	var paths []string
	for line := range strings.Lines(string(b)) {
		if path := strings.TrimSpace(line); path != "" {
			paths = append(paths, path)
		}
	}
	return paths, nil
}

// loadModule loads the kernel module at path; one already loaded is no
// error.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// reap collects the orphans the kernel hands to PID 1.
func reap() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	for range ch {
		for {
			var ws unix.WaitStatus
			if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

// handleSignals powers off on SIGTERM or SIGUSR2 (what poweroff commands
// send to init) and reboots on SIGINT (Ctrl-Alt-Del, once the kernel's own
// reboot on it is off).
func handleSignals(power chan<- string) {
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGUSR2, syscall.SIGINT)
	for s := range ch {
		what := "poweroff"
		if s == syscall.SIGINT {
			what = "reboot"
		}
		select {
		case power <- what:
		default:
		}
	}
}
