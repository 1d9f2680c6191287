package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// killTimeout bounds how long Kill waits for a SIGKILLed process to be reaped.
const killTimeout = 10 * time.Second

// Node is one process of the cluster in its own network namespace. Its data
// directory and log file outlive restarts.
type Node struct {
	Index   int    // 1-based, stable; never reused in a cluster
	Name    string // "node1", "node2", ...
	IP      string // address the node's process can bind; reachable from the test
	Netns   string // network namespace name; "" when not running as root
	DataDir string // persistent across restarts; the process's working directory
	LogPath string // stdout and stderr of every run, appended

	c    *Cluster
	args []string // computed by Options.Args on first Start, reused after

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited and been reaped
	starts  int
	lastCmd string
}

// Cluster returns the cluster n belongs to, so Options.Args can list peers.
func (n *Node) Cluster() *Cluster { return n.c }

// Command returns a command that runs name inside n's network namespace (or
// plainly when not running as root), e.g. a probe that must originate from n.
func (n *Node) Command(name string, arg ...string) *exec.Cmd {
	argv := n.wrap(append([]string{name}, arg...))
	return exec.Command(argv[0], argv[1:]...)
}

// wrap runs argv in n's network namespace only: not `ip netns exec`,
// whose private mount namespace would hold the named namespaces the agent
// makes for routers and drop them when the agent is killed. On a box the
// agent shares the host's mount namespace too.
func (n *Node) wrap(argv []string) []string {
	if n.Netns == "" {
		return argv
	}
	return append([]string{"nsenter", "--net=/run/netns/" + n.Netns, "--"}, argv...)
}

// Start starts n's process. It fails the test if n is already running.
func (n *Node) Start() {
	n.c.t.Helper()
	if err := n.start(); err != nil {
		n.c.t.Fatalf("%v", err)
	}
}

func (n *Node) start() error {
	n.c.t.Helper()
	if n.args == nil {
		n.args = []string{}
		if n.c.opts.Args != nil {
			n.args = slices.Clone(n.c.opts.Args(n))
		}
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running() {
		return fmt.Errorf("start %s: already running as pid %d", n.Name, n.cmd.Process.Pid)
	}
	argv := n.wrap(append([]string{n.c.opts.Binary}, n.args...))
	cmdline := shellJoin(argv)
	if len(n.c.opts.Env) > 0 {
		cmdline = "env " + shellJoin(n.c.opts.Env) + " " + cmdline
	}
	cmdline = "cd " + shellQuote(n.DataDir) + " && " + cmdline

	log, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	n.starts++
	fmt.Fprintf(log, "==== cairnqa: %s start #%d at %s: %s\n", n.Name, n.starts, time.Now().Format(time.RFC3339Nano), cmdline)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = n.DataDir
	cmd.Env = append(os.Environ(), n.c.opts.Env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // so signals reach the node's children too, and nothing else
		// Best effort against orphans if the test binary dies; CleanupStale
		// catches the rest.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %s: %w", n.Name, cmdline, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.lastCmd = cmd, done, cmdline
	n.c.t.Logf("harness: %s: started pid %d (log %s):\n\t%s", n.Name, cmd.Process.Pid, n.LogPath, cmdline)

	go func() {
		err := cmd.Wait()
		fmt.Fprintf(log, "==== cairnqa: %s pid %d exited at %s: %v\n", n.Name, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano), exitStatus(err))
		log.Close()
		close(done)
	}()
	return nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// running reports whether the current process is alive; n.mu must be held.
func (n *Node) running() bool {
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Running reports whether n's process is alive (a stopped process counts).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running()
}

// PID returns the pid of n's process, or 0 if it is not running.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running() {
		return 0
	}
	return n.cmd.Process.Pid
}

// Kill sends SIGKILL to n's process group and waits for the process to exit.
// Killing a node that is not running does nothing.
func (n *Node) Kill() {
	n.c.t.Helper()
	if err := n.kill(); err != nil {
		n.c.t.Fatalf("%v", err)
	}
}

func (n *Node) kill() error {
	n.mu.Lock()
	if !n.running() {
		n.mu.Unlock()
		return nil
	}
	pid, done := n.cmd.Process.Pid, n.done
	n.mu.Unlock()

	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", n.Name, pid, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("kill %s (pid %d): still running after %s", n.Name, pid, killTimeout)
	}
}

// Terminate stops n's agent as an upgrade or a service stop does: SIGTERM
// to the agent alone (the VMs it started run on), waiting for it to exit.
func (n *Node) Terminate() {
	n.c.t.Helper()
	n.mu.Lock()
	if !n.running() {
		n.mu.Unlock()
		return
	}
	pid, done := n.cmd.Process.Pid, n.done
	n.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		n.c.t.Fatalf("terminate %s (pid %d): %v", n.Name, pid, err)
	}
	select {
	case <-done:
	case <-time.After(3 * killTimeout):
		n.c.t.Fatalf("terminate %s (pid %d): still running after %s", n.Name, pid, 3*killTimeout)
	}
}

// Stop freezes n's processes with SIGSTOP: sockets stay open but nothing
// answers, like a hung machine.
func (n *Node) Stop() {
	n.c.t.Helper()
	if err := n.signal(syscall.SIGSTOP); err != nil {
		n.c.t.Fatalf("stop %v", err)
	}
}

// Cont resumes n's processes after Stop with SIGCONT.
func (n *Node) Cont() {
	n.c.t.Helper()
	if err := n.signal(syscall.SIGCONT); err != nil {
		n.c.t.Fatalf("cont %v", err)
	}
}

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running() {
		return fmt.Errorf("%s: not running", n.Name)
	}
	if err := syscall.Kill(-n.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("%s (pid %d): %w", n.Name, n.cmd.Process.Pid, err)
	}
	return nil
}

// Restart kills n if it is running and starts it again with the same arguments
// and data directory.
func (n *Node) Restart() {
	n.c.t.Helper()
	n.Kill()
	n.Start()
}
