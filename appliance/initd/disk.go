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
	"time"

	"golang.org/x/sys/unix"
)

// dataLabel marks a disk Cairn formatted; only such a disk is mounted
// without asking, and only an empty one is formatted.
const dataLabel = "cairn-data"

// mountData mounts the data disk at DataMount, formatting it (ext4) first if
// it is blank. The data disk is, in order: cairn.disk=; the partition named
// cairn-data; a new such partition in the free space of the disk the box
// booted from (the UEFI image leaves it for the first boot to add); the
// first whole disk. On an error nothing is mounted; the caller falls back to
// memory.
func mountData(log *slog.Logger, boot Boot) error {
	if err := os.MkdirAll(DataMount, 0o755); err != nil {
		return err
	}
	dev := boot.Disk
	if dev == "" {
		dev = partitionNamed(dataLabel)
	}
	if dev == "" {
		if esp := partitionNamed("cairn-esp"); esp != "" {
			log.Info("first boot: adding the data partition", "disk", parentDisk(esp))
			var err error
			if dev, err = addDataPartition(parentDisk(esp)); err != nil {
				return err
			}
		}
	}
	if dev == "" {
		dev = firstDisk()
	}
	if dev == "" {
		return errors.New("no disk found")
	}
	kind, err := probe(dev)
	if err != nil {
		return err
	}
	switch kind {
	case "blank":
		log.Info("first boot: formatting the data disk", "disk", dev)
		out, err := output(exec.Command(mke2fs(), "-q", "-F", "-t", "ext4", "-L", dataLabel, "-E", "lazy_itable_init=1,lazy_journal_init=1", dev))
		if err != nil {
			return fmt.Errorf("format %s: %v: %s", dev, err, bytes.TrimSpace(out))
		}
	case "other":
		return fmt.Errorf("%s holds data that is not Cairn's; refusing to touch it (set cairn.disk= to choose another disk)", dev)
	}
	if err := unix.Mount(dev, DataMount, "ext4", unix.MS_NOATIME, ""); err != nil {
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

// partitionNamed finds the partition whose GPT name is name.
func partitionNamed(name string) string {
	entries, _ := os.ReadDir("/sys/class/block")
	for _, e := range entries {
		for line := range strings.Lines(readFile(filepath.Join("/sys/class/block", e.Name(), "uevent"))) {
			if strings.TrimSpace(line) == "PARTNAME="+name {
				return "/dev/" + e.Name()
			}
		}
	}
	return ""
}

// parentDisk is the whole disk a partition is on (/dev/vda2 → /dev/vda).
func parentDisk(part string) string {
	link, err := os.Readlink(filepath.Join("/sys/class/block", filepath.Base(part)))
	if err != nil {
		return ""
	}
	return "/dev/" + filepath.Base(filepath.Dir(link))
}

// addDataPartition adds the cairn-data partition in the free space at the end
// of disk (moving the backup GPT to the disk's real end first: the image was
// written onto a larger disk) and has the kernel read the new table.
func addDataPartition(disk string) (string, error) {
	out, err := output(exec.Command(sgdisk(), "-e", "-n", "0:0:0", "-t", "0:8300", "-c", "0:"+dataLabel, disk))
	if err != nil {
		return "", fmt.Errorf("partition %s: %v: %s", disk, err, bytes.TrimSpace(out))
	}
	f, err := os.Open(disk)
	if err != nil {
		return "", err
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("re-read the partition table of %s: %w", disk, err)
	}
	for range 50 {
		if dev := partitionNamed(dataLabel); dev != "" {
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("the new data partition on %s did not appear", disk)
}

func sgdisk() string {
	for _, p := range []string{"/sbin/sgdisk", "/usr/sbin/sgdisk"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "sgdisk"
}

// readESPBoot reads cairn/boot.json from the EFI system partition the box
// booted from, if there is one (mounted read-only for the moment it takes).
func readESPBoot() (Boot, error) {
	at, err := mountESP()
	if err != nil {
		return Boot{}, err
	}
	defer unix.Unmount(at, 0)
	return ReadBootFile(filepath.Join(at, "cairn", "boot.json"))
}

// mountESP mounts the EFI system partition read-only at /run/esp.
func mountESP() (string, error) {
	esp := partitionNamed("cairn-esp")
	if esp == "" {
		return "", os.ErrNotExist
	}
	const at = "/run/esp"
	if err := os.MkdirAll(at, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount(esp, at, "vfat", unix.MS_RDONLY|unix.MS_NOEXEC|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return "", fmt.Errorf("mount %s: %w", esp, err)
	}
	return at, nil
}

// waitForDisks gives the disk drivers just loaded up to d to show a disk.
func waitForDisks(d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if firstDisk() != "" {
			return
		}
	}
}
