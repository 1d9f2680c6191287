package cloudinit

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"go.yaml.in/yaml/v3"
)

// VolumeLabel is the ISO9660 volume ID by which cloud-init's NoCloud
// datasource finds its seed (it also accepts it in upper case).
const VolumeLabel = "cidata"

const sector = 2048

// seedTime stamps every file and the volume itself, so that one Seed always
// gives the same bytes (the date of build.sh's SOURCE_DATE_EPOCH).
var seedTime = time.Unix(1577836800, 0).UTC()

// metaData is NoCloud's meta-data file.
type metaData struct {
	InstanceID    string   `yaml:"instance-id"`
	LocalHostname string   `yaml:"local-hostname"`
	PublicKeys    []string `yaml:"public-keys,omitempty"`
}

// files returns the seed's files by name, as cloud-init reads them.
func (s Seed) files() (map[string][]byte, error) {
	md, err := yaml.Marshal(metaData{InstanceID: s.InstanceID, LocalHostname: s.Hostname, PublicKeys: s.SSHKeys})
	if err != nil {
		return nil, err
	}
	ud := s.UserData
	if len(ud) == 0 {
		// cloud-init and its kin expect a user-data file; an empty
		// #cloud-config that installs the keys is what they all accept.
		ud = []byte("#cloud-config\n")
		if len(s.SSHKeys) > 0 {
			keys, err := yaml.Marshal(map[string][]string{"ssh_authorized_keys": s.SSHKeys})
			if err != nil {
				return nil, err
			}
			ud = append(ud, keys...)
		}
	}
	f := map[string][]byte{"meta-data": md, "user-data": ud}
	if len(s.NetworkConfig) > 0 {
		f["network-config"] = s.NetworkConfig
	}
	return f, nil
}

// WriteISO validates s and writes it as a NoCloud seed image to path,
// atomically: a reader sees the old file or the whole new one. The image has
// Rock Ridge (for Linux) and Joliet (for Windows) names, so "meta-data" keeps
// its lower case and hyphen.
func (s Seed) WriteISO(path string) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	files, err := s.files()
	if err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".seed-*.iso")
	if err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	if err := writeISO(tmp, files); err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	// Root's alone: it may carry secrets, and the agent hands it to QEMU
	// as an open descriptor.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write seed %s: %w", path, err)
	}
	return nil
}

// writeISO lays the files out in a workspace with fixed modes and times
// (go-diskfs copies both into the image) and builds the image onto f.
func writeISO(f *os.File, files map[string][]byte) error {
	ws, err := os.MkdirTemp("", "cairn-seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ws)
	for name, data := range files {
		p := filepath.Join(ws, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o644); err != nil { // whatever the umask
			return err
		}
		if err := os.Chtimes(p, seedTime, seedTime); err != nil {
			return err
		}
	}
	if err := os.Chmod(ws, 0o755); err != nil {
		return err
	}
	if err := os.Chtimes(ws, seedTime, seedTime); err != nil {
		return err
	}
	fsys, err := iso9660.Create(file.New(f, false), 0, 0, sector, ws)
	if err != nil {
		return err
	}
	if err := fsys.Finalize(iso9660.FinalizeOptions{RockRidge: true, Joliet: true, VolumeIdentifier: VolumeLabel}); err != nil {
		return err
	}
	if err := fixVolumeDates(f); err != nil {
		return err
	}
	if err := fixRockRidgeTimes(f); err != nil {
		return err
	}
	// go-diskfs stops after the last file's data, short of the volume size
	// it records; a CD-ROM (and blkid) wants every sector of it.
	pvd := make([]byte, sector)
	if _, err := f.ReadAt(pvd, 16*sector); err != nil {
		return err
	}
	return f.Truncate(int64(binary.LittleEndian.Uint32(pvd[80:])) * sector)
}

// fixVolumeDates replaces the dates go-diskfs stamps on the volume
// descriptors with time.Now: creation and modification become seedTime,
// expiration and effective "not specified" (go-diskfs sets expiration to
// now, an already expired volume).
func fixVolumeDates(f *os.File) error {
	fixed := []byte(seedTime.Format("20060102150405") + "00\x00")
	unset := []byte("0000000000000000\x00")
	vd := make([]byte, sector)
	for n := int64(16); n < 32; n++ {
		if _, err := f.ReadAt(vd, n*sector); err != nil {
			return err
		}
		if string(vd[1:6]) != "CD001" || vd[0] == 255 {
			return nil // the set terminator, or past it
		}
		if vd[0] != 1 && vd[0] != 2 { // primary, supplementary (Joliet)
			continue
		}
		copy(vd[813:], fixed)
		copy(vd[830:], fixed)
		copy(vd[847:], unset)
		copy(vd[864:], unset)
		if _, err := f.WriteAt(vd, n*sector); err != nil {
			return err
		}
	}
	return nil
}

// fixRockRidgeTimes sets every time in the Rock Ridge TF entries of the root
// directory to seedTime. go-diskfs copies them from the workspace files, and
// one of them is the inode change time, which no system call sets: two images
// written across a second boundary differed. Seeds are flat, so the root
// directory is the whole tree.
func fixRockRidgeTimes(f *os.File) error {
	pvd := make([]byte, sector)
	if _, err := f.ReadAt(pvd, 16*sector); err != nil {
		return err
	}
	root := pvd[156:] // the root directory's record
	extent, size := binary.LittleEndian.Uint32(root[2:]), binary.LittleEndian.Uint32(root[10:])
	dir := make([]byte, size)
	if _, err := f.ReadAt(dir, int64(extent)*sector); err != nil {
		return err
	}
	stamp := []byte{byte(seedTime.Year() - 1900), byte(seedTime.Month()), byte(seedTime.Day()),
		byte(seedTime.Hour()), byte(seedTime.Minute()), byte(seedTime.Second()), 0}
	for off := 0; off < len(dir); {
		n := int(dir[off])
		if n == 0 { // no record crosses a sector: skip to the next
			off = (off/sector + 1) * sector
			continue
		}
		if off+n > len(dir) || n < 34 || 33+int(dir[off+32]) > n {
			return fmt.Errorf("bad directory record at %d", off)
		}
		rec := dir[off : off+n]
		su := rec[33+int(rec[32]):]
		if rec[32]%2 == 0 { // a pad byte keeps the system use area even
			su = su[1:]
		}
		for len(su) >= 4 && int(su[2]) >= 4 && int(su[2]) <= len(su) {
			entry := su[:su[2]]
			if string(entry[:2]) == "TF" && len(entry) >= 5 && entry[4]&0x80 == 0 { // short form
				for t := entry[5:]; len(t) >= 7; t = t[7:] {
					copy(t, stamp)
				}
			}
			su = su[su[2]:]
		}
		off += n
	}
	_, err := f.WriteAt(dir, int64(extent)*sector)
	return err
}

// ISOLabel returns the volume ID of the ISO9660 file system r holds, or an
// error if it holds none. It reads one sector: cheap enough to probe every
// disk of a VM for its seed.
func ISOLabel(r io.ReaderAt) (string, error) {
	pvd := make([]byte, sector)
	if _, err := r.ReadAt(pvd, 16*sector); err != nil {
		return "", fmt.Errorf("no ISO9660 volume descriptor: %w", err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return "", errors.New("not an ISO9660 file system")
	}
	return strings.TrimRight(string(pvd[40:72]), " \x00"), nil
}

// ReadISO reads the NoCloud seed in the ISO9660 image or block device at
// path. UserData is the user-data file as stored (WriteISO writes a
// #cloud-config for an empty one).
func ReadISO(path string) (*Seed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read seed: %w", err)
	}
	defer f.Close()
	s, err := readISO(f)
	if err != nil {
		return nil, fmt.Errorf("read seed %s: %w", path, err)
	}
	return s, nil
}

func readISO(f *os.File) (*Seed, error) {
	label, err := ISOLabel(f)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(label, VolumeLabel) {
		return nil, fmt.Errorf("volume label is %q, not %q", label, VolumeLabel)
	}
	size, err := f.Seek(0, io.SeekEnd) // Stat gives 0 for a block device
	if err != nil {
		return nil, err
	}
	fsys, err := iso9660.Read(file.New(f, true), size, 0, sector)
	if err != nil {
		return nil, err
	}
	md, err := fsys.ReadFile("meta-data")
	if err != nil {
		return nil, fmt.Errorf("meta-data: %w", err)
	}
	var m struct {
		InstanceID    string `yaml:"instance-id"`
		LocalHostname string `yaml:"local-hostname"`
		Hostname      string `yaml:"hostname"`
		PublicKeys    any    `yaml:"public-keys"`
	}
	if err := yaml.Unmarshal(md, &m); err != nil {
		return nil, fmt.Errorf("meta-data: %w", err)
	}
	s := &Seed{InstanceID: m.InstanceID, Hostname: cmp.Or(m.LocalHostname, m.Hostname), SSHKeys: publicKeys(m.PublicKeys)}
	if s.UserData, err = fsys.ReadFile("user-data"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	if s.NetworkConfig, err = fsys.ReadFile("network-config"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("network-config: %w", err)
	}
	return s, nil
}

// publicKeys accepts the shapes cloud-init accepts for public-keys: a
// string of lines, a list, or a map of named keys (EC2's style).
func publicKeys(v any) []string {
	var keys []string
	switch v := v.(type) {
	case string:
		for l := range strings.Lines(v) {
			if l = strings.TrimSpace(l); l != "" {
				keys = append(keys, l)
			}
		}
	case []any:
		for _, k := range v {
			keys = append(keys, publicKeys(k)...)
		}
	case map[string]any:
		for _, name := range slices.Sorted(maps.Keys(v)) {
			keys = append(keys, publicKeys(v[name])...)
		}
	}
	return keys
}
