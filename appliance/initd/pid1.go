//go:build linux

package initd

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv marks the box's process: cairn started again by PID1.
const childEnv = "CAIRN_INIT_CHILD"

// IsBoxProcess reports whether this process is the one PID1 starts to run
// the box (Main), and forgets the mark, so the agent's own children do not
// inherit it.
func IsBoxProcess() bool {
	if os.Getenv(childEnv) != "1" || os.Getppid() != 1 {
		return false
	}
	_ = os.Unsetenv(childEnv)
	return true
}

// PID1 is the appliance's process 1. It starts cairn again as its one
// child, which runs the box (Main: the mounts, the network, the agent, the
// status screen, power-off), and itself does only what process 1 must:
// collect every orphan the kernel hands it, and pass the signals an init
// gets (power off, Ctrl-Alt-Del) to the box. The box's process reaps
// nothing but its own children, through their own Wait: a reaper in the
// process that runs the agent took the exits of the agent's commands
// (qemu-img, QEMU) from them ("waitid: no child processes").
func PID1() int {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGUSR2, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP)
	self := os.Args[0]
	if !filepath.IsAbs(self) {
		self = "/init"
	}
	box := exec.Command(self, os.Args[1:]...)
	box.Args[0] = os.Args[0]
	box.Env = append(os.Environ(), childEnv+"=1")
	box.Stdin, box.Stdout, box.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := box.Start(); err != nil {
		// Without a child the box still runs, as before: in this process.
		fmt.Fprintf(os.Stderr, "init: start the box process: %v; running it as process 1\n", err)
		signal.Stop(sigs)
		return Main()
	}
	child := box.Process.Pid
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			_ = syscall.Kill(child, sig.(syscall.Signal))
			continue
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if pid == child {
				// The box's process powers the box off or reboots it
				// itself; if it ended instead, it failed: restart the box,
				// as a crashed service is restarted, after stopping what
				// is left (VMs' QEMUs) and writing out the data disk.
				fmt.Fprintf(os.Stderr, "init: the box process ended (%v); rebooting\n", exitText(ws))
				rebootAfterCrash()
			}
		}
	}
	return 1
}

// rebootAfterCrash ends every other process (asking first), writes out
// and unmounts the data disk, and restarts the box.
func rebootAfterCrash() {
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.ECHILD {
			break // nothing left
		}
		if pid <= 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.ECHILD {
			break
		}
		if pid <= 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	unix.Sync()
	_ = unix.Unmount(DataMount, 0)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

func exitText(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}
