//go:build linux

package initd

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// dataLabel marks a disk Cairn formatted; only such a disk is mounted
// without asking, and only an empty one is formatted.
const dataLabel = "cairn-data"

// mountData mounts the data disk at DataMount, formatting it (ext4) first if
// it is blank. Without a disk, DataMount is memory: the box still works,
// but forgets everything when it restarts.
func mountData(log *slog.Logger, boot Boot) error {
	if err := os.MkdirAll(DataMount, 0o755); err != nil {
		return err
	}
	dev := boot.Disk
	if dev == "" {
		dev = firstDisk()
	}
	if dev == "" {
		_ = unix.Mount("tmpfs", DataMount, "tmpfs", 0, "mode=0755")
		return errors.New("no disk found")
	}
	kind, err := probe(dev)
	if err != nil {
		_ = unix.Mount("tmpfs", DataMount, "tmpfs", 0, "mode=0755")
		return err
	}
	switch kind {
	case "blank":
		log.Info("first boot: formatting the data disk", "disk", dev)
		out, err := exec.Command(mke2fs(), "-q", "-F", "-t", "ext4", "-L", dataLabel, "-E", "lazy_itable_init=1,lazy_journal_init=1", dev).CombinedOutput()
		if err != nil {
			_ = unix.Mount("tmpfs", DataMount, "tmpfs", 0, "mode=0755")
			return fmt.Errorf("format %s: %v: %s", dev, err, bytes.TrimSpace(out))
		}
	case "other":
		_ = unix.Mount("tmpfs", DataMount, "tmpfs", 0, "mode=0755")
		return fmt.Errorf("%s holds data that is not Cairn's; refusing to touch it (set cairn.disk= to choose another disk)", dev)
	}
	if err := unix.Mount(dev, DataMount, "ext4", unix.MS_NOATIME, ""); err != nil {
		_ = unix.Mount("tmpfs", DataMount, "tmpfs", 0, "mode=0755")
		return fmt.Errorf("mount %s: %w", dev, err)
	}
	log.Info("data disk mounted", "disk", dev, "at", DataMount)
	return nil
}

// probe says whether dev is blank (all zeros where a filesystem or partition
// table would be), Cairn's (ext4 labelled cairn-data) or something else.
func probe(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	n, err := f.ReadAt(head, 0)
	if n < 2048 {
		return "", fmt.Errorf("read %s: %v", dev, err)
	}
	head = head[:n]
	// ext2/3/4: superblock at 1024, magic 0xEF53 at byte 56, label at 120.
	sb := head[1024:]
	if sb[56] == 0x53 && sb[57] == 0xEF {
		if label := string(bytes.TrimRight(sb[120:136], "\x00")); label == dataLabel {
			return "cairn", nil
		}
		return "other", nil
	}
	if bytes.Count(head, []byte{0}) == len(head) {
		return "blank", nil
	}
	return "other", nil
}

// firstDisk is the first whole disk that is neither removable nor read-only
// nor empty, by name (vda before vdb, sda before sdb).
func firstDisk() string {
	entries, _ := os.ReadDir("/sys/block")
	var names []string
	for _, e := range entries {
		n := e.Name()
		if !(strings.HasPrefix(n, "vd") || strings.HasPrefix(n, "sd") || strings.HasPrefix(n, "nvme") || strings.HasPrefix(n, "xvd")) {
			continue
		}
		dir := filepath.Join("/sys/block", n)
		if readFile(dir+"/removable") == "1\n" || readFile(dir+"/ro") == "1\n" || readFile(dir+"/size") == "0\n" {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return "/dev/" + names[0]
}

func mke2fs() string {
	for _, p := range []string{"/sbin/mke2fs", "/usr/sbin/mke2fs", "/bin/mke2fs"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "mke2fs"
}
