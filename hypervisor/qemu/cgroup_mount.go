package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountCgroups mounts the cgroup hierarchies this process belongs to under root
// when nothing is mounted there. `ip netns exec` (the multi-node test
// harness) gives the agent a fresh /sys without /sys/fs/cgroup's mounts,
// in a mount namespace of its own; a box that mounts no cgroups at all is
// the other case. Mounting a hierarchy again shows the same groups, so
// limits set through it apply. Lines of /proc/self/cgroup name what to
// mount: "0::/path" alone is v2; "N:ctrl,ctrl:/path" lines are v1.
func mountCgroups(root string) error {
	if entries, err := os.ReadDir(root); err != nil || len(entries) > 0 {
		return nil // mounted already, or nowhere to mount: detection says
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	var v1 [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && parts[1] != "" && !strings.HasPrefix(parts[1], "name=") {
			v1 = append(v1, strings.Split(parts[1], ","))
		}
	}
	if len(v1) == 0 {
		if err := unix.Mount("cgroup2", root, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount cgroup2 on %s: %w", root, err)
		}
		return nil
	}
	// v1: a tmpfs to hold one mount point per hierarchy, as systemd lays
	// it out (co-mounted controllers get a link per controller name).
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", root, err)
	}
	for _, ctrls := range v1 {
		name := strings.Join(ctrls, ",")
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, name); err != nil {
			return fmt.Errorf("mount cgroup %s on %s: %w", name, dir, err)
		}
		if len(ctrls) > 1 {
			for _, c := range ctrls {
				os.Symlink(name, filepath.Join(root, c))
			}
		}
	}
	return nil
}
