package hypervisor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor/cloudinit"
)

// prepare is the gate every image passes: real qemu-img on real files.
func TestImageFormatsAreDetectedCheckedAndConverted(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img is required (apt-get install qemu-utils): %v", err)
	}
	dir := t.TempDir()
	im := NewImages(nil, nil, nil, ImagesConfig{TempDir: dir, MaxSize: 64 << 20})
	qimg := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v %s", args, err, out)
		}
	}
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	qcow := filepath.Join(dir, "ok.qcow2")
	qimg("create", "-q", "-f", "qcow2", qcow, "100M")
	overlay := filepath.Join(dir, "overlay.qcow2")
	qimg("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", qcow, overlay)
	raw := file("disk.raw", make([]byte, 3<<20))
	iso := filepath.Join(dir, "seed.iso")
	if err := (cloudinit.Seed{InstanceID: "i", Hostname: "h"}).WriteISO(iso); err != nil {
		t.Fatal(err)
	}
	corrupt, _ := os.ReadFile(qcow)
	for i := 0x200; i < len(corrupt); i++ {
		corrupt[i] = 0xff
	}
	for _, tc := range []struct {
		name, path, format, disk, refuse string
		virtual                          int64
	}{
		{name: "qcow2", path: qcow, format: FormatQCOW2, disk: FormatQCOW2, virtual: 100 << 20},
		{name: "raw is converted", path: raw, format: FormatRaw, disk: FormatQCOW2, virtual: 3 << 20},
		{name: "iso", path: iso, format: FormatISO, disk: FormatISO},
		{name: "backing file", path: overlay, refuse: "backing file"},
		{name: "corrupt", path: file("corrupt.qcow2", corrupt), refuse: "qcow2"},
		{name: "vmdk", path: file("x.vmdk", append([]byte("KDMV"), make([]byte, 600)...)), refuse: "VMDK"},
		{name: "empty", path: file("empty", nil), refuse: "empty"},
		{name: "too big", path: file("big.raw", make([]byte, 65<<20)), refuse: "larger than"},
	} {
		f, err := os.Open(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		work := t.TempDir()
		var img Image
		stored, err := im.prepare(context.Background(), work, f, &img)
		f.Close()
		if tc.refuse != "" {
			if err == nil || !strings.Contains(err.Error(), tc.refuse) || consensus.ErrorCode(err) != consensus.CodeInvalid {
				t.Errorf("%s: want a refusal mentioning %q, got %v", tc.name, tc.refuse, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if img.Format != tc.format || img.DiskFormat != tc.disk || (tc.virtual != 0 && img.VirtualSize != tc.virtual) {
			t.Errorf("%s: format %s stored as %s, virtual %d", tc.name, img.Format, img.DiskFormat, img.VirtualSize)
		}
		if sum, size, _ := hashFile(stored); sum != img.SHA256 || size != img.Size {
			t.Errorf("%s: checksum or size of the stored file differ from the record", tc.name)
		}
		if tc.disk == FormatQCOW2 {
			if fm, _ := detectFormat(stored); fm != FormatQCOW2 {
				t.Errorf("%s: stored file is %s", tc.name, fm)
			}
		}
	}
}
