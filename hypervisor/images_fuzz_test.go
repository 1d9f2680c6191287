package hypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// An uploaded image is untrusted bytes. Whatever its header says (the
// fuzzer rewrites the first sectors of a qcow2 with a backing file, of a
// plain qcow2 and of a raw disk), the image gate either refuses it or
// stores a qcow2 (or ISO) that qemu-img finds consistent and that names
// no other file of the host: no backing file, no external data file.
func FuzzImageProbe(f *testing.F) {
	dir := f.TempDir()
	qimg := func(args ...string) {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			f.Fatalf("qemu-img %v: %v %s", args, err, out)
		}
	}
	plain := filepath.Join(dir, "plain.qcow2")
	qimg("create", "-q", "-f", "qcow2", plain, "16M")
	overlay := filepath.Join(dir, "overlay.qcow2")
	qimg("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", plain, overlay)
	var bases [][]byte
	for _, p := range []string{plain, overlay} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		bases = append(bases, b)
	}
	bases = append(bases, make([]byte, 1<<20)) // raw
	f.Add(uint8(0), uint16(0), []byte("QFI\xfb"))
	f.Add(uint8(1), uint16(8), []byte{0, 0, 0, 0, 0, 0, 0, 0})                 // backing file offset cleared
	f.Add(uint8(0), uint16(72), []byte{0, 0, 0, 0, 0, 0, 0, 4})                // incompatible features: external data file
	f.Add(uint8(2), uint16(0), []byte("QFI\xfb\x00\x00\x00\x03"))              // raw that claims to be qcow2 v3
	f.Add(uint8(2), uint16(0x8001), []byte("CD001"))                           // raw that claims to be an ISO
	f.Add(uint8(1), uint16(16), []byte{0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 9}) // backing name moved and grown
	im := NewImages(nil, nil, nil, ImagesConfig{TempDir: dir, MaxSize: 64 << 20})
	f.Fuzz(func(t *testing.T, base uint8, at uint16, patch []byte) {
		img := bytes.Clone(bases[int(base)%len(bases)])
		if int(at)+len(patch) > len(img) {
			t.Skip()
		}
		copy(img[at:], patch)
		work := t.TempDir()
		var rec Image
		// Go's fuzzer counts an input that runs 10 s as a hang. qemu-img's
		// own limit is 30 s of CPU per command, and a header that claims
		// 64,000 snapshots legitimately takes ~6 s each for info and check
		// here: give up on such an input after 4 s (a refusal, as a
		// cancelled upload would be).
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		stored, err := im.prepare(ctx, work, bytes.NewReader(img), &rec)
		if err != nil {
			return
		}
		if rec.DiskFormat == FormatISO {
			return // attached read-only as a CD-ROM, never parsed as a disk
		}
		out, err := exec.Command("qemu-img", "info", "--output=json", "-U", "-f", "qcow2", stored).Output()
		if err != nil {
			t.Fatalf("the stored image is not a qcow2 qemu-img reads: %v", err)
		}
		var info struct {
			Backing        string `json:"backing-filename"`
			FullBacking    string `json:"full-backing-filename"`
			FormatSpecific struct {
				Data struct {
					DataFile string `json:"data-file"`
				} `json:"data"`
			} `json:"format-specific"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatal(err)
		}
		if info.Backing != "" || info.FullBacking != "" || info.FormatSpecific.Data.DataFile != "" {
			t.Fatalf("an accepted image names a host file: %s", out)
		}
		if out, err := exec.Command("qemu-img", "check", "-q", "-f", "qcow2", stored).CombinedOutput(); err != nil {
			t.Fatalf("an accepted image fails qemu-img check: %v %s", err, out)
		}
	})
}
