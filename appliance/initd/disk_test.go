//go:build linux

package initd

import (
	"os"
	"path/filepath"
	"testing"
)

func TestProbeDisk(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, at int, b []byte) string {
		p := filepath.Join(dir, name)
		img := make([]byte, 1<<20)
		copy(img[at:], b)
		if err := os.WriteFile(p, img, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ext4 := func(label string) []byte {
		sb := make([]byte, 1024)
		sb[56], sb[57] = 0x53, 0xEF
		copy(sb[120:], label)
		return sb
	}
	for _, c := range []struct {
		name string
		path string
		want string
	}{
		{"blank", write("blank", 0, nil), "blank"},
		{"ours", write("ours", 1024, ext4(dataLabel)), "cairn"},
		{"someone else's ext4", write("theirs", 1024, ext4("home")), "other"},
		{"a partition table", write("gpt", 512, []byte("EFI PART")), "other"},
	} {
		got, err := probe(c.path)
		if err != nil || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.name, got, err, c.want)
		}
	}
}
