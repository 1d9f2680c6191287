package hypervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
)

// Disk is one disk as QEMU reaches it: a local file (Path) or a network
// volume (Source, e.g. an NBD export of the local node).
type Disk struct {
	ID       string // root, data-0, ..., seed
	Path     string
	Source   string
	Format   string // qcow2 or raw
	Media    string // disk or cdrom
	ReadOnly bool
	// Backing is the cached base image a qcow2 overlay at Path is made
	// on; QEMU gets it as a descriptor (it is root's alone).
	Backing string
	Serial  string // what the guest sees as the disk's serial number
	// Port is the hot-plug port of a volume plugged in while the VM ran,
	// for a QEMU taking it over by live migration ("": the root bus).
	Port string
}

// Volumes makes and removes a VM's disks. They are files on the VM's node
// today; replicated block volumes (exported over NBD by the local node) will
// slot in behind the same interface without changing the VM code.
type Volumes interface {
	// Prepare creates the VM's disks if missing and grows them to the spec;
	// base is the cached image the boot disk is made from. Idempotent.
	Prepare(ctx context.Context, vm *VM, base *Image, basePath string) ([]Disk, error)
	// Remove deletes every disk of a VM. Idempotent.
	Remove(ctx context.Context, vmID string) error
	// List names the VMs that have disks here, for clean-up at start.
	List() ([]string, error)
}

// LocalVolumes keeps disks as qcow2 files under dir/<vm>/: the boot disk an
// overlay on the cached image (copy-on-write, nothing copied), data disks
// blank and sparse.
type LocalVolumes struct {
	dir     string
	qemuImg []string
	once    sync.Once
	cache   string
	reserve storage.Reserve
}

// SetReserve keeps the control plane's floor when disks are created or
// grown (before the node runs VMs).
func (l *LocalVolumes) SetReserve(r storage.Reserve) { l.reserve = r }

// diskMetadata bounds what creating or growing a thin qcow2 disk writes at
// once (its header and tables); the guest's writes come later, bounded by
// the scheduler's disk ratio over the space above the floor.
const diskMetadata = 1 << 20

// NewLocalVolumes returns node-local volumes in dir.
func NewLocalVolumes(dir string, qemuImg []string) *LocalVolumes {
	if len(qemuImg) == 0 {
		qemuImg = []string{"qemu-img"}
	}
	return &LocalVolumes{dir: dir, qemuImg: qemuImg}
}

// Dir is a VM's own directory (disks, seed, firmware variables).
func (l *LocalVolumes) Dir(vmID string) string { return filepath.Join(l.dir, vmID) }

func (l *LocalVolumes) Prepare(ctx context.Context, vm *VM, base *Image, basePath string) ([]Disk, error) {
	dir := l.Dir(vm.ID)
	// Traversable, not listable: QEMU, as the VM's user, opens its disks
	// here (handed to that user) by path.
	if err := Traversable(l.dir, dir); err != nil {
		return nil, err
	}
	root := filepath.Join(dir, "root.qcow2")
	size := vm.Spec.DiskGiB << 30
	var disks []Disk
	switch {
	case vm.Spec.BootVolume != "":
		// The boot disk is a block volume; an installer still comes as
		// a local CD.
		if base.DiskFormat == FormatISO {
			disks = append(disks, Disk{ID: "install", Path: basePath, Format: FormatRaw, Media: "cdrom", ReadOnly: true})
		}
	case base.DiskFormat == FormatISO:
		if err := l.create(ctx, root, "", size); err != nil {
			return nil, err
		}
		disks = append(disks, Disk{ID: "root", Path: root, Format: FormatQCOW2, Media: "disk"},
			Disk{ID: "install", Path: basePath, Format: FormatRaw, Media: "cdrom", ReadOnly: true})
	default:
		if err := l.create(ctx, root, basePath, size); err != nil {
			return nil, err
		}
		disks = append(disks, Disk{ID: "root", Path: root, Format: FormatQCOW2, Media: "disk", Backing: basePath})
	}
	for i, d := range vm.Spec.DataDisks {
		p := filepath.Join(dir, fmt.Sprintf("data-%d.qcow2", i))
		if err := l.create(ctx, p, "", d.SizeGiB<<30); err != nil {
			return nil, err
		}
		disks = append(disks, Disk{ID: fmt.Sprintf("data-%d", i), Path: p, Format: FormatQCOW2, Media: "disk"})
	}
	return disks, nil
}

// create makes a qcow2 file (an overlay on backing if given) of size bytes,
// or grows an existing one to size. It never shrinks a disk.
func (l *LocalVolumes) create(ctx context.Context, path, backing string, size int64) error {
	_, err := os.Stat(path)
	exists := err == nil
	if exists {
		cur, err := l.virtualSize(ctx, path)
		if err != nil || size <= cur {
			return err
		}
	}
	if err := l.reserve.Check(filepath.Dir(path), diskMetadata); err != nil {
		return fmt.Errorf("create disk %s: %w", filepath.Base(path), err)
	}
	if exists {
		return l.run(ctx, "resize", "-f", "qcow2", path, fmt.Sprint(size))
	}
	tmp := path + ".tmp"
	args := []string{"create", "-q", "-f", "qcow2"}
	if backing != "" {
		args = append(args, "-F", backingFormat(backing), "-b", backing)
	}
	if err := l.run(ctx, append(args, tmp, fmt.Sprint(size))...); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	// qemu-img creates it 0644; a VM's disk is for its QEMU alone (the
	// driver hands it to the VM's user at start).
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("create disk %s: %w", filepath.Base(path), err)
	}
	return os.Rename(tmp, path)
}

func backingFormat(path string) string {
	if strings.HasSuffix(path, "."+FormatISO) {
		return FormatRaw
	}
	return FormatQCOW2
}

func (l *LocalVolumes) virtualSize(ctx context.Context, path string) (int64, error) {
	out, err := l.output(ctx, "info", "--output=json", "-U", "-f", "qcow2", path)
	if err != nil {
		return 0, err
	}
	var info imgInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	return info.VirtualSize, nil
}

func (l *LocalVolumes) run(ctx context.Context, args ...string) error {
	_, err := l.output(ctx, args...)
	return err
}

func (l *LocalVolumes) output(ctx context.Context, args ...string) ([]byte, error) {
	cmd, err := qemuImgCommand(ctx, l.qemuImg, args...)
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("qemu-img %s: %s", args[0], firstLine([]byte(stderr.String()), err))
	}
	return out, nil
}

func (l *LocalVolumes) Remove(_ context.Context, vmID string) error {
	if vmID == "" || strings.ContainsAny(vmID, "/.") {
		return fmt.Errorf("remove volumes: bad VM id %q", vmID)
	}
	return os.RemoveAll(l.Dir(vmID))
}

func (l *LocalVolumes) List() ([]string, error) {
	ents, err := os.ReadDir(l.dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, err
}

// cacheMode picks QEMU's disk cache: "none" (O_DIRECT: no host page cache,
// safe on power loss) where the file system supports it, "writeback"
// elsewhere (tmpfs in tests and dev setups).
func (l *LocalVolumes) cacheMode() string {
	l.once.Do(func() {
		l.cache = "writeback"
		if err := os.MkdirAll(l.dir, 0o700); err != nil {
			return
		}
		p := filepath.Join(l.dir, ".odirect-probe")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|syscall.O_DIRECT, 0o600)
		if err == nil {
			f.Close()
			l.cache = "none"
		}
		os.Remove(p)
	})
	return l.cache
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Traversable creates the directories that are missing (0711) and lets
// everyone search (not list) every one of them: a VM's QEMU runs as the
// VM's user and opens its own disks by path. (Backing files in the image
// cache it gets as descriptors: the cache stays root's alone.)
func Traversable(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, info.Mode().Perm()|0o001); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reachable checks that everyone may search every directory above dirs
// (which Traversable does not change: they are not the agent's), so that
// a VM's user gets to them; a data directory under /root, say, would keep
// every VM from starting with a less clear error.
func Reachable(dirs ...string) error {
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return err
		}
		for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
			info, err := os.Stat(p)
			if err != nil {
				return err
			}
			if info.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("vm users cannot reach %s: %s is not searchable by others (chmod o+x)", d, p)
			}
			if p == filepath.Dir(p) {
				break
			}
		}
	}
	return nil
}

// FillVolume writes a new volume's source into it, served at target (an
// NBD URL): a cached image, or a stopped VM's local boot disk (with its
// base image), converted to raw. Zeroes are written as zeroes, so a fill
// that was cut short leaves nothing of its own behind when done again.
func (n *NodeAgent) FillVolume(ctx context.Context, src volume.Source, target string) error {
	if src.VMDisk != "" {
		if strings.ContainsAny(src.VMDisk, "/.") {
			return fmt.Errorf("bad VM id %q", src.VMDisk)
		}
		root := filepath.Join(n.cfg.Volumes.Dir(src.VMDisk), "root.qcow2")
		return n.cfg.Volumes.run(ctx, "convert", "-n", "-f", FormatQCOW2, "-O", FormatRaw, root, target)
	}
	img := consensus.First[Image](n.c.Store().ReadTxn(), tImages, "id", src.Image)
	if img == nil {
		return fmt.Errorf("image %s not found", src.Image)
	}
	path, err := n.cfg.Cache.Path(ctx, img)
	if err != nil {
		return err
	}
	return n.cfg.Volumes.run(ctx, "convert", "-n", "-f", img.DiskFormat, "-O", FormatRaw, path, target)
}
