package image

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// An image built without CAIRN_SITE_TOKEN=1 carries no cluster key: anyone
// holding the image must not be able to read one out of its initramfs.
func TestImageCarriesNoClusterKey(t *testing.T) {
	files := bootFiles(t)
	raw, err := exec.Command("zstd", "-dc", filepath.Join(files, "initramfs.cpio.zst")).Output()
	if err != nil {
		t.Fatalf("unpack the initramfs: %v", err)
	}
	entries, err := cpioFiles(raw)
	if err != nil {
		t.Fatal(err)
	}
	boot, ok := entries["etc/cairn/boot.json"]
	if !ok {
		t.Fatalf("the initramfs has no etc/cairn/boot.json (%d entries)", len(entries))
	}
	if bytes.Contains(boot, []byte("token")) {
		t.Fatalf("the image's boot config carries a cluster key: %s", boot)
	}
}

// cpioFiles reads a newc cpio archive into name -> contents.
func cpioFiles(data []byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		if off+110 > len(data) {
			return nil, fmt.Errorf("cpio: truncated header at %d", off)
		}
		h := data[off : off+110]
		if m := string(h[:6]); m != "070701" && m != "070702" {
			return nil, fmt.Errorf("cpio: bad magic %q at %d", m, off)
		}
		field := func(i int) int {
			v, _ := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			return int(v)
		}
		size, nameSize := field(6), field(11)
		if off+110+nameSize > len(data) || nameSize < 1 {
			return nil, fmt.Errorf("cpio: bad name at %d", off)
		}
		name := string(data[off+110 : off+110+nameSize-1])
		off = align(off + 110 + nameSize)
		if name == "TRAILER!!!" {
			return out, nil
		}
		if off+size > len(data) {
			return nil, fmt.Errorf("cpio: %s is truncated", name)
		}
		out[name] = data[off : off+size]
		off = align(off + size)
	}
}
